// all_reduce_view and reduce_scatter_view (runtime/internal/wide_collectives.h).
#include "runtime/internal/wide_collectives.h"

#include "kernels/half.h"

namespace meshpipe::runtime::internal {

Status all_reduce_view(comm::Communicator& c, const kernels::TensorView& v, WideScratch& scratch) {
  if (v.dtype == DType::kF32) return c.all_reduce(v.f32(), v.numel());
  scratch.in.resize(static_cast<size_t>(v.numel()));
  kernels::widen_from_half(static_cast<const uint16_t*>(v.data), scratch.in.data(), v.numel(),
                           v.dtype);
  MP_RETURN_IF_ERROR(c.all_reduce(scratch.in.data(), v.numel()));
  kernels::round_to_half(scratch.in.data(), static_cast<uint16_t*>(v.data), v.numel(), v.dtype);
  return Status::ok();
}

Status reduce_scatter_view(comm::Communicator& c, const void* in, const kernels::TensorView& out,
                           int64_t count, WideScratch& scratch) {
  if (out.dtype == DType::kF32) {
    return c.reduce_scatter(static_cast<const float*>(in), out.f32(), count);
  }
  const int64_t total = count * c.size();
  scratch.in.resize(static_cast<size_t>(total));
  scratch.out.resize(static_cast<size_t>(count));
  kernels::widen_from_half(static_cast<const uint16_t*>(in), scratch.in.data(), total, out.dtype);
  MP_RETURN_IF_ERROR(c.reduce_scatter(scratch.in.data(), scratch.out.data(), count));
  kernels::round_to_half(scratch.out.data(), static_cast<uint16_t*>(out.data), count, out.dtype);
  return Status::ok();
}

}  // namespace meshpipe::runtime::internal

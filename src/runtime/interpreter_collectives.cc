// The device interpreter's collectives on tiles (runtime/interpreter.h): all-reduce (fused
// runs packed into one), all-gather, reduce-scatter and all-to-all of a tile along a mesh axis,
// packing pieces that are not contiguous through the memory's scratch. The same code runs on
// host memory and on a GPU's (NCCL communicators, kernels::copy_box on the GPU's stream).
#include <vector>

#include "kernels/backend.h"
#include "kernels/layout.h"
#include "runtime/internal/interpreter_impl.h"

namespace meshpipe::runtime {

using internal::contiguous_offset;
using internal::extent_of;
using internal::intersect;
using internal::numel_of;
using internal::offset_in;
using internal::Ranges;

// Several all-reduces fused into one (fuse_all_reduces): pack, all-reduce once, unpack.
Status DeviceInterpreter::Impl::fused_all_reduce(const Instruction& ins) {
  comm::Communicator* c = group(ins.collective.axis);
  if (c == nullptr || c->size() != mesh().size(ins.collective.axis)) {
    return make_error(Errc::kInternal, "no communicator for mesh axis {}", ins.collective.axis);
  }
  int64_t total = 0;
  for (int32_t b : ins.in) total += desc(b).shape.numel();
  MP_ASSIGN_OR_RETURN(void* area, mem->scratch(internal::kScratchPacked, total * 4));
  auto* packed = static_cast<float*>(area);
  int64_t at = 0;
  for (int32_t b : ins.in) {
    MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(b));
    MP_RETURN_IF_ERROR(mem->copy(packed + at, v.data, v.bytes()));
    at += v.numel();
  }
  MP_RETURN_IF_ERROR(
      communicate(mesh::CollectiveKind::kAllReduce, [&] { return c->all_reduce(packed, total); }));
  at = 0;
  for (int32_t b : ins.out) {
    MP_ASSIGN_OR_RETURN(kernels::TensorView v, writable(b));
    MP_RETURN_IF_ERROR(mem->copy(v.data, packed + at, v.bytes()));
    at += v.numel();
  }
  return Status::ok();
}

Status DeviceInterpreter::Impl::collective(const Instruction& ins) {
  if (overlap() && side_eligible(ins)) return collective_on_side(ins);
  if (ins.in.size() > 1) return fused_all_reduce(ins);
  const mesh::CollectiveStep& step = ins.collective;
  const int a = step.axis;
  MP_ASSIGN_OR_RETURN(kernels::TensorView in, readable(ins.in[0]));
  MP_ASSIGN_OR_RETURN(kernels::TensorView out, writable(ins.out[0]));
  const int64_t n = mesh().size(a);
  if (step.kind == mesh::CollectiveKind::kAllReduce && n > 1) {  // no tile geometry needed
    comm::Communicator* c = group(a);
    if (c == nullptr || c->size() != n) {
      return make_error(Errc::kInternal, "no communicator of size {} for mesh axis {}", n, a);
    }
    MP_RETURN_IF_ERROR(mem->copy(out.data, in.data, in.bytes()));
    return communicate(step.kind, [&] { return all_reduce_view(*c, out); });
  }
  const Ranges before = ranges(ins, ins.spec, -1, 0);
  const Ranges after = ranges(ins, step.after, -1, 0);
  if (step.kind == mesh::CollectiveKind::kSlice || n == 1) {
    kernels::copy_box(ctx, in, offset_in(after, before), out, std::vector<int64_t>(after.size(), 0),
                      extent_of(after));
    return Status::ok();
  }
  comm::Communicator* c = group(a);
  if (c == nullptr || c->size() != n) {
    return make_error(Errc::kInternal, "no communicator of size {} for mesh axis {}", n, a);
  }
  const int64_t es = dtype_size(in.dtype);
  switch (step.kind) {
    case mesh::CollectiveKind::kAllReduce:
      MP_RETURN_IF_ERROR(mem->copy(out.data, in.data, in.bytes()));
      return communicate(step.kind, [&] { return all_reduce_view(*c, out); });
    case mesh::CollectiveKind::kAllGather: {
      // Rank r's tile lands at r * tile in the gathered one when it is a contiguous run of
      // it (a dim-0 split): gather in place; else through staging and a copy per piece.
      bool direct = ins.in[0] != ins.out[0];
      for (int64_t r = 0; r < n && direct; ++r) {
        const Ranges src = ranges(ins, ins.spec, a, r);
        direct =
            numel_of(extent_of(src)) == in.numel() &&
            contiguous_offset(out.shape, offset_in(src, after), extent_of(src)) == r * in.numel();
      }
      if (direct) {
        return communicate(step.kind, [&] { return c->all_gather(in.data, out.data, in.bytes()); });
      }
      MP_ASSIGN_OR_RETURN(void* area, mem->scratch(internal::kScratchOut, n * in.bytes()));
      auto* all = static_cast<uint8_t*>(area);
      MP_RETURN_IF_ERROR(
          communicate(step.kind, [&] { return c->all_gather(in.data, all, in.bytes()); }));
      for (int64_t r = 0; r < n; ++r) {
        const Ranges src = ranges(ins, ins.spec, a, r);
        kernels::TensorView piece(all + r * in.bytes(), in.shape, in.dtype);
        kernels::copy_box(ctx, piece, std::vector<int64_t>(src.size(), 0), out,
                          offset_in(src, after), extent_of(src));
      }
      return Status::ok();
    }
    case mesh::CollectiveKind::kReduceScatter: {
      const int64_t chunk = out.numel();
      // Rank r's chunk is a contiguous run at r * chunk of the tile: reduce in place.
      bool direct = ins.in[0] != ins.out[0];
      for (int64_t r = 0; r < n && direct; ++r) {
        const Ranges dst = ranges(ins, step.after, a, r);
        direct = numel_of(extent_of(dst)) == chunk &&
                 contiguous_offset(in.shape, offset_in(dst, before), extent_of(dst)) == r * chunk;
      }
      if (direct) {
        return communicate(step.kind, [&] { return reduce_scatter_view(*c, in.data, out, chunk); });
      }
      MP_ASSIGN_OR_RETURN(void* area, mem->scratch(internal::kScratchIn, n * chunk * es));
      auto* send = static_cast<uint8_t*>(area);
      for (int64_t r = 0; r < n; ++r) {
        const Ranges dst = ranges(ins, step.after, a, r);
        kernels::TensorView piece(send + r * chunk * es, out.shape, out.dtype);
        kernels::copy_box(ctx, in, offset_in(dst, before), piece,
                          std::vector<int64_t>(dst.size(), 0), extent_of(dst));
      }
      return communicate(step.kind, [&] { return reduce_scatter_view(*c, send, out, chunk); });
    }
    case mesh::CollectiveKind::kAllToAll: {
      const int64_t chunk = in.bytes() / n;
      const bool distinct = ins.in[0] != ins.out[0];
      // Chunk j for rank j, and the chunk from rank i, each a contiguous run at j (i) * chunk
      // of their tiles: exchanged in place; else through staging.
      bool send_direct = distinct;
      for (int64_t j = 0; j < n; ++j) {
        const Ranges box = intersect(ranges(ins, step.after, a, j), before);
        const std::vector<int64_t> e = extent_of(box);
        if (numel_of(e) * es != chunk) {
          return make_error(Errc::kInternal, "all-to-all chunk of {} bytes, expected {}",
                            numel_of(e) * es, chunk);
        }
        send_direct =
            send_direct && contiguous_offset(in.shape, offset_in(box, before), e) * es == j * chunk;
      }
      bool recv_direct = distinct;
      for (int64_t i = 0; i < n && recv_direct; ++i) {
        const Ranges box = intersect(after, ranges(ins, ins.spec, a, i));
        const std::vector<int64_t> e = extent_of(box);
        recv_direct = numel_of(e) * es == chunk &&
                      contiguous_offset(out.shape, offset_in(box, after), e) * es == i * chunk;
      }
      const uint8_t* send = static_cast<const uint8_t*>(in.data);
      if (!send_direct) {
        MP_ASSIGN_OR_RETURN(void* area, mem->scratch(internal::kScratchIn, in.bytes()));
        auto* staged = static_cast<uint8_t*>(area);
        for (int64_t j = 0; j < n; ++j) {
          const Ranges box = intersect(ranges(ins, step.after, a, j), before);
          const std::vector<int64_t> e = extent_of(box);
          kernels::TensorView piece(staged + j * chunk, Shape(e), in.dtype);
          kernels::copy_box(ctx, in, offset_in(box, before), piece,
                            std::vector<int64_t>(e.size(), 0), e);
        }
        send = staged;
      }
      uint8_t* recv = static_cast<uint8_t*>(out.data);
      if (!recv_direct) {
        MP_ASSIGN_OR_RETURN(void* area, mem->scratch(internal::kScratchOut, out.bytes()));
        recv = static_cast<uint8_t*>(area);
      }
      MP_RETURN_IF_ERROR(communicate(step.kind, [&] { return c->all_to_all(send, recv, chunk); }));
      if (recv_direct) return Status::ok();
      for (int64_t i = 0; i < n; ++i) {
        const Ranges box = intersect(after, ranges(ins, ins.spec, a, i));
        const std::vector<int64_t> e = extent_of(box);
        kernels::TensorView piece(recv + i * chunk, Shape(e), in.dtype);
        kernels::copy_box(ctx, piece, std::vector<int64_t>(e.size(), 0), out, offset_in(box, after),
                          e);
      }
      return Status::ok();
    }
    case mesh::CollectiveKind::kSlice:
      break;
  }
  return Status::ok();
}

Status DeviceInterpreter::Impl::all_reduce_view(comm::Communicator& c,
                                                const kernels::TensorView& v) {
  if (mem->on_host()) return internal::all_reduce_view(c, v, wide);
  // On a GPU an f32 tensor goes straight to NCCL; a half one is widened to f32 on the device
  // (kConvert), summed in f32 and rounded once, as on the host (NCCL's own half sums would add
  // in the half type).
  if (v.dtype == DType::kF32) return c.all_reduce(v.f32(), v.numel());
  MP_ASSIGN_OR_RETURN(void* area, mem->scratch(internal::kScratchWideIn, v.numel() * 4));
  const kernels::TensorView wide32(area, v.shape, DType::kF32);
  MP_RETURN_IF_ERROR(convert(v, wide32));
  MP_RETURN_IF_ERROR(c.all_reduce(static_cast<float*>(area), v.numel()));
  return convert(wide32, v);
}

Status DeviceInterpreter::Impl::reduce_scatter_view(comm::Communicator& c, const void* in,
                                                    const kernels::TensorView& out, int64_t count) {
  if (mem->on_host()) return internal::reduce_scatter_view(c, in, out, count, wide);
  if (out.dtype == DType::kF32) {
    return c.reduce_scatter(static_cast<const float*>(in), out.f32(), count);
  }
  const int64_t total = count * c.size();
  MP_ASSIGN_OR_RETURN(void* win, mem->scratch(internal::kScratchWideIn, total * 4));
  MP_ASSIGN_OR_RETURN(void* wout, mem->scratch(internal::kScratchWideOut, count * 4));
  const kernels::TensorView half_in(const_cast<void*>(in), Shape{total}, out.dtype);
  MP_RETURN_IF_ERROR(convert(half_in, kernels::TensorView(win, Shape{total}, DType::kF32)));
  MP_RETURN_IF_ERROR(
      c.reduce_scatter(static_cast<const float*>(win), static_cast<float*>(wout), count));
  return convert(kernels::TensorView(wout, Shape{count}, DType::kF32),
                 kernels::TensorView(out.data, Shape{count}, out.dtype));
}

Status DeviceInterpreter::Impl::convert(const kernels::TensorView& from,
                                        const kernels::TensorView& to) {
  OpAttrs a;
  a.dtype = to.dtype;
  return run_table(OpKind::kConvert, a, std::span<const kernels::TensorView>(&from, 1),
                   std::span<const kernels::TensorView>(&to, 1));
}

}  // namespace meshpipe::runtime

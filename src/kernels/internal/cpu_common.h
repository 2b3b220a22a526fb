// Constants and checks shared by the CPU kernel files (private to kernels/).
#pragma once

#include <array>
#include <cstdint>

#include "core/check.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels::internal {

/// Loops over more elements than this are split across OpenMP threads; below it the fork/join
/// costs more than it saves.
inline constexpr int64_t kParallelElems = 32768;
/// Largest rank the index arithmetic supports (fixed arrays on the stack, no allocation).
inline constexpr int64_t kMaxRank = 8;
/// Per-dimension sizes or strides of a tensor of rank <= kMaxRank.
using Dims = std::array<int64_t, kMaxRank>;

/// Aborts when a CPU kernel is called with a context for another device.
inline void check_cpu(const KernelContext& ctx, const char* op) {
  MP_CHECK(ctx.device == Device::kCpu) << op << ": CPU kernel called for another device";
}

/// Aborts unless `v` is a contiguous f32 view.
inline void check_contiguous_f32(const TensorView& v, const char* op, const char* name) {
  MP_CHECK(v.dtype == DType::kF32 && v.is_contiguous())
      << op << ": " << name << " must be contiguous f32";
}

}  // namespace meshpipe::kernels::internal

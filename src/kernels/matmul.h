// General dot product (any batch and contracting dims) on top of BLAS GEMM.
#pragma once

#include "core/op_geometry.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// Scratch bytes `dot` needs for these operands: zero when both operands are laid out as
/// [batch..., free..., contract...] or [batch..., contract..., free...] (groups in the order
/// DotDims lists them) so BLAS reads them in place; otherwise room for the permuted copies.
int64_t dot_workspace_bytes(const Shape& lhs, const Shape& rhs, const DotDims& dims);

/// out = dot(lhs, rhs) with output dims [batch, lhs free, rhs free] (see DotDims), f32.
/// `workspace` must hold at least dot_workspace_bytes(...) bytes (may be empty when that is 0).
/// When `accumulate` is true, out += dot(lhs, rhs) instead.
void dot(const KernelContext& ctx, const TensorView& lhs, const TensorView& rhs,
         const DotDims& dims, const TensorView& out, const TensorView& workspace,
         bool accumulate = false);

}  // namespace meshpipe::kernels

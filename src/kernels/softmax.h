// Softmax and log-softmax over one axis, and their gradients.
#pragma once

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// y = softmax(x) over `axis`. With `causal`, x must have rank >= 2, axis must be the last
/// dim, and element (.., i, j) with j > i + row_offset is treated as -inf (y = 0 there);
/// i is the index along dim rank-2. Rows are numerically stabilised by their max.
void softmax(const KernelContext& ctx, const TensorView& x, int64_t axis, bool causal,
             int64_t row_offset, const TensorView& y);

/// dx = y * (dy - sum_axis(dy * y)).
void softmax_grad(const KernelContext& ctx, const TensorView& y, const TensorView& dy, int64_t axis,
                  const TensorView& dx);

/// y = x - logsumexp_axis(x).
void log_softmax(const KernelContext& ctx, const TensorView& x, int64_t axis, const TensorView& y);

/// dx = dy - exp(y) * sum_axis(dy).
void log_softmax_grad(const KernelContext& ctx, const TensorView& y, const TensorView& dy,
                      int64_t axis, const TensorView& dx);

}  // namespace meshpipe::kernels

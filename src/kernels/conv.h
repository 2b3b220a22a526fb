// 2-D convolution (NCHW, OIHW weights, no groups) by im2col + GEMM, and its two gradients.
#pragma once

#include "core/op_geometry.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// Scratch bytes for conv2d, conv2d_grad_input and conv2d_grad_filter with input x [N, C, H, W],
/// weights [K, C, R, S] and window w (one im2col buffer of one image: C*R*S x Ho*Wo floats).
int64_t conv2d_workspace_bytes(const Shape& x, const Shape& weight, const Window2d& w);

/// y [N, K, Ho, Wo] = conv(x [N, C, H, W], weight [K, C, R, S]) with zero padding.
void conv2d(const KernelContext& ctx, const TensorView& x, const TensorView& weight,
            const Window2d& w, const TensorView& y, const TensorView& workspace);

/// dx [N, C, H, W] from dy [N, K, Ho, Wo] and weight.
void conv2d_grad_input(const KernelContext& ctx, const TensorView& dy, const TensorView& weight,
                       const Window2d& w, const TensorView& dx, const TensorView& workspace);

/// dweight [K, C, R, S] from x and dy (overwritten, summed over the batch).
void conv2d_grad_filter(const KernelContext& ctx, const TensorView& x, const TensorView& dy,
                        const Window2d& w, const TensorView& dweight, const TensorView& workspace);

}  // namespace meshpipe::kernels

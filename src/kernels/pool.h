// 2-D max and average pooling over NCHW tensors, and their gradients.
#pragma once

#include "core/op_geometry.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// y [N, C, Ho, Wo] = max over each window; padding counts as -inf.
void max_pool2d(const KernelContext& ctx, const TensorView& x, const Window2d& w,
                const TensorView& y);

/// dx = dy routed to the first maximal element of each window (row-major scan), summed over
/// overlapping windows.
void max_pool2d_grad(const KernelContext& ctx, const TensorView& x, const TensorView& dy,
                     const Window2d& w, const TensorView& dx);

/// y = sum over each window / (kernel_h * kernel_w); padding counts as zeros in the window
/// (PyTorch count_include_pad=True).
void avg_pool2d(const KernelContext& ctx, const TensorView& x, const Window2d& w,
                const TensorView& y);

/// dx from dy for avg_pool2d.
void avg_pool2d_grad(const KernelContext& ctx, const TensorView& dy, const Window2d& w,
                     const TensorView& dx);

}  // namespace meshpipe::kernels

// Layer normalisation (over the last dim) and batch normalisation (training mode, NCHW).
#pragma once

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// For each row r of x viewed as [R, D] (D = last dim): mean[r], rstd[r] = 1/sqrt(var + eps)
/// with the biased variance, y = (x - mean) * rstd * gamma + beta. gamma, beta: [D];
/// mean, rstd: [R] (shape = x's shape without its last dim).
void layer_norm(const KernelContext& ctx, const TensorView& x, const TensorView& gamma,
                const TensorView& beta, float eps, const TensorView& y, const TensorView& mean,
                const TensorView& rstd);

/// Gradients of layer_norm: dx, dgamma = sum_r dy * xhat, dbeta = sum_r dy (overwritten).
void layer_norm_grad(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                     const TensorView& mean, const TensorView& rstd, const TensorView& gamma,
                     const TensorView& dx, const TensorView& dgamma, const TensorView& dbeta);

/// Training-mode batch norm of x [N, C, H, W] (or [N, C]): per channel c the mean and
/// rstd = 1/sqrt(biased var + eps) over N, H, W; y = (x - mean) * rstd * gamma + beta.
/// gamma, beta, mean, rstd: [C].
void batch_norm(const KernelContext& ctx, const TensorView& x, const TensorView& gamma,
                const TensorView& beta, float eps, const TensorView& y, const TensorView& mean,
                const TensorView& rstd);

/// Gradients of batch_norm: dx, dgamma, dbeta (overwritten).
void batch_norm_grad(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                     const TensorView& mean, const TensorView& rstd, const TensorView& gamma,
                     const TensorView& dx, const TensorView& dgamma, const TensorView& dbeta);

}  // namespace meshpipe::kernels

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

/// Synchronised batch norm, for devices that each hold part of the batch: the statistics are
/// sums that the caller all-reduces between the steps, with `count` the global N * H * W.
///   forward:  sums = channel_sums(x)            -> all-reduce -> mean = sums / count
///             sq = centered_square_sums(x, mean) -> all-reduce -> batch_norm_from_sums(...)
///   backward: batch_norm_grad_sums(...)          -> all-reduce -> batch_norm_grad_input(...)
/// Composed on one device these give batch_norm and batch_norm_grad.
/// out[c] = sum over n, h, w of x[n, c, h, w] (x [N, C(, H, W)], out [C]).
void batch_norm_channel_sums(const KernelContext& ctx, const TensorView& x, const TensorView& out);
/// mean[c] = sums[c] / count (in float), sums and mean [C]; they may alias.
void batch_norm_mean_from_sums(const KernelContext& ctx, const TensorView& sums, double count,
                               const TensorView& mean);
/// out[c] = sum over n, h, w of (x[n, c, h, w] - mean[c])^2.
void batch_norm_centered_square_sums(const KernelContext& ctx, const TensorView& x,
                                     const TensorView& mean, const TensorView& out);
/// rstd = 1 / sqrt(sq / count + eps), y = (x - mean) * rstd * gamma + beta; writes rstd (which
/// may be sq's memory: each channel's sq is read before its rstd is written).
void batch_norm_from_sums(const KernelContext& ctx, const TensorView& x, const TensorView& mean,
                          const TensorView& sq, double count, const TensorView& gamma,
                          const TensorView& beta, float eps, const TensorView& y,
                          const TensorView& rstd);
/// dgamma[c] = sum dy * xhat, dbeta[c] = sum dy over this device's part of the batch.
void batch_norm_grad_sums(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                          const TensorView& mean, const TensorView& rstd, const TensorView& dgamma,
                          const TensorView& dbeta);
/// dx = gamma * rstd * (dy - dbeta / count - xhat * dgamma / count), with the global sums.
void batch_norm_grad_input(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                           const TensorView& mean, const TensorView& rstd, const TensorView& gamma,
                           const TensorView& dgamma, const TensorView& dbeta, double count,
                           const TensorView& dx);

}  // namespace meshpipe::kernels

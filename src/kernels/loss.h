// Softmax cross-entropy loss with integer labels, averaged over all positions.
#pragma once

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// logits [..., V] f32, labels [...] i32 (each in [0, V)); loss (a scalar, f32) =
/// mean over positions of (logsumexp(logits) - logits[label]).
void cross_entropy(const KernelContext& ctx, const TensorView& logits, const TensorView& labels,
                   const TensorView& loss);

/// dlogits = dloss * (softmax(logits) - onehot(label)) / positions. dloss is a scalar view.
void cross_entropy_grad(const KernelContext& ctx, const TensorView& logits,
                        const TensorView& labels, const TensorView& dloss,
                        const TensorView& dlogits);

}  // namespace meshpipe::kernels

// Parameter updates: SGD (with optional momentum) and Adam(W). Outputs may alias inputs.
#pragma once

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

// Every update reads the gradient as g = grad_scale * gradient: the runtime passes 1 / loss scale
// when f16 training scales its loss (1, the default, leaves g exact).

/// p_out = p - lr * (g + weight_decay * p).
void sgd_update(const KernelContext& ctx, const TensorView& p, const TensorView& g, float lr,
                float weight_decay, const TensorView& p_out, float grad_scale = 1.0f);

/// m_out = momentum * m + (g + weight_decay * p); p_out = p - lr * m_out.
void sgd_momentum_update(const KernelContext& ctx, const TensorView& p, const TensorView& g,
                         const TensorView& m, float lr, float momentum, float weight_decay,
                         const TensorView& p_out, const TensorView& m_out, float grad_scale = 1.0f);

/// Hyper-parameters of Adam with decoupled weight decay (AdamW; plain Adam when 0).
struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;  ///< multiplies the gradient (1 / loss scale)
};

/// t = step[0] (the 1-based step count, f32 scalar). m' = b1 m + (1-b1) g;
/// v' = b2 v + (1-b2) g^2; p' = p - lr * (m' / (1-b1^t)) / (sqrt(v' / (1-b2^t)) + eps)
/// - lr * weight_decay * p.
void adam_update(const KernelContext& ctx, const TensorView& p, const TensorView& g,
                 const TensorView& m, const TensorView& v, const TensorView& step,
                 const AdamParams& hp, const TensorView& p_out, const TensorView& m_out,
                 const TensorView& v_out);

}  // namespace meshpipe::kernels

// CPU parameter updates. Each element is read before it is written at the same index, which
// is what lets outputs alias inputs.
#include <cmath>

#include "kernels/internal/cpu_common.h"
#include "kernels/optimizer.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

void check_like(const TensorView& v, const TensorView& p, const char* op, const char* name) {
  MP_CHECK(v.dtype == DType::kF32 && v.is_contiguous())
      << op << ": " << name << " must be contiguous f32";
  MP_CHECK(v.shape == p.shape) << op << ": " << name << " is " << v.shape.to_string()
                               << ", parameter is " << p.shape.to_string();
}

}  // namespace

void sgd_update(const KernelContext& ctx, const TensorView& p, const TensorView& g, float lr,
                float weight_decay, const TensorView& p_out, float grad_scale) {
  check_cpu(ctx, "sgd_update");
  check_like(p, p, "sgd_update", "p");
  check_like(g, p, "sgd_update", "g");
  check_like(p_out, p, "sgd_update", "p_out");
  const float* pp = p.f32();
  const float* gp = g.f32();
  float* out = p_out.f32();
  const int64_t n = p.numel();
#pragma omp parallel for if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) out[i] = pp[i] - lr * (grad_scale * gp[i] + weight_decay * pp[i]);
}

void sgd_momentum_update(const KernelContext& ctx, const TensorView& p, const TensorView& g,
                         const TensorView& m, float lr, float momentum, float weight_decay,
                         const TensorView& p_out, const TensorView& m_out, float grad_scale) {
  check_cpu(ctx, "sgd_momentum_update");
  check_like(p, p, "sgd_momentum_update", "p");
  check_like(g, p, "sgd_momentum_update", "g");
  check_like(m, p, "sgd_momentum_update", "m");
  check_like(p_out, p, "sgd_momentum_update", "p_out");
  check_like(m_out, p, "sgd_momentum_update", "m_out");
  const float* pp = p.f32();
  const float* gp = g.f32();
  const float* mp = m.f32();
  float* po = p_out.f32();
  float* mo = m_out.f32();
  const int64_t n = p.numel();
#pragma omp parallel for if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) {
    const float param = pp[i];
    const float velocity = momentum * mp[i] + (grad_scale * gp[i] + weight_decay * param);
    mo[i] = velocity;
    po[i] = param - lr * velocity;
  }
}

void adam_update(const KernelContext& ctx, const TensorView& p, const TensorView& g,
                 const TensorView& m, const TensorView& v, const TensorView& step,
                 const AdamParams& hp, const TensorView& p_out, const TensorView& m_out,
                 const TensorView& v_out) {
  check_cpu(ctx, "adam_update");
  check_like(p, p, "adam_update", "p");
  check_like(g, p, "adam_update", "g");
  check_like(m, p, "adam_update", "m");
  check_like(v, p, "adam_update", "v");
  check_like(p_out, p, "adam_update", "p_out");
  check_like(m_out, p, "adam_update", "m_out");
  check_like(v_out, p, "adam_update", "v_out");
  MP_CHECK(step.dtype == DType::kF32 && step.numel() == 1) << "adam_update: step is an f32 scalar";
  const double t = step.f32()[0];
  MP_CHECK(t >= 1.0) << "adam_update: step count " << t << " must be >= 1";
  // Bias corrections in double: 1 - 0.999^t loses most of its digits in float for small t.
  const auto bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta1), t));
  const auto bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta2), t));
  const float b1 = hp.beta1;
  const float b2 = hp.beta2;
  const float decay = hp.lr * hp.weight_decay;
  const float* pp = p.f32();
  const float* gp = g.f32();
  const float* mp = m.f32();
  const float* vp = v.f32();
  float* po = p_out.f32();
  float* mo = m_out.f32();
  float* vo = v_out.f32();
  const int64_t n = p.numel();
#pragma omp parallel for if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) {
    const float grad = hp.grad_scale * gp[i];
    const float param = pp[i];
    const float m1 = b1 * mp[i] + (1.0f - b1) * grad;
    const float v1 = b2 * vp[i] + (1.0f - b2) * grad * grad;
    mo[i] = m1;
    vo[i] = v1;
    po[i] = param - hp.lr * (m1 / bc1) / (std::sqrt(v1 / bc2) + hp.eps) - decay * param;
  }
}

}  // namespace meshpipe::kernels

// CUDA parameter updates (the GPU twins of kernels/optimizer_cpu.cc): SGD, SGD with momentum
// and Adam with decoupled weight decay, one grid-stride kernel each, with the CPU's formulas and
// order of operations. Each view may be f32, f16 or bf16 on its own (mixed precision: f32
// parameters and moments with an f16/bf16 gradient). Every thread reads element i of all inputs
// before writing element i of the outputs, so p' may alias p, m' m and v' v. Adam's step count
// is read on the device (no host synchronisation); its bias corrections are computed in double
// (once per block), as the CPU does once.
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

using K = OpKind;
using Args = KernelArgs;

// p_out = p - lr * (g + weight_decay * p).
__global__ void sgd_kernel(DPtr p, DPtr g, float gs, float lr, float weight_decay, DPtr p_out,
                           int64_t n) {
  MP_CUDA_FOR(i, n) {
    const float param = ld(p, i);
    st(p_out, i, param - lr * (gs * ld(g, i) + weight_decay * param));
  }
}

// m_out = momentum * m + (g + weight_decay * p); p_out = p - lr * m_out.
__global__ void sgd_momentum_kernel(DPtr p, DPtr g, float gs, DPtr m, float lr, float momentum,
                                    float weight_decay, DPtr p_out, DPtr m_out, int64_t n) {
  MP_CUDA_FOR(i, n) {
    const float param = ld(p, i);
    const float velocity = momentum * ld(m, i) + (gs * ld(g, i) + weight_decay * param);
    st(m_out, i, velocity);
    st(p_out, i, param - lr * velocity);
  }
}

struct AdamHp {
  float lr, beta1, beta2, eps, decay;  // decay = lr * weight_decay (rounded in f32, as on the CPU)
  float grad_scale;                    // multiplies the gradient (1 / loss scale)
};

// t = step[0]; m' = b1 m + (1-b1) g; v' = b2 v + (1-b2) g^2;
// p' = p - lr (m' / bc1) / (sqrt(v' / bc2) + eps) - lr wd p, bc = 1 - beta^t.
__global__ void adam_kernel(DPtr p, DPtr g, DPtr m, DPtr v, const float* step, AdamHp hp,
                            DPtr p_out, DPtr m_out, DPtr v_out, int64_t n) {
  // Bias corrections in double (1 - 0.999^t loses most of its digits in float for small t),
  // once per block.
  __shared__ float bc[2];
  if (threadIdx.x == 0) {
    const auto t = static_cast<double>(*step);
    bc[0] = static_cast<float>(1.0 - pow(static_cast<double>(hp.beta1), t));
    bc[1] = static_cast<float>(1.0 - pow(static_cast<double>(hp.beta2), t));
  }
  __syncthreads();
  const float bc1 = bc[0];
  const float bc2 = bc[1];
  const float b1 = hp.beta1;
  const float b2 = hp.beta2;
  MP_CUDA_FOR(i, n) {
    const float grad = hp.grad_scale * ld(g, i);
    const float param = ld(p, i);
    const float m1 = b1 * ld(m, i) + (1.0f - b1) * grad;
    const float v1 = b2 * ld(v, i) + (1.0f - b2) * grad * grad;
    st(m_out, i, m1);
    st(v_out, i, v1);
    st(p_out, i, param - hp.lr * (m1 / bc1) / (sqrtf(v1 / bc2) + hp.eps) - hp.decay * param);
  }
}

// Every operand has the parameter's shape; an output that shares memory with its input also has
// its dtype (index-for-index aliasing needs equal widths).
void check_like(const TensorView& v, const TensorView& p, const char* op, const char* name) {
  MP_CHECK(v.shape == p.shape) << op << ": " << name << " is " << v.shape.to_string()
                               << ", parameter is " << p.shape.to_string();
}

void check_alias(const TensorView& in, const TensorView& out, const char* op) {
  MP_CHECK(in.data != out.data || in.dtype == out.dtype)
      << op << ": an output aliasing an input must have its dtype";
}

template <class... P, class... A>
void launch(GpuState& g, const char* what, int64_t n, void (*kernel)(P...), A&&... args) {
  if (n <= 0) return;
  kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(std::forward<A>(args)...);
  check_launch(g, what);
}

void run_sgd(const Args& a) {
  const char* op = "sgd_update";
  const TensorView& p = a.in[0];
  check_like(a.in[1], p, op, "g");
  check_like(a.out[0], p, op, "p_out");
  check_alias(p, a.out[0], op);
  const int64_t n = p.numel();
  launch(gpu_of(a), op, n, sgd_kernel, dptr(p, op), dptr(a.in[1], op), a.attrs->grad_scale,
         a.attrs->lr, a.attrs->weight_decay, dptr(a.out[0], op), n);
}

void run_sgd_momentum(const Args& a) {
  const char* op = "sgd_momentum_update";
  const TensorView& p = a.in[0];
  check_like(a.in[1], p, op, "g");
  check_like(a.in[2], p, op, "m");
  check_like(a.out[0], p, op, "p_out");
  check_like(a.out[1], p, op, "m_out");
  check_alias(p, a.out[0], op);
  check_alias(a.in[2], a.out[1], op);
  const int64_t n = p.numel();
  launch(gpu_of(a), op, n, sgd_momentum_kernel, dptr(p, op), dptr(a.in[1], op), a.attrs->grad_scale,
         dptr(a.in[2], op), a.attrs->lr, a.attrs->momentum, a.attrs->weight_decay,
         dptr(a.out[0], op), dptr(a.out[1], op), n);
}

void run_adam(const Args& a) {
  const char* op = "adam_update";
  const TensorView& p = a.in[0];
  check_like(a.in[1], p, op, "g");
  check_like(a.in[2], p, op, "m");
  check_like(a.in[3], p, op, "v");
  check_like(a.out[0], p, op, "p_out");
  check_like(a.out[1], p, op, "m_out");
  check_like(a.out[2], p, op, "v_out");
  check_alias(p, a.out[0], op);
  check_alias(a.in[2], a.out[1], op);
  check_alias(a.in[3], a.out[2], op);
  const TensorView& step = a.in[4];
  // The step count must be >= 1 (the CPU checks it on the host; here it stays on the device).
  MP_CHECK(step.dtype == DType::kF32 && step.numel() == 1) << op << ": step is an f32 scalar";
  const OpAttrs& t = *a.attrs;
  const AdamHp hp{t.lr, t.beta1, t.beta2, t.eps, t.lr * t.weight_decay, t.grad_scale};
  const int64_t n = p.numel();
  launch(gpu_of(a), op, n, adam_kernel, dptr(p, op), dptr(a.in[1], op), dptr(a.in[2], op),
         dptr(a.in[3], op), static_cast<const float*>(step.data), hp, dptr(a.out[0], op),
         dptr(a.out[1], op), dptr(a.out[2], op), n);
}

}  // namespace

std::vector<CudaRow> cuda_optimizer_rows() {
  return {
      {K::kSgdUpdate, {run_sgd, nullptr, {0b1, 0, 0}}},
      // p -> p', m -> m'
      {K::kSgdMomentumUpdate, {run_sgd_momentum, nullptr, {0b1, 0b100, 0}}},
      // p -> p', m -> m', v -> v'
      {K::kAdamUpdate, {run_adam, nullptr, {0b1, 0b100, 0b1000}}},
  };
}

}  // namespace meshpipe::kernels::internal

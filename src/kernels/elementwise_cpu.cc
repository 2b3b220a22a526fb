// CPU elementwise kernels: one pass over contiguous f32 data, split across threads when large.
#include <array>
#include <cmath>
#include <cstring>

#include "kernels/elementwise.h"
#include "kernels/internal/cpu_common.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kMaxRank;
using internal::kParallelElems;

// sqrt(2/pi) and the cubic coefficient of PyTorch's tanh-approximated GELU.
constexpr float kGeluScale = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// exp(x) for float without branches or library calls, so loops that use it vectorise (glibc's
// expf and tanhf do not without -ffast-math, and scalar tanhf dominated GELU). Cody-Waite
// reduction x = n ln2 + r with |r| <= ln2/2, a degree-6 Taylor polynomial (truncation error
// r^7/7! < 1.3e-7 relative), and 2^n built in the exponent bits. Inputs are clamped to
// [-87, 88] so 2^n stays a normal float; callers only need exp up to that range.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick (exact for |.| < 2^22).
  const float kRound = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  const float p =
      1.0f +
      r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r / 720)))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Phi(x) = 0.5 (1 + erf(x / sqrt 2)) and the normal density, in double for f32 accuracy.
inline float normal_cdf(float x) {
  return static_cast<float>(0.5 * (1.0 + std::erf(static_cast<double>(x) * 0.7071067811865476)));
}
inline float normal_pdf(float x) {
  const double v = static_cast<double>(x);
  return static_cast<float>(0.3989422804014327 * std::exp(-0.5 * v * v));
}

// 0.5 (1 + tanh u) = sigmoid(2u): GELU's gate without tanh.
inline float gelu_gate(float v) {
  const float u = kGeluScale * (v + kGeluCubic * v * v * v);
  return 1.0f / (1.0f + exp_approx(-2.0f * u));
}

void check_same_f32(const TensorView& a, const TensorView& b, const char* op) {
  MP_CHECK(a.dtype == DType::kF32 && b.dtype == DType::kF32) << op << ": needs f32";
  MP_CHECK(a.shape == b.shape) << op << ": shapes differ, " << a.shape.to_string() << " vs "
                               << b.shape.to_string();
  MP_CHECK(a.is_contiguous() && b.is_contiguous()) << op << ": needs contiguous views";
}

}  // namespace

void binary(const KernelContext& ctx, BinaryOp op, const TensorView& a, const TensorView& b,
            const TensorView& out) {
  check_cpu(ctx, "binary");
  check_same_f32(a, b, "binary");
  check_same_f32(a, out, "binary");
  const float* x = a.f32();
  const float* y = b.f32();
  float* z = out.f32();
  const int64_t n = out.numel();
  // One loop per op keeps the switch out of the inner loop so each vectorises.
  switch (op) {
    case BinaryOp::kAdd:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) z[i] = x[i] + y[i];
      break;
    case BinaryOp::kSub:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) z[i] = x[i] - y[i];
      break;
    case BinaryOp::kMul:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) z[i] = x[i] * y[i];
      break;
    case BinaryOp::kDiv:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) z[i] = x[i] / y[i];
      break;
  }
}

void unary(const KernelContext& ctx, UnaryOp op, const TensorView& x, const TensorView& out) {
  check_cpu(ctx, "unary");
  check_same_f32(x, out, "unary");
  const float* in = x.f32();
  float* y = out.f32();
  const int64_t n = out.numel();
  switch (op) {
    case UnaryOp::kRelu:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) y[i] = in[i] > 0.0f ? in[i] : 0.0f;
      break;
    case UnaryOp::kGelu:
#pragma omp parallel for simd if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) y[i] = in[i] * gelu_gate(in[i]);
      break;
    case UnaryOp::kTanh:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(in[i]);
      break;
    case UnaryOp::kGeluErf:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) y[i] = in[i] * normal_cdf(in[i]);
      break;
  }
}

void unary_grad(const KernelContext& ctx, UnaryOp op, const TensorView& saved, const TensorView& dy,
                const TensorView& dx) {
  check_cpu(ctx, "unary_grad");
  check_same_f32(saved, dy, "unary_grad");
  check_same_f32(saved, dx, "unary_grad");
  const float* s = saved.f32();
  const float* g = dy.f32();
  float* out = dx.f32();
  const int64_t n = dx.numel();
  switch (op) {
    case UnaryOp::kRelu:
      // relu(x) > 0 exactly where x > 0, so the output alone decides the mask.
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) out[i] = s[i] > 0.0f ? g[i] : 0.0f;
      break;
    case UnaryOp::kGelu:
      // With s = sigmoid(2u) = 0.5 (1 + tanh u), u = c (x + a x^3):
      // d/dx [x s] = s + x * 2 s (1 - s) * c (1 + 3 a x^2).
#pragma omp parallel for simd if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) {
        const float v = s[i];
        const float gate = gelu_gate(v);
        const float du = kGeluScale * (1.0f + 3.0f * kGeluCubic * v * v);
        out[i] = g[i] * (gate + 2.0f * v * gate * (1.0f - gate) * du);
      }
      break;
    case UnaryOp::kTanh:
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) out[i] = g[i] * (1.0f - s[i] * s[i]);
      break;
    case UnaryOp::kGeluErf:
      // d/dx [x Phi(x)] = Phi(x) + x phi(x).
#pragma omp parallel for if (n > kParallelElems)
      for (int64_t i = 0; i < n; ++i) out[i] = g[i] * (normal_cdf(s[i]) + s[i] * normal_pdf(s[i]));
      break;
  }
}

void affine_scalar(const KernelContext& ctx, const TensorView& x, float alpha, float beta,
                   const TensorView& out) {
  check_cpu(ctx, "affine_scalar");
  check_same_f32(x, out, "affine_scalar");
  const float* in = x.f32();
  float* y = out.f32();
  const int64_t n = out.numel();
#pragma omp parallel for if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * in[i] + beta;
}

void fill(const KernelContext& ctx, const TensorView& out, float value) {
  check_cpu(ctx, "fill");
  MP_CHECK(out.is_contiguous()) << "fill: needs a contiguous view";
  const int64_t n = out.numel();
  if (out.dtype == DType::kI32) {
    int32_t* y = out.i32();
    const auto v = static_cast<int32_t>(value);
#pragma omp parallel for if (n > kParallelElems)
    for (int64_t i = 0; i < n; ++i) y[i] = v;
    return;
  }
  float* y = out.f32();
#pragma omp parallel for if (n > kParallelElems)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

void bias_add(const KernelContext& ctx, const TensorView& x, const TensorView& b,
              const std::vector<int64_t>& dims, const TensorView& out) {
  check_cpu(ctx, "bias_add");
  check_same_f32(x, out, "bias_add");
  MP_CHECK(b.dtype == DType::kF32 && b.is_contiguous()) << "bias_add: b must be contiguous f32";
  const int64_t rank = x.shape.rank();
  MP_CHECK(rank <= kMaxRank) << "bias_add supports rank <= " << kMaxRank;
  MP_CHECK(static_cast<int64_t>(dims.size()) == b.shape.rank())
      << "bias_add: " << dims.size() << " dims for a bias of rank " << b.shape.rank();
  // b's stride seen from each of x's dims; zero where the bias is broadcast.
  std::array<int64_t, kMaxRank> bstride{};
  std::array<int64_t, kMaxRank> xdims{};
  for (int64_t d = 0; d < rank; ++d) xdims[static_cast<size_t>(d)] = x.shape[d];
  const std::vector<int64_t> b_strides = b.shape.strides();
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = dims[i];
    MP_CHECK(d >= 0 && d < rank && (i == 0 || d > dims[i - 1]))
        << "bias_add: dims must be strictly increasing and within rank " << rank;
    MP_CHECK(x.shape[d] == b.shape[static_cast<int64_t>(i)])
        << "bias_add: bias dim " << i << " has " << b.shape[static_cast<int64_t>(i)] << ", x dim "
        << d << " has " << x.shape[d];
    bstride[static_cast<size_t>(d)] = b_strides[i];
  }
  const float* in = x.f32();
  const float* bias = b.f32();
  float* y = out.f32();
  const int64_t cols = rank > 0 ? x.shape[rank - 1] : 1;
  const int64_t col_stride = rank > 0 ? bstride[static_cast<size_t>(rank - 1)] : 0;
  const int64_t rows = x.numel() / cols;
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r;
    int64_t boff = 0;
    for (int64_t d = rank - 2; d >= 0; --d) {
      const auto u = static_cast<size_t>(d);
      boff += (rest % xdims[u]) * bstride[u];
      rest /= xdims[u];
    }
    const float* xr = in + r * cols;
    float* yr = y + r * cols;
    const float* br = bias + boff;
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] + br[c * col_stride];
  }
}

void copy(const KernelContext& ctx, const TensorView& x, const TensorView& out) {
  check_cpu(ctx, "copy");
  MP_CHECK(x.shape == out.shape && x.bytes() == out.bytes())
      << "copy: " << x.shape.to_string() << " into " << out.shape.to_string();
  MP_CHECK(x.is_contiguous() && out.is_contiguous()) << "copy: needs contiguous views";
  if (x.data == out.data || x.bytes() == 0) return;
  std::memmove(out.data, x.data, static_cast<size_t>(x.bytes()));
}

}  // namespace meshpipe::kernels

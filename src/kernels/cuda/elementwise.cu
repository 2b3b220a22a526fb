// CUDA elementwise kernels (the GPU twins of kernels/elementwise_cpu.cc): binary arithmetic,
// the scalar affine map, bias add, relu/gelu/tanh and their gradients, and constant fill. One
// grid-stride kernel per op over contiguous views; each floating view may be f32, f16 or bf16
// independently (loaded to f32, computed in f32, rounded on store). Every thread reads element i
// of each input before writing element i of the output, so outputs may alias inputs of the same
// dtype (the in-place flags match the CPU rows).
#include <array>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

using K = OpKind;
using Args = KernelArgs;

constexpr std::array<uint8_t, 3> kOut0OnIn0 = {0b1, 0, 0};
constexpr std::array<uint8_t, 3> kOut0OnIn0Or1 = {0b11, 0, 0};

// sqrt(2/pi) and the cubic coefficient of the tanh-approximated GELU (as on the CPU).
constexpr float kGeluScale = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// exp with the CPU's input clamp to [-87, 88] (kernels/elementwise_cpu.cc exp_approx), so the
// GELU gate saturates the same way; NaN passes through as it does there.
__device__ __forceinline__ float exp_clamped(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  return expf(x);
}

// 0.5 (1 + tanh u) = sigmoid(2u), u = c (v + a v^3): GELU's gate, evaluated as on the CPU.
__device__ __forceinline__ float gelu_gate(float v) {
  const float u = kGeluScale * (v + kGeluCubic * v * v * v);
  return 1.0f / (1.0f + exp_clamped(-2.0f * u));
}

enum class Bin : uint8_t { kAdd, kSub, kMul, kDiv };
enum class Act : uint8_t { kRelu, kGelu, kTanh, kGeluErf };

template <Bin op>
__global__ void binary_kernel(DPtr a, DPtr b, DPtr out, int64_t n) {
  MP_CUDA_FOR(i, n) {
    const float x = ld(a, i);
    const float y = ld(b, i);
    float z;
    if constexpr (op == Bin::kAdd) {
      z = x + y;
    } else if constexpr (op == Bin::kSub) {
      z = x - y;
    } else if constexpr (op == Bin::kMul) {
      z = x * y;
    } else {
      z = x / y;
    }
    st(out, i, z);
  }
}

template <Act op>
__global__ void unary_kernel(DPtr x, DPtr out, int64_t n) {
  MP_CUDA_FOR(i, n) {
    const float v = ld(x, i);
    float y;
    if constexpr (op == Act::kRelu) {
      y = v > 0.0f ? v : 0.0f;
    } else if constexpr (op == Act::kGelu) {
      y = v * gelu_gate(v);
    } else if constexpr (op == Act::kGeluErf) {
      y = v * normcdff(v);
    } else {
      y = tanhf(v);
    }
    st(out, i, y);
  }
}

// dx = f'(.) * dy; `saved` is y for relu and tanh, x for gelu (kernels/elementwise.h).
template <Act op>
__global__ void unary_grad_kernel(DPtr saved, DPtr dy, DPtr dx, int64_t n) {
  MP_CUDA_FOR(i, n) {
    const float s = ld(saved, i);
    const float g = ld(dy, i);
    float r;
    if constexpr (op == Act::kRelu) {
      r = s > 0.0f ? g : 0.0f;  // relu(x) > 0 exactly where x > 0; 0 at x = 0
    } else if constexpr (op == Act::kGelu) {
      // d/dx [x s(x)] = s + x * 2 s (1 - s) * c (1 + 3 a x^2), s = sigmoid(2u).
      const float gate = gelu_gate(s);
      const float du = kGeluScale * (1.0f + 3.0f * kGeluCubic * s * s);
      r = g * (gate + 2.0f * s * gate * (1.0f - gate) * du);
    } else if constexpr (op == Act::kGeluErf) {
      // d/dx [x Phi(x)] = Phi(x) + x phi(x).
      r = g * (normcdff(s) + s * 0.3989422804014327f * expf(-0.5f * s * s));
    } else {
      r = g * (1.0f - s * s);
    }
    st(dx, i, r);
  }
}

__global__ void affine_kernel(DPtr x, float alpha, float beta, DPtr out, int64_t n) {
  MP_CUDA_FOR(i, n) st(out, i, alpha * ld(x, i) + beta);
}

__global__ void fill_float_kernel(DPtr out, float value, int64_t n) {
  MP_CUDA_FOR(i, n) st(out, i, value);
}

__global__ void fill_i32_kernel(int32_t* out, int32_t value, int64_t n) {
  MP_CUDA_FOR(i, n) out[i] = value;
}

// Where the bias is read from for an element of x: one entry per run of bias dims that are
// adjacent in x (merged), each with x's size of the run, the product of x's dims inside it
// (inner), and the bias stride of its innermost dim.
struct BiasMap {
  int64_t size[kCudaMaxRank] = {};
  int64_t inner[kCudaMaxRank] = {};
  int64_t stride[kCudaMaxRank] = {};
  int n = 0;
};

// Index arithmetic in IndexT: 32-bit when the element count allows (divisions are the cost).
template <class IndexT>
__global__ void bias_add_kernel(DPtr x, DPtr b, BiasMap map, DPtr out, int64_t n) {
  MP_CUDA_FOR(i, n) {
    const auto j = static_cast<IndexT>(i);
    int64_t off = 0;
    for (int k = 0; k < map.n; ++k) {
      const IndexT q = j / static_cast<IndexT>(map.inner[k]);
      const IndexT size = static_cast<IndexT>(map.size[k]);
      off += static_cast<int64_t>(q % size) * map.stride[k];
    }
    st(out, i, ld(x, i) + ld(b, off));
  }
}

// Launches kernel<<<grid for n, kThreads>>> on the stream and records a launch failure;
// nothing runs for n == 0.
template <class... P, class... A>
void launch(GpuState& g, const char* what, int64_t n, void (*kernel)(P...), A&&... args) {
  if (n <= 0) return;
  kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(std::forward<A>(args)...);
  check_launch(g, what);
}

void check_same_shape(const TensorView& a, const TensorView& b, const char* op) {
  MP_CHECK(a.shape == b.shape) << op << ": shapes differ, " << a.shape.to_string() << " vs "
                               << b.shape.to_string();
}

// An output that shares memory with an input must have its dtype (elementwise aliasing is only
// index-for-index when the element widths agree).
void check_alias(const TensorView& in, const TensorView& out, const char* op) {
  MP_CHECK(in.data != out.data || in.dtype == out.dtype)
      << op << ": an output aliasing an input must have its dtype";
}

template <Bin op>
void run_binary(const Args& a) {
  static constexpr const char* kName[] = {"add", "sub", "mul", "div"};
  const char* name = kName[static_cast<int>(op)];
  check_same_shape(a.in[0], a.in[1], name);
  check_same_shape(a.in[0], a.out[0], name);
  check_alias(a.in[0], a.out[0], name);
  check_alias(a.in[1], a.out[0], name);
  launch(gpu_of(a), name, a.out[0].numel(), binary_kernel<op>, dptr(a.in[0], name),
         dptr(a.in[1], name), dptr(a.out[0], name), a.out[0].numel());
}

template <Act op>
void run_unary(const Args& a) {
  static constexpr const char* kName[] = {"relu", "gelu", "tanh"};
  const char* name = kName[static_cast<int>(op)];
  check_same_shape(a.in[0], a.out[0], name);
  check_alias(a.in[0], a.out[0], name);
  launch(gpu_of(a), name, a.out[0].numel(), unary_kernel<op>, dptr(a.in[0], name),
         dptr(a.out[0], name), a.out[0].numel());
}

template <Act op>
void run_unary_grad(const Args& a) {
  static constexpr const char* kName[] = {"relu_grad", "gelu_grad", "tanh_grad"};
  const char* name = kName[static_cast<int>(op)];
  check_same_shape(a.in[0], a.in[1], name);
  check_same_shape(a.in[0], a.out[0], name);
  launch(gpu_of(a), name, a.out[0].numel(), unary_grad_kernel<op>, dptr(a.in[0], name),
         dptr(a.in[1], name), dptr(a.out[0], name), a.out[0].numel());
}

void run_scale(const Args& a) {
  check_same_shape(a.in[0], a.out[0], "scale");
  check_alias(a.in[0], a.out[0], "scale");
  launch(gpu_of(a), "scale", a.out[0].numel(), affine_kernel, dptr(a.in[0], "scale"),
         a.attrs->alpha, a.attrs->beta, dptr(a.out[0], "scale"), a.out[0].numel());
}

// Every element set to attrs.alpha: floating outputs round it to their dtype, i32 outputs take
// static_cast<int32_t> (truncation), as the CPU fill does.
void run_constant(const Args& a) {
  const TensorView& out = a.out[0];
  const int64_t n = out.numel();
  GpuState& g = gpu_of(a);
  if (out.dtype == DType::kI32) {
    MP_CHECK(out.is_contiguous()) << "constant: needs a contiguous view";
    launch(g, "constant", n, fill_i32_kernel, static_cast<int32_t*>(out.data),
           static_cast<int32_t>(a.attrs->alpha), n);
    return;
  }
  launch(g, "constant", n, fill_float_kernel, dptr(out, "constant"), a.attrs->alpha, n);
}

void run_bias_add(const Args& a) {
  const TensorView& x = a.in[0];
  const TensorView& b = a.in[1];
  const TensorView& out = a.out[0];
  const std::vector<int64_t>& dims = a.attrs->axes;
  check_same_shape(x, out, "bias_add");
  check_alias(x, out, "bias_add");
  const int64_t rank = x.shape.rank();
  MP_CHECK(rank <= kCudaMaxRank) << "bias_add supports rank <= " << kCudaMaxRank;
  MP_CHECK(static_cast<int64_t>(dims.size()) == b.shape.rank())
      << "bias_add: " << dims.size() << " dims for a bias of rank " << b.shape.rank();
  const std::vector<int64_t> x_strides = x.shape.strides();
  const std::vector<int64_t> b_strides = b.shape.strides();
  BiasMap map;
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = dims[i];
    MP_CHECK(d >= 0 && d < rank && (i == 0 || d > dims[i - 1]))
        << "bias_add: dims must be strictly increasing and within rank " << rank;
    MP_CHECK(x.shape[d] == b.shape[static_cast<int64_t>(i)])
        << "bias_add: bias dim " << i << " has " << b.shape[static_cast<int64_t>(i)] << ", x dim "
        << d << " has " << x.shape[d];
    const int64_t size = x.shape[d];
    if (size == 1) continue;  // contributes nothing to the offset
    // Bias dims adjacent in x are also adjacent (and contiguous) in b: one run.
    if (map.n > 0 && i > 0 && dims[i - 1] == d - 1 && x.shape[d - 1] != 1) {
      map.size[map.n - 1] *= size;
      map.inner[map.n - 1] = x_strides[static_cast<size_t>(d)];
      map.stride[map.n - 1] = b_strides[i];
      continue;
    }
    map.size[map.n] = size;
    map.inner[map.n] = x_strides[static_cast<size_t>(d)];
    map.stride[map.n] = b_strides[i];
    ++map.n;
  }
  const int64_t n = out.numel();
  const DPtr xp = dptr(x, "bias_add");
  const DPtr bp = dptr(b, "bias_add");
  const DPtr op = dptr(out, "bias_add");
  GpuState& g = gpu_of(a);
  if (n <= std::numeric_limits<int32_t>::max()) {
    launch(g, "bias_add", n, bias_add_kernel<uint32_t>, xp, bp, map, op, n);
  } else {
    launch(g, "bias_add", n, bias_add_kernel<int64_t>, xp, bp, map, op, n);
  }
}

}  // namespace

std::vector<CudaRow> cuda_elementwise_rows() {
  return {
      {K::kAdd, {run_binary<Bin::kAdd>, nullptr, kOut0OnIn0Or1}},
      {K::kSub, {run_binary<Bin::kSub>, nullptr, kOut0OnIn0Or1}},
      {K::kMul, {run_binary<Bin::kMul>, nullptr, kOut0OnIn0Or1}},
      {K::kDiv, {run_binary<Bin::kDiv>, nullptr, kOut0OnIn0Or1}},
      {K::kScale, {run_scale, nullptr, kOut0OnIn0}},
      {K::kBiasAdd, {run_bias_add, nullptr, kOut0OnIn0}},
      {K::kRelu, {run_unary<Act::kRelu>, nullptr, kOut0OnIn0}},
      {K::kGelu, {run_unary<Act::kGelu>, nullptr, kOut0OnIn0}},
      {K::kGeluErf, {run_unary<Act::kGeluErf>, nullptr, kOut0OnIn0}},
      {K::kTanh, {run_unary<Act::kTanh>, nullptr, kOut0OnIn0}},
      {K::kReluGrad, {run_unary_grad<Act::kRelu>}},
      {K::kGeluGrad, {run_unary_grad<Act::kGelu>}},
      {K::kGeluErfGrad, {run_unary_grad<Act::kGeluErf>}},
      {K::kTanhGrad, {run_unary_grad<Act::kTanh>}},
      {K::kConstant, {run_constant}},
  };
}

}  // namespace meshpipe::kernels::internal

// CUDA rows of kConv2d, kConv2dGradInput and kConv2dGradFilter (NCHW activations, OIHW weights,
// cross-correlation with zero padding, no dilation or groups, as the CPU twin in conv_cpu.cc)
// on cuDNN's legacy convolution API with f32 compute (FMA math for f32 so no TF32, tensor-op
// math for f16/bf16 storage). The algorithm is cuDNN's heuristic choice whose scratch fits the
// device's library workspace; descriptors and choices are cached per shape. Operands of
// different dtypes, and problems cuDNN declines, run on direct kernels with f32 accumulation.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

constexpr const char* kConvFwd = "conv2d";
constexpr const char* kConvGradInput = "conv2d_grad_input";
constexpr const char* kConvGradFilter = "conv2d_grad_filter";

// Sizes of one convolution: x [n, c, h, w], weight [k, c, r, s], y [n, k, ho, wo].
struct ConvGeom {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t k = 0, r = 0, s = 0;
  int64_t ho = 0, wo = 0;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0;

  int64_t x_numel() const { return n * c * h * w; }
  int64_t w_numel() const { return k * c * r * s; }
  int64_t y_numel() const { return n * k * ho * wo; }
};

// Output size of a window as core/op_geometry.h's window_output_size (not visible to nvcc).
int64_t window_out(int64_t in, int64_t kernel, int64_t stride, int64_t pad, const char* op) {
  MP_CHECK(kernel > 0 && stride > 0 && pad >= 0 && in + 2 * pad - kernel >= 0)
      << op << ": window of size " << kernel << ", stride " << stride << ", padding " << pad
      << " does not fit input of size " << in;
  return (in + 2 * pad - kernel) / stride + 1;
}

// The geometry of x (or dx) and weight (or dweight) under `win`, checked as the CPU does.
ConvGeom conv_geometry(const Shape& x, const Shape& weight, const Window2d& win, const char* op) {
  MP_CHECK(x.rank() == 4 && weight.rank() == 4)
      << op << ": x must be [N, C, H, W] and weight [K, C, R, S], got " << x.to_string() << ", "
      << weight.to_string();
  MP_CHECK(weight[1] == x[1]) << op << ": weight has " << weight[1] << " input channels, x has "
                              << x[1];
  MP_CHECK(weight[2] == win.kernel_h && weight[3] == win.kernel_w)
      << op << ": weight " << weight.to_string() << " does not match a " << win.kernel_h << "x"
      << win.kernel_w << " window";
  ConvGeom g;
  g.n = x[0];
  g.c = x[1];
  g.h = x[2];
  g.w = x[3];
  g.k = weight[0];
  g.r = weight[2];
  g.s = weight[3];
  g.sh = win.stride_h;
  g.sw = win.stride_w;
  g.ph = win.pad_h;
  g.pw = win.pad_w;
  g.ho = window_out(g.h, g.r, g.sh, g.ph, op);
  g.wo = window_out(g.w, g.s, g.sw, g.pw, op);
  return g;
}

void check_shape(const TensorView& v, const Shape& expected, const char* op, const char* what) {
  MP_CHECK(v.shape == expected) << op << ": " << what << " is " << v.shape.to_string()
                                << ", expected " << expected.to_string();
}

// ---------------------------------------------------------------------------------------------
// Direct kernels (any dtype mix; the sums of conv_cpu.cc, accumulated in f32)

struct DeviceLoad {
  DPtr p;
  __device__ float operator()(int64_t i) const { return ld(p, i); }
};

// y[n, k, oh, ow] = sum_{c, r, s} x[n, c, oh*sh - ph + r, ow*sw - pw + s] * w[k, c, r, s], the
// x terms outside the image being zero; e indexes y.
template <class LoadX, class LoadW>
__host__ __device__ float conv_forward_at(const ConvGeom& g, int64_t e, const LoadX& x,
                                          const LoadW& w) {
  const int64_t ow = e % g.wo;
  const int64_t oh = (e / g.wo) % g.ho;
  const int64_t k = (e / (g.wo * g.ho)) % g.k;
  const int64_t n = e / (g.wo * g.ho * g.k);
  float acc = 0.f;
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t r = 0; r < g.r; ++r) {
      const int64_t ih = oh * g.sh - g.ph + r;
      if (ih < 0 || ih >= g.h) continue;
      for (int64_t s = 0; s < g.s; ++s) {
        const int64_t iw = ow * g.sw - g.pw + s;
        if (iw < 0 || iw >= g.w) continue;
        acc += x(((n * g.c + c) * g.h + ih) * g.w + iw) * w(((k * g.c + c) * g.r + r) * g.s + s);
      }
    }
  }
  return acc;
}

// dx[n, c, ih, iw] = sum over (k, r, s) and the output positions (oh, ow) whose window puts
// tap (r, s) on (ih, iw) -- ih = oh*sh - ph + r, iw = ow*sw - pw + s -- of dy[n, k, oh, ow] *
// w[k, c, r, s]; e indexes dx.
template <class LoadDy, class LoadW>
__host__ __device__ float conv_grad_input_at(const ConvGeom& g, int64_t e, const LoadDy& dy,
                                             const LoadW& w) {
  const int64_t iw = e % g.w;
  const int64_t ih = (e / g.w) % g.h;
  const int64_t c = (e / (g.w * g.h)) % g.c;
  const int64_t n = e / (g.w * g.h * g.c);
  float acc = 0.f;
  for (int64_t r = 0; r < g.r; ++r) {
    const int64_t th = ih + g.ph - r;
    if (th < 0 || th % g.sh != 0 || th / g.sh >= g.ho) continue;
    const int64_t oh = th / g.sh;
    for (int64_t s = 0; s < g.s; ++s) {
      const int64_t tw = iw + g.pw - s;
      if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.wo) continue;
      const int64_t ow = tw / g.sw;
      for (int64_t k = 0; k < g.k; ++k) {
        acc += dy(((n * g.k + k) * g.ho + oh) * g.wo + ow) * w(((k * g.c + c) * g.r + r) * g.s + s);
      }
    }
  }
  return acc;
}

// Part of dw[k, c, r, s] = sum_{n, oh, ow} dy[n, k, oh, ow] * x[n, c, oh*sh - ph + r,
// ow*sw - pw + s]: the terms j = first, first + step, ... of the flattened (n, oh, ow); e
// indexes dw.
template <class LoadX, class LoadDy>
__host__ __device__ float conv_grad_filter_part(const ConvGeom& g, int64_t e, int64_t first,
                                                int64_t step, const LoadX& x, const LoadDy& dy) {
  const int64_t s = e % g.s;
  const int64_t r = (e / g.s) % g.r;
  const int64_t c = (e / (g.s * g.r)) % g.c;
  const int64_t k = e / (g.s * g.r * g.c);
  const int64_t terms = g.n * g.ho * g.wo;
  float acc = 0.f;
  for (int64_t j = first; j < terms; j += step) {
    const int64_t ow = j % g.wo;
    const int64_t oh = (j / g.wo) % g.ho;
    const int64_t n = j / (g.wo * g.ho);
    const int64_t ih = oh * g.sh - g.ph + r;
    const int64_t iw = ow * g.sw - g.pw + s;
    if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
    acc += dy(((n * g.k + k) * g.ho + oh) * g.wo + ow) * x(((n * g.c + c) * g.h + ih) * g.w + iw);
  }
  return acc;
}

__global__ void conv_forward_kernel(DPtr x, DPtr w, DPtr y, ConvGeom g, int64_t total) {
  MP_CUDA_FOR(e, total) { st(y, e, conv_forward_at(g, e, DeviceLoad{x}, DeviceLoad{w})); }
}

__global__ void conv_grad_input_kernel(DPtr dy, DPtr w, DPtr dx, ConvGeom g, int64_t total) {
  MP_CUDA_FOR(e, total) { st(dx, e, conv_grad_input_at(g, e, DeviceLoad{dy}, DeviceLoad{w})); }
}

// One block per dw element (grid-stride), its threads splitting the sum, reduced by block_sum.
__global__ void conv_grad_filter_kernel(DPtr x, DPtr dy, DPtr dw, ConvGeom g, int64_t total) {
  __shared__ float scratch[32];
  for (int64_t e = blockIdx.x; e < total; e += gridDim.x) {
    const float part =
        conv_grad_filter_part(g, e, threadIdx.x, blockDim.x, DeviceLoad{x}, DeviceLoad{dy});
    const float sum = block_sum(part, scratch);
    if (threadIdx.x == 0) st(dw, e, sum);
  }
}

enum class ConvDir : int { kForward = 0, kGradInput = 1, kGradFilter = 2 };

const char* dir_name(ConvDir d) {
  switch (d) {
    case ConvDir::kForward:
      return kConvFwd;
    case ConvDir::kGradInput:
      return kConvGradInput;
    default:
      return kConvGradFilter;
  }
}

// Runs the direct kernel of `dir`: a, b are the inputs in the kind's order.
void run_direct(GpuState& g, ConvDir dir, const ConvGeom& geom, const DPtr& a, const DPtr& b,
                const DPtr& out) {
  switch (dir) {
    case ConvDir::kForward: {
      const int64_t total = geom.y_numel();
      conv_forward_kernel<<<blocks_for(g, total), kThreads, 0, g.stream>>>(a, b, out, geom, total);
      break;
    }
    case ConvDir::kGradInput: {
      const int64_t total = geom.x_numel();
      conv_grad_input_kernel<<<blocks_for(g, total), kThreads, 0, g.stream>>>(a, b, out, geom,
                                                                              total);
      break;
    }
    case ConvDir::kGradFilter: {
      const int64_t total = geom.w_numel();
      const int64_t cap = static_cast<int64_t>(g.multiprocessors > 0 ? g.multiprocessors : 108) * 8;
      const auto blocks = static_cast<unsigned>(total < cap ? total : cap);
      conv_grad_filter_kernel<<<blocks, kThreads, 0, g.stream>>>(a, b, out, geom, total);
      break;
    }
  }
  check_launch(g, dir_name(dir));
}

// ---------------------------------------------------------------------------------------------
// cuDNN (the legacy convolution API, which cuDNN 9 marks deprecated when CUDNN_WARN_DEPRECATED
// is defined: those warnings are silenced for this part only)

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
#pragma nv_diag_suppress 1215, 1444

struct ConvKey {
  int ordinal = 0;
  int64_t workspace_bytes = 0;
  ConvDir dir = ConvDir::kForward;
  DType t = DType::kF32;
  int64_t n = 0, c = 0, h = 0, w = 0, k = 0, r = 0, s = 0, sh = 0, sw = 0, ph = 0, pw = 0;

  auto tie() const {
    return std::tie(ordinal, workspace_bytes, dir, t, n, c, h, w, k, r, s, sh, sw, ph, pw);
  }
  bool operator<(const ConvKey& o) const { return tie() < o.tie(); }
};

// Descriptors of one problem and the algorithm chosen (an int of the direction's algorithm
// enum); `ok` is false when cuDNN declined it (the direct kernel runs instead).
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr;
  cudnnTensorDescriptor_t y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = 0;
  size_t workspace = 0;
  bool ok = false;

  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (conv != nullptr) cudnnDestroyConvolutionDescriptor(conv);
    if (w != nullptr) cudnnDestroyFilterDescriptor(w);
    if (y != nullptr) cudnnDestroyTensorDescriptor(y);
    if (x != nullptr) cudnnDestroyTensorDescriptor(x);
  }
};

cudnnDataType_t dnn_type(DType t) {
  switch (t) {
    case DType::kF16:
      return CUDNN_DATA_HALF;
    case DType::kBF16:
      return CUDNN_DATA_BFLOAT16;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

bool dnn_ok(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS; }

// The first heuristic candidate that succeeded, is deterministic and whose scratch fits
// `limit`; `size_of` returns its workspace size (false when that query fails). Deterministic
// only (kernels/README.md): the heuristic often ranks the atomic-add algorithms first (backward
// data and filter algo 0, filter algo 3), whose sums change from run to run; without a
// deterministic candidate the direct kernel runs.
template <class Perf, class SizeOf>
bool pick_algo(const Perf* perf, int count, size_t limit, SizeOf size_of, ConvPlan& plan) {
  for (int i = 0; i < count; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    size_t bytes = 0;
    if (!size_of(perf[i].algo, bytes) || bytes > limit) continue;
    plan.algo = static_cast<int>(perf[i].algo);
    plan.workspace = bytes;
    return true;
  }
  return false;
}

// Builds the descriptors of `key` (with key.n images) and picks the algorithm. Host-only calls.
std::shared_ptr<const ConvPlan> make_conv_plan(cudnnHandle_t handle, const ConvKey& key, int64_t ho,
                                               int64_t wo) {
  auto plan = std::make_shared<ConvPlan>();
  auto i32 = [](int64_t v) { return static_cast<int>(v); };
  const cudnnDataType_t t = dnn_type(key.t);
  if (!dnn_ok(cudnnCreateTensorDescriptor(&plan->x))) plan->x = nullptr;
  if (!dnn_ok(cudnnCreateTensorDescriptor(&plan->y))) plan->y = nullptr;
  if (!dnn_ok(cudnnCreateFilterDescriptor(&plan->w))) plan->w = nullptr;
  if (!dnn_ok(cudnnCreateConvolutionDescriptor(&plan->conv))) plan->conv = nullptr;
  if (plan->x == nullptr || plan->y == nullptr || plan->w == nullptr || plan->conv == nullptr) {
    return plan;
  }
  const cudnnMathType_t math = key.t == DType::kF32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  if (!dnn_ok(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, t, i32(key.n), i32(key.c),
                                         i32(key.h), i32(key.w))) ||
      !dnn_ok(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, t, i32(key.n), i32(key.k),
                                         i32(ho), i32(wo))) ||
      !dnn_ok(cudnnSetFilter4dDescriptor(plan->w, t, CUDNN_TENSOR_NCHW, i32(key.k), i32(key.c),
                                         i32(key.r), i32(key.s))) ||
      !dnn_ok(cudnnSetConvolution2dDescriptor(plan->conv, i32(key.ph), i32(key.pw), i32(key.sh),
                                              i32(key.sw), 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT)) ||
      !dnn_ok(cudnnSetConvolutionMathType(plan->conv, math))) {
    return plan;
  }
  // cuDNN must agree on the output size.
  int on = 0, oc = 0, oh = 0, ow = 0;
  if (!dnn_ok(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &on, &oc, &oh,
                                                    &ow)) ||
      on != key.n || oc != key.k || oh != ho || ow != wo) {
    return plan;
  }
  const auto limit = static_cast<size_t>(key.workspace_bytes);
  switch (key.dir) {
    case ConvDir::kForward: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int count = 0;
      if (!dnn_ok(cudnnGetConvolutionForwardAlgorithm_v7(handle, plan->x, plan->w, plan->conv,
                                                         plan->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                         &count, perf))) {
        return plan;
      }
      plan->ok = pick_algo(
          perf, count, limit,
          [&](cudnnConvolutionFwdAlgo_t a, size_t& bytes) {
            return dnn_ok(cudnnGetConvolutionForwardWorkspaceSize(handle, plan->x, plan->w,
                                                                  plan->conv, plan->y, a, &bytes));
          },
          *plan);
      break;
    }
    case ConvDir::kGradInput: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int count = 0;
      if (!dnn_ok(cudnnGetConvolutionBackwardDataAlgorithm_v7(
              handle, plan->w, plan->y, plan->conv, plan->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
              &count, perf))) {
        return plan;
      }
      plan->ok = pick_algo(
          perf, count, limit,
          [&](cudnnConvolutionBwdDataAlgo_t a, size_t& bytes) {
            return dnn_ok(cudnnGetConvolutionBackwardDataWorkspaceSize(
                handle, plan->w, plan->y, plan->conv, plan->x, a, &bytes));
          },
          *plan);
      break;
    }
    case ConvDir::kGradFilter: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int count = 0;
      if (!dnn_ok(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
              handle, plan->x, plan->y, plan->conv, plan->w,
              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf))) {
        return plan;
      }
      plan->ok = pick_algo(
          perf, count, limit,
          [&](cudnnConvolutionBwdFilterAlgo_t a, size_t& bytes) {
            return dnn_ok(cudnnGetConvolutionBackwardFilterWorkspaceSize(
                handle, plan->x, plan->y, plan->conv, plan->w, a, &bytes));
          },
          *plan);
      break;
    }
  }
  return plan;
}

// The cached plan of `key` (see the dot's cache in matmul.cu: process lifetime, emptied past
// kMaxConvPlans, entries kept alive by their users' shared_ptrs).
std::shared_ptr<const ConvPlan> conv_plan(cudnnHandle_t handle, const ConvKey& key, int64_t ho,
                                          int64_t wo) {
  constexpr size_t kMaxConvPlans = 1024;
  static std::mutex mu;
  static auto* cache = new std::map<ConvKey, std::shared_ptr<const ConvPlan>>();
  const std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  if (cache->size() >= kMaxConvPlans) cache->clear();
  std::shared_ptr<const ConvPlan> plan = make_conv_plan(handle, key, ho, wo);
  cache->emplace(key, plan);
  return plan;
}

enum class DnnResult { kDone, kDeclined };

// Runs the convolution on cuDNN in batches of images small enough for its 32-bit indexing.
// kDeclined: cuDNN has no plan or refused a call as unsupported (the caller then runs the
// direct kernel over the whole problem, overwriting any partial result).
DnnResult run_cudnn(GpuState& g, ConvDir dir, const ConvGeom& geom, const DPtr& a, const DPtr& b,
                    const DPtr& out) {
  constexpr int64_t kMaxInt = INT32_MAX;
  const int64_t image = std::max(geom.c * geom.h * geom.w, geom.k * geom.ho * geom.wo);
  if (image > kMaxInt || geom.w_numel() > kMaxInt ||
      std::max({geom.sh, geom.sw, geom.ph, geom.pw}) > kMaxInt) {
    return DnnResult::kDeclined;
  }
  const int64_t per_batch = std::max<int64_t>(1, std::min(geom.n, kMaxInt / image));
  const int64_t x_image = geom.c * geom.h * geom.w, y_image = geom.k * geom.ho * geom.wo;
  const int64_t elem = dtype_size(out.t);
  const auto at = [elem](const DPtr& p, int64_t offset) {
    return static_cast<void*>(static_cast<char*>(p.p) + offset * elem);
  };
  for (int64_t n0 = 0; n0 < geom.n; n0 += per_batch) {
    const int64_t images = std::min(per_batch, geom.n - n0);
    ConvKey key;
    key.ordinal = g.ordinal;
    key.workspace_bytes = g.workspace != nullptr ? g.workspace_bytes : 0;
    key.dir = dir;
    key.t = out.t;
    key.n = images;
    key.c = geom.c;
    key.h = geom.h;
    key.w = geom.w;
    key.k = geom.k;
    key.r = geom.r;
    key.s = geom.s;
    key.sh = geom.sh;
    key.sw = geom.sw;
    key.ph = geom.ph;
    key.pw = geom.pw;
    const std::shared_ptr<const ConvPlan> plan = conv_plan(g.dnn, key, geom.ho, geom.wo);
    if (!plan->ok) return DnnResult::kDeclined;
    const float one = 1.0f;
    const float beta = (dir == ConvDir::kGradFilter && n0 > 0) ? 1.0f : 0.0f;
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    switch (dir) {
      case ConvDir::kForward:  // a = x, b = w, out = y
        s = cudnnConvolutionForward(g.dnn, &one, plan->x, at(a, n0 * x_image), plan->w, b.p,
                                    plan->conv, static_cast<cudnnConvolutionFwdAlgo_t>(plan->algo),
                                    g.workspace, plan->workspace, &beta, plan->y,
                                    at(out, n0 * y_image));
        break;
      case ConvDir::kGradInput:  // a = dy, b = w, out = dx
        s = cudnnConvolutionBackwardData(
            g.dnn, &one, plan->w, b.p, plan->y, at(a, n0 * y_image), plan->conv,
            static_cast<cudnnConvolutionBwdDataAlgo_t>(plan->algo), g.workspace, plan->workspace,
            &beta, plan->x, at(out, n0 * x_image));
        break;
      case ConvDir::kGradFilter:  // a = x, b = dy, out = dw (summed over the image batches)
        s = cudnnConvolutionBackwardFilter(g.dnn, &one, plan->x, at(a, n0 * x_image), plan->y,
                                           at(b, n0 * y_image), plan->conv,
                                           static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan->algo),
                                           g.workspace, plan->workspace, &beta, plan->w, out.p);
        break;
    }
    if (s == CUDNN_STATUS_NOT_SUPPORTED) return DnnResult::kDeclined;
    if (!dnn_ok(s)) {
      g.fail(std::string(dir_name(dir)) + ": cuDNN convolution failed: " + cudnnGetErrorString(s));
      return DnnResult::kDone;
    }
  }
  return DnnResult::kDone;
}

#pragma nv_diag_default 1215, 1444
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

// ---------------------------------------------------------------------------------------------
// The rows

// Runs `dir` with inputs a, b (the kind's order) into out, after the shape checks.
void run_conv(GpuState& g, ConvDir dir, const ConvGeom& geom, const TensorView& av,
              const TensorView& bv, const TensorView& ov) {
  const char* op = dir_name(dir);
  const DPtr a = dptr(av, op), b = dptr(bv, op), out = dptr(ov, op);
  if (ov.numel() == 0) return;
  if (av.numel() == 0 || bv.numel() == 0) {  // every output element is an empty sum
    check_cuda(g, cudaMemsetAsync(out.p, 0, static_cast<size_t>(ov.bytes()), g.stream),
               "conv2d: cudaMemsetAsync");
    return;
  }
  if (a.t == b.t && b.t == out.t && run_cudnn(g, dir, geom, a, b, out) == DnnResult::kDone) {
    return;
  }
  run_direct(g, dir, geom, a, b, out);
}

void run_conv2d(const KernelArgs& args) {
  const TensorView& x = args.in[0];
  const TensorView& w = args.in[1];
  const TensorView& y = args.out[0];
  const ConvGeom geom = conv_geometry(x.shape, w.shape, args.attrs->window, kConvFwd);
  check_shape(y, Shape{geom.n, geom.k, geom.ho, geom.wo}, kConvFwd, "y");
  run_conv(gpu_of(args), ConvDir::kForward, geom, x, w, y);
}

void run_conv2d_grad_input(const KernelArgs& args) {
  const TensorView& dy = args.in[0];
  const TensorView& w = args.in[1];
  const TensorView& dx = args.out[0];
  const ConvGeom geom = conv_geometry(dx.shape, w.shape, args.attrs->window, kConvGradInput);
  check_shape(dy, Shape{geom.n, geom.k, geom.ho, geom.wo}, kConvGradInput, "dy");
  run_conv(gpu_of(args), ConvDir::kGradInput, geom, dy, w, dx);
}

void run_conv2d_grad_filter(const KernelArgs& args) {
  const TensorView& x = args.in[0];
  const TensorView& dy = args.in[1];
  const TensorView& dw = args.out[0];
  const ConvGeom geom = conv_geometry(x.shape, dw.shape, args.attrs->window, kConvGradFilter);
  check_shape(dy, Shape{geom.n, geom.k, geom.ho, geom.wo}, kConvGradFilter, "dy");
  run_conv(gpu_of(args), ConvDir::kGradFilter, geom, x, dy, dw);
}

}  // namespace

std::vector<CudaRow> cuda_conv_rows() {
  // No op workspace: cuDNN's scratch is the device's library workspace.
  return {{OpKind::kConv2d, OpKernel{run_conv2d}},
          {OpKind::kConv2dGradInput, OpKernel{run_conv2d_grad_input}},
          {OpKind::kConv2dGradFilter, OpKernel{run_conv2d_grad_filter}}};
}

}  // namespace meshpipe::kernels::internal

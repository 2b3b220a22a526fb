// CUDA 2-D max and average pooling over NCHW and their gradients (the CUDA twin of
// kernels/pool_cpu.cc), computing the CPU's values in the CPU's order.
//
// Forward: one thread per output scans its window (clipped to the image, row-major) exactly as
// the CPU does: max with strict '>' from -inf (padding never wins; NaNs never win), average as
// an f32 sum from 0 times 1 / (kernel_h * kernel_w) (padding counts in the divisor).
// Gradients are gathers, not atomics: one thread per input element adds the contributions of
// the windows covering it in increasing (oh, ow) order, which is the order in which the CPU's
// scatter adds them into that element, so f32 results are bitwise equal to the CPU's. The max
// gradient first stores each window's argmax (the CPU's rule: the first element of the scan,
// replaced only by a strictly greater one) in args.workspace, one int32 per output.
#include <climits>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

struct PoolDims {
  int64_t planes = 0;  // N * C
  int64_t h = 0;
  int64_t w = 0;
  int64_t ho = 0;
  int64_t wo = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
};

// (in + 2 * pad - kernel) / stride + 1, or 0 when the window does not fit (as
// window_output_size, which nvcc cannot see).
int64_t output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  if (kernel <= 0 || stride <= 0 || pad < 0 || in + 2 * pad < kernel) return 0;
  return (in + 2 * pad - kernel) / stride + 1;
}

PoolDims pool_dims(const TensorView& x, const TensorView& y, const Window2d& win, const char* op) {
  MP_CHECK(x.shape.rank() == 4) << op << ": x must be [N, C, H, W], got " << x.shape.to_string();
  PoolDims d;
  d.h = x.shape[2];
  d.w = x.shape[3];
  d.ho = output_size(d.h, win.kernel_h, win.stride_h, win.pad_h);
  d.wo = output_size(d.w, win.kernel_w, win.stride_w, win.pad_w);
  MP_CHECK(d.ho > 0 && d.wo > 0) << op << ": bad window " << window_to_string(win) << " for "
                                 << x.shape.to_string();
  MP_CHECK(y.shape == Shape({x.shape[0], x.shape[1], d.ho, d.wo}))
      << op << ": y is " << y.shape.to_string() << " for x " << x.shape.to_string()
      << " and window " << window_to_string(win);
  d.planes = x.shape[0] * x.shape[1];
  d.kh = win.kernel_h;
  d.kw = win.kernel_w;
  d.sh = win.stride_h;
  d.sw = win.stride_w;
  d.ph = win.pad_h;
  d.pw = win.pad_w;
  return d;
}

// The window of output (oh, ow) clipped to the image: rows [h0, h1), cols [w0, w1).
struct Span {
  int64_t h0, h1, w0, w1;
};

__device__ __forceinline__ Span window_span(const PoolDims& d, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * d.sh - d.ph;
  const int64_t w0 = ow * d.sw - d.pw;
  const int64_t h1 = h0 + d.kh;
  const int64_t w1 = w0 + d.kw;
  return Span{h0 < 0 ? 0 : h0, h1 > d.h ? d.h : h1, w0 < 0 ? 0 : w0, w1 > d.w ? d.w : w1};
}

// The outputs whose windows cover input row i (or column): o in [lo, hi], possibly empty.
// o covers i iff o * s - p <= i < o * s - p + k.
__device__ __forceinline__ void covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t n,
                                         int64_t& lo, int64_t& hi) {
  const int64_t first = i + p - k + 1;  // o * s >= first
  lo = first <= 0 ? 0 : (first + s - 1) / s;
  hi = (i + p) / s;  // i + p >= 0
  if (hi > n - 1) hi = n - 1;
}

// Output index -> (plane, oh, ow).
__device__ __forceinline__ void output_coords(const PoolDims& d, int64_t i, int64_t& plane,
                                              int64_t& oh, int64_t& ow) {
  ow = i % d.wo;
  const int64_t r = i / d.wo;
  oh = r % d.ho;
  plane = r / d.ho;
}

__global__ void max_pool_kernel(DPtr x, PoolDims d, int64_t n, DPtr y) {
  MP_CUDA_FOR(i, n) {
    int64_t plane, oh, ow;
    output_coords(d, i, plane, oh, ow);
    const Span s = window_span(d, oh, ow);
    const int64_t base = plane * d.h * d.w;
    float best = -INFINITY;
    for (int64_t ih = s.h0; ih < s.h1; ++ih) {
      for (int64_t iw = s.w0; iw < s.w1; ++iw) {
        const float v = ld(x, base + ih * d.w + iw);
        if (v > best) best = v;
      }
    }
    st(y, i, best);
  }
}

__global__ void avg_pool_kernel(DPtr x, PoolDims d, float inv, int64_t n, DPtr y) {
  MP_CUDA_FOR(i, n) {
    int64_t plane, oh, ow;
    output_coords(d, i, plane, oh, ow);
    const Span s = window_span(d, oh, ow);
    const int64_t base = plane * d.h * d.w;
    float sum = 0.0f;
    for (int64_t ih = s.h0; ih < s.h1; ++ih) {
      for (int64_t iw = s.w0; iw < s.w1; ++iw) sum += ld(x, base + ih * d.w + iw);
    }
    st(y, i, __fmul_rn(sum, inv));
  }
}

// arg[i] = index within its plane of the element output i routes its gradient to (-1: none).
__global__ void max_pool_argmax_kernel(DPtr x, PoolDims d, int64_t n, int32_t* arg) {
  MP_CUDA_FOR(i, n) {
    int64_t plane, oh, ow;
    output_coords(d, i, plane, oh, ow);
    const Span s = window_span(d, oh, ow);
    const int64_t base = plane * d.h * d.w;
    int64_t best_at = -1;
    float best = -INFINITY;
    for (int64_t ih = s.h0; ih < s.h1; ++ih) {
      for (int64_t iw = s.w0; iw < s.w1; ++iw) {
        const float v = ld(x, base + ih * d.w + iw);
        if (best_at < 0 || v > best) {
          best = v;
          best_at = ih * d.w + iw;
        }
      }
    }
    arg[i] = static_cast<int32_t>(best_at);
  }
}

// dx[plane, ih, iw] = sum of dy over the covering windows whose argmax is (ih, iw), in (oh, ow)
// order.
__global__ void max_pool_grad_kernel(const int32_t* arg, DPtr dy, PoolDims d, int64_t n, DPtr dx) {
  MP_CUDA_FOR(i, n) {
    const int64_t iw = i % d.w;
    const int64_t r = i / d.w;
    const int64_t ih = r % d.h;
    const int64_t plane = r / d.h;
    int64_t oh0, oh1, ow0, ow1;
    covering(ih, d.kh, d.sh, d.ph, d.ho, oh0, oh1);
    covering(iw, d.kw, d.sw, d.pw, d.wo, ow0, ow1);
    const int32_t self = static_cast<int32_t>(ih * d.w + iw);
    const int64_t out_base = plane * d.ho * d.wo;
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = out_base + oh * d.wo + ow;
        if (arg[o] == self) acc += ld(dy, o);
      }
    }
    st(dx, i, acc);
  }
}

// dx[plane, ih, iw] = sum over the covering windows of dy * inv, in (oh, ow) order.
__global__ void avg_pool_grad_kernel(DPtr dy, PoolDims d, float inv, int64_t n, DPtr dx) {
  MP_CUDA_FOR(i, n) {
    const int64_t iw = i % d.w;
    const int64_t r = i / d.w;
    const int64_t ih = r % d.h;
    const int64_t plane = r / d.h;
    int64_t oh0, oh1, ow0, ow1;
    covering(ih, d.kh, d.sh, d.ph, d.ho, oh0, oh1);
    covering(iw, d.kw, d.sw, d.pw, d.wo, ow0, ow1);
    const int64_t out_base = plane * d.ho * d.wo;
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        acc += __fmul_rn(ld(dy, out_base + oh * d.wo + ow), inv);  // no fused multiply-add
      }
    }
    st(dx, i, acc);
  }
}

// The CPU's divisor: the full window (count_include_pad).
float inverse_window(const PoolDims& d) { return 1.0f / static_cast<float>(d.kh * d.kw); }

void run_max_pool(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const PoolDims d = pool_dims(a.in[0], a.out[0], a.attrs->window, "max_pool2d");
  const DPtr x = dptr(a.in[0], "max_pool2d");
  const DPtr y = dptr(a.out[0], "max_pool2d");
  const int64_t n = a.out[0].numel();
  if (n == 0) return;
  max_pool_kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(x, d, n, y);
  check_launch(g, "max_pool2d");
}

void run_avg_pool(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const PoolDims d = pool_dims(a.in[0], a.out[0], a.attrs->window, "avg_pool2d");
  const DPtr x = dptr(a.in[0], "avg_pool2d");
  const DPtr y = dptr(a.out[0], "avg_pool2d");
  const int64_t n = a.out[0].numel();
  if (n == 0) return;
  avg_pool_kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(x, d, inverse_window(d), n, y);
  check_launch(g, "avg_pool2d");
}

// Inputs (x, dy): one int32 argmax per element of dy.
int64_t max_pool_grad_workspace_bytes(std::span<const Shape> inputs, const OpAttrs&) {
  return inputs[1].numel() * static_cast<int64_t>(sizeof(int32_t));
}

void run_max_pool_grad(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[0];
  const TensorView& dyv = a.in[1];
  const TensorView& dxv = a.out[0];
  const PoolDims d = pool_dims(xv, dyv, a.attrs->window, "max_pool2d_grad");
  MP_CHECK(dxv.shape == xv.shape) << "max_pool2d_grad: dx must be shaped like x, got "
                                  << dxv.shape.to_string();
  MP_CHECK(d.h * d.w <= INT32_MAX) << "max_pool2d_grad: planes must have < 2^31 elements";
  const DPtr x = dptr(xv, "max_pool2d_grad");
  const DPtr dy = dptr(dyv, "max_pool2d_grad");
  const DPtr dx = dptr(dxv, "max_pool2d_grad");
  const int64_t outputs = dyv.numel();
  const int64_t inputs = dxv.numel();
  if (inputs == 0) return;
  const int64_t need = outputs * static_cast<int64_t>(sizeof(int32_t));
  MP_CHECK(a.workspace.data != nullptr && a.workspace.bytes() >= need)
      << "max_pool2d_grad: workspace of " << a.workspace.bytes() << " bytes, needs " << need;
  auto* arg = static_cast<int32_t*>(a.workspace.data);
  max_pool_argmax_kernel<<<blocks_for(g, outputs), kThreads, 0, g.stream>>>(x, d, outputs, arg);
  check_launch(g, "max_pool2d_grad");
  max_pool_grad_kernel<<<blocks_for(g, inputs), kThreads, 0, g.stream>>>(arg, dy, d, inputs, dx);
  check_launch(g, "max_pool2d_grad");
}

void run_avg_pool_grad(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const TensorView& dyv = a.in[0];
  const TensorView& dxv = a.out[0];
  const PoolDims d = pool_dims(dxv, dyv, a.attrs->window, "avg_pool2d_grad");
  const DPtr dy = dptr(dyv, "avg_pool2d_grad");
  const DPtr dx = dptr(dxv, "avg_pool2d_grad");
  const int64_t n = dxv.numel();
  if (n == 0) return;
  avg_pool_grad_kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(dy, d, inverse_window(d), n,
                                                                    dx);
  check_launch(g, "avg_pool2d_grad");
}

}  // namespace

std::vector<CudaRow> cuda_pool_rows() {
  return {
      {OpKind::kMaxPool2d, OpKernel{run_max_pool}},
      {OpKind::kAvgPool2d, OpKernel{run_avg_pool}},
      {OpKind::kMaxPool2dGrad, OpKernel{run_max_pool_grad, max_pool_grad_workspace_bytes}},
      {OpKind::kAvgPool2dGrad, OpKernel{run_avg_pool_grad}},
  };
}

}  // namespace meshpipe::kernels::internal

// CPU 2-D max and average pooling over NCHW. Every (n, c) plane is independent, so threads
// split by plane and the gradients' overlapping windows never race.
#include <cstring>
#include <limits>

#include "kernels/internal/cpu_common.h"
#include "kernels/pool.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

struct PoolGeometry {
  int64_t planes = 0;  // N * C
  int64_t h = 0;
  int64_t w = 0;
  int64_t ho = 0;
  int64_t wo = 0;
};

PoolGeometry pool_geometry(const TensorView& x, const TensorView& y, const Window2d& win,
                           const char* op) {
  MP_CHECK(x.shape.rank() == 4) << op << ": x must be [N, C, H, W], got " << x.shape.to_string();
  MP_CHECK(x.dtype == DType::kF32 && y.dtype == DType::kF32) << op << ": needs f32";
  MP_CHECK(x.is_contiguous() && y.is_contiguous()) << op << ": needs contiguous views";
  const Expected<int64_t> ho =
      window_output_size(x.shape[2], win.kernel_h, win.stride_h, win.pad_h);
  const Expected<int64_t> wo =
      window_output_size(x.shape[3], win.kernel_w, win.stride_w, win.pad_w);
  MP_CHECK(ho.has_value() && wo.has_value())
      << op << ": bad window " << window_to_string(win) << " for " << x.shape.to_string();
  MP_CHECK(y.shape == Shape({x.shape[0], x.shape[1], *ho, *wo}))
      << op << ": y is " << y.shape.to_string() << " for x " << x.shape.to_string()
      << " and window " << window_to_string(win);
  return PoolGeometry{x.shape[0] * x.shape[1], x.shape[2], x.shape[3], *ho, *wo};
}

// The window of output (oh, ow) clipped to the image: rows [h0, h1), cols [w0, w1).
struct Span {
  int64_t h0 = 0;
  int64_t h1 = 0;
  int64_t w0 = 0;
  int64_t w1 = 0;
};

Span window_span(const PoolGeometry& g, const Window2d& win, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * win.stride_h - win.pad_h;
  const int64_t w0 = ow * win.stride_w - win.pad_w;
  const int64_t h1 = h0 + win.kernel_h;
  const int64_t w1 = w0 + win.kernel_w;
  return Span{h0 < 0 ? 0 : h0, h1 > g.h ? g.h : h1, w0 < 0 ? 0 : w0, w1 > g.w ? g.w : w1};
}

}  // namespace

void max_pool2d(const KernelContext& ctx, const TensorView& x, const Window2d& w,
                const TensorView& y) {
  check_cpu(ctx, "max_pool2d");
  const PoolGeometry g = pool_geometry(x, y, w, "max_pool2d");
  const float* in = x.f32();
  float* out = y.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t p = 0; p < g.planes; ++p) {
    const float* plane = in + p * g.h * g.w;
    float* dst = out + p * g.ho * g.wo;
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const Span s = window_span(g, w, oh, ow);
        // Padding is -inf, so it never wins and need not be visited.
        float best = -std::numeric_limits<float>::infinity();
        for (int64_t ih = s.h0; ih < s.h1; ++ih) {
          for (int64_t iw = s.w0; iw < s.w1; ++iw) {
            const float v = plane[ih * g.w + iw];
            if (v > best) best = v;
          }
        }
        dst[oh * g.wo + ow] = best;
      }
    }
  }
}

void max_pool2d_grad(const KernelContext& ctx, const TensorView& x, const TensorView& dy,
                     const Window2d& w, const TensorView& dx) {
  check_cpu(ctx, "max_pool2d_grad");
  const PoolGeometry g = pool_geometry(x, dy, w, "max_pool2d_grad");
  MP_CHECK(dx.dtype == DType::kF32 && dx.is_contiguous() && dx.shape == x.shape)
      << "max_pool2d_grad: dx must be contiguous f32 shaped like x";
  const float* in = x.f32();
  const float* gp = dy.f32();
  float* out = dx.f32();
  std::memset(out, 0, static_cast<size_t>(dx.bytes()));
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t p = 0; p < g.planes; ++p) {
    const float* plane = in + p * g.h * g.w;
    const float* grad = gp + p * g.ho * g.wo;
    float* dplane = out + p * g.h * g.w;
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const Span s = window_span(g, w, oh, ow);
        // Strict '>' keeps the first maximum of the row-major scan, as the contract asks.
        int64_t arg = -1;
        float best = -std::numeric_limits<float>::infinity();
        for (int64_t ih = s.h0; ih < s.h1; ++ih) {
          for (int64_t iw = s.w0; iw < s.w1; ++iw) {
            const float v = plane[ih * g.w + iw];
            if (arg < 0 || v > best) {
              best = v;
              arg = ih * g.w + iw;
            }
          }
        }
        if (arg >= 0) dplane[arg] += grad[oh * g.wo + ow];
      }
    }
  }
}

void avg_pool2d(const KernelContext& ctx, const TensorView& x, const Window2d& w,
                const TensorView& y) {
  check_cpu(ctx, "avg_pool2d");
  const PoolGeometry g = pool_geometry(x, y, w, "avg_pool2d");
  const float* in = x.f32();
  float* out = y.f32();
  // Padding counts in the divisor (count_include_pad), so it is the full window everywhere.
  const float inv = 1.0f / static_cast<float>(w.kernel_h * w.kernel_w);
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t p = 0; p < g.planes; ++p) {
    const float* plane = in + p * g.h * g.w;
    float* dst = out + p * g.ho * g.wo;
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const Span s = window_span(g, w, oh, ow);
        float sum = 0.0f;
        for (int64_t ih = s.h0; ih < s.h1; ++ih) {
          for (int64_t iw = s.w0; iw < s.w1; ++iw) sum += plane[ih * g.w + iw];
        }
        dst[oh * g.wo + ow] = sum * inv;
      }
    }
  }
}

void avg_pool2d_grad(const KernelContext& ctx, const TensorView& dy, const Window2d& w,
                     const TensorView& dx) {
  check_cpu(ctx, "avg_pool2d_grad");
  const PoolGeometry g = pool_geometry(dx, dy, w, "avg_pool2d_grad");
  const float* gp = dy.f32();
  float* out = dx.f32();
  std::memset(out, 0, static_cast<size_t>(dx.bytes()));
  const float inv = 1.0f / static_cast<float>(w.kernel_h * w.kernel_w);
#pragma omp parallel for if (dx.numel() > kParallelElems)
  for (int64_t p = 0; p < g.planes; ++p) {
    const float* grad = gp + p * g.ho * g.wo;
    float* dplane = out + p * g.h * g.w;
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const Span s = window_span(g, w, oh, ow);
        const float share = grad[oh * g.wo + ow] * inv;
        for (int64_t ih = s.h0; ih < s.h1; ++ih) {
          for (int64_t iw = s.w0; iw < s.w1; ++iw) dplane[ih * g.w + iw] += share;
        }
      }
    }
  }
}

}  // namespace meshpipe::kernels

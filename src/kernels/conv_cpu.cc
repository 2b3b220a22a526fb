// CPU 2-D convolution by im2col + sgemm, one image at a time so the column buffer (the only
// scratch) stays the size of one image's unfolded input.
#include <cblas.h>

#include <climits>
#include <cstring>

#include "kernels/conv.h"
#include "kernels/internal/cpu_common.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

// Sizes of one convolution; `rows` = C*R*S and `cols` = Ho*Wo are the column-buffer dims.
struct ConvGeometry {
  int64_t n = 0;
  int64_t c = 0;
  int64_t h = 0;
  int64_t w = 0;
  int64_t k = 0;
  int64_t ho = 0;
  int64_t wo = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  // A 1x1, stride-1, unpadded window: the column buffer would be the image itself.
  bool is_pointwise = false;
};

ConvGeometry conv_geometry(const Shape& x, const Shape& weight, const Window2d& win) {
  MP_CHECK(x.rank() == 4 && weight.rank() == 4)
      << "conv2d: x must be [N, C, H, W] and weight [K, C, R, S], got " << x.to_string() << ", "
      << weight.to_string();
  MP_CHECK(weight[1] == x[1]) << "conv2d: weight has " << weight[1] << " input channels, x has "
                              << x[1];
  MP_CHECK(weight[2] == win.kernel_h && weight[3] == win.kernel_w)
      << "conv2d: weight " << weight.to_string() << " does not match window "
      << window_to_string(win);
  const Expected<int64_t> ho = window_output_size(x[2], win.kernel_h, win.stride_h, win.pad_h);
  const Expected<int64_t> wo = window_output_size(x[3], win.kernel_w, win.stride_w, win.pad_w);
  MP_CHECK(ho.has_value() && wo.has_value())
      << "conv2d: bad window " << window_to_string(win) << " for " << x.to_string();
  ConvGeometry g;
  g.n = x[0];
  g.c = x[1];
  g.h = x[2];
  g.w = x[3];
  g.k = weight[0];
  g.ho = *ho;
  g.wo = *wo;
  g.rows = g.c * win.kernel_h * win.kernel_w;
  g.cols = g.ho * g.wo;
  g.is_pointwise = win.kernel_h == 1 && win.kernel_w == 1 && win.stride_h == 1 &&
                   win.stride_w == 1 && win.pad_h == 0 && win.pad_w == 0;
  MP_CHECK(g.rows <= INT_MAX && g.cols <= INT_MAX && g.k <= INT_MAX)
      << "conv2d: matrices too large for BLAS";
  return g;
}

void check_view(const TensorView& v, const Shape& expected, const char* what) {
  MP_CHECK(v.dtype == DType::kF32 && v.is_contiguous()) << what << " must be contiguous f32";
  MP_CHECK(v.shape == expected) << what << " is " << v.shape.to_string() << ", expected "
                                << expected.to_string();
}

float* column_buffer(const TensorView& workspace, const ConvGeometry& g) {
  const int64_t need = g.rows * g.cols * static_cast<int64_t>(sizeof(float));
  MP_CHECK(workspace.data != nullptr && workspace.bytes() >= need)
      << "conv2d: workspace has " << workspace.bytes() << " bytes, needs " << need;
  return static_cast<float*>(workspace.data);
}

// col[(c, r, s), (oh, ow)] = image[c, oh*sh - ph + r, ow*sw - pw + s], zero outside the image.
void im2col(const float* image, const ConvGeometry& g, const Window2d& win, float* col) {
#pragma omp parallel for if (g.rows * g.cols > kParallelElems)
  for (int64_t row = 0; row < g.rows; ++row) {
    const int64_t s = row % win.kernel_w;
    const int64_t r = (row / win.kernel_w) % win.kernel_h;
    const int64_t c = row / (win.kernel_w * win.kernel_h);
    const float* plane = image + c * g.h * g.w;
    float* dst = col + row * g.cols;
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      const int64_t ih = oh * win.stride_h - win.pad_h + r;
      float* out = dst + oh * g.wo;
      if (ih < 0 || ih >= g.h) {
        std::memset(out, 0, static_cast<size_t>(g.wo) * sizeof(float));
        continue;
      }
      const float* src = plane + ih * g.w;
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const int64_t iw = ow * win.stride_w - win.pad_w + s;
        out[ow] = (iw >= 0 && iw < g.w) ? src[iw] : 0.0f;
      }
    }
  }
}

// image[c, ih, iw] += col[(c, r, s), (oh, ow)]: the adjoint of im2col. Rows of one channel
// all land in that channel's plane, so threads split by channel and never collide.
void col2im_add(const float* col, const ConvGeometry& g, const Window2d& win, float* image) {
  const int64_t rows_per_channel = win.kernel_h * win.kernel_w;
#pragma omp parallel for if (g.rows * g.cols > kParallelElems)
  for (int64_t c = 0; c < g.c; ++c) {
    float* plane = image + c * g.h * g.w;
    for (int64_t rs = 0; rs < rows_per_channel; ++rs) {
      const int64_t r = rs / win.kernel_w;
      const int64_t s = rs % win.kernel_w;
      const float* src = col + (c * rows_per_channel + rs) * g.cols;
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        const int64_t ih = oh * win.stride_h - win.pad_h + r;
        if (ih < 0 || ih >= g.h) continue;
        float* dst = plane + ih * g.w;
        const float* in = src + oh * g.wo;
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          const int64_t iw = ow * win.stride_w - win.pad_w + s;
          if (iw >= 0 && iw < g.w) dst[iw] += in[ow];
        }
      }
    }
  }
}

Shape output_shape(const ConvGeometry& g) { return Shape{g.n, g.k, g.ho, g.wo}; }

}  // namespace

int64_t conv2d_workspace_bytes(const Shape& x, const Shape& weight, const Window2d& w) {
  const ConvGeometry g = conv_geometry(x, weight, w);
  return g.rows * g.cols * static_cast<int64_t>(sizeof(float));
}

void conv2d(const KernelContext& ctx, const TensorView& x, const TensorView& weight,
            const Window2d& w, const TensorView& y, const TensorView& workspace) {
  check_cpu(ctx, "conv2d");
  const ConvGeometry g = conv_geometry(x.shape, weight.shape, w);
  check_view(x, x.shape, "conv2d: x");
  check_view(weight, weight.shape, "conv2d: weight");
  check_view(y, output_shape(g), "conv2d: y");
  float* col = g.is_pointwise ? nullptr : column_buffer(workspace, g);
  const float* xp = x.f32();
  float* yp = y.f32();
  const auto m = static_cast<int>(g.k);
  const auto n = static_cast<int>(g.cols);
  const auto k = static_cast<int>(g.rows);
  for (int64_t i = 0; i < g.n; ++i) {
    const float* image = xp + i * g.c * g.h * g.w;
    const float* b = image;
    if (!g.is_pointwise) {
      im2col(image, g, w, col);
      b = col;
    }
    // y[i] [K, Ho*Wo] = weight [K, C*R*S] x col [C*R*S, Ho*Wo].
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, weight.f32(), k, b, n,
                0.0f, yp + i * g.k * g.cols, n);
  }
}

void conv2d_grad_input(const KernelContext& ctx, const TensorView& dy, const TensorView& weight,
                       const Window2d& w, const TensorView& dx, const TensorView& workspace) {
  check_cpu(ctx, "conv2d_grad_input");
  const ConvGeometry g = conv_geometry(dx.shape, weight.shape, w);
  check_view(dx, dx.shape, "conv2d_grad_input: dx");
  check_view(weight, weight.shape, "conv2d_grad_input: weight");
  check_view(dy, output_shape(g), "conv2d_grad_input: dy");
  const float* gp = dy.f32();
  float* dxp = dx.f32();
  const auto m = static_cast<int>(g.rows);
  const auto n = static_cast<int>(g.cols);
  const auto k = static_cast<int>(g.k);
  if (g.is_pointwise) {
    // The column buffer is dx[i] itself, and every input pixel is hit exactly once.
    for (int64_t i = 0; i < g.n; ++i) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0f, weight.f32(), m,
                  gp + i * g.k * g.cols, n, 0.0f, dxp + i * g.c * g.h * g.w, n);
    }
    return;
  }
  float* col = column_buffer(workspace, g);
  std::memset(dxp, 0, static_cast<size_t>(dx.bytes()));
  for (int64_t i = 0; i < g.n; ++i) {
    // col [C*R*S, Ho*Wo] = weight^T x dy[i] [K, Ho*Wo]; overlapping windows add up in col2im.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0f, weight.f32(), m,
                gp + i * g.k * g.cols, n, 0.0f, col, n);
    col2im_add(col, g, w, dxp + i * g.c * g.h * g.w);
  }
}

void conv2d_grad_filter(const KernelContext& ctx, const TensorView& x, const TensorView& dy,
                        const Window2d& w, const TensorView& dweight, const TensorView& workspace) {
  check_cpu(ctx, "conv2d_grad_filter");
  const ConvGeometry g = conv_geometry(x.shape, dweight.shape, w);
  check_view(x, x.shape, "conv2d_grad_filter: x");
  check_view(dweight, dweight.shape, "conv2d_grad_filter: dweight");
  check_view(dy, output_shape(g), "conv2d_grad_filter: dy");
  float* col = g.is_pointwise ? nullptr : column_buffer(workspace, g);
  const float* xp = x.f32();
  const float* gp = dy.f32();
  float* dwp = dweight.f32();
  const auto m = static_cast<int>(g.k);
  const auto n = static_cast<int>(g.rows);
  const auto k = static_cast<int>(g.cols);
  if (g.n == 0) std::memset(dwp, 0, static_cast<size_t>(dweight.bytes()));
  for (int64_t i = 0; i < g.n; ++i) {
    const float* image = xp + i * g.c * g.h * g.w;
    const float* b = image;
    if (!g.is_pointwise) {
      im2col(image, g, w, col);
      b = col;
    }
    // dweight [K, C*R*S] (+)= dy[i] [K, Ho*Wo] x col^T; the first image overwrites.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, gp + i * g.k * g.cols, k, b,
                k, i == 0 ? 0.0f : 1.0f, dwp, n);
  }
}

}  // namespace meshpipe::kernels

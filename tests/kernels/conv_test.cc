// Tests of conv2d and both gradients against direct double-precision convolution loops.
#include "kernels/conv.h"

#include <catch2/catch.hpp>

#include "core/op_geometry.h"
#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::random_floats;

struct ConvCase {
  int64_t n, c, h, w, k;
  Window2d win;
};

// Calls f(n, k, c, oh, ow, r, s, ih, iw) for every tap that lands inside the image.
template <class F>
void for_each_tap(const ConvCase& cc, int64_t ho, int64_t wo, F f) {
  for (int64_t n = 0; n < cc.n; ++n)
    for (int64_t k = 0; k < cc.k; ++k)
      for (int64_t c = 0; c < cc.c; ++c)
        for (int64_t oh = 0; oh < ho; ++oh)
          for (int64_t ow = 0; ow < wo; ++ow)
            for (int64_t r = 0; r < cc.win.kernel_h; ++r)
              for (int64_t s = 0; s < cc.win.kernel_w; ++s) {
                const int64_t ih = oh * cc.win.stride_h - cc.win.pad_h + r;
                const int64_t iw = ow * cc.win.stride_w - cc.win.pad_w + s;
                if (ih < 0 || ih >= cc.h || iw < 0 || iw >= cc.w) continue;
                f(n, k, c, oh, ow, r, s, ih, iw);
              }
}

// Runs the forward and both gradients and compares each with direct loops. Tolerance:
// 1e-5 relative to the largest output (sums of up to C*R*S or N*Ho*Wo f32 products).
void run_conv_case(const ConvCase& cc, uint64_t seed) {
  Rng rng(seed);
  const Window2d& w = cc.win;
  const int64_t ho = *window_output_size(cc.h, w.kernel_h, w.stride_h, w.pad_h);
  const int64_t wo = *window_output_size(cc.w, w.kernel_w, w.stride_w, w.pad_w);
  const Shape xs{cc.n, cc.c, cc.h, cc.w};
  const Shape ws{cc.k, cc.c, w.kernel_h, w.kernel_w};
  const Shape ys{cc.n, cc.k, ho, wo};
  std::vector<float> x = random_floats(rng, xs.numel());
  std::vector<float> weight = random_floats(rng, ws.numel());
  std::vector<float> dy = random_floats(rng, ys.numel());

  const int64_t ws_bytes = conv2d_workspace_bytes(xs, ws, w);
  CHECK(ws_bytes == cc.c * w.kernel_h * w.kernel_w * ho * wo * 4);
  std::vector<float> scratch(static_cast<size_t>(ws_bytes / 4));
  const TensorView scratch_view = f32_view(scratch, Shape{ws_bytes / 4});

  auto xi = [&](int64_t n, int64_t c, int64_t ih, int64_t iw) {
    return size_t(((n * cc.c + c) * cc.h + ih) * cc.w + iw);
  };
  auto wi = [&](int64_t k, int64_t c, int64_t r, int64_t s) {
    return size_t(((k * cc.c + c) * w.kernel_h + r) * w.kernel_w + s);
  };
  auto yi = [&](int64_t n, int64_t k, int64_t oh, int64_t ow) {
    return size_t(((n * cc.k + k) * ho + oh) * wo + ow);
  };

  std::vector<double> want_y(static_cast<size_t>(ys.numel()));
  std::vector<double> want_dx(static_cast<size_t>(xs.numel()));
  std::vector<double> want_dw(static_cast<size_t>(ws.numel()));
  for_each_tap(cc, ho, wo,
               [&](int64_t n, int64_t k, int64_t c, int64_t oh, int64_t ow, int64_t r, int64_t s,
                   int64_t ih, int64_t iw) {
                 want_y[yi(n, k, oh, ow)] += double(x[xi(n, c, ih, iw)]) * weight[wi(k, c, r, s)];
                 want_dx[xi(n, c, ih, iw)] += double(dy[yi(n, k, oh, ow)]) * weight[wi(k, c, r, s)];
                 want_dw[wi(k, c, r, s)] += double(dy[yi(n, k, oh, ow)]) * x[xi(n, c, ih, iw)];
               });

  std::vector<float> y(static_cast<size_t>(ys.numel()));
  conv2d(KernelContext{}, f32_view(x, xs), f32_view(weight, ws), w, f32_view(y, ys), scratch_view);
  check_close(y, want_y, 1e-5);

  std::vector<float> dx(static_cast<size_t>(xs.numel()),
                        7.0f);  // stale values must not leak through
  conv2d_grad_input(KernelContext{}, f32_view(dy, ys), f32_view(weight, ws), w, f32_view(dx, xs),
                    scratch_view);
  check_close(dx, want_dx, 1e-5);

  std::vector<float> dw(static_cast<size_t>(ws.numel()), 7.0f);
  conv2d_grad_filter(KernelContext{}, f32_view(x, xs), f32_view(dy, ys), w, f32_view(dw, ws),
                     scratch_view);
  check_close(dw, want_dw, 1e-5);
}

TEST_CASE("conv2d 3x3 with stride 2 and padding 1 matches direct loops", "[kernels]") {
  run_conv_case(ConvCase{2, 3, 9, 8, 4, Window2d{3, 3, 2, 2, 1, 1}}, 71);
}

TEST_CASE("conv2d 3x3 with stride 1 and same padding matches direct loops", "[kernels]") {
  run_conv_case(ConvCase{2, 4, 6, 7, 5, Window2d{3, 3, 1, 1, 1, 1}}, 72);
}

TEST_CASE("conv2d 1x1 pointwise and strided match direct loops", "[kernels]") {
  run_conv_case(ConvCase{2, 6, 5, 5, 3, Window2d{1, 1, 1, 1, 0, 0}}, 73);
  run_conv_case(ConvCase{2, 6, 5, 5, 3, Window2d{1, 1, 2, 2, 0, 0}}, 74);
}

TEST_CASE("conv2d 7x7 stem with stride 2 and padding 3 matches direct loops", "[kernels]") {
  run_conv_case(ConvCase{2, 3, 16, 16, 8, Window2d{7, 7, 2, 2, 3, 3}}, 75);
}

TEST_CASE("conv2d with a non-square window and uneven strides matches direct loops", "[kernels]") {
  run_conv_case(ConvCase{1, 2, 7, 9, 3, Window2d{2, 3, 1, 2, 1, 0}}, 76);
}

TEST_CASE("conv2d on a larger image takes the multi-threaded im2col path", "[kernels]") {
  // C*R*S x Ho*Wo = 72 x 1024 column elements, above the parallel threshold.
  run_conv_case(ConvCase{2, 8, 32, 32, 8, Window2d{3, 3, 1, 1, 1, 1}}, 77);
}

}  // namespace
}  // namespace meshpipe::kernels

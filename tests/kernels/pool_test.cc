// Tests of max and average pooling and their gradients against direct window loops.
#include "kernels/pool.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <limits>

#include "core/op_geometry.h"
#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::random_floats;

struct PoolCase {
  Shape x;
  Window2d win;
};

// Calls f(plane, oh, ow, ih, iw, in_image) for every window position of every plane, in the
// row-major order the contract names, padding included.
template <class F>
void for_each_window_tap(const PoolCase& pc, int64_t ho, int64_t wo, F f) {
  const int64_t planes = pc.x[0] * pc.x[1];
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < ho; ++oh)
      for (int64_t ow = 0; ow < wo; ++ow)
        for (int64_t r = 0; r < pc.win.kernel_h; ++r)
          for (int64_t s = 0; s < pc.win.kernel_w; ++s) {
            const int64_t ih = oh * pc.win.stride_h - pc.win.pad_h + r;
            const int64_t iw = ow * pc.win.stride_w - pc.win.pad_w + s;
            const bool inside = ih >= 0 && ih < pc.x[2] && iw >= 0 && iw < pc.x[3];
            f(p, oh, ow, ih, iw, inside);
          }
}

void run_pool_case(const PoolCase& pc, uint64_t seed) {
  Rng rng(seed);
  const Window2d& w = pc.win;
  const int64_t h = pc.x[2];
  const int64_t wd = pc.x[3];
  const int64_t ho = *window_output_size(h, w.kernel_h, w.stride_h, w.pad_h);
  const int64_t wo = *window_output_size(wd, w.kernel_w, w.stride_w, w.pad_w);
  const Shape ys{pc.x[0], pc.x[1], ho, wo};
  std::vector<float> x = random_floats(rng, pc.x.numel());
  std::vector<float> dy = random_floats(rng, ys.numel());
  auto xi = [&](int64_t p, int64_t ih, int64_t iw) { return size_t((p * h + ih) * wd + iw); };
  auto yi = [&](int64_t p, int64_t oh, int64_t ow) { return size_t((p * ho + oh) * wo + ow); };

  // Max: padding is -inf; the gradient goes to the first maximum of the row-major scan.
  std::vector<double> max_y(static_cast<size_t>(ys.numel()),
                            -std::numeric_limits<double>::infinity());
  std::vector<int64_t> argmax(static_cast<size_t>(ys.numel()), -1);
  std::vector<double> avg_y(static_cast<size_t>(ys.numel()));
  std::vector<double> avg_dx(static_cast<size_t>(pc.x.numel()));
  const double area = double(w.kernel_h * w.kernel_w);
  for_each_window_tap(pc, ho, wo,
                      [&](int64_t p, int64_t oh, int64_t ow, int64_t ih, int64_t iw, bool in) {
                        if (!in) return;  // -inf for max, 0 for the average
                        const size_t o = yi(p, oh, ow);
                        const double v = x[xi(p, ih, iw)];
                        if (v > max_y[o]) {
                          max_y[o] = v;
                          argmax[o] = int64_t(xi(p, ih, iw));
                        }
                        avg_y[o] += v / area;
                        avg_dx[xi(p, ih, iw)] += dy[o] / area;
                      });
  std::vector<double> max_dx(static_cast<size_t>(pc.x.numel()));
  for (size_t o = 0; o < argmax.size(); ++o) max_dx[size_t(argmax[o])] += dy[o];

  // Forward and gradient sums are a handful of f32 terms: 1e-6 relative.
  std::vector<float> y(static_cast<size_t>(ys.numel()));
  std::vector<float> dx(static_cast<size_t>(pc.x.numel()), 3.0f);
  max_pool2d(KernelContext{}, f32_view(x, pc.x), w, f32_view(y, ys));
  check_close(y, max_y, 1e-6);
  max_pool2d_grad(KernelContext{}, f32_view(x, pc.x), f32_view(dy, ys), w, f32_view(dx, pc.x));
  check_close(dx, max_dx, 1e-6);
  avg_pool2d(KernelContext{}, f32_view(x, pc.x), w, f32_view(y, ys));
  check_close(y, avg_y, 1e-6);
  std::fill(dx.begin(), dx.end(), 3.0f);
  avg_pool2d_grad(KernelContext{}, f32_view(dy, ys), w, f32_view(dx, pc.x));
  check_close(dx, avg_dx, 1e-6);
}

TEST_CASE("pooling 3x3 with stride 2 and padding 1 matches direct loops", "[kernels]") {
  run_pool_case(PoolCase{Shape{2, 3, 9, 8}, Window2d{3, 3, 2, 2, 1, 1}}, 81);
}

TEST_CASE("pooling 2x2 with stride 2 matches direct loops", "[kernels]") {
  run_pool_case(PoolCase{Shape{2, 2, 6, 6}, Window2d{2, 2, 2, 2, 0, 0}}, 82);
}

TEST_CASE("pooling with overlapping windows sums their gradients", "[kernels]") {
  run_pool_case(PoolCase{Shape{1, 2, 7, 6}, Window2d{3, 2, 1, 1, 1, 1}}, 83);
  run_pool_case(PoolCase{Shape{4, 16, 24, 24}, Window2d{3, 3, 2, 2, 1, 1}}, 84);  // parallel
}

TEST_CASE("max_pool2d_grad routes a tie to the first maximum in row-major order", "[kernels]") {
  // One 2x2 window over [[1, 5], [5, 2]]: both 5s tie, the one at (0, 1) comes first.
  std::vector<float> x = {1, 5, 5, 2};
  std::vector<float> dy = {4};
  std::vector<float> dx(4);
  const Window2d w{2, 2, 2, 2, 0, 0};
  max_pool2d_grad(KernelContext{}, f32_view(x, Shape{1, 1, 2, 2}), f32_view(dy, Shape{1, 1, 1, 1}),
                  w, f32_view(dx, Shape{1, 1, 2, 2}));
  CHECK(dx == std::vector<float>{0, 4, 0, 0});
}

TEST_CASE("avg_pool2d counts padding in the divisor", "[kernels]") {
  // A padded 1x1 image of 8 with a 2x2 window: the output is (1 + 2 - 2) / 1 + 1 = 2 per
  // side, and every window covers the 8 and three zeros of padding, so each is 8 / 4 = 2.
  std::vector<float> x = {8};
  std::vector<float> y4(4);
  avg_pool2d(KernelContext{}, f32_view(x, Shape{1, 1, 1, 1}), Window2d{2, 2, 1, 1, 1, 1},
             f32_view(y4, Shape{1, 1, 2, 2}));
  CHECK(y4 == std::vector<float>{2, 2, 2, 2});
}

}  // namespace
}  // namespace meshpipe::kernels

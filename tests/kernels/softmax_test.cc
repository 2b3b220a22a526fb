// Tests of softmax and log-softmax (any axis, causal masking) and their gradients against a
// double-precision reference.
#include "kernels/softmax.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::random_floats;

// Row sums of a few dozen exps in f32 with a double accumulator: 1e-6 relative is ample.
constexpr double kSoftmaxTol = 1e-6;

// Visits every row along `axis`: f(base, stride, len, row index along dim rank-2 for the
// last axis).
template <class F>
void for_each_row(const Shape& s, int64_t axis, F f) {
  const int64_t len = s[axis];
  const int64_t inner = s.numel_range(axis + 1, s.rank());
  const int64_t outer = s.numel_range(0, axis);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) f(o * len * inner + i, inner, len, o);
  }
}

std::vector<double> softmax_ref(const std::vector<float>& x, const Shape& s, int64_t axis,
                                bool causal, int64_t row_offset, bool log) {
  std::vector<double> y(x.size());
  const int64_t queries = causal ? s[s.rank() - 2] : 1;
  for_each_row(s, axis, [&](int64_t base, int64_t stride, int64_t len, int64_t row) {
    auto masked = [&](int64_t j) { return causal && j > row % queries + row_offset; };
    double max = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < len; ++j) {
      if (!masked(j)) max = std::max(max, static_cast<double>(x[size_t(base + j * stride)]));
    }
    double sum = 0.0;
    for (int64_t j = 0; j < len; ++j) {
      if (!masked(j)) sum += std::exp(x[size_t(base + j * stride)] - max);
    }
    for (int64_t j = 0; j < len; ++j) {
      const double v = x[size_t(base + j * stride)];
      y[size_t(base + j * stride)] =
          log ? v - max - std::log(sum) : (masked(j) ? 0.0 : std::exp(v - max) / sum);
    }
  });
  return y;
}

TEST_CASE("softmax over the last axis matches the reference and sums to one", "[kernels]") {
  Rng rng(21);
  const Shape s{3, 4, 50};
  std::vector<float> x = random_floats(rng, s.numel(), 3.0);
  std::vector<float> y(x.size());
  softmax(KernelContext{}, f32_view(x, s), /*axis=*/-1, /*causal=*/false, 0, f32_view(y, s));
  check_close(y, softmax_ref(x, s, 2, false, 0, false), kSoftmaxTol);
}

TEST_CASE("softmax over a non-last axis walks strided rows", "[kernels]") {
  Rng rng(22);
  const Shape s{2, 7, 5};
  std::vector<float> x = random_floats(rng, s.numel(), 3.0);
  std::vector<float> y(x.size());
  softmax(KernelContext{}, f32_view(x, s), /*axis=*/1, /*causal=*/false, 0, f32_view(y, s));
  check_close(y, softmax_ref(x, s, 1, false, 0, false), kSoftmaxTol);
  softmax(KernelContext{}, f32_view(x, s), /*axis=*/0, /*causal=*/false, 0, f32_view(y, s));
  check_close(y, softmax_ref(x, s, 0, false, 0, false), kSoftmaxTol);
}

TEST_CASE("causal softmax zeroes keys after the query plus the row offset", "[kernels]") {
  Rng rng(23);
  const Shape s{2, 3, 6, 6};  // [B, heads, queries, keys]
  std::vector<float> x = random_floats(rng, s.numel(), 2.0);
  std::vector<float> y(x.size());
  for (int64_t offset : {0, 2, -1}) {
    softmax(KernelContext{}, f32_view(x, s), /*axis=*/3, /*causal=*/true, offset, f32_view(y, s));
    check_close(y, softmax_ref(x, s, 3, true, offset, false), kSoftmaxTol);
  }
  // Offset 0: query 0 sees only key 0, so its weight is exactly one.
  softmax(KernelContext{}, f32_view(x, s), 3, true, 0, f32_view(y, s));
  CHECK(y[0] == 1.0f);
  CHECK(y[1] == 0.0f);
  // Offset -1: query 0 sees nothing and its row is all zeros.
  softmax(KernelContext{}, f32_view(x, s), 3, true, -1, f32_view(y, s));
  for (int j = 0; j < 6; ++j) CHECK(y[static_cast<size_t>(j)] == 0.0f);
}

TEST_CASE("softmax_grad is y * (dy - sum(dy * y)) on any axis", "[kernels]") {
  Rng rng(24);
  const Shape s{3, 5, 4};
  std::vector<float> x = random_floats(rng, s.numel());
  std::vector<float> dy = random_floats(rng, s.numel());
  std::vector<float> y(x.size());
  std::vector<float> dx(x.size());
  for (int64_t axis : {1, 2}) {
    softmax(KernelContext{}, f32_view(x, s), axis, false, 0, f32_view(y, s));
    std::vector<double> want(x.size());
    for_each_row(s, axis, [&](int64_t base, int64_t stride, int64_t len, int64_t) {
      double dot = 0.0;
      for (int64_t j = 0; j < len; ++j) {
        dot += static_cast<double>(dy[size_t(base + j * stride)]) * y[size_t(base + j * stride)];
      }
      for (int64_t j = 0; j < len; ++j) {
        const size_t i = size_t(base + j * stride);
        want[i] = y[i] * (dy[i] - dot);
      }
    });
    softmax_grad(KernelContext{}, f32_view(y, s), f32_view(dy, s), axis, f32_view(dx, s));
    check_close(dx, want, 1e-5);
  }
}

TEST_CASE("log_softmax is x minus logsumexp, on the last and a middle axis", "[kernels]") {
  Rng rng(25);
  const Shape s{4, 6, 9};
  std::vector<float> x = random_floats(rng, s.numel(), 4.0);
  std::vector<float> y(x.size());
  for (int64_t axis : {2, 1}) {
    log_softmax(KernelContext{}, f32_view(x, s), axis, f32_view(y, s));
    check_close(y, softmax_ref(x, s, axis, false, 0, true), kSoftmaxTol);
  }
}

TEST_CASE("log_softmax_grad is dy - exp(y) * sum(dy)", "[kernels]") {
  Rng rng(26);
  const Shape s{4, 9};
  std::vector<float> x = random_floats(rng, s.numel());
  std::vector<float> dy = random_floats(rng, s.numel());
  std::vector<float> y(x.size());
  std::vector<float> dx(x.size());
  log_softmax(KernelContext{}, f32_view(x, s), 1, f32_view(y, s));
  const std::vector<double> ly = softmax_ref(x, s, 1, false, 0, true);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < 4; ++r) {
    double sum = 0.0;
    for (int64_t j = 0; j < 9; ++j) sum += dy[size_t(r * 9 + j)];
    for (int64_t j = 0; j < 9; ++j) {
      const size_t i = size_t(r * 9 + j);
      want[i] = dy[i] - std::exp(ly[i]) * sum;
    }
  }
  log_softmax_grad(KernelContext{}, f32_view(y, s), f32_view(dy, s), 1, f32_view(dx, s));
  check_close(dx, want, 1e-5);
}

}  // namespace
}  // namespace meshpipe::kernels

// Tests of the elementwise kernels against double-precision formulas; activation gradients
// are also checked against central finite differences of the double forward.
#include "kernels/elementwise.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::i32_view;
using testing::random_floats;
using testing::ravel;
using testing::unravel;

// Single-op f32 results against double formulas: a few ulps, so 1e-6 relative is ample.
constexpr double kElementwiseTol = 1e-6;

double gelu_ref(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

// PyTorch's exact GELU: x Phi(x).
double gelu_erf_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

std::vector<double> map(const std::vector<float>& x, const std::function<double(double)>& f) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = f(x[i]);
  return y;
}

TEST_CASE("binary ops match double arithmetic and may write over an input", "[kernels]") {
  Rng rng(11);
  const Shape s{3, 70, 200};  // above the parallel threshold
  std::vector<float> a = random_floats(rng, s.numel());
  std::vector<float> b = random_floats(rng, s.numel());
  for (float& v : b) v = v >= 0 ? v + 0.5f : v - 0.5f;  // keep division well away from 0
  const std::pair<BinaryOp, std::function<double(double, double)>> cases[] = {
      {BinaryOp::kAdd, [](double x, double y) { return x + y; }},
      {BinaryOp::kSub, [](double x, double y) { return x - y; }},
      {BinaryOp::kMul, [](double x, double y) { return x * y; }},
      {BinaryOp::kDiv, [](double x, double y) { return x / y; }},
  };
  for (const auto& [op, f] : cases) {
    std::vector<double> want(a.size());
    for (size_t i = 0; i < a.size(); ++i) want[i] = f(a[i], b[i]);
    std::vector<float> out(a.size());
    binary(KernelContext{}, op, f32_view(a, s), f32_view(b, s), f32_view(out, s));
    check_close(out, want, kElementwiseTol);
  }
  std::vector<double> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = static_cast<double>(a[i]) + b[i];
  binary(KernelContext{}, BinaryOp::kAdd, f32_view(a, s), f32_view(b, s), f32_view(a, s));
  check_close(a, want, kElementwiseTol);
}

TEST_CASE("relu, both gelus and tanh match their double definitions", "[kernels]") {
  Rng rng(12);
  const Shape s{4, 33};
  std::vector<float> x = random_floats(rng, s.numel(), 2.0);
  std::vector<float> y(x.size());
  unary(KernelContext{}, UnaryOp::kRelu, f32_view(x, s), f32_view(y, s));
  check_close(y, map(x, [](double v) { return v > 0 ? v : 0.0; }), kElementwiseTol);
  unary(KernelContext{}, UnaryOp::kGelu, f32_view(x, s), f32_view(y, s));
  check_close(y, map(x, gelu_ref), kElementwiseTol);
  unary(KernelContext{}, UnaryOp::kGeluErf, f32_view(x, s), f32_view(y, s));
  check_close(y, map(x, gelu_erf_ref), kElementwiseTol);
  // The two GELUs differ (by up to ~1e-3 near |x| = 2): a model exported with one must not run
  // the other.
  double most = 0;
  for (float v : x) most = std::max(most, std::abs(gelu_ref(v) - gelu_erf_ref(v)));
  CHECK(most > 1e-4);
  unary(KernelContext{}, UnaryOp::kTanh, f32_view(x, s), f32_view(y, s));
  check_close(y, map(x, [](double v) { return std::tanh(v); }), kElementwiseTol);
}

TEST_CASE("activation gradients match central finite differences", "[kernels]") {
  Rng rng(13);
  const Shape s{5, 17};
  std::vector<float> x = random_floats(rng, s.numel(), 2.0);
  for (float& v : x) {
    if (std::abs(v) < 1e-3f) v = 0.5f;  // relu's kink is not differentiable
  }
  std::vector<float> dy = random_floats(rng, s.numel());
  std::vector<float> dx(x.size());
  const std::pair<UnaryOp, std::function<double(double)>> cases[] = {
      {UnaryOp::kRelu, [](double v) { return v > 0 ? v : 0.0; }},
      {UnaryOp::kGelu, gelu_ref},
      {UnaryOp::kTanh, [](double v) { return std::tanh(v); }},
      {UnaryOp::kGeluErf, gelu_erf_ref},
  };
  for (const auto& [op, f] : cases) {
    // `saved` is the output for relu and tanh, the input for the gelus.
    std::vector<float> saved = x;
    if (op != UnaryOp::kGelu && op != UnaryOp::kGeluErf)
      unary(KernelContext{}, op, f32_view(x, s), f32_view(saved, s));
    unary_grad(KernelContext{}, op, f32_view(saved, s), f32_view(dy, s), f32_view(dx, s));
    const double h = 1e-6;
    std::vector<double> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = dy[i] * (f(x[i] + h) - f(x[i] - h)) / (2 * h);
    // Finite differences in double are good to ~1e-9; the f32 kernel to ~1e-6.
    check_close(dx, want, 1e-5);
  }
}

TEST_CASE("affine_scalar scales and shifts in place", "[kernels]") {
  Rng rng(14);
  const Shape s{40};
  std::vector<float> x = random_floats(rng, s.numel());
  const std::vector<double> want = map(x, [](double v) { return 2.5 * v - 1.0; });
  affine_scalar(KernelContext{}, f32_view(x, s), 2.5f, -1.0f, f32_view(x, s));
  check_close(x, want, kElementwiseTol);
}

TEST_CASE("fill sets every element of f32 and i32 tensors", "[kernels]") {
  std::vector<float> f(50, 1.0f);
  fill(KernelContext{}, f32_view(f, Shape{5, 10}), 3.25f);
  for (float v : f) CHECK(v == 3.25f);
  std::vector<int32_t> n(12, 1);
  fill(KernelContext{}, i32_view(n, Shape{12}), 7.0f);
  for (int32_t v : n) CHECK(v == 7);
}

// out[idx] = x[idx] + b[idx restricted to dims], in double.
std::vector<double> bias_ref(const std::vector<float>& x, const Shape& xs,
                             const std::vector<float>& b, const Shape& bs,
                             const std::vector<int64_t>& dims) {
  std::vector<double> out(x.size());
  for (int64_t i = 0; i < xs.numel(); ++i) {
    const std::vector<int64_t> idx = unravel(i, xs);
    std::vector<int64_t> bi;
    for (int64_t d : dims) bi.push_back(idx[static_cast<size_t>(d)]);
    out[static_cast<size_t>(i)] = x[static_cast<size_t>(i)] + b[static_cast<size_t>(ravel(bi, bs))];
  }
  return out;
}

TEST_CASE("bias_add broadcasts the bias along the listed dims", "[kernels]") {
  Rng rng(15);
  struct Case {
    Shape x;
    Shape b;
    std::vector<int64_t> dims;
  };
  const Case cases[] = {
      {Shape{2, 3, 8}, Shape{8}, {2}},        // a linear layer's bias
      {Shape{2, 4, 3, 5}, Shape{4}, {1}},     // a per-channel NCHW bias
      {Shape{3, 4, 5}, Shape{3, 5}, {0, 2}},  // two non-adjacent dims
      {Shape{64, 40, 16}, Shape{40}, {1}},    // large enough to run in parallel
  };
  for (const Case& c : cases) {
    std::vector<float> x = random_floats(rng, c.x.numel());
    std::vector<float> b = random_floats(rng, c.b.numel());
    const std::vector<double> want = bias_ref(x, c.x, b, c.b, c.dims);
    std::vector<float> out(x.size());
    bias_add(KernelContext{}, f32_view(x, c.x), f32_view(b, c.b), c.dims, f32_view(out, c.x));
    check_close(out, want, kElementwiseTol);
  }
}

TEST_CASE("copy duplicates f32 and i32 tensors bit for bit", "[kernels]") {
  Rng rng(16);
  std::vector<float> x = random_floats(rng, 30);
  std::vector<float> y(30);
  copy(KernelContext{}, f32_view(x, Shape{5, 6}), f32_view(y, Shape{5, 6}));
  CHECK(x == y);
  std::vector<int32_t> a = {1, -2, 3, 4};
  std::vector<int32_t> b(4);
  copy(KernelContext{}, i32_view(a, Shape{4}), i32_view(b, Shape{4}));
  CHECK(a == b);
}

}  // namespace
}  // namespace meshpipe::kernels

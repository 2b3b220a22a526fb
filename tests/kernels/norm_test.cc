// Tests of layer norm and batch norm: forwards against a double reference, gradients against
// central finite differences of that reference.
#include "kernels/norm.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::random_floats;
using testing::to_double;

// Forward: f32 normalisation of O(1) values, 1e-5 relative to the largest output.
constexpr double kForwardTol = 1e-5;
// Gradients: the f32 kernel (errors ~1e-6 of the largest gradient, which involves the
// cancelling row sums) against finite differences good to ~1e-9.
constexpr double kGradTol = 1e-4;
constexpr double kEps = 1e-5;

// y = (x - mean) / sqrt(var + eps) * gamma + beta over groups; `group_of(i)` names the group
// of flat element i and `param_of(i)` its index into gamma and beta.
struct NormRef {
  int64_t groups = 0;
  std::function<int64_t(int64_t)> group_of;
  std::function<int64_t(int64_t)> param_of;

  std::vector<double> forward(const std::vector<double>& x, const std::vector<double>& gamma,
                              const std::vector<double>& beta) const {
    std::vector<double> sum(static_cast<size_t>(groups));
    std::vector<double> sq(static_cast<size_t>(groups));
    std::vector<double> count(static_cast<size_t>(groups));
    for (size_t i = 0; i < x.size(); ++i) {
      sum[size_t(group_of(int64_t(i)))] += x[i];
      count[size_t(group_of(int64_t(i)))] += 1;
    }
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t g = size_t(group_of(int64_t(i)));
      const double c = x[i] - sum[g] / count[g];
      sq[g] += c * c;
    }
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t g = size_t(group_of(int64_t(i)));
      const size_t p = size_t(param_of(int64_t(i)));
      y[i] = (x[i] - sum[g] / count[g]) / std::sqrt(sq[g] / count[g] + kEps) * gamma[p] + beta[p];
    }
    return y;
  }

  // Central differences of L = sum(dy * y) w.r.t. each element of `which` (x, gamma or beta).
  std::vector<double> numeric_grad(std::vector<double> x, std::vector<double> gamma,
                                   std::vector<double> beta, const std::vector<float>& dy,
                                   int which) const {
    std::vector<double>& v = which == 0 ? x : (which == 1 ? gamma : beta);
    auto loss = [&] {
      const std::vector<double> y = forward(x, gamma, beta);
      double l = 0.0;
      for (size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
      return l;
    };
    const double h = 1e-5;
    std::vector<double> grad(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double up = loss();
      v[i] = keep - h;
      const double down = loss();
      v[i] = keep;
      grad[i] = (up - down) / (2 * h);
    }
    return grad;
  }
};

TEST_CASE("layer_norm normalises each row and saves mean and rstd", "[kernels]") {
  Rng rng(31);
  const Shape s{2, 3, 10};
  std::vector<float> x = random_floats(rng, s.numel(), 2.0);
  for (float& v : x) v += 3.0f;  // a non-zero mean
  std::vector<float> gamma = random_floats(rng, 10);
  std::vector<float> beta = random_floats(rng, 10);
  std::vector<float> y(x.size());
  std::vector<float> mean(6);
  std::vector<float> rstd(6);
  layer_norm(KernelContext{}, f32_view(x, s), f32_view(gamma, Shape{10}), f32_view(beta, Shape{10}),
             static_cast<float>(kEps), f32_view(y, s), f32_view(mean, Shape{2, 3}),
             f32_view(rstd, Shape{2, 3}));
  const NormRef ref{6, [](int64_t i) { return i / 10; }, [](int64_t i) { return i % 10; }};
  check_close(y, ref.forward(to_double(x), to_double(gamma), to_double(beta)), kForwardTol);
  std::vector<double> want_mean(6);
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t j = 0; j < 10; ++j) want_mean[size_t(r)] += x[size_t(r * 10 + j)] / 10.0;
  }
  check_close(mean, want_mean, kForwardTol);
}

TEST_CASE("layer_norm_grad matches finite differences for x, gamma and beta", "[kernels]") {
  Rng rng(32);
  const Shape s{4, 12};
  std::vector<float> x = random_floats(rng, s.numel(), 1.5);
  std::vector<float> gamma = random_floats(rng, 12);
  std::vector<float> beta = random_floats(rng, 12);
  std::vector<float> dy = random_floats(rng, s.numel());
  std::vector<float> y(x.size());
  std::vector<float> mean(4);
  std::vector<float> rstd(4);
  const Shape p{12};
  layer_norm(KernelContext{}, f32_view(x, s), f32_view(gamma, p), f32_view(beta, p),
             static_cast<float>(kEps), f32_view(y, s), f32_view(mean, Shape{4}),
             f32_view(rstd, Shape{4}));
  std::vector<float> dx(x.size());
  std::vector<float> dgamma(12, 9.0f);
  std::vector<float> dbeta(12, 9.0f);
  layer_norm_grad(KernelContext{}, f32_view(dy, s), f32_view(x, s), f32_view(mean, Shape{4}),
                  f32_view(rstd, Shape{4}), f32_view(gamma, p), f32_view(dx, s),
                  f32_view(dgamma, p), f32_view(dbeta, p));
  const NormRef ref{4, [](int64_t i) { return i / 12; }, [](int64_t i) { return i % 12; }};
  const auto xd = to_double(x);
  const auto gd = to_double(gamma);
  const auto bd = to_double(beta);
  check_close(dx, ref.numeric_grad(xd, gd, bd, dy, 0), kGradTol);
  check_close(dgamma, ref.numeric_grad(xd, gd, bd, dy, 1), kGradTol);
  check_close(dbeta, ref.numeric_grad(xd, gd, bd, dy, 2), kGradTol);
}

TEST_CASE("layer_norm_grad parameter sums span several column blocks in parallel", "[kernels]") {
  // D = 200 crosses the 64-column blocks; 256 * 200 elements run multi-threaded.
  Rng rng(33);
  const int64_t rows = 256;
  const int64_t d = 200;
  const Shape s{rows, d};
  std::vector<float> x = random_floats(rng, s.numel());
  std::vector<float> gamma = random_floats(rng, d);
  std::vector<float> beta = random_floats(rng, d);
  std::vector<float> dy = random_floats(rng, s.numel());
  std::vector<float> y(x.size());
  std::vector<float> mean(static_cast<size_t>(rows));
  std::vector<float> rstd(static_cast<size_t>(rows));
  const Shape p{d};
  const Shape r{rows};
  layer_norm(KernelContext{}, f32_view(x, s), f32_view(gamma, p), f32_view(beta, p),
             static_cast<float>(kEps), f32_view(y, s), f32_view(mean, r), f32_view(rstd, r));
  std::vector<float> dx(x.size());
  std::vector<float> dgamma(static_cast<size_t>(d));
  std::vector<float> dbeta(static_cast<size_t>(d));
  layer_norm_grad(KernelContext{}, f32_view(dy, s), f32_view(x, s), f32_view(mean, r),
                  f32_view(rstd, r), f32_view(gamma, p), f32_view(dx, s), f32_view(dgamma, p),
                  f32_view(dbeta, p));
  // Analytic double reference: dgamma = sum_r dy * xhat, dbeta = sum_r dy.
  std::vector<double> want_g(static_cast<size_t>(d));
  std::vector<double> want_b(static_cast<size_t>(d));
  for (int64_t i = 0; i < rows; ++i) {
    double mu = 0.0;
    for (int64_t j = 0; j < d; ++j) mu += x[size_t(i * d + j)];
    mu /= double(d);
    double var = 0.0;
    for (int64_t j = 0; j < d; ++j)
      var += (x[size_t(i * d + j)] - mu) * (x[size_t(i * d + j)] - mu);
    const double rs = 1.0 / std::sqrt(var / double(d) + kEps);
    for (int64_t j = 0; j < d; ++j) {
      want_g[size_t(j)] += dy[size_t(i * d + j)] * (x[size_t(i * d + j)] - mu) * rs;
      want_b[size_t(j)] += dy[size_t(i * d + j)];
    }
  }
  check_close(dgamma, want_g, kForwardTol);
  check_close(dbeta, want_b, kForwardTol);
}

TEST_CASE("batch_norm normalises each channel over batch and space", "[kernels]") {
  Rng rng(34);
  const Shape s{3, 4, 2, 3};
  std::vector<float> x = random_floats(rng, s.numel(), 2.0);
  std::vector<float> gamma = random_floats(rng, 4);
  std::vector<float> beta = random_floats(rng, 4);
  std::vector<float> y(x.size());
  std::vector<float> mean(4);
  std::vector<float> rstd(4);
  const Shape c{4};
  batch_norm(KernelContext{}, f32_view(x, s), f32_view(gamma, c), f32_view(beta, c),
             static_cast<float>(kEps), f32_view(y, s), f32_view(mean, c), f32_view(rstd, c));
  const auto channel = [](int64_t i) { return (i / 6) % 4; };
  const NormRef ref{4, channel, channel};
  check_close(y, ref.forward(to_double(x), to_double(gamma), to_double(beta)), kForwardTol);
}

TEST_CASE("batch_norm_grad matches finite differences, for NCHW and [N, C]", "[kernels]") {
  Rng rng(35);
  struct Case {
    Shape x;
    int64_t plane;
  };
  for (const Case& cs : {Case{Shape{3, 4, 2, 3}, 6}, Case{Shape{5, 3}, 1}}) {
    const int64_t channels = cs.x[1];
    const Shape c{channels};
    std::vector<float> x = random_floats(rng, cs.x.numel(), 1.5);
    std::vector<float> gamma = random_floats(rng, channels);
    std::vector<float> beta = random_floats(rng, channels);
    std::vector<float> dy = random_floats(rng, cs.x.numel());
    std::vector<float> y(x.size());
    std::vector<float> mean(static_cast<size_t>(channels));
    std::vector<float> rstd(static_cast<size_t>(channels));
    batch_norm(KernelContext{}, f32_view(x, cs.x), f32_view(gamma, c), f32_view(beta, c),
               static_cast<float>(kEps), f32_view(y, cs.x), f32_view(mean, c), f32_view(rstd, c));
    std::vector<float> dx(x.size());
    std::vector<float> dgamma(static_cast<size_t>(channels));
    std::vector<float> dbeta(static_cast<size_t>(channels));
    batch_norm_grad(KernelContext{}, f32_view(dy, cs.x), f32_view(x, cs.x), f32_view(mean, c),
                    f32_view(rstd, c), f32_view(gamma, c), f32_view(dx, cs.x), f32_view(dgamma, c),
                    f32_view(dbeta, c));
    const int64_t plane = cs.plane;
    const auto channel = [plane, channels](int64_t i) { return (i / plane) % channels; };
    const NormRef ref{channels, channel, channel};
    const auto xd = to_double(x);
    const auto gd = to_double(gamma);
    const auto bd = to_double(beta);
    check_close(dx, ref.numeric_grad(xd, gd, bd, dy, 0), kGradTol);
    check_close(dgamma, ref.numeric_grad(xd, gd, bd, dy, 1), kGradTol);
    check_close(dbeta, ref.numeric_grad(xd, gd, bd, dy, 2), kGradTol);
  }
}

TEST_CASE("synchronised batch norm over two halves of the batch equals whole-batch norm",
          "[kernels]") {
  Rng rng(36);
  const Shape whole{4, 3, 2, 2};
  const Shape half{2, 3, 2, 2};
  const Shape c{3};
  const int64_t n_half = half.numel();
  std::vector<float> x = random_floats(rng, whole.numel(), 1.5);
  std::vector<float> gamma = random_floats(rng, 3);
  std::vector<float> beta = random_floats(rng, 3);
  std::vector<float> dy = random_floats(rng, whole.numel());
  const KernelContext ctx;
  // Each "device" holds half of N; the sums are added by hand where an all-reduce would run.
  std::vector<std::vector<float>> xs{{x.begin(), x.begin() + n_half},
                                     {x.begin() + n_half, x.end()}};
  std::vector<std::vector<float>> dys{{dy.begin(), dy.begin() + n_half},
                                      {dy.begin() + n_half, dy.end()}};
  const double count = 4 * 2 * 2;
  std::vector<float> mean(3, 0.0f);
  for (auto& part : xs) {
    std::vector<float> s(3);
    batch_norm_channel_sums(ctx, f32_view(part, half), f32_view(s, c));
    for (size_t i = 0; i < 3; ++i) mean[i] += s[i];
  }
  for (float& m : mean) m = static_cast<float>(m / count);
  std::vector<float> sq(3, 0.0f);
  for (auto& part : xs) {
    std::vector<float> s(3);
    batch_norm_centered_square_sums(ctx, f32_view(part, half), f32_view(mean, c), f32_view(s, c));
    for (size_t i = 0; i < 3; ++i) sq[i] += s[i];
  }
  std::vector<float> y;
  std::vector<float> rstd(3);
  for (auto& part : xs) {
    std::vector<float> yp(part.size());
    batch_norm_from_sums(ctx, f32_view(part, half), f32_view(mean, c), f32_view(sq, c), count,
                         f32_view(gamma, c), f32_view(beta, c), static_cast<float>(kEps),
                         f32_view(yp, half), f32_view(rstd, c));
    y.insert(y.end(), yp.begin(), yp.end());
  }
  const auto channel = [](int64_t i) { return (i / 4) % 3; };
  const NormRef ref{3, channel, channel};
  const auto xd = to_double(x);
  const auto gd = to_double(gamma);
  const auto bd = to_double(beta);
  check_close(y, ref.forward(xd, gd, bd), kForwardTol);

  std::vector<float> dgamma(3, 0.0f);
  std::vector<float> dbeta(3, 0.0f);
  for (size_t k = 0; k < 2; ++k) {
    std::vector<float> g(3);
    std::vector<float> b(3);
    batch_norm_grad_sums(ctx, f32_view(dys[k], half), f32_view(xs[k], half), f32_view(mean, c),
                         f32_view(rstd, c), f32_view(g, c), f32_view(b, c));
    for (size_t i = 0; i < 3; ++i) {
      dgamma[i] += g[i];
      dbeta[i] += b[i];
    }
  }
  std::vector<float> dx;
  for (size_t k = 0; k < 2; ++k) {
    std::vector<float> part(static_cast<size_t>(n_half));
    batch_norm_grad_input(ctx, f32_view(dys[k], half), f32_view(xs[k], half), f32_view(mean, c),
                          f32_view(rstd, c), f32_view(gamma, c), f32_view(dgamma, c),
                          f32_view(dbeta, c), count, f32_view(part, half));
    dx.insert(dx.end(), part.begin(), part.end());
  }
  check_close(dx, ref.numeric_grad(xd, gd, bd, dy, 0), kGradTol);
  check_close(dgamma, ref.numeric_grad(xd, gd, bd, dy, 1), kGradTol);
  check_close(dbeta, ref.numeric_grad(xd, gd, bd, dy, 2), kGradTol);
}

}  // namespace
}  // namespace meshpipe::kernels

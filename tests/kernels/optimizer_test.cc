// Tests of SGD, SGD with momentum and AdamW against one step computed by hand.
#include "kernels/optimizer.h"

#include <catch2/catch.hpp>

#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_near;
using testing::f32_view;

// Hand values carry ~7 significant digits; f32 arithmetic on O(1) numbers: 1e-6 absolute.
constexpr double kTol = 1e-6;

TEST_CASE("sgd_update takes one decayed gradient step in place", "[kernels]") {
  // lr = 0.1, weight_decay = 0.01:
  //   1 - 0.1 * (0.5 + 0.01 * 1)     = 1 - 0.051   = 0.949
  //  -2 - 0.1 * (0.25 + 0.01 * -2)   = -2 - 0.023  = -2.023
  std::vector<float> p = {1.0f, -2.0f};
  std::vector<float> g = {0.5f, 0.25f};
  const Shape s{2};
  sgd_update(KernelContext{}, f32_view(p, s), f32_view(g, s), 0.1f, 0.01f, f32_view(p, s));
  check_near(p, {0.949, -2.023}, kTol);
}

TEST_CASE("sgd_momentum_update folds the gradient into the velocity first", "[kernels]") {
  // momentum = 0.9, lr = 0.1, weight_decay = 0.01, m = [0.2, -0.1]:
  //   m' = 0.9 * 0.2 + (0.5 + 0.01)     = 0.69;  p' = 1 - 0.1 * 0.69   = 0.931
  //   m' = 0.9 * -0.1 + (0.25 - 0.02)   = 0.14;  p' = -2 - 0.1 * 0.14  = -2.014
  std::vector<float> p = {1.0f, -2.0f};
  std::vector<float> g = {0.5f, 0.25f};
  std::vector<float> m = {0.2f, -0.1f};
  std::vector<float> p_out(2);
  const Shape s{2};
  sgd_momentum_update(KernelContext{}, f32_view(p, s), f32_view(g, s), f32_view(m, s), 0.1f, 0.9f,
                      0.01f, f32_view(p_out, s), f32_view(m, s));
  check_near(m, {0.69, 0.14}, kTol);
  check_near(p_out, {0.931, -2.014}, kTol);
}

TEST_CASE("adam_update applies bias-corrected moments and decoupled weight decay", "[kernels]") {
  // Step t = 2, lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, weight_decay = 0.1.
  // Bias corrections: 1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999.
  // Element 0: p = 1, g = 0.2, m = 0.1, v = 0.01
  //   m' = 0.09 + 0.02 = 0.11;  v' = 0.00999 + 0.00004 = 0.01003
  //   m'/0.19 = 0.5789474;  sqrt(v'/0.001999) = sqrt(5.0175088) = 2.2399796
  //   p' = 1 - 0.01 * 0.5789474 / 2.2399796 - 0.01 * 0.1 * 1 = 0.9964154
  // Element 1: p = -2, g = -0.4, m = -0.05, v = 0.04
  //   m' = -0.045 - 0.04 = -0.085;  v' = 0.03996 + 0.00016 = 0.04012
  //   m'/0.19 = -0.4473684;  sqrt(v'/0.001999) = sqrt(20.070035) = 4.4799593
  //   p' = -2 + 0.01 * 0.0998600 + 0.01 * 0.1 * 2 = -1.9970014
  std::vector<float> p = {1.0f, -2.0f};
  std::vector<float> g = {0.2f, -0.4f};
  std::vector<float> m = {0.1f, -0.05f};
  std::vector<float> v = {0.01f, 0.04f};
  std::vector<float> step = {2.0f};
  const Shape s{2};
  AdamParams hp;
  hp.lr = 0.01f;
  hp.weight_decay = 0.1f;
  adam_update(KernelContext{}, f32_view(p, s), f32_view(g, s), f32_view(m, s), f32_view(v, s),
              f32_view(step, Shape{}), hp, f32_view(p, s), f32_view(m, s), f32_view(v, s));
  check_near(m, {0.11, -0.085}, kTol);
  check_near(v, {0.01003, 0.04012}, 1e-8);
  check_near(p, {0.9964154, -1.9970014}, kTol);
}

TEST_CASE("adam_update's first step moves each weight by about lr", "[kernels]") {
  // t = 1, zero moments: m'/(1 - b1) = g and v'/(1 - b2) = g^2, so the step is
  // lr * g / (|g| + eps) = lr * sign(g): 1 - 0.1 = 0.9 and -2 + 0.1 = -1.9 (no decay).
  std::vector<float> p = {1.0f, -2.0f};
  std::vector<float> g = {0.5f, -0.25f};
  std::vector<float> m = {0.0f, 0.0f};
  std::vector<float> v = {0.0f, 0.0f};
  std::vector<float> step = {1.0f};
  std::vector<float> p_out(2);
  std::vector<float> m_out(2);
  std::vector<float> v_out(2);
  const Shape s{2};
  AdamParams hp;
  hp.lr = 0.1f;
  adam_update(KernelContext{}, f32_view(p, s), f32_view(g, s), f32_view(m, s), f32_view(v, s),
              f32_view(step, Shape{}), hp, f32_view(p_out, s), f32_view(m_out, s),
              f32_view(v_out, s));
  check_near(p_out, {0.9, -1.9}, kTol);
  check_near(m_out, {0.05, -0.025}, kTol);
  // 1 - 0.999f is 9.99987e-4 in f32, so v' is off by ~1.3e-5 relative: 1e-8 absolute.
  check_near(v_out, {0.00025, 0.0000625}, 1e-8);
}

}  // namespace
}  // namespace meshpipe::kernels

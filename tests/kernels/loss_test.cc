// Tests of softmax cross-entropy and its gradient against double-precision references.
#include "kernels/loss.h"

#include <catch2/catch.hpp>
#include <cmath>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::i32_view;
using testing::random_floats;

constexpr int64_t kVocab = 11;

double logsumexp_ref(const std::vector<float>& logits, int64_t p) {
  double max = logits[size_t(p * kVocab)];
  for (int64_t j = 0; j < kVocab; ++j) max = std::max(max, double(logits[size_t(p * kVocab + j)]));
  double sum = 0.0;
  for (int64_t j = 0; j < kVocab; ++j) sum += std::exp(logits[size_t(p * kVocab + j)] - max);
  return max + std::log(sum);
}

struct LossCase {
  Shape logits_shape{2, 3, kVocab};
  Shape label_shape{2, 3};
  std::vector<float> logits;
  std::vector<int32_t> labels;

  explicit LossCase(uint64_t seed) {
    Rng rng(seed);
    logits = random_floats(rng, logits_shape.numel(), 3.0);
    for (int64_t p = 0; p < label_shape.numel(); ++p) {
      labels.push_back(static_cast<int32_t>(rng.below(kVocab)));
    }
  }
};

TEST_CASE("cross_entropy is the mean of logsumexp minus the label's logit", "[kernels]") {
  LossCase c(51);
  std::vector<float> loss(1);
  cross_entropy(KernelContext{}, f32_view(c.logits, c.logits_shape),
                i32_view(c.labels, c.label_shape), f32_view(loss, Shape{}));
  double want = 0.0;
  for (int64_t p = 0; p < 6; ++p) {
    want += logsumexp_ref(c.logits, p) - c.logits[size_t(p * kVocab + c.labels[size_t(p)])];
  }
  // A scalar from six f32 log-sum-exps summed in double: 1e-6 relative.
  check_close(loss, {want / 6.0}, 1e-6);
}

TEST_CASE("cross_entropy_grad is dloss * (softmax - onehot) / positions", "[kernels]") {
  LossCase c(52);
  std::vector<float> dloss = {0.5f};
  std::vector<float> dlogits(c.logits.size());
  cross_entropy_grad(KernelContext{}, f32_view(c.logits, c.logits_shape),
                     i32_view(c.labels, c.label_shape), f32_view(dloss, Shape{}),
                     f32_view(dlogits, c.logits_shape));
  std::vector<double> want(c.logits.size());
  for (int64_t p = 0; p < 6; ++p) {
    const double lse = logsumexp_ref(c.logits, p);
    for (int64_t j = 0; j < kVocab; ++j) {
      const size_t i = size_t(p * kVocab + j);
      const double onehot = j == c.labels[size_t(p)] ? 1.0 : 0.0;
      want[i] = 0.5 * (std::exp(c.logits[i] - lse) - onehot) / 6.0;
    }
  }
  // Each entry is one f32 exp: 1e-5 relative to the largest entry is generous.
  check_close(dlogits, want, 1e-5);
}

TEST_CASE("cross_entropy over many positions matches the reference", "[kernels]") {
  // 5600 positions x 11 logits = 61600, above the parallel threshold.
  Rng rng(53);
  const Shape ls{700, 8, kVocab};
  const Shape ys{700, 8};
  std::vector<float> logits = random_floats(rng, ls.numel(), 3.0);
  std::vector<int32_t> labels;
  for (int64_t p = 0; p < ys.numel(); ++p)
    labels.push_back(static_cast<int32_t>(rng.below(kVocab)));
  std::vector<float> loss(1);
  cross_entropy(KernelContext{}, f32_view(logits, ls), i32_view(labels, ys),
                f32_view(loss, Shape{}));
  double want = 0.0;
  for (int64_t p = 0; p < ys.numel(); ++p) {
    want += logsumexp_ref(logits, p) - logits[size_t(p * kVocab + labels[size_t(p)])];
  }
  // Per-row f32 exps summed in double: 1e-6 relative.
  check_close(loss, {want / double(ys.numel())}, 1e-6);
}

}  // namespace
}  // namespace meshpipe::kernels

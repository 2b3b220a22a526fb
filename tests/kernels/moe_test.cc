// Tests of top-k gating: a hand-checked routing with capacity dropping, a double reference
// of the rule on random inputs, and the gradient against finite differences of it.
#include "kernels/moe.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::random_floats;
using testing::to_double;

struct GateDims {
  int64_t g, s, e, k, c;
};

// The rule of moe.h written out literally: choice by choice over all tokens, one counter per
// expert that every pick increments (dropped or not), then per-token normalisation.
std::vector<double> combine_ref(const std::vector<double>& probs, const GateDims& d) {
  std::vector<double> out(static_cast<size_t>(d.g * d.s * d.e * d.c));
  for (int64_t g = 0; g < d.g; ++g) {
    const double* p = probs.data() + g * d.s * d.e;
    std::vector<std::vector<int64_t>> pick(static_cast<size_t>(d.s));
    std::vector<std::vector<int64_t>> pos(static_cast<size_t>(d.s));
    std::vector<int64_t> count(static_cast<size_t>(d.e));
    for (int64_t j = 0; j < d.k; ++j) {
      for (int64_t s = 0; s < d.s; ++s) {
        int64_t best = -1;
        for (int64_t e = 0; e < d.e; ++e) {
          const auto& taken = pick[size_t(s)];
          if (std::find(taken.begin(), taken.end(), e) != taken.end()) continue;
          if (best < 0 || p[s * d.e + e] > p[s * d.e + best]) best = e;
        }
        pick[size_t(s)].push_back(best);
        pos[size_t(s)].push_back(count[size_t(best)]++);
      }
    }
    for (int64_t s = 0; s < d.s; ++s) {
      std::vector<double> gate(static_cast<size_t>(d.k));
      double total = 0.0;
      for (int64_t j = 0; j < d.k; ++j) {
        if (pos[size_t(s)][size_t(j)] < d.c)
          gate[size_t(j)] = p[s * d.e + pick[size_t(s)][size_t(j)]];
        total += gate[size_t(j)];
      }
      for (int64_t j = 0; j < d.k; ++j) {
        if (pos[size_t(s)][size_t(j)] >= d.c) continue;
        const double v = (d.k > 1 && total > 0) ? gate[size_t(j)] / total : gate[size_t(j)];
        out[size_t(((g * d.s + s) * d.e + pick[size_t(s)][size_t(j)]) * d.c +
                   pos[size_t(s)][size_t(j)])] = v;
      }
    }
  }
  return out;
}

std::vector<float> random_probs(Rng& rng, const GateDims& d) {
  std::vector<float> p = random_floats(rng, d.g * d.s * d.e, 2.0);
  for (int64_t r = 0; r < d.g * d.s; ++r) {
    double sum = 0.0;
    for (int64_t e = 0; e < d.e; ++e) sum += std::exp(p[size_t(r * d.e + e)]);
    for (int64_t e = 0; e < d.e; ++e) {
      p[size_t(r * d.e + e)] = static_cast<float>(std::exp(p[size_t(r * d.e + e)]) / sum);
    }
  }
  return p;
}

TEST_CASE("top-2 gating drops tokens past capacity and renormalises the kept gates", "[kernels]") {
  // G = 1, S = 5, E = 3, k = 2, C = 2.
  //   t0 [0.5, 0.3, 0.2] picks (0, 1);  t1 [0.6, 0.1, 0.3] picks (0, 2);
  //   t2 [0.7, 0.2, 0.1] picks (0, 1);  t3 [0.2, 0.5, 0.3] picks (1, 2);
  //   t4 [0.1, 0.2, 0.7] picks (2, 1).
  // Choice 0: expert 0 gets t0 pos 0, t1 pos 1, t2 pos 2 (dropped); expert 1 gets t3 pos 0;
  //   expert 2 gets t4 pos 0. Counts before dropping: e0 = 3, e1 = 1, e2 = 1.
  // Choice 1 continues from those counts: expert 1 gets t0 pos 1, t2 pos 2 (dropped),
  //   t4 pos 3 (dropped); expert 2 gets t1 pos 1, t3 pos 2 (dropped).
  // Gates, normalised over the kept ones:
  //   t0: e0@0 = 0.5/0.8 = 0.625, e1@1 = 0.3/0.8 = 0.375
  //   t1: e0@1 = 0.6/0.9 = 2/3,   e2@1 = 0.3/0.9 = 1/3
  //   t2: both dropped, nothing
  //   t3: e1@0 = 0.5/0.5 = 1      t4: e2@0 = 0.7/0.7 = 1
  std::vector<float> probs = {0.5f, 0.3f, 0.2f, 0.6f, 0.1f, 0.3f, 0.7f, 0.2f,
                              0.1f, 0.2f, 0.5f, 0.3f, 0.1f, 0.2f, 0.7f};
  const Shape cs{1, 5, 3, 2};
  std::vector<float> combine(static_cast<size_t>(cs.numel()), 9.0f);
  std::vector<float> dispatch(static_cast<size_t>(cs.numel()), 9.0f);
  topk_gating(KernelContext{}, f32_view(probs, Shape{1, 5, 3}), /*k=*/2, /*capacity=*/2,
              f32_view(combine, cs), f32_view(dispatch, cs));
  std::vector<double> want(static_cast<size_t>(cs.numel()));
  auto at = [](int64_t s, int64_t e, int64_t c) { return size_t((s * 3 + e) * 2 + c); };
  want[at(0, 0, 0)] = 0.625;
  want[at(0, 1, 1)] = 0.375;
  want[at(1, 0, 1)] = 2.0 / 3.0;
  want[at(1, 2, 1)] = 1.0 / 3.0;
  want[at(3, 1, 0)] = 1.0;
  want[at(4, 2, 0)] = 1.0;
  testing::check_near(combine, want, 1e-6);
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("slot " << i);
    CHECK(dispatch[i] == (want[i] > 0 ? 1.0f : 0.0f));
  }
}

TEST_CASE("top-1 gating keeps raw probabilities of the tokens within capacity", "[kernels]") {
  // Same probs, k = 1, C = 2: expert 0 gets t0 pos 0, t1 pos 1, t2 pos 2 (dropped);
  // expert 1 gets t3 pos 0; expert 2 gets t4 pos 0. No normalisation for k = 1.
  std::vector<float> probs = {0.5f, 0.3f, 0.2f, 0.6f, 0.1f, 0.3f, 0.7f, 0.2f,
                              0.1f, 0.2f, 0.5f, 0.3f, 0.1f, 0.2f, 0.7f};
  const Shape cs{1, 5, 3, 2};
  std::vector<float> combine(static_cast<size_t>(cs.numel()));
  std::vector<float> dispatch(static_cast<size_t>(cs.numel()));
  topk_gating(KernelContext{}, f32_view(probs, Shape{1, 5, 3}), 1, 2, f32_view(combine, cs),
              f32_view(dispatch, cs));
  std::vector<double> want(static_cast<size_t>(cs.numel()));
  auto at = [](int64_t s, int64_t e, int64_t c) { return size_t((s * 3 + e) * 2 + c); };
  want[at(0, 0, 0)] = 0.5;
  want[at(1, 0, 1)] = 0.6;
  want[at(3, 1, 0)] = 0.5;
  want[at(4, 2, 0)] = 0.7;
  testing::check_near(combine, want, 1e-7);
}

TEST_CASE("gating breaks ties by the lowest expert index", "[kernels]") {
  // [0.4, 0.4, 0.2] with k = 2: choice 0 is expert 0, choice 1 expert 1; each gets 0.5.
  std::vector<float> probs = {0.4f, 0.4f, 0.2f};
  const Shape cs{1, 1, 3, 1};
  std::vector<float> combine(3);
  std::vector<float> dispatch(3);
  topk_gating(KernelContext{}, f32_view(probs, Shape{1, 1, 3}), 2, 1, f32_view(combine, cs),
              f32_view(dispatch, cs));
  CHECK(combine == std::vector<float>{0.5f, 0.5f, 0.0f});
  CHECK(dispatch == std::vector<float>{1.0f, 1.0f, 0.0f});
}

TEST_CASE("gating matches the double reference on random groups", "[kernels]") {
  Rng rng(91);
  for (const GateDims& d :
       {GateDims{3, 10, 5, 1, 3}, GateDims{3, 10, 5, 2, 3}, GateDims{2, 12, 6, 3, 4}}) {
    std::vector<float> probs = random_probs(rng, d);
    const Shape cs{d.g, d.s, d.e, d.c};
    std::vector<float> combine(static_cast<size_t>(cs.numel()));
    std::vector<float> dispatch(static_cast<size_t>(cs.numel()));
    topk_gating(KernelContext{}, f32_view(probs, Shape{d.g, d.s, d.e}), d.k, d.c,
                f32_view(combine, cs), f32_view(dispatch, cs));
    // One f32 division per entry: 1e-6 relative.
    check_close(combine, combine_ref(to_double(probs), d), 1e-6);
  }
}

TEST_CASE("gating gradient matches finite differences of the combine weights", "[kernels]") {
  Rng rng(92);
  for (const GateDims& d :
       {GateDims{2, 8, 4, 1, 3}, GateDims{2, 8, 4, 2, 3}, GateDims{1, 9, 5, 3, 3}}) {
    INFO("k = " << d.k);
    std::vector<float> probs = random_probs(rng, d);
    const Shape ps{d.g, d.s, d.e};
    const Shape cs{d.g, d.s, d.e, d.c};
    std::vector<float> dcombine = random_floats(rng, cs.numel());
    std::vector<float> dprobs(static_cast<size_t>(ps.numel()), 5.0f);
    topk_gating_grad(KernelContext{}, f32_view(probs, ps), f32_view(dcombine, cs), d.k, d.c,
                     f32_view(dprobs, ps));
    // Central differences of L = sum(dcombine * combine) in double. The step is far below
    // the gaps between random probabilities, so the selection does not change.
    std::vector<double> p = to_double(probs);
    auto loss = [&] {
      const std::vector<double> c = combine_ref(p, d);
      double l = 0.0;
      for (size_t i = 0; i < c.size(); ++i) l += dcombine[i] * c[i];
      return l;
    };
    const double h = 1e-7;
    std::vector<double> want(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      const double keep = p[i];
      p[i] = keep + h;
      const double up = loss();
      p[i] = keep - h;
      const double down = loss();
      p[i] = keep;
      want[i] = (up - down) / (2 * h);
    }
    // f32 kernel against differences good to ~1e-8: 1e-5 relative to the largest gradient.
    check_close(dprobs, want, 1e-5);
  }
}

}  // namespace
}  // namespace meshpipe::kernels

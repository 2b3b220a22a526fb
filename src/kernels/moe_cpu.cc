// CPU GShard top-k gating. The selection is recomputed identically by the forward and the
// gradient kernel, so the backward needs no saved routing state beyond probs.
#include <array>
#include <cstring>

#include "kernels/internal/cpu_common.h"
#include "kernels/moe.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

// Bounds of the per-group bookkeeping kept on the stack (k * E position counters).
constexpr int64_t kMaxExperts = 2048;
constexpr int64_t kMaxK = 8;

struct GatingGeometry {
  int64_t groups = 0;
  int64_t tokens = 0;
  int64_t experts = 0;
  int64_t capacity = 0;
};

GatingGeometry check_gating(const TensorView& probs, const TensorView& slots, int64_t k,
                            int64_t capacity, const char* op) {
  MP_CHECK(probs.shape.rank() == 3)
      << op << ": probs must be [G, S, E], got " << probs.shape.to_string();
  MP_CHECK(probs.dtype == DType::kF32 && slots.dtype == DType::kF32) << op << ": needs f32";
  MP_CHECK(probs.is_contiguous() && slots.is_contiguous()) << op << ": needs contiguous views";
  const GatingGeometry g{probs.shape[0], probs.shape[1], probs.shape[2], capacity};
  MP_CHECK(slots.shape == Shape({g.groups, g.tokens, g.experts, capacity}))
      << op << ": expected [G, S, E, C] = [" << g.groups << ", " << g.tokens << ", " << g.experts
      << ", " << capacity << "], got " << slots.shape.to_string();
  MP_CHECK(g.experts <= kMaxExperts) << op << ": at most " << kMaxExperts << " experts";
  MP_CHECK(k >= 1 && k <= g.experts && k <= kMaxK)
      << op << ": k = " << k << " must be in [1, min(E, " << kMaxK << ")]";
  return g;
}

// One token's choices: e_j and pos_j for j < k; kept iff pos_j < capacity.
struct Route {
  std::array<int64_t, kMaxK> expert{};
  std::array<int64_t, kMaxK> pos{};
};

// e_j = argmax of the row over experts not chosen earlier, lowest index on ties.
void choose_experts(const float* row, int64_t experts, int64_t k, Route& route) {
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i) taken = taken || route.expert[static_cast<size_t>(i)] == e;
      if (taken) continue;
      if (best < 0 || row[e] > row[best]) best = e;
    }
    route.expert[static_cast<size_t>(j)] = best;
  }
}

// Assigns positions in one group. pos_j(s) counts every earlier choice's tokens at that expert
// (dropped or not) plus this choice's tokens before s, so a first pass counts tokens per
// (choice, expert) and the prefix over choices becomes each counter's starting value.
class GroupRouter {
 public:
  GroupRouter(const float* probs, int64_t tokens, int64_t experts, int64_t k)
      : probs_(probs), tokens_(tokens), experts_(experts), k_(k) {
    Route choice;
    for (int64_t s = 0; s < tokens_; ++s) {
      choose_experts(probs_ + s * experts_, experts_, k_, choice);
      for (int64_t j = 0; j < k_; ++j) ++next_[slot(j, choice.expert[static_cast<size_t>(j)])];
    }
    for (int64_t e = 0; e < experts_; ++e) {
      int32_t start = 0;
      for (int64_t j = 0; j < k_; ++j) {
        const int32_t count = next_[slot(j, e)];
        next_[slot(j, e)] = start;
        start += count;
      }
    }
  }

  // Routes token s; tokens must be visited in increasing order.
  void route(int64_t s, Route& out) {
    choose_experts(probs_ + s * experts_, experts_, k_, out);
    for (int64_t j = 0; j < k_; ++j) {
      const auto u = static_cast<size_t>(j);
      out.pos[u] = next_[slot(j, out.expert[u])]++;
    }
  }

 private:
  size_t slot(int64_t j, int64_t e) const { return static_cast<size_t>(j * experts_ + e); }

  const float* probs_;
  int64_t tokens_;
  int64_t experts_;
  int64_t k_;
  std::array<int32_t, kMaxK * kMaxExperts> next_{};
};

}  // namespace

void topk_gating(const KernelContext& ctx, const TensorView& probs, int64_t k, int64_t capacity,
                 const TensorView& combine, const TensorView& dispatch) {
  check_cpu(ctx, "topk_gating");
  const GatingGeometry g = check_gating(probs, combine, k, capacity, "topk_gating");
  MP_CHECK(dispatch.shape == combine.shape && dispatch.dtype == DType::kF32 &&
           dispatch.is_contiguous())
      << "topk_gating: dispatch must be contiguous f32 shaped like combine";
  const int64_t row = g.experts * g.capacity;
  std::memset(combine.data, 0, static_cast<size_t>(combine.bytes()));
  std::memset(dispatch.data, 0, static_cast<size_t>(dispatch.bytes()));
#pragma omp parallel for if (combine.numel() > kParallelElems)
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const float* p = probs.f32() + grp * g.tokens * g.experts;
    float* comb = combine.f32() + grp * g.tokens * row;
    float* disp = dispatch.f32() + grp * g.tokens * row;
    GroupRouter router(p, g.tokens, g.experts, k);
    Route route;
    for (int64_t s = 0; s < g.tokens; ++s) {
      router.route(s, route);
      std::array<float, kMaxK> gate{};
      double total = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const auto u = static_cast<size_t>(j);
        if (route.pos[u] < g.capacity) gate[u] = p[s * g.experts + route.expert[u]];
        total += gate[u];
      }
      const bool normalise = k > 1 && total > 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const auto u = static_cast<size_t>(j);
        if (route.pos[u] >= g.capacity) continue;
        const float value = normalise ? static_cast<float>(gate[u] / total) : gate[u];
        const int64_t at = s * row + route.expert[u] * g.capacity + route.pos[u];
        comb[at] = value;
        disp[at] = value > 0.0f ? 1.0f : 0.0f;
      }
    }
  }
}

void topk_gating_grad(const KernelContext& ctx, const TensorView& probs, const TensorView& dcombine,
                      int64_t k, int64_t capacity, const TensorView& dprobs) {
  check_cpu(ctx, "topk_gating_grad");
  const GatingGeometry g = check_gating(probs, dcombine, k, capacity, "topk_gating_grad");
  MP_CHECK(dprobs.shape == probs.shape && dprobs.dtype == DType::kF32 && dprobs.is_contiguous())
      << "topk_gating_grad: dprobs must be contiguous f32 shaped like probs";
  const int64_t row = g.experts * g.capacity;
  std::memset(dprobs.data, 0, static_cast<size_t>(dprobs.bytes()));
#pragma omp parallel for if (dcombine.numel() > kParallelElems)
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const float* p = probs.f32() + grp * g.tokens * g.experts;
    const float* dc = dcombine.f32() + grp * g.tokens * row;
    float* dp = dprobs.f32() + grp * g.tokens * g.experts;
    GroupRouter router(p, g.tokens, g.experts, k);
    Route route;
    for (int64_t s = 0; s < g.tokens; ++s) {
      router.route(s, route);
      // Kept choices have gate g_j = p[e_j] (derivative 1); dropped ones are constant 0.
      std::array<double, kMaxK> gate{};
      std::array<double, kMaxK> dgate{};
      double total = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const auto u = static_cast<size_t>(j);
        if (route.pos[u] >= g.capacity) continue;
        gate[u] = p[s * g.experts + route.expert[u]];
        dgate[u] = dc[s * row + route.expert[u] * g.capacity + route.pos[u]];
        total += gate[u];
      }
      // With c_j = g_j / Z, Z = sum_i g_i: dL/dg_i = (dc_i - sum_j dc_j c_j) / Z.
      double weighted = 0.0;
      const bool normalise = k > 1 && total > 0.0;
      if (normalise) {
        for (int64_t j = 0; j < k; ++j) {
          weighted += dgate[static_cast<size_t>(j)] * gate[static_cast<size_t>(j)] / total;
        }
      }
      for (int64_t j = 0; j < k; ++j) {
        const auto u = static_cast<size_t>(j);
        if (route.pos[u] >= g.capacity) continue;
        const double grad = normalise ? (dgate[u] - weighted) / total : dgate[u];
        dp[s * g.experts + route.expert[u]] = static_cast<float>(grad);
      }
    }
  }
}

}  // namespace meshpipe::kernels

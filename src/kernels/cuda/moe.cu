// CUDA GShard top-k gating and its gradient (the CUDA twin of kernels/moe_cpu.cc), producing
// exactly the CPU's expert choices, capacity slots and weights.
//
// Three steps, the first two shared by the forward and the gradient (which recomputes the
// routing from probs, as the CPU does):
//   1. choose: one thread per token runs the CPU's scan: for j < k, e_j = the first expert not
//      chosen earlier whose prob is strictly greater than every earlier candidate's (lowest index
//      on ties; the same '>' comparisons, so NaNs behave alike), into choice[G][k][S];
//   2. assign: one warp per group walks choice j = 0..k-1, tokens s = 0..S-1, 32 tokens at a
//      time, with a running counter per expert in shared memory. The CPU's position is
//      pos_j(s) = (tokens of all choices < j that picked e) + (tokens s' < s with e_j(s') = e),
//      i.e. the number of (j', s') before (j, s) in (choice, token) order that picked e: the
//      counter before the batch plus the lane's rank among the batch's lanes with the same
//      expert (__match_any_sync). Integer counting, so the slots equal the CPU's exactly;
//   3. one thread per token computes the gates (double sums and divisions, as on the CPU) and
//      writes its kept choices into the zeroed outputs (or dprobs).
// args.workspace holds choice and pos, G * k * S int32 each.
#include <climits>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

// The CPU kernel's bounds (k * E position counters).
constexpr int64_t kMaxExperts = 2048;
constexpr int kMaxK = 8;
constexpr int kBatches = 8;  // 32-token batches a warp loads at once in the assign step

struct GatingDims {
  int64_t groups = 0;
  int64_t tokens = 0;
  int64_t experts = 0;
  int64_t capacity = 0;
};

GatingDims check_gating(const TensorView& probs, const TensorView& slots, int64_t k,
                        int64_t capacity, const char* op) {
  MP_CHECK(probs.shape.rank() == 3)
      << op << ": probs must be [G, S, E], got " << probs.shape.to_string();
  const GatingDims d{probs.shape[0], probs.shape[1], probs.shape[2], capacity};
  MP_CHECK(slots.shape == Shape({d.groups, d.tokens, d.experts, capacity}))
      << op << ": expected [G, S, E, C] = [" << d.groups << ", " << d.tokens << ", " << d.experts
      << ", " << capacity << "], got " << slots.shape.to_string();
  MP_CHECK(d.experts <= kMaxExperts) << op << ": at most " << kMaxExperts << " experts";
  MP_CHECK(k >= 1 && k <= d.experts && k <= kMaxK)
      << op << ": k = " << k << " must be in [1, min(E, " << kMaxK << ")]";
  MP_CHECK(d.tokens * k <= INT32_MAX) << op << ": positions must fit in int32";
  return d;
}

constexpr int64_t kAlign = 256;

int64_t route_list_bytes(int64_t groups, int64_t tokens, int64_t k) {
  return (groups * tokens * k * 4 + kAlign - 1) / kAlign * kAlign;
}

// Inputs (probs [G, S, E], ...): choice and pos lists of G * k * S int32.
int64_t gating_workspace_bytes(std::span<const Shape> inputs, const OpAttrs& attrs) {
  const Shape& p = inputs[0];
  if (p.rank() != 3) return 0;
  return 2 * route_list_bytes(p[0], p[1], attrs.k);
}

// choice[(grp * k + j) * S + s] = e_j(s).
__global__ void choose_kernel(DPtr probs, int64_t groups, int64_t tokens, int64_t experts, int k,
                              int32_t* choice) {
  MP_CUDA_FOR(t, groups * tokens) {
    const int64_t grp = t / tokens;
    const int64_t s = t - grp * tokens;
    const int64_t row = t * experts;
    int32_t picked[kMaxK];
    for (int j = 0; j < k; ++j) {
      int64_t best = -1;
      float best_value = 0.0f;
      for (int64_t e = 0; e < experts; ++e) {
        bool taken = false;
        for (int i = 0; i < j; ++i) taken = taken || picked[i] == e;
        if (taken) continue;
        const float v = ld(probs, row + e);
        if (best < 0 || v > best_value) {
          best = e;
          best_value = v;
        }
      }
      picked[j] = static_cast<int32_t>(best);
      choice[(grp * k + j) * tokens + s] = static_cast<int32_t>(best);
    }
  }
}

// One warp (block of 32 threads) per group; `counter` holds E ints of dynamic shared memory.
__global__ void assign_kernel(const int32_t* choice, int64_t tokens, int experts, int k,
                              int32_t* pos) {
  extern __shared__ int32_t counter[];
  const int lane = static_cast<int>(threadIdx.x);
  const unsigned lower_lanes = (1u << lane) - 1u;
  for (int e = lane; e < experts; e += 32) counter[e] = 0;
  __syncwarp();
  const int64_t grp = blockIdx.x;
  for (int j = 0; j < k; ++j) {
    const int32_t* ch = choice + (grp * k + j) * tokens;
    int32_t* ps = pos + (grp * k + j) * tokens;
    for (int64_t s0 = 0; s0 < tokens; s0 += 32 * kBatches) {
      int32_t e[kBatches];
#pragma unroll
      for (int b = 0; b < kBatches; ++b) {
        const int64_t s = s0 + 32 * b + lane;
        e[b] = s < tokens ? ch[s] : -1;  // lanes past the end form their own peer set
      }
#pragma unroll
      for (int b = 0; b < kBatches; ++b) {
        const int64_t s = s0 + 32 * b + lane;
        const unsigned peers = __match_any_sync(0xffffffffu, e[b]);
        const int32_t rank = __popc(peers & lower_lanes);
        const int32_t before = e[b] >= 0 ? counter[e[b]] : 0;
        __syncwarp();  // every lane has read its counter before the lowest peer updates it
        if (e[b] >= 0) {
          ps[s] = before + rank;
          if (rank == 0) counter[e[b]] = before + __popc(peers);
        }
        __syncwarp();
      }
    }
  }
}

// Forward gates of one token, as the CPU computes them.
__global__ void combine_kernel(DPtr probs, const int32_t* choice, const int32_t* pos,
                               int64_t groups, int64_t tokens, int64_t experts, int64_t capacity,
                               int k, DPtr combine, DPtr dispatch) {
  MP_CUDA_FOR(t, groups * tokens) {
    const int64_t grp = t / tokens;
    const int64_t s = t - grp * tokens;
    int32_t ex[kMaxK];
    int32_t at[kMaxK];
    float gate[kMaxK];
    double total = 0.0;
    for (int j = 0; j < k; ++j) {
      const int64_t idx = (grp * k + j) * tokens + s;
      ex[j] = choice[idx];
      at[j] = pos[idx];
      gate[j] = at[j] < capacity ? ld(probs, t * experts + ex[j]) : 0.0f;
      total += gate[j];
    }
    const bool normalise = k > 1 && total > 0.0;
    for (int j = 0; j < k; ++j) {
      if (at[j] >= capacity) continue;
      const float value =
          normalise ? static_cast<float>(static_cast<double>(gate[j]) / total) : gate[j];
      const int64_t o = (t * experts + ex[j]) * capacity + at[j];
      st(combine, o, value);
      st(dispatch, o, value > 0.0f ? 1.0f : 0.0f);
    }
  }
}

// dprobs of one token: with c_j = g_j / Z, dL/dg_i = (dc_i - sum_j dc_j c_j) / Z (double, in
// the CPU's order).
__global__ void gating_grad_kernel(DPtr probs, DPtr dcombine, const int32_t* choice,
                                   const int32_t* pos, int64_t groups, int64_t tokens,
                                   int64_t experts, int64_t capacity, int k, DPtr dprobs) {
  MP_CUDA_FOR(t, groups * tokens) {
    const int64_t grp = t / tokens;
    const int64_t s = t - grp * tokens;
    int32_t ex[kMaxK];
    int32_t at[kMaxK];
    double gate[kMaxK];
    double dgate[kMaxK];
    double total = 0.0;
    for (int j = 0; j < k; ++j) {
      const int64_t idx = (grp * k + j) * tokens + s;
      ex[j] = choice[idx];
      at[j] = pos[idx];
      gate[j] = 0.0;
      dgate[j] = 0.0;
      if (at[j] >= capacity) continue;
      gate[j] = ld(probs, t * experts + ex[j]);
      dgate[j] = ld(dcombine, (t * experts + ex[j]) * capacity + at[j]);
      total += gate[j];
    }
    double weighted = 0.0;
    const bool normalise = k > 1 && total > 0.0;
    if (normalise) {
      for (int j = 0; j < k; ++j) weighted += dgate[j] * gate[j] / total;
    }
    for (int j = 0; j < k; ++j) {
      if (at[j] >= capacity) continue;
      const double grad = normalise ? (dgate[j] - weighted) / total : dgate[j];
      st(dprobs, t * experts + ex[j], static_cast<float>(grad));
    }
  }
}

// Steps 1 and 2 into the workspace; false when nothing is to be routed.
bool route(GpuState& g, const KernelArgs& a, const GatingDims& d, DPtr probs, int k,
           int32_t** choice, int32_t** pos, const char* op) {
  const int64_t n = d.groups * d.tokens;
  if (n == 0) return false;
  const int64_t list = route_list_bytes(d.groups, d.tokens, k);
  MP_CHECK(a.workspace.data != nullptr && a.workspace.bytes() >= 2 * list)
      << op << ": workspace of " << a.workspace.bytes() << " bytes, needs " << 2 * list;
  auto* base = static_cast<char*>(a.workspace.data);
  *choice = reinterpret_cast<int32_t*>(base);
  *pos = reinterpret_cast<int32_t*>(base + list);
  MP_CHECK(d.groups <= INT32_MAX) << op << ": too many groups";
  choose_kernel<<<blocks_for(g, n, 128), 128, 0, g.stream>>>(probs, d.groups, d.tokens, d.experts,
                                                             k, *choice);
  check_launch(g, op);
  assign_kernel<<<static_cast<unsigned>(d.groups), 32, d.experts * sizeof(int32_t), g.stream>>>(
      *choice, d.tokens, static_cast<int>(d.experts), k, *pos);
  check_launch(g, op);
  return true;
}

bool zero(GpuState& g, const TensorView& v, const char* what) {
  if (v.numel() == 0) return true;
  return check_cuda(g, cudaMemsetAsync(v.data, 0, static_cast<size_t>(v.bytes()), g.stream), what);
}

void run_topk_gating(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const TensorView& probs = a.in[0];
  const TensorView& combine = a.out[0];
  const TensorView& dispatch = a.out[1];
  const int64_t k = a.attrs->k;
  const GatingDims d = check_gating(probs, combine, k, a.attrs->capacity, "topk_gating");
  MP_CHECK(dispatch.shape == combine.shape)
      << "topk_gating: dispatch must be shaped like combine, got " << dispatch.shape.to_string();
  const DPtr pp = dptr(probs, "topk_gating");
  const DPtr cp = dptr(combine, "topk_gating");
  const DPtr dp = dptr(dispatch, "topk_gating");
  if (!zero(g, combine, "topk_gating: cudaMemsetAsync") ||
      !zero(g, dispatch, "topk_gating: cudaMemsetAsync")) {
    return;
  }
  if (d.capacity == 0) return;  // every choice is dropped
  int32_t* choice = nullptr;
  int32_t* pos = nullptr;
  if (!route(g, a, d, pp, static_cast<int>(k), &choice, &pos, "topk_gating")) return;
  combine_kernel<<<blocks_for(g, d.groups * d.tokens, 128), 128, 0, g.stream>>>(
      pp, choice, pos, d.groups, d.tokens, d.experts, d.capacity, static_cast<int>(k), cp, dp);
  check_launch(g, "topk_gating");
}

void run_topk_gating_grad(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const TensorView& probs = a.in[0];
  const TensorView& dcombine = a.in[1];
  const TensorView& dprobs = a.out[0];
  const int64_t k = a.attrs->k;
  const GatingDims d = check_gating(probs, dcombine, k, a.attrs->capacity, "topk_gating_grad");
  MP_CHECK(dprobs.shape == probs.shape)
      << "topk_gating_grad: dprobs must be shaped like probs, got " << dprobs.shape.to_string();
  const DPtr pp = dptr(probs, "topk_gating_grad");
  const DPtr dcp = dptr(dcombine, "topk_gating_grad");
  const DPtr dpp = dptr(dprobs, "topk_gating_grad");
  if (!zero(g, dprobs, "topk_gating_grad: cudaMemsetAsync")) return;
  if (d.capacity == 0) return;
  int32_t* choice = nullptr;
  int32_t* pos = nullptr;
  if (!route(g, a, d, pp, static_cast<int>(k), &choice, &pos, "topk_gating_grad")) return;
  gating_grad_kernel<<<blocks_for(g, d.groups * d.tokens, 128), 128, 0, g.stream>>>(
      pp, dcp, choice, pos, d.groups, d.tokens, d.experts, d.capacity, static_cast<int>(k), dpp);
  check_launch(g, "topk_gating_grad");
}

}  // namespace

std::vector<CudaRow> cuda_moe_rows() {
  return {
      {OpKind::kTopKGating, OpKernel{run_topk_gating, gating_workspace_bytes}},
      {OpKind::kTopKGatingGrad, OpKernel{run_topk_gating_grad, gating_workspace_bytes}},
  };
}

}  // namespace meshpipe::kernels::internal

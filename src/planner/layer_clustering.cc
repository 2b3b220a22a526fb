// Operator clustering (docs/algorithms.md §2.1): a DP over the forward ops that cuts them into L
// layers of bounded FLOPs, minimising the data that enters the worst layer; other ops follow
// Op::forward.
#include "planner/layer_clustering.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>

#include "core/check.h"
#include "core/logging.h"
#include "graph/cost.h"

namespace meshpipe::planner {
namespace {

using graph::Graph;
using graph::Op;
using graph::OpPhase;
using graph::ValueRole;

// Relative slack on the FLOP bound, so that a layer of exactly (1 + eps) total / L is not lost
// to the rounding of prefix sums.
constexpr double kFlopSlack = 1e-9;
// Squared-deviation sums closer than this (relative) are ties; ties go to the later cut.
constexpr double kDeviationTie = 1e-9;

// The forward ops in graph order (forward index i = position in `ops`) and prefix sums over them.
// A layer's cost is the FLOPs of its heavy ops (dots and convolutions) only, as Alpa's "flops"
// criterion (layer_construction.py: eqn_flops if non-trivial else 0): elementwise and
// normalisation ops are cheap and memory-bound, and giving them FLOPs would let the balance
// term pull a block's trailing bias/residual/norm ops into the next layer.
struct ForwardOps {
  std::vector<OpId> ops;
  std::vector<int32_t> index_of_op;  // graph op index -> forward index, -1 for other phases
  std::vector<double> flops;         // flops[i] = heavy-op FLOPs of forward ops [0, i); size K + 1
  std::vector<int32_t> heavy;        // heavy[i] = dots and convolutions in [0, i); size K + 1

  int32_t size() const { return static_cast<int32_t>(ops.size()); }
  double range_flops(int32_t k, int32_t r) const { return flops[r] - flops[k]; }
  int32_t range_heavy(int32_t k, int32_t r) const { return heavy[r] - heavy[k]; }
};

ForwardOps collect_forward_ops(const Graph& g) {
  ForwardOps f;
  f.index_of_op.assign(static_cast<size_t>(g.num_ops()), -1);
  f.flops.push_back(0.0);
  f.heavy.push_back(0);
  for (int64_t i = 0; i < g.num_ops(); ++i) {
    const Op& op = g.ops()[static_cast<size_t>(i)];
    if (op.phase != OpPhase::kForward) continue;
    f.index_of_op[static_cast<size_t>(i)] = f.size();
    f.ops.push_back(OpId(static_cast<int32_t>(i)));
    const bool is_heavy = op.kind == graph::OpKind::kDot || op.kind == graph::OpKind::kConv2d;
    f.flops.push_back(f.flops.back() + (is_heavy ? graph::op_flops(g, op).value() : 0.0));
    f.heavy.push_back(f.heavy.back() + (is_heavy ? 1 : 0));
  }
  return f;
}

// What makes a range of forward ops an admissible layer for a given L.
struct LayerBounds {
  double max_flops = 0.0;  // (1 + eps) total / L, with kFlopSlack
  int32_t min_heavy = 0;

  bool fits_flops(const ForwardOps& f, int32_t k, int32_t r) const {
    return f.range_flops(k, r) <= max_flops;
  }
  bool has_heavy(const ForwardOps& f, int32_t k, int32_t r) const {
    return f.range_heavy(k, r) >= min_heavy;
  }
};

LayerBounds layer_bounds(const ForwardOps& f, const ClusteringOptions& o, int32_t num_layers,
                         int32_t min_heavy) {
  const double total = f.flops.back();
  return {(1.0 + o.eps) * total / num_layers * (1.0 + kFlopSlack), min_heavy};
}

// Whether forward ops [0, K) split into exactly L admissible layers. For a fixed end r the
// admissible starts k form an interval [lo, hi] (FLOPs fall and heavy ops fall as k grows), so
// reach[q][r] = any reach[q-1][k] for k in [lo, hi], read off a prefix count: O(K L).
bool is_feasible(const ForwardOps& f, const LayerBounds& b, int32_t num_layers) {
  const int32_t n = f.size();
  std::vector<int32_t> lo(static_cast<size_t>(n) + 1);
  std::vector<int32_t> hi(static_cast<size_t>(n) + 1);
  for (int32_t r = 1; r <= n; ++r) {
    int32_t a = 0;  // first k in [0, r) that fits the FLOP bound
    int32_t z = r;
    while (a < z) {
      const int32_t m = a + (z - a) / 2;
      if (b.fits_flops(f, m, r)) {
        z = m;
      } else {
        a = m + 1;
      }
    }
    lo[r] = a;
    a = 0;  // first k in [0, r) with too few heavy ops; hi is the one before
    z = r;
    while (a < z) {
      const int32_t m = a + (z - a) / 2;
      if (b.has_heavy(f, m, r)) {
        a = m + 1;
      } else {
        z = m;
      }
    }
    hi[r] = a - 1;
  }
  std::vector<int32_t> reach_count(static_cast<size_t>(n) + 2);  // prefix count of reach[q-1]
  std::vector<uint8_t> reach(static_cast<size_t>(n) + 1, 0);
  reach[0] = 1;
  for (int32_t q = 1; q <= num_layers; ++q) {
    for (int32_t k = 0; k <= n; ++k) reach_count[k + 1] = reach_count[k] + reach[k];
    for (int32_t r = 0; r <= n; ++r) {
      reach[r] = r > 0 && lo[r] <= hi[r] && reach_count[hi[r] + 1] - reach_count[lo[r]] > 0;
    }
  }
  return reach[n] != 0;
}

// The DP value of a prefix: the largest and the total communication into its layers, and its
// sum of squared FLOP deviations from total / L. max_bytes < 0: not reachable.
struct Score {
  int64_t max_bytes = -1;
  int64_t sum_bytes = 0;
  double sq_dev = 0.0;
};

// 1 when `a` is better than `b`, 0 on a tie, -1 when worse.
int compare_scores(const Score& a, const Score& b) {
  if (b.max_bytes < 0) return 1;
  if (a.max_bytes != b.max_bytes) return a.max_bytes < b.max_bytes ? 1 : -1;
  if (a.sum_bytes != b.sum_bytes) return a.sum_bytes < b.sum_bytes ? 1 : -1;
  const double tie = kDeviationTie * std::max(std::abs(a.sq_dev), std::abs(b.sq_dev));
  if (std::abs(a.sq_dev - b.sq_dev) <= tie) return 0;
  return a.sq_dev < b.sq_dev ? 1 : -1;
}

// Whether forward ops in [k, r) read `v` from outside the range and it counts as communication
// into the layer. Parameters and optimizer states are not counted: they live on the stage that
// owns the layer and never move between stages during a step. Activations made by earlier
// forward ops and data inputs (and anything else not produced inside the range) are counted.
bool is_layer_input(const Graph& g, const ForwardOps& f, ValueId v, int32_t k) {
  const graph::Value& value = g.value(v);
  if (value.role == ValueRole::kParameter || value.role == ValueRole::kOptimizerState) {
    return false;
  }
  if (!value.producer.is_valid()) return true;
  return f.index_of_op[value.producer.index()] < k;  // -1 (not forward) or before the range
}

struct DpResult {
  std::vector<int32_t> starts;  // first forward index of each layer, size L
  std::vector<int64_t> bytes;   // communication into each layer
};

// Operator clustering DP, over forward ops 0..K-1 and layers 1..L, with FLOPs(k, r) the
// heavy-op FLOPs of ops [k, r), total = FLOPs(0, K), heavy(k, r) their count:
//
//   C(k, r)    = bytes of the distinct values read by ops [k, r) from outside the range
//                (is_layer_input), if FLOPs(k, r) <= (1 + eps) total / L and
//                heavy(k, r) >= min_heavy; otherwise inf
//   G[0][0]    = 0,  G[0][r > 0] = inf
//   G[q][r]    = min over k < r of max(G[q-1][k], C(k, r))
//   answer     = G[L][K], cuts read back through choice[q][r] = argmin k
//
// Ties in the max go to the smaller sum of C, then to the smaller sum over layers of
// (FLOPs(k, r) - total / L)^2, then to the larger k: the cheap ops between two heavy ops
// (bias, residual add, norm) stay with the layer of the heavy op before them, so a transformer
// is cut where the next block begins, not before its previous block's last norm (both cross
// one [B, S, H] tensor and have equal FLOPs). The DP pushes forward: when k is reached
// every G[q][k] is final, and one sweep of r = k+1, k+2, ... grows the set of values read by
// [k, r) by the inputs of op r-1 (a stamp per value marks those already counted for this k),
// so C(k, r) costs O(inputs of op r-1) and is never stored. The sweep stops when the FLOP bound
// is exceeded (FLOPs only grow with r). Time O(K^2 L) at worst, memory O(K L + values).
DpResult cluster_dp(const Graph& g, const ForwardOps& f, const LayerBounds& b, int32_t num_layers) {
  const int32_t n = f.size();
  const size_t row = static_cast<size_t>(n) + 1;
  const double target = f.flops.back() / num_layers;
  std::vector<Score> best(row * (static_cast<size_t>(num_layers) + 1));
  std::vector<int32_t> choice(best.size(), -1);
  auto at = [row](int32_t q, int32_t r) { return static_cast<size_t>(q) * row + r; };
  best[at(0, 0)].max_bytes = 0;
  std::vector<int32_t> stamp(static_cast<size_t>(g.num_values()), -1);
  for (int32_t k = 0; k < n; ++k) {
    bool any_reached = false;
    for (int32_t q = 0; q < num_layers; ++q) any_reached |= best[at(q, k)].max_bytes >= 0;
    if (!any_reached) continue;
    int64_t bytes = 0;
    for (int32_t r = k + 1; r <= n && b.fits_flops(f, k, r); ++r) {
      for (ValueId v : g.op(f.ops[r - 1]).inputs) {
        if (stamp[v.index()] == k || !is_layer_input(g, f, v, k)) continue;
        stamp[v.index()] = k;
        bytes += g.value(v).bytes();
      }
      if (!b.has_heavy(f, k, r)) continue;
      const double dev = f.range_flops(k, r) - target;
      for (int32_t q = 1; q <= num_layers; ++q) {
        const Score& prev = best[at(q - 1, k)];
        if (prev.max_bytes < 0) continue;
        const Score cand{std::max(prev.max_bytes, bytes), prev.sum_bytes + bytes,
                         prev.sq_dev + dev * dev};
        if (compare_scores(cand, best[at(q, r)]) >= 0) {
          best[at(q, r)] = cand;
          choice[at(q, r)] = k;
        }
      }
    }
  }
  MP_CHECK(best[at(num_layers, n)].max_bytes >= 0) << "clustering DP found no feasible split";
  DpResult out;
  out.starts.assign(static_cast<size_t>(num_layers), 0);
  out.bytes.assign(static_cast<size_t>(num_layers), 0);
  int32_t r = n;
  for (int32_t q = num_layers; q >= 1; --q) {
    const int32_t k = choice[at(q, r)];
    out.starts[q - 1] = k;
    out.bytes[q - 1] = best[at(q, r)].sum_bytes - best[at(q - 1, k)].sum_bytes;
    r = k;
  }
  return out;
}

// The heavy-op minimums to try, strictest first: the option, then 1, then 0.
std::vector<int32_t> heavy_ladder(int32_t min_heavy) {
  std::vector<int32_t> ladder{min_heavy};
  if (min_heavy > 1) ladder.push_back(1);
  if (min_heavy > 0) ladder.push_back(0);
  return ladder;
}

// New layer of every op: forward ops from `starts`, the others through Op::forward, falling back
// to the layer of the op just before (0 for the first op).
std::vector<int32_t> tag_ops(const Graph& g, const ForwardOps& f,
                             const std::vector<int32_t>& starts) {
  std::vector<int32_t> op_layer(static_cast<size_t>(g.num_ops()), -1);
  int32_t layer = 0;
  for (int32_t i = 0; i < f.size(); ++i) {
    while (layer + 1 < static_cast<int32_t>(starts.size()) && starts[layer + 1] <= i) ++layer;
    op_layer[f.ops[i].index()] = layer;
  }
  int32_t previous = 0;
  for (size_t i = 0; i < op_layer.size(); ++i) {
    if (op_layer[i] < 0) {
      const OpId fw = g.ops()[i].forward;
      const bool linked = fw.is_valid() && fw.value() < g.num_ops() && op_layer[fw.index()] >= 0;
      op_layer[i] = linked ? op_layer[fw.index()] : previous;
    }
    previous = op_layer[i];
  }
  return op_layer;
}

// The layer count and heavy-op minimum the DP runs with (layers 0: none is feasible).
struct LayerChoice {
  int32_t layers = 0;
  int32_t min_heavy = 0;
};

// L: the given one, or (search) a descending scan from min(max_layers, K) that stops at the
// first feasible L, i.e. the largest. Each check is the O(K L) is_feasible, so the scan costs
// O(K max_layers^2); a scan rather than a binary search because feasibility need not be
// monotone in L. The heavy-op minimum is relaxed (heavy_ladder) only when no L qualifies.
LayerChoice choose_layers(const ForwardOps& f, const ClusteringOptions& o) {
  const bool search = o.num_layers == 0;
  const int32_t top = search ? std::min(o.max_layers, f.size()) : o.num_layers;
  const int32_t bottom = search ? 1 : o.num_layers;
  const std::vector<int32_t> ladder = heavy_ladder(o.min_heavy_ops);
  for (size_t i = 0; i < ladder.size(); ++i) {
    for (int32_t l = top; l >= bottom; --l) {
      if (is_feasible(f, layer_bounds(f, o, l, ladder[i]), l)) return {l, ladder[i]};
    }
    if (i + 1 < ladder.size()) {
      module_logger("planner")->debug(
          "clustering: no split into {}{} layers with >= {} heavy ops each ({} heavy in {} "
          "forward ops); relaxing the minimum to {}",
          search ? "<= " : "", top, ladder[i], f.heavy.back(), f.size(), ladder[i + 1]);
    }
  }
  return {};
}

}  // namespace

Status ClusteringOptions::validate() const {
  if (num_layers < 0) {
    return make_error(Errc::kInvalidArgument, "num_layers must be >= 0 (0: search), got {}",
                      num_layers);
  }
  if (max_layers < 1) {
    return make_error(Errc::kInvalidArgument, "max_layers must be >= 1, got {}", max_layers);
  }
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    return make_error(Errc::kInvalidArgument, "eps must be finite and >= 0, got {}", eps);
  }
  if (min_heavy_ops < 0) {
    return make_error(Errc::kInvalidArgument, "min_heavy_ops must be >= 0, got {}", min_heavy_ops);
  }
  return Status::ok();
}

Expected<LayerClustering> cluster_layers(const graph::Graph& g, const ClusteringOptions& options) {
  MP_RETURN_IF_ERROR(options.validate().with_context("clustering options"));
  const auto start_time = std::chrono::steady_clock::now();
  const ForwardOps f = collect_forward_ops(g);
  const int32_t n = f.size();
  if (n == 0) return make_error(Errc::kInvalidArgument, "the graph has no forward ops to cluster");
  if (options.num_layers > n) {
    return make_error(Errc::kInvalidArgument, "cannot cluster {} forward ops into {} layers", n,
                      options.num_layers);
  }
  LayerChoice choice = choose_layers(f, options);
  if (choice.layers == 0) {
    return make_error(Errc::kInfeasible,
                      "no clustering of {} forward ops into {} layers keeps each layer's FLOPs "
                      "<= (1 + {}) * total / {}, even without a heavy-op minimum",
                      n, options.num_layers, options.eps, options.num_layers);
  }
  const auto log = module_logger("planner");
  log->debug(
      "clustering {} forward ops ({} heavy, {:.4g} FLOPs) into {} layers, eps {}, >= {} "
      "heavy ops per layer",
      n, f.heavy.back(), f.flops.back(), choice.layers, options.eps, choice.min_heavy);
  DpResult dp =
      cluster_dp(g, f, layer_bounds(f, options, choice.layers, choice.min_heavy), choice.layers);
  if (options.num_layers == 0 && choice.layers > 2) {
    // Search, as Alpa's search_layer_num: the largest L whose widest cut is no wider than with
    // two layers, so more layers never cost extra traffic (e.g. GPT is cut between blocks, where
    // one hidden-state tensor crosses, not inside attention). Every feasible L > 2 is held to
    // that reference, infeasible ones skipped; L = 2 itself when none qualifies.
    const auto widest = [](const DpResult& r) {
      return *std::max_element(r.bytes.begin(), r.bytes.end());
    };
    const LayerBounds two = layer_bounds(f, options, 2, choice.min_heavy);
    if (is_feasible(f, two, 2)) {
      DpResult at_two = cluster_dp(g, f, two, 2);
      const int64_t reference = widest(at_two);
      bool found = false;
      for (int32_t l = choice.layers; l > 2 && !found; --l) {
        const LayerBounds bl = layer_bounds(f, options, l, choice.min_heavy);
        if (!is_feasible(f, bl, l)) continue;
        DpResult r = cluster_dp(g, f, bl, l);
        if (widest(r) <= reference) {
          choice.layers = l;
          dp = std::move(r);
          found = true;
        }
      }
      if (!found) {
        choice.layers = 2;
        dp = std::move(at_two);
      }
    }
  }

  LayerClustering c;
  c.num_layers = choice.layers;
  c.op_layer = tag_ops(g, f, dp.starts);
  for (int32_t q = 0; q < choice.layers; ++q) {
    const int32_t end = q + 1 < choice.layers ? dp.starts[q + 1] : n;
    c.layer_flops.push_back(f.range_flops(dp.starts[q], end));  // heavy-op FLOPs, as bounded
    c.input_bytes.push_back(static_cast<double>(dp.bytes[q]));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  log->debug("clustering: layers start at forward ops [{}], max input {} bytes, in {:.3f} s",
             fmt::join(dp.starts, ", "), *std::max_element(dp.bytes.begin(), dp.bytes.end()),
             seconds);
  return c;
}

graph::Graph apply_clustering(const graph::Graph& g, const LayerClustering& c) {
  MP_CHECK(static_cast<int64_t>(c.op_layer.size()) == g.num_ops())
      << "clustering has " << c.op_layer.size() << " op layers for " << g.num_ops() << " ops";
  graph::Graph out = g;
  out.set_layers(c.op_layer);
  return out;
}

}  // namespace meshpipe::planner

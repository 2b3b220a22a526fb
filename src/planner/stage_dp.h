// The inter-operator stage DP (docs/algorithms.md §2.4): split L layers into pipeline stages, each
// on a submesh with a logical-mesh configuration, minimising the 1F1B/GPipe iteration time
//   T = sum_i t_i + (B - 1) max_j t_j
// with every device used exactly once and the 1F1B memory rule (a stage followed by s - 1 more
// stages holds s micro-batches of activations). Pure arithmetic on cost tables.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace meshpipe::planner {

/// Costs of every candidate stage: layers i..j (inclusive) on submesh kind m with config c.
struct StageDpInput {
  int32_t num_layers = 0;
  int32_t num_devices = 0;               ///< N * M: the stages must use exactly this many
  std::vector<int32_t> submesh_devices;  ///< devices of each submesh kind m
  int32_t num_configs = 1;               ///< configs per submesh (padded; absent = infinite cost)
  int64_t micro_batches = 1;             ///< B
  /// Seconds (>= 0) per micro-batch of stage (i, j, m, c), +infinity when impossible; index
  /// ((i * L + j) * num_submeshes + m) * num_configs + c. Entries with j < i are ignored.
  std::vector<double> cost;
  /// Optional, same indexing: the stage's seconds per micro-batch in the pipeline's fill and
  /// drain (f_i, StageCost::fill), when that differs from the steady state's `cost` (devices
  /// that share cores run faster while the other stages idle). Empty: `cost`. The objective is
  /// then sum f_i + (B - 1) max t_i, the threshold t_max still on t_i. A finite cost needs a
  /// finite fill.
  std::vector<double> fill_cost;
  /// Optional: steady_scale[S] scales the (B - 1) max t_i term of a split into S stages (a
  /// pipeline's middle, where the busy devices are fewer than all of them while it fills and
  /// drains, on devices that share cores; StageProfiler::steady_scale). Empty, or a missing or
  /// non-positive entry: 1. The objective is then sum f_i + (B - 1) x steady_scale[S] x max t_i.
  std::vector<double> steady_scale;
  /// Largest number of stages that may follow this stage while it still fits in memory
  /// (docs/algorithms.md §2.5), same indexing; < 0: the stage does not fit even alone.
  std::vector<int32_t> max_succ_stages;

  int32_t num_submeshes() const { return static_cast<int32_t>(submesh_devices.size()); }
  size_t index(int32_t i, int32_t j, int32_t m, int32_t c) const;
  double fill(size_t index) const { return fill_cost.empty() ? cost[index] : fill_cost[index]; }
  double scale(size_t stages) const {
    return stages < steady_scale.size() && steady_scale[stages] > 0 ? steady_scale[stages] : 1.0;
  }
  /// Sizes consistent, costs >= 0 or +inf (not NaN, not negative), B >= 1.
  Status validate() const;
};

/// How many runner-up splits solve_stage_dp keeps (StageDpResult::alternatives).
inline constexpr size_t kStageDpAlternatives = 8;

/// One chosen stage.
struct StageChoice {
  int32_t first_layer = 0;
  int32_t last_layer = 0;
  int32_t submesh = 0;
  int32_t config = 0;
  double cost = 0.0;  ///< seconds per micro-batch
  double fill = 0.0;  ///< seconds per micro-batch in the fill and drain (StageDpInput::fill_cost)
  friend bool operator==(const StageChoice&, const StageChoice&) = default;
};

/// The best split.
struct StageDpResult {
  std::vector<StageChoice> stages;  ///< in layer order
  double objective = 0.0;           ///< sum f_i + (B - 1) x steady scale x max t_i, seconds
  double sum = 0.0;                 ///< sum f_i (the fill costs; t_i without them)
  double max = 0.0;                 ///< max t_i
  int64_t tmax_candidates_tried = 0;
  /// The next best distinct splits the DP's runs met (at most kStageDpAlternatives, best first;
  /// not the exhaustive runners-up): the planner prices them exactly too (placement and links,
  /// which the DP's costs only approximate) and keeps the fastest.
  std::vector<std::vector<StageChoice>> alternatives;
};

/// Alpa's DP: for each candidate t_max (every distinct finite cost, ascending, skipping values
/// within 1e-6 relative of the previous), F(s, i, d) = the least sum of stage costs covering
/// layers i..L-1 with s stages on exactly d devices, each stage's cost <= t_max and each stage
/// allowed its number of successors; objective min_s F(s, 0, N*M) + (B - 1) * (the largest stage
/// cost on that path). Stops once t_max * (B - 1) + (cheapest possible sum) >= best found.
/// Deterministic tie-breaking (fewer stages, then lower submesh/config indices, then earlier
/// cuts). Errors (kInfeasible) when no split uses every device within memory.
Expected<StageDpResult> solve_stage_dp(const StageDpInput& input);

/// The same optimum by enumerating every split into stages and every (submesh, config) per
/// stage (tests; errors above `max_assignments` combinations).
Expected<StageDpResult> solve_stage_exhaustive(const StageDpInput& input,
                                               int64_t max_assignments = 5'000'000);

}  // namespace meshpipe::planner

// Baselines under the planner's own cost model, so every plan can be compared with what a user
// would otherwise pick: data parallelism, ZeRO-2, ZeRO-3, the best Megatron-style grid
// (dp x tp x pp and micro-batch count), equal-layer and equal-operator pipelines, intra-op only
// (one stage on every device) and inter-op only (a pipeline of data-parallel stages).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "planner/planner.h"

namespace meshpipe::planner {

/// One baseline: its best plan under the cost model, or why it cannot run.
struct BaselineResult {
  std::string name;         ///< "data parallel", "ZeRO-2", "Megatron grid", ...
  std::string description;  ///< the configuration picked, e.g. "dp 2 x tp 4 x pp 2, 64 x 16"
  std::optional<Plan> plan;
  Status status;  ///< why there is no plan (does not fit, no valid configuration)
};

/// Runs every baseline with the same clustering, micro-batch candidates and cost model as
/// make_plan. A baseline whose best plan exceeds device memory reports it in `status`.
/// The fastest plan among the standard pipeline recipes — the Megatron-style grid, equal-layer
/// and equal-operator pipelines — for one micro-batch count, priced exactly (placement and links
/// included) and within memory. make_plan compares its stage DP's answer with it: the DP prices
/// transfers between stages before knowing their placement, and its stage boundaries come from
/// its own layer clustering.
Expected<Plan> best_pipeline_recipe(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                    const CostModel& cost, const PlannerOptions& options,
                                    int64_t micro_batches, ShardingCache& cache);

/// A fixed grid: pp stages of equal layer ranges, each on dp x tp devices with logical mesh
/// (dp, tp), parameters laid out per `parameters` (kReplicated: data parallel; kZero2/kZero3;
/// kFree: the intra-op pass chooses). For tests and users who want a given configuration.
struct GridConfig {
  int64_t dp = 1;
  int64_t tp = 1;
  int64_t pp = 1;
  ShardingOptions::ParameterMode parameters = ShardingOptions::ParameterMode::kFree;
  /// false: a plan whose stages exceed device memory is returned too, for the caller to report
  /// (check_stage_memory in manual_plan.h); true: it is an error (kResourceExhausted).
  bool check_memory = true;
};

/// The plan of one grid configuration (errors: it does not fit the cluster, or memory when
/// grid.check_memory).
Expected<Plan> grid_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                         const CostModel& cost, const PlannerOptions& options,
                         int64_t micro_batches, const GridConfig& grid);

/// `cache` (optional) shares intra-op solutions with make_plan.
std::vector<BaselineResult> run_baselines(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                          const CostModel& cost, const PlannerOptions& options,
                                          ShardingCache* cache = nullptr);

}  // namespace meshpipe::planner

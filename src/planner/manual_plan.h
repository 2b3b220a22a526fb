// Manual plans: parallelisations written down by a user instead of searched — a Megatron-style
// grid (dp x tp x pp, priced by grid_plan) or explicit stages, Alpa's ManualStageOption (each
// stage's clustered-layer range, submesh and logical mesh). Both are priced by the same cost
// model as make_plan and become an ordinary Plan; the intra-op pass still shards inside each stage.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "graph/graph.h"
#include "mesh/cluster.h"
#include "mesh/device_mesh.h"
#include "planner/baselines.h"
#include "planner/plan.h"
#include "planner/planner.h"
#include "planner/sharding_cache.h"

namespace meshpipe::planner {

/// One stage of a manual plan: clustered layers first..last on a submesh viewed as a logical
/// mesh. Per-stage options of the text form (`,key=value` after the mesh) land here.
struct ManualStage {
  int32_t first_layer = 0;  ///< inclusive
  int32_t last_layer = 0;   ///< inclusive
  mesh::SubmeshShape submesh;
  /// Logical mesh (d0, d1), d0 * d1 = the submesh's devices; {0, 0}: the fastest offered one
  /// that fits the stage's in-flight micro-batches.
  std::array<int64_t, 2> logical = {0, 0};
  /// Memory level (StageProfileOptions::memory_levels); -1: the fastest level that fits.
  int32_t level = -1;
  /// Activation recomputation of this stage: kAuto chooses as for the level (the fastest
  /// variant that fits); kOn / kOff force it (when the profile offers it).
  Recompute recompute = Recompute::kAuto;
  friend bool operator==(const ManualStage&, const ManualStage&) = default;
};

/// Parses the --stages text: stages separated by ';', each
///   FIRST[-LAST]@HOSTSxDEVICES[:D0xD1][,level=K|auto][,recompute=on|off|auto]
/// e.g. "0-7@1x8:2x4;8-15@1x8:8x1" = layers 0..7 on one host's 8 devices as logical mesh (2, 4),
/// then layers 8..15 on 8 devices as (8, 1). Spaces around the parts are ignored. Errors
/// (kInvalidArgument) name the stage and the part that is wrong. Only the form is checked here;
/// price_manual_stages checks the stages against the model and the cluster.
Expected<std::vector<ManualStage>> parse_manual_stages(std::string_view text);

/// The text form of stages (parse_manual_stages reads it back), e.g. "0-7@1x8:2x4;8-15@1x8:8x1".
std::string manual_stages_to_string(const std::vector<ManualStage>& stages);

/// Parses the --grid text "dp=A,tp=B,pp=C[,params=free|replicated|zero2|zero3]" (omitted sizes
/// are 1, params defaults to free: the intra-op pass lays parameters out).
Expected<GridConfig> parse_grid(std::string_view text);

/// The stages priced for `micro_batches` micro-batches of `g` — no memory check (see
/// check_stage_memory). The clustered layer count is options.clustering.num_layers, or, when 0,
/// the one the stages name (the last stage's last layer + 1). Only the named submeshes are
/// profiled (every logical mesh and memory level of each), then each stage takes its logical mesh
/// and level (given, or the fastest that holds its in-flight micro-batches, else the leanest),
/// and build_plan places and prices them.
/// Errors, each naming the stage ("stage 2: logical mesh (2, 2) has 4 devices, submesh (1, 8)
/// has 8"): kInvalidArgument for layer ranges that are not contiguous or do not cover
/// 0..L-1 in order, a submesh the cluster does not offer, a logical mesh of the wrong size or
/// one the submesh does not offer, a memory level that does not exist, more devices than the
/// cluster has; kInfeasible for a stage no sharding can run.
Expected<Plan> price_manual_stages(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                   const CostModel& cost, const PlannerOptions& options,
                                   int64_t micro_batches, const std::vector<ManualStage>& stages,
                                   ShardingCache& cache);

/// The 1F1B (or GPipe) memory rule on a priced plan: ok when every stage's peak (its in-flight
/// micro-batches' activations included) fits `memory_fraction` of a device; else kInfeasible
/// naming the first stage that does not, what it needs and what is available.
Status check_stage_memory(const Plan& plan, double memory_fraction);

/// price_manual_stages, then check_stage_memory with options.profile.memory_fraction.
Expected<Plan> manual_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                           const CostModel& cost, const PlannerOptions& options,
                           int64_t micro_batches, const std::vector<ManualStage>& stages,
                           ShardingCache& cache);

/// A priced plan and whether it fits device memory (check_stage_memory's answer).
struct PricedPlan {
  Plan plan;
  Status fits;
};

/// Prices a fixed layout for one micro-batching: (graph of the micro-batch size, micro-batches).
using PriceFunction = std::function<Expected<Plan>(const graph::Graph&, int64_t)>;

/// The fastest plan `price` gives over the micro-batchings make_plan would try
/// (micro_batch_candidates: options.micro_batches fixes one) that fits memory; when none fits,
/// the fastest, with `fits` saying why not. A kInfeasible answer of `price` skips that
/// micro-batching; any other error is returned at once.
Expected<PricedPlan> price_micro_batchings(const graph::Graph& g, const PlannerOptions& options,
                                           const PriceFunction& price);

}  // namespace meshpipe::planner

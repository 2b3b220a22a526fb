// Placement and pricing: stages chosen by the stage DP or by a baseline become a Plan. The
// submeshes are placed on physical devices (largest first; whole-host submeshes on consecutive
// hosts, smaller ones packed left to right in a host), each cross-stage transfer is priced on
// its actual link, and the step time (sum t_i + (B - 1) max t_i), throughput and per-device
// memory are predicted. Below both make_plan (planner.h) and the baselines (baselines.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "mesh/cluster.h"
#include "planner/layer_clustering.h"
#include "planner/plan.h"
#include "planner/stage_costs.h"
#include "planner/stage_dp.h"

namespace meshpipe::planner {

/// What a plan records besides its stages.
struct BuildPlanOptions {
  std::string model;                    ///< label stored in the plan (zoo name)
  Schedule schedule = Schedule::k1F1B;  ///< decides each stage's in-flight micro-batches
  int64_t micro_batches = 1;            ///< per step
};

/// The plan of `stages` (layer ranges, submesh kinds and configs of `profiler`) for the
/// training graph `g` clustered by `clustering`. Errors: a stage that cannot be placed.
Expected<Plan> build_plan(const graph::Graph& g, const LayerClustering& clustering,
                          const StageProfiler& profiler, const std::vector<StageChoice>& stages,
                          const mesh::ClusterSpec& cluster, const BuildPlanOptions& options);

/// Samples per micro-batch of a training graph: dim 0 of its first data input (1 if none).
int64_t graph_micro_batch(const graph::Graph& g);

/// FNV-1a hash (hex) of the graph's structural fingerprint; plans record it.
std::string graph_fingerprint(const graph::Graph& g);

/// Model FLOPs of one micro-batch (forward + backward ops), for throughput accounting.
double model_flops_per_micro_batch(const graph::Graph& g);

}  // namespace meshpipe::planner

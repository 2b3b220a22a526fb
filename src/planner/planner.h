// The planner's front door (docs/style.md rule 3): a training graph, a cluster and a cost model in,
// a Plan out. Pure: deterministic, no I/O, no clock-dependent decisions (wall times are only
// reported in Plan::times).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "mesh/cluster.h"
#include "planner/build_plan.h"
#include "planner/cost_model.h"
#include "planner/layer_clustering.h"
#include "planner/plan.h"
#include "planner/stage_costs.h"

namespace meshpipe::planner {

/// Options of make_plan.
struct PlannerOptions {
  std::string model;         ///< label stored in the plan (zoo name)
  int64_t global_batch = 0;  ///< samples per step; 0: the graph's micro-batch x micro_batches
  /// Micro-batches per step; 0: the planner chooses among micro_batch_sizes (needs
  /// graph_for_micro_batch), or 1 without a factory.
  int64_t micro_batches = 0;
  /// Candidate micro-batch sizes when choosing (default: powers of two dividing the global
  /// batch, 1 ... 32, or up to the global batch / devices when that is larger).
  std::vector<int64_t> micro_batch_sizes;
  /// Micro-batch sizes the model can be built at are multiples of this (a MoE's tokens per
  /// micro-batch fill whole expert groups: graph::models::min_micro_batch); the default
  /// candidates are this times powers of two, and other sizes are skipped.
  int64_t micro_batch_multiple = 1;
  /// Builds the training graph for a micro-batch size (when the planner chooses it).
  std::function<Expected<graph::Graph>(int64_t)> graph_for_micro_batch;
  ClusteringOptions clustering;
  StageProfileOptions profile;
  Schedule schedule = Schedule::k1F1B;  ///< same iteration time, different memory
  /// Progress: (phase, done, total); phases "clustering", "stage costs", "stage DP", and when
  /// several micro-batch sizes are tried, "micro-batch size ..." (a sentence naming the size, or
  /// the sizes skipped) with (candidate index, candidates).
  std::function<void(const std::string&, int64_t, int64_t)> progress;

  Status validate() const;
};

/// Clusters the graph's layers, profiles every candidate stage with the intra-op pass, runs the
/// stage DP (choosing the micro-batch count when asked), places the stages on devices and
/// returns the plan. The DP's answer is compared, priced exactly, with the standard pipeline
/// recipes (best_pipeline_recipe), and the faster is returned. Errors name what does not fit or
/// cannot be planned.
Expected<Plan> make_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                         const CostModel& cost, const PlannerOptions& options);

/// The same with an explicit memo table of intra-op solutions (docs/style.md rule 5), shared with
/// later calls (run_baselines, other clusters).
Expected<Plan> make_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                         const CostModel& cost, const PlannerOptions& options,
                         ShardingCache& cache);

/// A micro-batch size and the number of micro-batches per step.
struct MicroBatching {
  int64_t micro_batch = 1;
  int64_t micro_batches = 1;
};

/// The micro-batchings make_plan tries, in ascending micro-batch size (see PlannerOptions). Once
/// nothing fits in memory at a size, make_plan skips the larger ones (their activations only
/// grow). With the cluster's device count, the default sizes go on past 32 up to the global
/// batch / devices: a small model on few devices (mlp-small, batch 256 on 4 CPU devices) may be
/// fastest with 4 micro-batches of 64, one per device's share.
Expected<std::vector<MicroBatching>> micro_batch_candidates(const graph::Graph& g,
                                                            const PlannerOptions& options,
                                                            int64_t devices = 0);

/// The training graph for a micro-batch size: `g` itself when it has that size, else built by
/// options.graph_for_micro_batch (an error without one).
Expected<graph::Graph> graph_for_micro_batch(const graph::Graph& g, const PlannerOptions& options,
                                             int64_t micro_batch);

}  // namespace meshpipe::planner

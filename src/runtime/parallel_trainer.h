// Training a zoo model on a planned cluster of virtual CPU devices: plan (or take a given plan),
// lower it, run it on threads (runtime/in_process_run.h) and report every step. The loop of
// `meshpipe train --cluster`.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "graph/training_graph.h"
#include "mesh/cluster.h"
#include "planner/plan.h"
#include "planner/planner.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/trainer.h"

namespace meshpipe::runtime {

/// Where planning and steps run. The default (no driver) plans on the calling thread and runs a
/// step on one thread per device; the actor runtime (actors/) plans in its planner actor and
/// runs steps through mesh-group and stage actors.
class StepDriver {
 public:
  virtual ~StepDriver() = default;
  virtual Expected<planner::Plan> plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                       const planner::PlannerOptions& options) = 0;
  virtual Expected<RunStepResult> step(
      InProcessRun& run, const std::vector<std::vector<HostTensor>>& micro_batches) = 0;
};

/// Options of a parallel training run.
struct ParallelTrainOptions {
  TrainOptions train;                 ///< steps, batch, optimizer, seed, on_step
  std::optional<planner::Plan> plan;  ///< given: lowered as is; else make_plan on the cluster
  int64_t micro_batches = 0;          ///< when planning: 0 lets the planner choose
  std::optional<planner::Schedule> schedule;  ///< empty: the plan's
  InProcessRunOptions run;                    ///< collectives, transport, timeouts
  StepDriver* driver = nullptr;               ///< null: plan here, one thread per device
  /// Resume from this checkpoint (runtime/checkpoint.h): parameters, optimizer state and the
  /// data stream continue where it was written, under this run's plan.
  std::string load_dir;
  std::string save_dir;    ///< write a checkpoint here after the last step (and every N)
  int64_t save_every = 0;  ///< N > 0: also after every N-th step
  /// Called once the plan is lowered (to print it).
  std::function<void(const planner::Plan&, const Program&)> on_plan;
};

/// Result of a parallel run.
struct ParallelTrainSummary {
  planner::Plan plan;
  std::vector<double> losses;
  Seconds total_time;
  std::vector<int64_t> measured_peak;   ///< per global device id, largest step peak
  std::vector<int64_t> predicted_peak;  ///< per global device id, the plan's stage peak
  int64_t first_step = 1;               ///< > 1 when resumed from a checkpoint
};

/// The float32 training graph of a zoo model at `batch` samples with `optimizer` (what every
/// parallel run and every node of a job builds, so their graphs and plans agree).
Expected<graph::TrainingGraph> zoo_training_graph(const graph::models::ModelSpec& spec,
                                                  int64_t batch,
                                                  const graph::OptimizerConfig& optimizer);

/// Trains `spec` on `cluster`'s devices as threads of this process.
Expected<ParallelTrainSummary> train_parallel(const graph::models::ModelSpec& spec,
                                              const mesh::ClusterSpec& cluster,
                                              const ParallelTrainOptions& options);

}  // namespace meshpipe::runtime

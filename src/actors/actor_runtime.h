// The actor runtime of one process (CAF 0.17, docs/algorithms.md §3): a planner actor that runs
// make_plan on its own thread, and a node that runs a job's devices: one mesh-group actor per
// stage, which starts one stage actor per device of its submesh. The driver talks to the node
// with the same job, step and save messages a multi-process job's coordinator sends to its
// meshpipe-node processes (actors/cluster.h), so one protocol serves one process and many.
// Messages carry ids, JSON text and handles to in-process buffers; tensors move through comm/.
// An error anywhere (a kernel, a transfer, a timeout) stops the step: the failing device aborts
// the run, every other device stops, and the driver gets an error naming the device, the
// instruction and the cause. This header is CAF-free; CAF stays inside actors/*.cc.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "planner/plan.h"
#include "planner/planner.h"
#include "train/job.h"
#include "train/step_runner.h"

namespace meshpipe::actors {

/// Options of the actor runtime.
struct ActorOptions {
  int scheduler_threads = 2;  ///< CAF worker threads (stage actors are detached)
  std::chrono::milliseconds step_timeout{120000};   ///< a step that takes longer is an error
  std::chrono::milliseconds plan_timeout{3600000};  ///< planning that takes longer is an error
  Status validate() const;
};

/// What a node built for a job (and reports to the driver).
struct JobSummary {
  int64_t devices = 0;       ///< devices with a program
  int64_t instructions = 0;  ///< per step, all devices together
  int64_t first_step = 1;    ///< 1, or the resumed checkpoint's step + 1
  planner::Schedule schedule = planner::Schedule::k1F1B;
};

class ActorRunner;

/// Planning and steps through actors in this process.
class ActorRuntime {
 public:
  static Expected<std::unique_ptr<ActorRuntime>> create(const ActorOptions& options = {});
  ~ActorRuntime();
  ActorRuntime(const ActorRuntime&) = delete;
  ActorRuntime& operator=(const ActorRuntime&) = delete;

  /// Asks the planner actor for a plan (make_plan with the analytic cost model of `cluster`).
  Expected<planner::Plan> plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                               const planner::PlannerOptions& options);
  /// plan() as a train::Planner (for train::plan_job).
  train::Planner planner();
  /// Asks the planner actor to load and validate a plan file (planner::load_plan).
  Expected<planner::Plan> load_plan(const std::string& path);

  /// Starts `job` under `plan` on a node of this process (a job started earlier ends): the node
  /// lowers the plan and builds every device (options: collectives, transport, timeouts, a
  /// checkpoint to resume). The runner sends it the steps.
  Expected<std::unique_ptr<ActorRunner>> start(const train::JobSpec& job, const planner::Plan& plan,
                                               const train::LocalJobOptions& options);

  /// Number of actors started so far (planner, node, mesh groups, stage actors).
  int64_t actors_started() const;

 private:
  friend class ActorRunner;
  struct Impl;
  explicit ActorRuntime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The steps and checkpoints of the job an ActorRuntime started, as messages to its node.
class ActorRunner final : public train::StepRunner {
 public:
  Expected<train::StepOutcome> run_step(int64_t step) override;
  /// Validation batch `index` through the node (a step message for step -index - 1).
  Expected<double> validate(int64_t index) override;
  /// Every tile written by the node (save message), then the manifest (runtime/checkpoint.h).
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override;
  const JobSummary& summary() const { return summary_; }

 private:
  friend class ActorRuntime;
  ActorRunner(ActorRuntime& runtime, JobSummary summary) : rt_(runtime), summary_(summary) {}
  ActorRuntime& rt_;
  JobSummary summary_;
};

}  // namespace meshpipe::actors

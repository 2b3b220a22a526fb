// The actor runtime (CAF 0.17, ALPA.md §3): the driver side of a training job. It owns an actor
// system with a planner actor (runs make_plan on its own thread) and, once a lowered program
// runs, one mesh-group actor per stage, which starts one stage actor per device of its submesh.
// A step is a message from the driver to every mesh group, which asks each of its stage actors
// to run the device's program (runtime::InProcessRun::run_device) on the actor's own thread and
// reports completion. Messages carry ids only (a plan job, a step number, a device id); plans,
// programs and batches stay in memory shared with the actors, and tensors move through comm/.
// An error anywhere (a kernel, a transfer, a timeout) stops the step: the failing device aborts
// the run, every other device stops, and the driver receives a message naming the device, the
// instruction and the cause. This header is CAF-free; CAF stays inside actors/*.cc.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "planner/plan.h"
#include "planner/planner.h"
#include "runtime/in_process_run.h"
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

/// Planning and steps through actors.
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

  /// Runs one step of `run`: the first call for a run starts its mesh-group and stage actors.
  Expected<runtime::RunStepResult> step(
      runtime::InProcessRun& run,
      const std::vector<std::vector<runtime::HostTensor>>& micro_batches);

  /// Number of actors started so far (planner, mesh groups, stage actors), for tests and logs.
  int64_t actors_started() const;

 private:
  struct Impl;
  explicit ActorRuntime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// A LocalJob whose steps run through the actor runtime's mesh-group and stage actors.
class ActorRunner final : public train::StepRunner {
 public:
  /// Both must outlive the runner.
  ActorRunner(ActorRuntime& actors, train::LocalJob& job) : actors_(actors), job_(job) {}
  Expected<train::StepOutcome> run_step(int64_t step) override;
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override;

 private:
  ActorRuntime& actors_;
  train::LocalJob& job_;
};

}  // namespace meshpipe::actors

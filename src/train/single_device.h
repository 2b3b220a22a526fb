// A job on one device without a plan: the whole training graph on the single-device executor
// (runtime/executor.h), which frees each buffer after its last use and runs elementwise and
// update ops in place. As a StepRunner it runs the same session loop as every planned job.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/units.h"
#include "graph/training_graph.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"
#include "train/job.h"
#include "train/step_runner.h"

namespace meshpipe::train {

/// What a single-device run is about to execute, reported once before the first step.
struct RunInfo {
  int64_t forward_ops = 0;
  int64_t backward_ops = 0;
  int64_t update_ops = 0;
  int32_t layers = 0;
  Flops flops_per_step;  ///< forward + backward + update
  int64_t parameter_count = 0;
  Bytes parameter_bytes;
  Bytes optimizer_state_bytes;
  std::string device;  ///< e.g. "1 CPU device (CUDA: not built, using the CPU)"
};

/// The job's whole batch on one device.
class SingleDeviceJob final : public StepRunner {
 public:
  /// Builds the float32 training graph of job.model at the job's batch and initialises it.
  static Expected<std::unique_ptr<SingleDeviceJob>> create(const JobSpec& job);

  Expected<StepOutcome> run_step(int64_t step) override;
  /// Writes every parameter and optimizer state as one whole tile of device 0; any planned run
  /// of the same model can resume from it.
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override;

  /// Ops, FLOPs and memory of the step, and the device it runs on.
  RunInfo info() const;
  /// Parameters and optimizer states, in bytes.
  Bytes persistent_bytes() const { return exec_->memory().persistent; }
  const graph::Graph& graph() const { return graph_.graph; }

 private:
  SingleDeviceJob() = default;
  JobSpec spec_;
  graph::TrainingGraph graph_;
  std::unique_ptr<runtime::Executor> exec_;
  std::optional<runtime::SyntheticData> data_;
};

}  // namespace meshpipe::train

// A job on one device without a plan: the whole training graph on the single-device executor
// (runtime/executor.h), which frees each buffer after its last use and runs elementwise and
// update ops in place, on the CPU or on one GPU (SingleDeviceOptions::device). As a StepRunner it
// runs the same session loop as every planned job; its checkpoints (one whole tile per value)
// are read and written through host copies, so a GPU run saves and resumes like a CPU one.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/units.h"
#include "graph/training_graph.h"
#include "kernels/tensor_view.h"
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
  std::string device;  ///< e.g. "1 CPU device (CUDA: not built)", "1 GPU: NVIDIA H200 (...)"
};

/// Where a single-device job runs, and what it resumes from (the JobSpec is what every runner of
/// a job shares; these are this process's choices).
struct SingleDeviceOptions {
  kernels::Device device = kernels::Device::kCpu;  ///< kCuda: the executor on a GPU
  int gpu = 0;                                     ///< the CUDA ordinal (kCuda)
  /// Resume from this checkpoint (any run of the same model wrote it, in any tiling).
  std::string load_dir;
};

/// "1 CPU device" or "1 GPU: NVIDIA H200 (140.4 GB, sm_90)" (the GPU as the inventory saw it).
std::string single_device_label(const SingleDeviceOptions& options);

/// The job's whole batch on one device.
class SingleDeviceJob final : public StepRunner {
 public:
  /// Builds the training graph of job.model at the job's batch (job.precision), creates the
  /// executor on options.device and initialises it, or loads options.load_dir. Errors: a
  /// checkpoint of another model (checked before anything is built), no GPU (kUnavailable,
  /// naming why), a graph that does not fit (host memory on the CPU; the GPU's allocator names
  /// the request that failed).
  static Expected<std::unique_ptr<SingleDeviceJob>> create(const JobSpec& job,
                                                           const SingleDeviceOptions& options = {});

  Expected<StepOutcome> run_step(int64_t step) override;
  /// Validation batch `index`: its loss, nothing updated.
  Expected<double> validate(int64_t index) override;
  /// Writes every parameter and optimizer state as one whole tile of device 0; any planned run
  /// of the same model can resume from it.
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override;

  /// Ops, FLOPs and memory of the step, and the device it runs on.
  RunInfo info() const;
  /// Parameters and optimizer states, in bytes.
  Bytes persistent_bytes() const { return exec_->memory().persistent; }
  /// The executor's memory figures (MemoryReport::reserved: the GPU's caching allocator on kCuda).
  runtime::MemoryReport memory() const { return exec_->memory(); }
  /// 1, or the loaded checkpoint's step + 1.
  int64_t first_step() const { return first_step_; }
  const graph::Graph& graph() const { return graph_.graph; }

 private:
  SingleDeviceJob() = default;
  /// Fills every persistent value from the checkpoint in `dir` (one whole tile each, resharded
  /// from whatever tiling it was saved in) and sets first_step_.
  Status load(const std::string& dir);
  /// Every parameter and optimizer state as one whole tile of device 0, for the checkpoint
  /// code: in the CPU executor's own memory, or (GPU) in host copies appended to `copies`, read
  /// from the device when `read` (a save), left for the checkpoint to fill when not (a load).
  Expected<std::vector<runtime::TileRef>> whole_tiles(
      bool read, std::vector<std::pair<ValueId, runtime::HostTensor>>& copies) const;
  JobSpec spec_;
  SingleDeviceOptions options_;
  int64_t first_step_ = 1;
  graph::TrainingGraph graph_;
  std::unique_ptr<runtime::Executor> exec_;
  std::unique_ptr<runtime::BatchSource> data_;
  std::unique_ptr<runtime::BatchSource> val_data_;  // opened at the first validation
};

}  // namespace meshpipe::train

// StepRunner: what runs the steps of a training job, whoever runs them. The session loop
// (train/session.h) drives one, and knows nothing else about it:
//
//   runner                        steps run by                        checkpoint written by
//   SingleDeviceJob               the single-device executor          this process
//   LocalJob                      one thread per device               this process
//   actors::ActorRunner           stage actors, one per device        this process
//   actors::Coordinator           the meshpipe-node processes         every node (its tiles)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/op_kind.h"
#include "core/status.h"
#include "runtime/checkpoint.h"

namespace meshpipe::train {

/// What one training step reports.
struct StepOutcome {
  double loss = 0.0;                      ///< mean of the micro-batch losses
  std::vector<double> losses;             ///< per micro-batch
  double seconds = 0.0;                   ///< wall time of the step (the slowest process's)
  std::map<int32_t, int64_t> peak_bytes;  ///< per global device that ran: peak live bytes
  /// In-process runs with InterpreterOptions::time_kernels (runtime::RunStepResult).
  std::map<OpKind, double> kernel_seconds;
  int64_t kernels_run = 0;
  std::map<std::string, double> other_seconds;  ///< the rest of the devices' time, by activity
  float loss_scale = 0.0f;                      ///< f16 loss scaling: the step's scale (0: off)
  bool skipped = false;          ///< the gradients overflowed: the step did not update
  float next_loss_scale = 0.0f;  ///< the scale's state after the step (checkpoints record it)
  int64_t good_steps = 0;
  double grad_norm = -1.0;  ///< clipping: the global gradient norm before clipping (-1: off)
};

/// Runs the steps of one job. Implementations decide where the devices are; the data of a step
/// is chosen by its number, so step n reads the same batch however the job is run or resumed.
class StepRunner {
 public:
  virtual ~StepRunner() = default;
  /// Runs step `step` (1-based, counting the steps of a resumed checkpoint).
  virtual Expected<StepOutcome> run_step(int64_t step) = 0;
  /// Saves the state after step `info.step` as a checkpoint in `dir` (runtime/checkpoint.h).
  virtual Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) = 0;
  /// The loss of validation batch `index` (0-based) under the current parameters, changing no
  /// state. The default: kUnavailable (runners without a validation split or the way to run
  /// one).
  virtual Expected<double> validate(int64_t index);
};

}  // namespace meshpipe::train

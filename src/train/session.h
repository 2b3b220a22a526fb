// The training session: the one step loop every way of training runs (one device, threads,
// actors, a cluster of nodes). It runs the steps through a StepRunner, stops on a non-finite
// loss or on request (a signal), checks the save directory before the first step and writes
// checkpoints when asked, tracks each device's peak memory, and reports every step.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/units.h"
#include "train/step_runner.h"

namespace meshpipe::train {

/// One step as reported to the user.
struct StepReport {
  int64_t step = 0;  ///< 1-based, counting the steps of a resumed checkpoint
  int64_t total_steps = 0;
  double loss = 0.0;
  Seconds time;
  double samples_per_second = 0.0;
  double tokens_per_second = 0.0;           ///< equals samples/s for models without token sequences
  Bytes peak;                               ///< the largest device peak of the step
  std::map<int32_t, int64_t> device_peaks;  ///< each device's peak bytes in the step
  float loss_scale = 0.0f;                  ///< f16 loss scaling: the step's scale (0: off)
  bool skipped = false;                     ///< the gradients overflowed: no update this step
  double grad_norm = -1.0;                  ///< clipping: the norm before clipping (-1: off)
};

/// A validation pass as reported to the user.
struct ValidationReport {
  int64_t step = 0;     ///< after this step
  double loss = 0.0;    ///< mean over the batches
  int64_t batches = 0;  ///< validation batches 0 .. batches - 1
};

/// Options of run_session.
struct SessionOptions {
  int64_t first_step = 1;        ///< > 1 when resumed from a checkpoint (its step + 1)
  int64_t steps = 50;            ///< steps to run
  int64_t samples_per_step = 1;  ///< the global batch
  int64_t tokens_per_step = 1;   ///< samples x tokens per sample
  std::string save_dir;          ///< write a checkpoint here after the last step
  int64_t save_every = 0;        ///< N > 0: also after every N-th step (needs save_dir)
  std::string model;             ///< recorded in checkpoints
  uint64_t seed = 0;             ///< recorded in checkpoints
  std::string data;              ///< recorded in checkpoints (train::data_identity)
  float lr = 0.0f;               ///< named in the error on a non-finite loss
  std::function<void(const StepReport&)> on_step;  ///< progress (every step)
  /// N > 0: after every N-th step and after the last, the mean loss of validation batches
  /// 0 .. val_batches - 1 (StepRunner::validate; the same batches every time).
  int64_t val_every = 0;
  int64_t val_batches = 4;
  std::function<void(const ValidationReport&)> on_validation;
  /// After each checkpoint written to save_dir: the step it holds and the folder.
  std::function<void(int64_t step, const std::string& dir)> on_checkpoint;
  /// Set (by a signal handler, another thread) to stop: checked before the first step and after
  /// every step. The step under way finishes, a checkpoint is saved (with save_dir), and the
  /// session returns kCancelled.
  const std::atomic<bool>* stop = nullptr;
  /// Errors: steps < 1, first_step < 1, save_every < 0, save_every > 0 without save_dir,
  /// samples or tokens per step < 1.
  Status validate() const;
};

/// What a session did.
struct SessionSummary {
  std::vector<double> losses;        ///< one per step run
  std::vector<double> step_seconds;  ///< wall time of each step run
  Seconds total_time;
  std::map<int32_t, int64_t> peak_bytes;  ///< per device: the largest peak of any step
  int64_t first_step = 1;
  int64_t last_step = 0;
  /// Runs that time their kernels (InterpreterOptions::time_kernels): device seconds by activity
  /// ("kernel matmul", "collective all-gather: communicator", "wait for receives", ...) summed
  /// over the devices and over the steps after the first (all steps when only one ran), and
  /// the number of steps summed.
  std::map<std::string, double> breakdown;
  int64_t breakdown_steps = 0;
  std::vector<ValidationReport> validation;  ///< every validation pass, in order
  /// f16 loss scaling: steps skipped on overflow, and the scale after the last step (0: off).
  int64_t skipped_steps = 0;
  float loss_scale = 0.0f;
  /// Clipping: each step's gradient norm before clipping (empty when clipping is off).
  std::vector<double> grad_norms;
};

/// A step's device seconds by activity: "kernel KIND" for each op kind's kernels, then the
/// other activities as the runtime names them (StepOutcome::other_seconds).
std::map<std::string, double> step_breakdown(const StepOutcome& outcome);

/// Runs steps first_step .. first_step + steps - 1 through `runner`. Before the first step it
/// checks that save_dir can take a checkpoint (runtime::check_save_target), so a place that
/// cannot is reported before any training. Errors name the step: a failed step, a non-finite
/// loss, a failed checkpoint. Stopped through `options.stop`, it returns kCancelled saying
/// where it stopped and what was saved: "interrupted after step N; checkpoint saved to DIR",
/// "...; nothing saved (no --save)", or "interrupted before step N; nothing saved (no step
/// finished)". A stop seen after the last step is still kCancelled (the run was interrupted;
/// its checkpoint is complete).
Expected<SessionSummary> run_session(StepRunner& runner, const SessionOptions& options);

}  // namespace meshpipe::train

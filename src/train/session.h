// The training session: the one step loop every way of training runs (one device, threads,
// actors, a cluster of nodes). It runs the steps through a StepRunner, stops on a non-finite
// loss, writes checkpoints when asked, tracks each device's peak memory, and reports every step.
#pragma once

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
  double tokens_per_second = 0.0;  ///< equals samples/s for models without token sequences
  Bytes peak;                      ///< the largest device peak of the step
};

/// Options of run_session.
struct SessionOptions {
  int64_t first_step = 1;        ///< > 1 when resumed from a checkpoint (its step + 1)
  int64_t steps = 50;            ///< steps to run
  int64_t samples_per_step = 1;  ///< the global batch
  int64_t tokens_per_step = 1;   ///< samples x tokens per sample
  std::string save_dir;          ///< write a checkpoint here after the last step
  int64_t save_every = 0;        ///< N > 0: also after every N-th step (with save_dir)
  std::string model;             ///< recorded in checkpoints
  uint64_t seed = 0;             ///< recorded in checkpoints
  float lr = 0.0f;               ///< named in the error on a non-finite loss
  std::function<void(const StepReport&)> on_step;  ///< progress (every step)
  Status validate() const;
};

/// What a session did.
struct SessionSummary {
  std::vector<double> losses;  ///< one per step run
  Seconds total_time;
  std::map<int32_t, int64_t> peak_bytes;  ///< per device: the largest peak of any step
  int64_t first_step = 1;
  int64_t last_step = 0;
};

/// Runs steps first_step .. first_step + steps - 1 through `runner`. Errors name the step: a
/// failed step, a non-finite loss, a failed checkpoint.
Expected<SessionSummary> run_session(StepRunner& runner, const SessionOptions& options);

}  // namespace meshpipe::train

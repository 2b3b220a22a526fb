// Single-device training of a zoo model on synthetic data: the `meshpipe train` loop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/units.h"
#include "graph/models/zoo.h"
#include "graph/optimizer.h"

namespace meshpipe::runtime {

/// One step as reported to the user.
struct StepReport {
  int64_t step = 0;  ///< 1-based
  int64_t total_steps = 0;
  double loss = 0.0;
  Seconds time;
  double samples_per_second = 0.0;
  double tokens_per_second = 0.0;  ///< equals samples/s for non-sequence models
  Bytes peak;
};

/// What a run is about to execute, reported once before the first step.
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

/// Options of a training run.
struct TrainOptions {
  int64_t steps = 50;
  int64_t batch = 0;                               ///< 0: the model's default batch
  graph::OptimizerConfig optimizer;                ///< lr etc.
  uint64_t seed = 1234;                            ///< parameter init and data
  bool check_finite = false;                       ///< stop with an error naming the op on NaN/Inf
  std::function<void(const RunInfo&)> on_start;    ///< called once, before the first step
  std::function<void(const StepReport&)> on_step;  ///< progress callback (every step)

  Status validate() const;
};

/// Result of a run.
struct TrainSummary {
  std::vector<double> losses;
  int64_t parameter_count = 0;
  Bytes persistent_bytes;  ///< parameters + optimizer states
  Bytes peak_bytes;        ///< largest step peak
  Seconds total_time;
};

/// Builds the training graph of `spec` (in f32), initialises it and trains for options.steps.
Expected<TrainSummary> train_single_device(const graph::models::ModelSpec& spec,
                                           const TrainOptions& options);

}  // namespace meshpipe::runtime

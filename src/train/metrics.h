// The machine-readable record of a training run: one JSON line per step written to a file as
// the steps finish (`meshpipe train --metrics FILE`), with the loss at full precision.
#pragma once

#include <string>

#include "core/files.h"
#include "core/status.h"
#include "train/session.h"

namespace meshpipe::train {

/// A metrics file open for writing. The file is created or replaced (only a regular file: a
/// directory, FIFO, device or symbolic link at the path is refused).
class MetricsLog {
 public:
  static Expected<MetricsLog> open(const std::string& path);

  /// {"step": 3, "loss": 4.150390625, "lr": 0.001, "step_time_s": 0.0128, "samples_per_s": ...,
  ///  "tokens_per_s": ..., "peak_bytes": ..., "loss_scale": 0, "skipped": false}: the loss and
  /// every number printed so that reading it back gives the same double.
  Status write_step(const StepReport& r, double lr);

  const std::string& path() const { return path_; }

 private:
  Status write_line(const std::string& line);
  std::string path_;
  UniqueFd fd_;
};

}  // namespace meshpipe::train

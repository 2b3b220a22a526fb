// The machine-readable record of a training run: one JSON line per step written to a file as
// the steps finish (`meshpipe train --metrics FILE`), with the loss at full precision.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/files.h"
#include "core/status.h"
#include "train/session.h"

namespace meshpipe::train {

/// A metrics file open for writing. The file is created, or replaced at the first line written
/// (a run that fails before its first step leaves an older file as it was); only a regular
/// file: a directory, FIFO, device or symbolic link at the path is refused, and so is a file
/// the run reads: each of `inputs` (what it is, its path: "--data", "data.bin") that is the same
/// file (the same inode, through any name or hard link) would be overwritten.
class MetricsLog {
 public:
  static Expected<MetricsLog> open(
      const std::string& path, const std::vector<std::pair<std::string, std::string>>& inputs = {});

  /// {"event": "step", "step": 3, "loss": 4.150390625, "lr": 0.001, "step_time_s": 0.0128,
  ///  "predicted_step_time_s": 0.0117 (when set), "samples_per_s": ..., "tokens_per_s": ...,
  ///  "peak_bytes": ..., "peak_bytes_per_device": {"0": ..., "1": ...}, "loss_scale": 0,
  ///  "skipped": false}: the loss and every number printed so that reading it back gives the
  /// same double (lr: the same float).
  Status write_step(const StepReport& r, float lr);
  /// {"event": "validation", "step": 10, "loss": ..., "batches": 4}.
  Status write_validation(const ValidationReport& v);
  /// {"event": "summary", "first_step", "last_step", "first_loss", "last_loss",
  ///  "total_time_s", "median_step_time_s", "predicted_step_time_s" (when set),
  ///  "peak_bytes_per_device": {...}, "skipped_steps"}: one line after the last step.
  Status write_summary(const SessionSummary& s);
  /// The plan's predicted step time, written beside each measured one (0: none).
  void set_predicted_step_time(double seconds) { predicted_ = seconds; }

  const std::string& path() const { return path_; }

 private:
  Status write_line(const std::string& line);
  std::string path_;
  UniqueFd fd_;
  bool started_ = false;
  double predicted_ = 0.0;
};

}  // namespace meshpipe::train

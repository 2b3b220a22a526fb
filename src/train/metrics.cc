// MetricsLog: step lines appended to a file with write(2).
#include "train/metrics.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

namespace meshpipe::train {

Expected<MetricsLog> MetricsLog::open(
    const std::string& path, const std::vector<std::pair<std::string, std::string>>& inputs) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument,
                      "cannot write the metrics file '{}': it exists and is not a regular file",
                      printable(path));
  }
  // Not truncated yet: a run that fails before its first step leaves an older file as it was.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    return make_error(Errc::kIo, "cannot write the metrics file '{}': {}", printable(path),
                      std::strerror(errno));
  }
  MetricsLog log;
  log.path_ = path;
  log.fd_.reset(fd);
  struct stat mine {};
  if (::fstat(fd, &mine) != 0) {
    return make_error(Errc::kIo, "cannot write the metrics file '{}': {}", printable(path),
                      std::strerror(errno));
  }
  for (const auto& [what, input] : inputs) {
    struct stat in {};
    if (!input.empty() && ::stat(input.c_str(), &in) == 0 && in.st_dev == mine.st_dev &&
        in.st_ino == mine.st_ino) {
      return make_error(Errc::kInvalidArgument,
                        "the metrics file '{}' is the file of {} ('{}'): writing the metrics "
                        "would overwrite it",
                        printable(path), what, printable(input));
    }
  }
  return log;
}

Status MetricsLog::write_line(const std::string& line) {
  if (!started_) {
    started_ = true;
    if (::ftruncate(fd_.get(), 0) != 0) {
      return make_error(Errc::kIo, "cannot write the metrics file '{}': {}", printable(path_),
                        std::strerror(errno));
    }
  }
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_.get(), line.data() + done, line.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Errc::kIo, "cannot write the metrics file '{}': {}", printable(path_),
                        std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

namespace {

// {} prints a double as the shortest text that reads back as the same value; a non-finite one
// (the loss of the step a session stops at) is written as null, which JSON can carry.
std::string num(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; }

// {"0": 123, "1": 456}: device -> bytes.
std::string per_device(const std::map<int32_t, int64_t>& peaks) {
  std::string out = "{";
  for (const auto& [device, bytes] : peaks) {
    out += fmt::format("{}\"{}\": {}", out.size() > 1 ? ", " : "", device, bytes);
  }
  return out + "}";
}

}  // namespace

Status MetricsLog::write_validation(const ValidationReport& v) {
  return write_line(
      fmt::format("{{\"event\": \"validation\", \"step\": {}, \"loss\": {}, \"batches\": {}}}\n",
                  v.step, num(v.loss), v.batches));
}

Status MetricsLog::write_summary(const SessionSummary& s) {
  std::vector<double> t = s.step_seconds;
  std::sort(t.begin(), t.end());
  const double median = t.empty() ? 0.0 : t[t.size() / 2];
  return write_line(fmt::format(
      "{{\"event\": \"summary\", \"first_step\": {}, \"last_step\": {}, \"first_loss\": {}, "
      "\"last_loss\": {}, \"total_time_s\": {}, \"median_step_time_s\": {}{}, "
      "\"peak_bytes_per_device\": {}, \"skipped_steps\": {}}}\n",
      s.first_step, s.last_step, s.losses.empty() ? "null" : num(s.losses.front()),
      s.losses.empty() ? "null" : num(s.losses.back()), num(s.total_time.value()), num(median),
      predicted_ > 0 ? fmt::format(", \"predicted_step_time_s\": {}", num(predicted_)) : "",
      per_device(s.peak_bytes), s.skipped_steps));
}

Status MetricsLog::write_step(const StepReport& r, float lr) {
  return write_line(fmt::format(
      "{{\"event\": \"step\", \"step\": {}, \"loss\": {}, \"lr\": {}, \"step_time_s\": {}{}, "
      "\"samples_per_s\": {}, \"tokens_per_s\": {}, \"peak_bytes\": {}, "
      "\"peak_bytes_per_device\": {}, \"loss_scale\": {}, \"skipped\": {}{}}}\n",
      r.step, num(r.loss), std::isfinite(lr) ? fmt::format("{}", lr) : "null", num(r.time.value()),
      predicted_ > 0 ? fmt::format(", \"predicted_step_time_s\": {}", num(predicted_)) : "",
      num(r.samples_per_second), num(r.tokens_per_second), r.peak.value(),
      per_device(r.device_peaks), num(r.loss_scale), r.skipped,
      r.grad_norm >= 0.0 ? fmt::format(", \"grad_norm\": {}", num(r.grad_norm)) : ""));
}

}  // namespace meshpipe::train

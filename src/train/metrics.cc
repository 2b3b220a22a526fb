// MetricsLog: step lines appended to a file with write(2).
#include "train/metrics.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace meshpipe::train {

Expected<MetricsLog> MetricsLog::open(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument,
                      "cannot write the metrics file '{}': it exists and is not a regular file",
                      printable(path));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    return make_error(Errc::kIo, "cannot write the metrics file '{}': {}", printable(path),
                      std::strerror(errno));
  }
  MetricsLog log;
  log.path_ = path;
  log.fd_.reset(fd);
  return log;
}

Status MetricsLog::write_line(const std::string& line) {
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

Status MetricsLog::write_step(const StepReport& r, double lr) {
  // {} prints a double as the shortest text that reads back as the same value; a non-finite
  // loss (the step a session stops at) is written as null, which JSON can carry.
  const auto num = [](double v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; };
  return write_line(fmt::format(
      "{{\"step\": {}, \"loss\": {}, \"lr\": {}, \"step_time_s\": {}, \"samples_per_s\": {}, "
      "\"tokens_per_s\": {}, \"peak_bytes\": {}, \"loss_scale\": {}, \"skipped\": {}}}\n",
      r.step, num(r.loss), num(lr), num(r.time.value()), num(r.samples_per_second),
      num(r.tokens_per_second), r.peak.value(), num(r.loss_scale), r.skipped));
}

}  // namespace meshpipe::train

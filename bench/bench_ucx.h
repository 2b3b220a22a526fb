// What the two-process UCX benchmarks (comm.cc, reshard.cc) share: blocking pipe I/O between a
// parent and its forked child, ucx_perftest result files (bench/perftest.sh) and the machine's
// load average printed beside the figures.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/status.h"

namespace meshpipe::bench {

/// How long a pipe read waits for the other process.
inline constexpr std::chrono::milliseconds kPipeTimeout{60000};

/// Writes all `n` bytes to `fd`.
inline Status write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::write(fd, p, n);
    if (k <= 0) return make_error(Errc::kIo, "pipe write failed");
    p += k;
    n -= size_t(k);
  }
  return Status::ok();
}

/// Reads exactly `n` bytes from `fd`; kTimeout when the peer sends nothing for kPipeTimeout.
inline Status read_all(int fd, void* data, size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, int(kPipeTimeout.count())) <= 0) {
      return make_error(Errc::kTimeout, "the peer process sent nothing");
    }
    const ssize_t k = ::read(fd, p, n);
    if (k <= 0) return make_error(Errc::kIo, "the peer process closed its pipe");
    p += k;
    n -= size_t(k);
  }
  return Status::ok();
}

/// A length-prefixed string over a pipe (UCX worker addresses).
inline Status write_string(int fd, const std::string& s) {
  const uint64_t n = s.size();
  MP_RETURN_IF_ERROR(write_all(fd, &n, sizeof(n)));
  return write_all(fd, s.data(), s.size());
}

inline Expected<std::string> read_string(int fd) {
  uint64_t n = 0;
  MP_RETURN_IF_ERROR(read_all(fd, &n, sizeof(n)));
  if (n > (uint64_t{1} << 20)) return make_error(Errc::kIo, "implausible message length");
  std::string s(size_t(n), '\0');
  MP_RETURN_IF_ERROR(read_all(fd, s.data(), s.size()));
  return s;
}

/// ucx_perftest results (`<bytes> <MB/s>` lines, MB = 2^20 bytes) as bytes -> GB/s (1e9 bytes/s);
/// the '#' lines are appended to `notes`. An empty path gives an empty map.
inline std::map<int64_t, double> read_perftest(const std::string& path, std::string* notes) {
  std::map<int64_t, double> out;
  if (path.empty()) return out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      *notes += line.substr(std::min<size_t>(2, line.size())) + " ";
      continue;
    }
    std::istringstream fields(line);
    int64_t bytes = 0;
    double mib_per_s = 0;
    if (fields >> bytes >> mib_per_s) out[bytes] = mib_per_s * double(1 << 20) / 1e9;
  }
  return out;
}

/// The 1-minute load average from /proc/loadavg ("?" if unreadable): other work on the machine.
inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  return in >> first ? first : std::string("?");
}

}  // namespace meshpipe::bench

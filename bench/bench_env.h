// Machine and date descriptions printed into the benchmark tables (bench/results/*.md), shared by
// every benchmark binary so the tables name the machine the same way.
#pragma once

#include <fmt/format.h>

#include <ctime>
#include <fstream>
#include <string>

namespace meshpipe::bench {

/// The CPU model from /proc/cpuinfo, or "unknown CPU".
inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

/// Logical processors listed in /proc/cpuinfo.
inline int cpu_count() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += line.rfind("processor", 0) == 0 ? 1 : 0;
  return n;
}

/// "<model>, <n> cores".
inline std::string machine() { return fmt::format("{}, {} cores", cpu_model(), cpu_count()); }

/// The current time as "YYYY-MM-DD HH:MM UTC".
inline std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

}  // namespace meshpipe::bench

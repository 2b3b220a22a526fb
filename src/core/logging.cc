// Module loggers on stderr, created on demand.
#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

namespace meshpipe {
namespace {

std::mutex& logger_mutex() {
  static std::mutex m;
  return m;
}

spdlog::level::level_enum& default_level() {
  static spdlog::level::level_enum level = spdlog::level::info;
  return level;
}

}  // namespace

std::shared_ptr<spdlog::logger> module_logger(const std::string& module) {
  std::lock_guard<std::mutex> lock(logger_mutex());
  const std::string name = "meshpipe." + module;
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("[%H:%M:%S.%e] [%n] [%^%l%$] %v");
  logger->set_level(default_level());
  return logger;
}

void set_log_level(const std::string& level) {
  std::lock_guard<std::mutex> lock(logger_mutex());
  default_level() = spdlog::level::from_str(level);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) {
    if (l->name().rfind("meshpipe.", 0) == 0) l->set_level(default_level());
  });
}

}  // namespace meshpipe

// One logging library (spdlog) with one named logger per module (docs/style.md rule 32).
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace meshpipe {

/// The logger of a module ("graph", "planner", ...), created on first use; logs to stderr.
std::shared_ptr<spdlog::logger> module_logger(const std::string& module);

/// Sets the level of every meshpipe logger ("trace", "debug", "info", "warn", "error", "off").
void set_log_level(const std::string& level);

}  // namespace meshpipe

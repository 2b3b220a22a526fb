// peak_table: measured against predicted memory per device.
#include "train/report.h"

#include <fmt/format.h>

#include "core/units.h"

namespace meshpipe::train {

std::string peak_table(const planner::Plan& plan, const std::map<int32_t, int64_t>& measured) {
  std::string out = fmt::format("{:<7} {:<6} {:>14} {:>16}\n", "device", "stage", "measured peak",
                                "predicted peak");
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    for (int32_t d : plan.stages[k].devices) {
      const auto it = measured.find(d);
      const int64_t got = it == measured.end() ? 0 : it->second;
      out += fmt::format("{:<7} {:<6} {:>14} {:>16}\n", d, k, format_bytes(Bytes(got)),
                         format_bytes(Bytes(plan.stages[k].memory.peak)));
    }
  }
  return out;
}

}  // namespace meshpipe::train

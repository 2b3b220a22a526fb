// peak_table: measured against predicted memory per device.
#include "train/report.h"

#include <fmt/format.h>

#include <cmath>

#include "core/units.h"

namespace meshpipe::train {

std::string step_line(const StepReport& r, bool is_lm) {
  const double rate = is_lm ? r.tokens_per_second : r.samples_per_second;
  const std::string scale =
      r.loss_scale <= 0.0f ? std::string()
      : r.skipped ? fmt::format("  loss scale {:g}: overflow, update skipped", r.loss_scale)
                  : fmt::format("  loss scale {:g}", r.loss_scale);
  const std::string norm =
      r.grad_norm >= 0.0 || std::isnan(r.grad_norm)  // clipping on (NaN: not finite)
          ? fmt::format("  grad norm {:.4g}", r.grad_norm)
          : std::string();
  return fmt::format("step {:>4}/{}  loss {:.4f}  time {:>9}  {} {:>8.1f}  peak {}{}{}", r.step,
                     r.total_steps, r.loss, format_seconds(r.time),
                     is_lm ? "tokens/s" : "samples/s", rate, format_bytes(r.peak), scale, norm);
}

std::string loss_scaling_line(const SessionSummary& s) {
  if (s.loss_scale <= 0.0f) return std::string();
  return fmt::format("loss scaling: {} of {} steps skipped on overflow; the scale is now {:g}",
                     s.skipped_steps, s.losses.size(), s.loss_scale);
}

std::string clipping_line(const SessionSummary& s, double max_norm) {
  if (s.grad_norms.empty()) return std::string();
  int64_t clipped = 0;
  for (double n : s.grad_norms) clipped += n + 1e-6 > max_norm ? 1 : 0;  // NaN: not clipped
  return fmt::format("gradient clipping at {:g}: {} of {} steps clipped; norm {:.4g} -> {:.4g}",
                     max_norm, clipped, s.grad_norms.size(), s.grad_norms.front(),
                     s.grad_norms.back());
}

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

// What a training run reports for people: a line per step, each device's measured peak memory
// next to the plan's prediction, and what loss scaling did.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "planner/plan.h"
#include "train/session.h"

namespace meshpipe::train {

/// One line per device of the plan, in stage order:
///   device  stage   measured peak   predicted peak
///   0       0          406.31 KiB       413.88 KiB
/// A device the run did not report shows 0 B.
/// "step   12/20  loss 4.1504  time  12.8 ms  tokens/s  9995.3  peak 306.62 KiB" (tokens for a
/// language model, else samples), with "  loss scale S" under loss scaling and ": overflow,
/// update skipped" for a skipped step, then "  grad norm N" with clipping; no newline.
std::string step_line(const StepReport& r, bool is_lm);

/// "loss scaling: N of M steps skipped on overflow; the scale is now S", or "" when the session
/// did not scale its loss.
std::string loss_scaling_line(const SessionSummary& s);
/// "gradient clipping at 0.5: 18 of 20 steps clipped; norm 1.37 -> 1.27" (a step is clipped
/// when its factor max / (norm + 1e-6) is below 1), or "" when the session has no norms.
std::string clipping_line(const SessionSummary& s, double max_norm);

std::string peak_table(const planner::Plan& plan, const std::map<int32_t, int64_t>& measured);

}  // namespace meshpipe::train

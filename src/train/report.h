// What a training run reports besides its steps: each device's measured peak memory next to the
// plan's prediction, as a table for people.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "planner/plan.h"

namespace meshpipe::train {

/// One line per device of the plan, in stage order:
///   device  stage   measured peak   predicted peak
///   0       0          406.31 KiB       413.88 KiB
/// A device the run did not report shows 0 B.
std::string peak_table(const planner::Plan& plan, const std::map<int32_t, int64_t>& measured);

}  // namespace meshpipe::train

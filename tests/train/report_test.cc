// The measured-against-predicted memory table.
#include "train/report.h"

#include <catch2/catch.hpp>

namespace meshpipe::train {
namespace {

TEST_CASE("the peak table lists every device of the plan in stage order", "[train]") {
  planner::Plan p;
  planner::StagePlan s0;
  s0.devices = {0, 1};
  s0.memory.peak = 2048;
  planner::StagePlan s1;
  s1.devices = {2};
  s1.memory.peak = 3 << 20;
  p.stages = {s0, s1};
  const std::string t = peak_table(p, {{0, 1024}, {1, 1536}});
  CHECK(t ==
        "device  stage   measured peak   predicted peak\n"
        "0       0            1.00 KiB         2.00 KiB\n"
        "1       0            1.50 KiB         2.00 KiB\n"
        "2       1                 0 B         3.00 MiB\n");
}

}  // namespace
}  // namespace meshpipe::train

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

TEST_CASE("a step line shows the loss scale and, with clipping, the gradient norm", "[train]") {
  StepReport r;
  r.step = 3;
  r.total_steps = 10;
  r.loss = 4.25;
  r.time = Seconds(0.0125);
  r.tokens_per_second = 1000.0;
  r.peak = Bytes(2048);
  CHECK(step_line(r, true) ==
        "step    3/10  loss 4.2500  time   12.5 ms  tokens/s   1000.0  peak 2.00 KiB");
  r.loss_scale = 1024.0f;
  r.grad_norm = 0.8125;
  CHECK(step_line(r, true) ==
        "step    3/10  loss 4.2500  time   12.5 ms  tokens/s   1000.0  peak 2.00 KiB  loss scale "
        "1024  grad norm 0.8125");
}

TEST_CASE("the clipping line counts the steps whose factor was below 1", "[train]") {
  SessionSummary s;
  CHECK(clipping_line(s, 1.0).empty());  // clipping off: no norms
  s.grad_norms = {1.5, 0.5, 1.0, 0.9999995, 2.0};
  // 1.0 + 1e-6 > 1 clips (max / (norm + 1e-6) < 1); 0.9999995 + 1e-6 = 1.0000005 clips too.
  CHECK(clipping_line(s, 1.0) == "gradient clipping at 1: 4 of 5 steps clipped; norm 1.5 -> 2");
}

}  // namespace
}  // namespace meshpipe::train

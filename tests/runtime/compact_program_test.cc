// Compact programs (runtime/compact_program.h) held against the flat ones lower() gives: for
// every zoo tiny model x plan kind (the planner's, every baseline) x schedule x recomputation,
// with enough micro-batches that the steady state repeats, the compact program expanded is
// lower()'s program instruction for instruction (up to buffer numbering), and simulating it
// gives the same step time, busy times and peak memory per device as simulating lower()'s;
// peak_memory (no clock) counts the same peaks.
#include "runtime/compact_program.h"

#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/planner.h"
#include "runtime/cost_models.h"
#include "runtime/local_op.h"
#include "runtime/lower.h"
#include "runtime/plan_kinds.h"
#include "runtime/simulator.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

TEST_CASE("a compact program is the flat program and simulates the same on every plan kind",
          "[runtime][compact]") {
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  int checked = 0, pipelines = 0;
  for (const std::string model : {"gpt-tiny", "moe-tiny", "mlp-tiny", "wresnet-tiny"}) {
    graph::TrainingGraph tg = testing::zoo_training_graph(model, model == "wresnet-tiny" ? 2 : 4);
    for (planner::Schedule schedule : {planner::Schedule::k1F1B, planner::Schedule::kGPipe}) {
      for (planner::Recompute rc : {planner::Recompute::kOff, planner::Recompute::kOn}) {
        for (auto& [kind, plan] :
             testing::every_plan_kind(tg.graph, model, 12, schedule, rc, false)) {
          const std::string what =
              fmt::format("{} {} {} recompute {}", model, kind, planner::schedule_name(schedule),
                          planner::recompute_name(rc));
          INFO(what);
          REQUIRE(plan.micro_batches >
                  compact_lowering_count(static_cast<int64_t>(plan.stages.size())) + 1);
          auto flat = lower(plan, tg.graph);
          REQUIRE(flat.has_value());
          auto cp = lower_compact(plan, tg.graph);
          if (!cp.has_value()) FAIL(cp.status().to_string());
          CHECK(cp->base.micro_batches == plan.micro_batches);
          int64_t flat_count = 0;
          for (size_t d = 0; d < flat->devices.size(); ++d) {
            if (flat->devices[d].device < 0) continue;
            flat_count += static_cast<int64_t>(flat->devices[d].instructions.size());
            const Status same = same_device_program(expand_device(*cp, d), flat->devices[d]);
            if (!same.is_ok()) FAIL(same.to_string());
          }
          CHECK(cp->instructions() == flat_count);
          // Fewer instructions held than run: the steady state is one template.
          int64_t held = 0;
          for (const CompactCode& c : cp->code) {
            for (const auto& t : c.templates) held += static_cast<int64_t>(t.size());
          }
          CHECK(held < flat_count);
          auto a = simulate(*flat, *cl);
          auto b = simulate(*cp, *cl);
          REQUIRE(a.has_value());
          REQUIRE(b.has_value());
          CHECK(a->step_time == b->step_time);
          CHECK(a->bubble_fraction == b->bubble_fraction);
          REQUIRE(a->devices.size() == b->devices.size());
          const std::vector<int64_t> peaks = peak_memory(*cp, *cl);
          for (size_t d = 0; d < a->devices.size(); ++d) {
            CHECK(peaks[static_cast<size_t>(a->devices[d].device)] == a->devices[d].peak_bytes);
            CHECK(a->devices[d].peak_bytes == b->devices[d].peak_bytes);
            CHECK(a->devices[d].compute == b->devices[d].compute);
            CHECK(a->devices[d].collective == b->devices[d].collective);
            CHECK(a->devices[d].waiting == b->devices[d].waiting);
          }
          ++checked;
          if (plan.stages.size() > 1) ++pipelines;
        }
      }
    }
  }
  CHECK(checked >= 64);
  CHECK(pipelines >= 16);
}

TEST_CASE("a compact program cannot be shrunk or extended from too few micro-batches",
          "[runtime][compact]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("mlp-tiny", 4);
  auto plans = testing::every_plan_kind(tg.graph, "mlp-tiny", 3, planner::Schedule::k1F1B,
                                        planner::Recompute::kOff, false);
  auto flat = lower(plans.front().second, tg.graph);
  REQUIRE(flat.has_value());
  auto cp = compact(std::move(*flat));
  REQUIRE(cp.has_value());
  auto more = with_micro_batches(*cp, 64);
  REQUIRE_FALSE(more.has_value());
  CHECK(more.status().message().find("cannot be extended") != std::string::npos);
  auto same = with_micro_batches(*cp, 3);
  REQUIRE(same.has_value());
}

TEST_CASE("compact() rejects a task split into two runs", "[runtime][compact]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("mlp-tiny", 4);
  auto plans = testing::every_plan_kind(tg.graph, "mlp-tiny", 2, planner::Schedule::k1F1B,
                                        planner::Recompute::kOff, false);
  auto flat = lower(plans.front().second, tg.graph);
  REQUIRE(flat.has_value());
  // Move micro-batch 1's first forward instruction behind micro-batch 0's... by relabelling one
  // instruction in the middle of micro-batch 0's forward as micro-batch 1's.
  for (DeviceProgram& dp : flat->devices) {
    if (dp.device < 0) continue;
    size_t first = dp.instructions.size(), count = 0;
    for (size_t i = 0; i < dp.instructions.size(); ++i) {
      if (dp.instructions[i].micro_batch == 0 && dp.instructions[i].phase == Phase::kForward) {
        first = std::min(first, i);
        ++count;
      }
    }
    REQUIRE(count >= 3);
    Instruction moved = dp.instructions[first + 1];
    moved.micro_batch = 1;
    dp.instructions.insert(dp.instructions.begin() + static_cast<int64_t>(first + 1),
                           std::move(moved));
    break;
  }
  auto cp = compact(std::move(*flat));
  REQUIRE_FALSE(cp.has_value());
  CHECK(cp.status().message().find("not one run") != std::string::npos);
}

TEST_CASE("the lowering's size estimate bounds the program lower() holds", "[runtime][compact]") {
  // lower_compact refuses plans whose estimate exceeds 3/4 of the machine's RAM, so the
  // estimate must not undercount: the flat program at the count lower_compact lowers at (its
  // instructions with their operand lists and words, and its ops) stays below it, and within 16x.
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  for (const std::string model : {"gpt-tiny", "wresnet-tiny"}) {
    graph::TrainingGraph tg = testing::zoo_training_graph(model, model == "wresnet-tiny" ? 2 : 4);
    for (auto& [kind, plan] : testing::every_plan_kind(
             tg.graph, model, 12, planner::Schedule::k1F1B, planner::Recompute::kOff, false)) {
      INFO(model << " " << kind);
      planner::Plan at = plan;
      at.micro_batches = std::min<int64_t>(
          plan.micro_batches, compact_lowering_count(static_cast<int64_t>(plan.stages.size())) + 1);
      at.global_batch = at.micro_batches * plan.micro_batch;
      auto flat = lower(at, tg.graph);
      REQUIRE(flat.has_value());
      int64_t held = 0;
      for (const DeviceProgram& dp : flat->devices) {
        for (const Instruction& ins : dp.instructions) {
          held += static_cast<int64_t>(
              sizeof(Instruction) + ins.what.capacity() +
              4 * (ins.in.capacity() + ins.out.capacity()) +
              8 * (ins.src_offset.capacity() + ins.dst_offset.capacity() + ins.extent.capacity()));
        }
        held += static_cast<int64_t>(dp.ops.size() * sizeof(LocalOp) +
                                     dp.buffers.size() * sizeof(BufferDesc));
      }
      const int64_t estimate = lowering_bytes_estimate(plan);
      CHECK(estimate >= held);
      CHECK(estimate <= 16 * held);
    }
  }
  CHECK(lowering_bytes_limit() > 0);
}

TEST_CASE("lower_compact refuses a plan whose program would not fit this machine",
          "[runtime][compact]") {
  // A stage claiming 4M devices: ~3 TiB of program by the estimate, refused before lowering
  // anything (out of range, which `bench scaling` reports as "not simulated").
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  auto kinds = testing::every_plan_kind(tg.graph, "gpt-tiny", 12, planner::Schedule::k1F1B,
                                        planner::Recompute::kOff, false);
  REQUIRE(!kinds.empty());
  planner::Plan plan = kinds.front().second;
  plan.stages.front().devices.assign(size_t{1} << 22, 0);
  REQUIRE(lowering_bytes_estimate(plan) > lowering_bytes_limit());
  auto cp = lower_compact(plan, tg.graph);
  REQUIRE(!cp.has_value());
  CHECK(cp.status().code() == Errc::kOutOfRange);
  CHECK(cp.status().message().find("GiB of program") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::runtime

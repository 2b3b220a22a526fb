// The memory a plan promises held against what its lowered programs really hold: for every zoo
// tiny model x plan kind (data, tensor, pipeline, ZeRO-2/3, the planner's own mixed plan) x
// schedule (1F1B, GPipe) x micro-batch count x recomputation (off, on), each stage's peak per
// device in the plan must be at least the simulator's count (buffers live between their first
// write and their kFree) and at least the peak measured by running the step on CPU devices, and
// at most 15% above the measured one. The plan's peak is counted on its lowered program
// (runtime/counted_plan.h), so it equals both on every row; the memory model's estimate, which the
// planner's search uses before there is a program, is held by a ratchet on the same matrix
// (bench/results/memory.md; MP_MEMORY_CSV=FILE writes every row).
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "planner/planner.h"
#include "runtime/cost_models.h"
#include "runtime/counted_plan.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/plan_kinds.h"
#include "runtime/simulator.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

struct Case {
  std::string model;
  int64_t micro_batch = 4;
};

struct Row {
  std::string what;
  int32_t device = 0;
  int64_t predicted = 0;  ///< the plan's (counted on its lowered program)
  int64_t estimated = 0;  ///< the memory model's
  int64_t simulated = 0;
  int64_t measured = 0;
};

// Every row of the matrix: 4 tiny models x every plan kind x {1F1B M=1, 1F1B M=4, GPipe M=4} x
// recomputation off / on, each device's predicted, simulated and measured peak.
std::vector<Row> memory_matrix() {
  const std::vector<Case> cases = {
      {"gpt-tiny", 4}, {"moe-tiny", 4}, {"mlp-tiny", 4}, {"wresnet-tiny", 2}};
  std::vector<Row> rows;
  for (const Case& c : cases) {
    graph::TrainingGraph tg = testing::zoo_training_graph(c.model, c.micro_batch);
    for (int64_t mbs : {int64_t{1}, int64_t{4}}) {
      for (planner::Schedule schedule : {planner::Schedule::k1F1B, planner::Schedule::kGPipe}) {
        if (mbs == 1 && schedule == planner::Schedule::kGPipe) continue;  // same as 1F1B
        for (planner::Recompute rc : {planner::Recompute::kOff, planner::Recompute::kOn}) {
          for (auto& [kind, plan] :
               testing::every_plan_kind(tg.graph, c.model, mbs, schedule, rc, true)) {
            const std::string what =
                fmt::format("{} {} M={} {} recompute {}", c.model, kind, mbs,
                            planner::schedule_name(schedule), planner::recompute_name(rc));
            auto prog = lower(plan, tg.graph);
            if (!prog.has_value()) FAIL(what << ": " << prog.status().to_string());
            auto cl = mesh::cluster_preset("cpu:1x4");
            auto sim = simulate(*prog, *cl);
            if (!sim.has_value()) FAIL(what << ": " << sim.status().to_string());
            auto run = InProcessRun::create(*prog, tg.graph);
            if (!run.has_value()) FAIL(what << ": " << run.status().to_string());
            REQUIRE((*run)->initialize(1).is_ok());
            graph::TrainingGraph whole = testing::zoo_training_graph(c.model, c.micro_batch * mbs);
            auto data = SyntheticData::create(whole.graph, whole.inputs, 7);
            REQUIRE(data.has_value());
            auto batches =
                split_micro_batches(whole.graph, data->next_batch(), (*run)->program().inputs, mbs);
            REQUIRE(batches.has_value());
            auto step = (*run)->step(*batches);
            if (!step.has_value()) FAIL(what << ": " << step.status().to_string());
            for (const SimulatedDevice& d : sim->devices) {
              const planner::StagePlan& sp = plan.stages[static_cast<size_t>(d.stage)];
              rows.push_back({what, d.device, sp.memory.peak, sp.memory.estimated, d.peak_bytes,
                              step->peak_bytes[static_cast<size_t>(d.device)]});
            }
          }
        }
      }
    }
  }
  if (const char* csv = std::getenv("MP_MEMORY_CSV")) {
    std::FILE* f = std::fopen(csv, "w");
    for (const Row& r : rows) {
      fmt::print(f, "{},{},{},{},{},{}\n", r.what, r.device, r.predicted, r.estimated, r.simulated,
                 r.measured);
    }
    std::fclose(f);
  }
  return rows;
}

double ratio(int64_t predicted, const Row& r) {
  return static_cast<double>(predicted) / static_cast<double>(std::max<int64_t>(1, r.measured));
}

bool in_band(int64_t predicted, const Row& r) {
  return predicted >= r.simulated && predicted >= r.measured && ratio(predicted, r) <= 1.15;
}

TEST_CASE("every plan's peak memory bounds the simulated and measured peaks within 15%",
          "[runtime][memory_model]") {
  const std::vector<Row> rows = memory_matrix();
  REQUIRE(rows.size() == 840);
  int model_off = 0;
  int model_on = 0;
  double lowest = 10.0;
  double highest = 0.0;
  for (const Row& r : rows) {
    INFO(r.what << " device " << r.device << ": plan " << r.predicted << ", model " << r.estimated
                << ", simulated " << r.simulated << ", measured " << r.measured);
    // The plan's own figure: counted on the program the runtime runs.
    CHECK(in_band(r.predicted, r));
    CHECK(r.predicted == r.measured);
    CHECK(r.simulated == r.measured);
    // The memory model's estimate, which the search decides by: a ratchet on today's figures
    // (bench/results/memory.md), until every row is within the band.
    const bool recompute = r.what.ends_with("recompute on");
    (recompute ? model_on : model_off) += in_band(r.estimated, r) ? 1 : 0;
    lowest = std::min(lowest, ratio(r.estimated, r));
    highest = std::max(highest, ratio(r.estimated, r));
  }
  INFO("memory model: " << model_off << " + " << model_on << " rows in the band; estimate / "
                        << "measured from " << lowest << " to " << highest);
  // 2026-12-02: 409 of 420 rows without recomputation and 391 of 420 with it; estimate /
  // measured from 0.984 to 1.514.
  CHECK(model_off >= 409);
  CHECK(model_on >= 391);
  CHECK(lowest >= 0.98);
  CHECK(highest <= 1.52);
}

TEST_CASE("the simulator counts exactly the peak a CPU run measures on every plan kind",
          "[runtime][memory_model]") {
  // Buffers at the CPU pool's 64-byte blocks, each kernel's outputs and scratch live together:
  // the simulator's peak per device is the measured one, byte for byte.
  int checked = 0;
  for (const Case& c : {Case{"gpt-tiny", 4}, Case{"moe-tiny", 4}, Case{"wresnet-tiny", 2}}) {
    graph::TrainingGraph tg = testing::zoo_training_graph(c.model, c.micro_batch);
    for (planner::Recompute rc : {planner::Recompute::kOff, planner::Recompute::kOn}) {
      for (auto& [kind, plan] :
           testing::every_plan_kind(tg.graph, c.model, 4, planner::Schedule::kGPipe, rc, true)) {
        INFO(c.model << " " << kind << " recompute " << planner::recompute_name(rc));
        auto prog = lower(plan, tg.graph);
        REQUIRE(prog.has_value());
        auto sim = simulate(*prog, plan.cluster);
        REQUIRE(sim.has_value());
        auto run = InProcessRun::create(*prog, tg.graph);
        REQUIRE(run.has_value());
        REQUIRE((*run)->initialize(1).is_ok());
        graph::TrainingGraph whole = testing::zoo_training_graph(c.model, c.micro_batch * 4);
        auto data = SyntheticData::create(whole.graph, whole.inputs, 7);
        REQUIRE(data.has_value());
        auto batches =
            split_micro_batches(whole.graph, data->next_batch(), (*run)->program().inputs, 4);
        REQUIRE(batches.has_value());
        auto step = (*run)->step(*batches);
        REQUIRE(step.has_value());
        for (const SimulatedDevice& d : sim->devices) {
          CHECK(d.peak_bytes == step->peak_bytes[static_cast<size_t>(d.device)]);
          ++checked;
        }
      }
    }
  }
  CHECK(checked > 100);
}

}  // namespace
}  // namespace meshpipe::runtime

namespace meshpipe::runtime {
namespace {

TEST_CASE("the make demo plan's peaks are the measured ones and its estimate is within 15%",
          "[runtime][memory_model]") {
  // gpt-tiny on cpu:2x2, 2 micro-batches of 4: two pipeline stages of (1, 2) meshes.
  auto cl = mesh::cluster_preset("cpu:2x2");
  REQUIRE(cl.has_value());
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  const auto cost_model = cost_model_for(*cl);
  const planner::CostModel& cost = *cost_model;
  planner::PlannerOptions po;
  po.model = "gpt-tiny";
  po.micro_batches = 2;
  auto plan = make_counted_plan(tg.graph, *cl, cost, po);
  if (!plan.has_value()) FAIL(plan.status().to_string());
  REQUIRE(plan->stages.size() == 2);
  auto prog = lower(*plan, tg.graph);
  if (!prog.has_value()) FAIL(prog.status().to_string());
  auto sim = simulate(*prog, *cl);
  if (!sim.has_value()) FAIL(sim.status().to_string());
  auto run = InProcessRun::create(*prog, tg.graph);
  if (!run.has_value()) FAIL(run.status().to_string());
  REQUIRE((*run)->initialize(1).is_ok());
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", 8);
  auto data = SyntheticData::create(whole.graph, whole.inputs, 7);
  REQUIRE(data.has_value());
  auto batches = split_micro_batches(whole.graph, data->next_batch(), (*run)->program().inputs, 2);
  REQUIRE(batches.has_value());
  auto step = (*run)->step(*batches);
  if (!step.has_value()) FAIL(step.status().to_string());
  for (const SimulatedDevice& d : sim->devices) {
    const planner::StagePlan& sp = plan->stages[static_cast<size_t>(d.stage)];
    const int64_t measured = step->peak_bytes[static_cast<size_t>(d.device)];
    INFO("device " << d.device << ": predicted " << sp.memory.peak << " (model "
                   << sp.memory.estimated << "), simulated " << d.peak_bytes << ", measured "
                   << measured);
    CHECK(sp.memory.peak == d.peak_bytes);
    CHECK(sp.memory.peak == measured);
    // The memory model's own estimate is within the band on this plan too.
    CHECK(sp.memory.estimated >= measured);
    CHECK(static_cast<double>(sp.memory.estimated) <= 1.15 * static_cast<double>(measured));
    // With several micro-batches every parameter gradient has an accumulator all step long.
    CHECK(sp.memory.gradients > 0);
  }
}

}  // namespace
}  // namespace meshpipe::runtime

namespace meshpipe::runtime {
namespace {

// What a plan counts around each op is the scratch of the kernels its devices run: the CPU
// column for a CPU cluster, the CUDA column for a GPU one (the GPU interpreter sizes its
// workspaces from that column), with the interpreter's 64-byte block rounding on both.
TEST_CASE("the cost model of a cluster sizes kernel scratch by the cluster's devices",
          "[memory_model]") {
  const std::vector<Shape> in = {Shape{2, 3, 8, 8}, Shape{2, 3, 4, 4}};
  OpAttrs attrs;
  for (const std::string name : {"cpu:2x2", "p3.16xlarge", "dgx-h100"}) {
    INFO(name);
    auto cl = mesh::cluster_preset(name);
    REQUIRE(cl.has_value());
    const auto m = cost_model_for(*cl);
    const kernels::Device d =
        cl->device.kind == "cpu" ? kernels::Device::kCpu : kernels::Device::kCuda;
    CHECK(m->workspace_bytes(OpKind::kMaxPool2dGrad, in, attrs) ==
          kernels::kernel_workspace_bytes(d, OpKind::kMaxPool2dGrad, in, attrs));
    CHECK(m->allocation_bytes(1) == 64);
    CHECK(m->allocation_bytes(65) == 128);
  }
}

}  // namespace
}  // namespace meshpipe::runtime

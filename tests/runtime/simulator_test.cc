// The simulated backend: on pipeline-free plans its step time matches the planner's prediction
// (two independent sums of the same cost model: the planner's over ILP choices and boundary
// conversions, the simulator's over the lowered instructions); a pipeline's simulated step shows
// the bubble GPipe's formula predicts; traces and memory timelines are well formed.
#include "runtime/simulator.h"

#include <catch2/catch.hpp>

#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "planner/manual_plan.h"
#include "planner/planner.h"
#include "runtime/lower.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;

graph::Graph training_graph(const std::string& model, int64_t batch) {
  return testing::zoo_training_graph(model, batch).graph;
}

planner::Plan grid(const graph::Graph& g, const mesh::ClusterSpec& c, int64_t m,
                   planner::GridConfig cfg) {
  planner::AnalyticCostModel cost(c.device);
  planner::PlannerOptions po;
  po.clustering.num_layers = 4;
  auto p = planner::grid_plan(g, c, cost, po, m, cfg);
  if (!p.has_value()) FAIL(p.status().to_string());
  return *p;
}

SimulationResult run(const planner::Plan& plan, const graph::Graph& g, SimulationOptions so = {}) {
  auto prog = lower(plan, g);
  if (!prog.has_value()) FAIL(prog.status().to_string());
  auto sim = simulate(*prog, plan.cluster, so);
  if (!sim.has_value()) FAIL(sim.status().to_string());
  return *sim;
}

TEST_CASE("simulated step time matches the plan on pipeline-free plans", "[simulator]") {
  auto cpu = mesh::cluster_preset("cpu:1x4");
  auto p3 = mesh::cluster_preset("p3.16xlarge:1");
  REQUIRE(cpu.has_value());
  REQUIRE(p3.has_value());
  struct Case {
    const char* model;
    int64_t batch;
    const mesh::ClusterSpec* cluster;
    planner::GridConfig grid;
  };
  const Case cases[] = {
      {"gpt-tiny", 8, &*cpu, {4, 1, 1, Mode::kReplicated}},
      {"gpt-tiny", 8, &*cpu, {1, 4, 1, Mode::kFree}},
      {"gpt-tiny", 8, &*cpu, {2, 2, 1, Mode::kFree}},
      {"gpt-tiny", 8, &*cpu, {4, 1, 1, Mode::kZero3}},
      {"moe-tiny", 8, &*cpu, {2, 2, 1, Mode::kFree}},
      {"wresnet-tiny", 16, &*cpu, {4, 1, 1, Mode::kReplicated}},
      {"gpt-125m", 8, &*p3, {2, 4, 1, Mode::kFree}},
      {"gpt-125m", 8, &*p3, {8, 1, 1, Mode::kZero2}},
  };
  for (const Case& c : cases) {
    graph::Graph g = training_graph(c.model, c.batch);
    const planner::Plan plan = grid(g, *c.cluster, 1, c.grid);
    const SimulationResult sim = run(plan, g);
    INFO(c.model << " on " << c.cluster->name << " dp " << c.grid.dp << " tp " << c.grid.tp
                 << ": simulated " << sim.step_time << " s, planned " << plan.step_time << " s");
    CHECK(sim.step_time == Approx(plan.step_time).epsilon(0.10));
    // Every used device reports its peak, at least its persistent tiles.
    REQUIRE(sim.devices.size() == static_cast<size_t>(c.grid.dp * c.grid.tp));
    for (const SimulatedDevice& d : sim.devices) CHECK(d.peak_bytes > 0);
  }
}

TEST_CASE("with many micro-batches the plan prices each gradient's accumulation", "[simulator]") {
  // 64 micro-batches of one sequence per data-parallel device: every micro-batch adds the
  // gradients into their accumulators, a memory-bound pass over the whole model's gradients with
  // replicated parameters (3% of the step here: a plan that leaves it out is that optimistic),
  // and under ZeRO-2 too (accumulated before the reduce-scatter that splits them).
  auto p3 = mesh::cluster_preset("p3.16xlarge:1");
  REQUIRE(p3.has_value());
  struct Case {
    int64_t batch;
    planner::GridConfig grid;
  };
  for (const Case& c : {Case{8, {8, 1, 1, Mode::kReplicated}}, Case{8, {4, 1, 1, Mode::kZero2}}}) {
    graph::Graph g = training_graph("gpt-125m", c.batch);
    const planner::Plan plan = grid(g, *p3, 64, c.grid);
    const SimulationResult sim = run(plan, g);
    INFO("dp " << c.grid.dp << " tp " << c.grid.tp << ": simulated " << sim.step_time
               << " s, planned " << plan.step_time << " s");
    CHECK(sim.step_time == Approx(plan.step_time).epsilon(0.01));
  }
}

TEST_CASE("a pipeline's simulated bubble follows the schedule", "[simulator]") {
  auto cpu = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cpu.has_value());
  graph::Graph g = training_graph("gpt-tiny", 2);
  // 4 stages, m micro-batches: the bubble is (n - 1) / (m + n - 1) of the step when the stages
  // are balanced (0.6 and 0.27 here); these are not, but more micro-batches still shrink it.
  const planner::Plan few = grid(g, *cpu, 2, {1, 1, 4, Mode::kFree});
  const planner::Plan many = grid(g, *cpu, 8, {1, 1, 4, Mode::kFree});
  const SimulationResult a = run(few, g);
  const SimulationResult b = run(many, g);
  INFO("bubble with 2 micro-batches " << a.bubble_fraction << ", with 8 " << b.bubble_fraction);
  CHECK(a.bubble_fraction > b.bubble_fraction);
  CHECK(a.bubble_fraction > 0.2);
  CHECK(b.bubble_fraction < a.bubble_fraction - 0.1);
  // The step is at least the busiest device's work and at most the sum over devices.
  double sum = 0.0;
  double busiest = 0.0;
  for (const SimulatedDevice& d : b.devices) {
    sum += d.compute + d.collective;
    busiest = std::max(busiest, d.compute + d.collective);
  }
  CHECK(b.step_time >= busiest);
  CHECK(b.step_time <= sum);
}

TEST_CASE("the simulator writes a Chrome trace and memory timelines", "[simulator]") {
  auto cpu = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cpu.has_value());
  graph::Graph g = training_graph("gpt-tiny", 4);
  const planner::Plan plan = grid(g, *cpu, 2, {1, 2, 2, Mode::kFree});
  SimulationOptions so;
  so.trace = true;
  so.memory_timeline = true;
  const SimulationResult sim = run(plan, g, so);
  CHECK(sim.trace_json.rfind("{\"traceEvents\": [", 0) == 0);
  CHECK(sim.trace_json.find("\"ph\": \"X\"") != std::string::npos);
  CHECK(sim.trace_json.find("\"ph\": \"C\"") != std::string::npos);  // memory counters
  for (const SimulatedDevice& d : sim.devices) {
    REQUIRE(!d.memory.empty());
    int64_t peak = 0;
    double t = 0.0;
    for (const auto& [time, bytes] : d.memory) {
      CHECK(time >= t);
      t = time;
      peak = std::max(peak, bytes);
    }
    CHECK(peak == d.peak_bytes);
  }
}

// A measured profile of a 2-device CPU cluster; with `shared`, the two devices share the cores:
// each computes 2x slower while both compute (the concurrency table) and at full speed alone.
mesh::ClusterSpec profiled_cpu(bool shared) {
  mesh::ClusterSpec c = *mesh::cluster_preset("cpu:1x2");
  mesh::DeviceProfile p;
  p.gemm[DType::kF32] = {{0, 0}, {2e9, 0.1}};
  p.memory_bound[DType::kF32] = {{0, 1e-6}, {1e6, 1e-4}};
  if (shared) p.concurrency = {{1, 1.0}, {2, 2.0}};
  c.profile = std::make_shared<const mesh::DeviceProfile>(p);
  return c;
}

TEST_CASE("devices that share cores compute at full speed alone and slower together",
          "[simulator]") {
  graph::Graph g = training_graph("gpt-tiny", 4);
  planner::PlannerOptions po;
  po.clustering.num_layers = 4;
  const mesh::ClusterSpec shared = profiled_cpu(true);
  const mesh::ClusterSpec alone = profiled_cpu(false);
  const auto plan_on = [&](const mesh::ClusterSpec& c, int64_t m, planner::GridConfig cfg) {
    const planner::ProfiledCostModel cost(c);
    auto p = planner::grid_plan(g, c, cost, po, m, cfg);
    if (!p.has_value()) FAIL(p.status().to_string());
    return *p;
  };
  // The same grid on the cluster whose devices share cores and on the one whose do not.
  const auto plans = [&](int64_t m, planner::GridConfig cfg) {
    return std::pair{plan_on(shared, m, cfg), plan_on(alone, m, cfg)};
  };
  SECTION("a pipeline of one micro-batch: its stages mostly compute one at a time") {
    // Each stage on one device: no choice of sharding, so both plans lower to the same program.
    // Only the last stage's optimizer update overlaps the first stage's backward; every other
    // op runs while the other device waits, at the speed measured alone.
    const auto [a, b] = plans(1, {1, 1, 2, Mode::kFree});
    const SimulationResult sa = run(a, g);
    const SimulationResult sb = run(b, g);
    INFO("step " << sa.step_time << " s shared, " << sb.step_time << " s alone");
    CHECK(sa.step_time >= sb.step_time * (1 - 1e-9));
    CHECK(sa.step_time < 1.1 * sb.step_time);  // every op priced as both computing: ~2x
    for (size_t d = 0; d < sa.devices.size(); ++d) {
      CHECK(sa.devices[d].compute >= sb.devices[d].compute * (1 - 1e-9));
      CHECK(sa.devices[d].compute < 1.1 * sb.devices[d].compute);
    }
    // The planner prices a micro-batch passing through as the fill, each stage alone.
    CHECK(a.step_time == Approx(b.step_time).epsilon(1e-9));
  }
  SECTION("data parallelism: both devices always compute together") {
    const auto [a, b] = plans(1, {2, 1, 1, Mode::kReplicated});
    const SimulationResult sa = run(a, g);
    const SimulationResult sb = run(b, g);
    for (size_t d = 0; d < sa.devices.size(); ++d) {
      CHECK(sa.devices[d].compute == Approx(2.0 * sb.devices[d].compute).epsilon(1e-6));
    }
  }
  SECTION("a pipeline of many micro-batches: in between") {
    const auto [a, b] = plans(8, {1, 1, 2, Mode::kFree});
    const SimulationResult sa = run(a, g);
    const SimulationResult sb = run(b, g);
    for (size_t d = 0; d < sa.devices.size(); ++d) {
      INFO("device " << d << ": " << sa.devices[d].compute << " s shared, " << sb.devices[d].compute
                     << " s alone");
      CHECK(sa.devices[d].compute > 1.3 * sb.devices[d].compute);
      CHECK(sa.devices[d].compute < 1.95 * sb.devices[d].compute);
    }
    // The planner's steady state has both devices computing, its fill and drain one.
    CHECK(a.step_time > 1.3 * b.step_time);
    CHECK(a.step_time < 2.0 * b.step_time);
  }
}

}  // namespace
}  // namespace meshpipe::runtime

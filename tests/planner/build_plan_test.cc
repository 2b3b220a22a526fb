// Tests of planner/build_plan.h: placement of chosen stages on a 2-host cluster, the step time
// and in-flight counts of both schedules, transfers priced on intra- vs inter-host links, and
// graph_micro_batch / graph_fingerprint / model_flops_per_micro_batch.
#include "planner/build_plan.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "graph/cost.h"
#include "graph/models/mlp.h"
#include "graph/training_graph.h"
#include "planner/cost_model.h"

namespace meshpipe::planner {
namespace {

graph::Graph mlp(int64_t batch, int64_t hidden = 32) {
  auto fg =
      graph::models::build_mlp(graph::models::MlpConfig{16, hidden, 4, 8}, batch, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(tg->graph);
}

constexpr int64_t kMicroBatches = 4;

// An MLP of 4 hidden layers (batch 8) clustered into 4 layers, profiled on cpu:2x4 (two hosts
// of four devices; 5 GB/s at 20 us inside a host, 1.5 GB/s at 50 us between hosts).
struct Fixture {
  graph::Graph g = mlp(8);
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:2x4");
  AnalyticCostModel cost{cluster.device};
  ShardingCache cache;
  LayerClustering clustering;
  graph::Graph clustered;
  std::unique_ptr<StageProfiler> profiler;

  int32_t submesh(int32_t hosts, int32_t per_host) const {
    const int32_t m = profiler->submesh_index({hosts, per_host});
    REQUIRE(m >= 0);
    return m;
  }
  Expected<Plan> build(const std::vector<StageChoice>& stages,
                       Schedule schedule = Schedule::k1F1B) const {
    return build_plan(g, clustering, *profiler, stages, cluster,
                      {"mlp-test", schedule, kMicroBatches});
  }
};

Fixture& fixture() {
  static Fixture* f = [] {
    auto* x = new Fixture;
    ClusteringOptions co;
    co.num_layers = 4;
    auto c = cluster_layers(x->g, co);
    REQUIRE(c.has_value());
    x->clustering = *c;
    x->clustered = apply_clustering(x->g, x->clustering);
    std::vector<int32_t> blocks;
    for (const graph::Op& op : x->g.ops()) blocks.push_back(op.layer);
    StageProfileOptions po;
    po.micro_batches = kMicroBatches;
    po.memory_levels = 1;
    x->profiler =
        std::make_unique<StageProfiler>(x->clustered, blocks, x->cluster, x->cost, po, x->cache);
    REQUIRE(x->profiler->profile().is_ok());
    return x;
  }();
  return *f;
}

std::set<int32_t> hosts_of(const StagePlan& s, int32_t per_host) {
  std::set<int32_t> h;
  for (int32_t d : s.devices) h.insert(d / per_host);
  return h;
}

TEST_CASE("placement: largest submesh first, whole hosts for full hosts, packing inside a host",
          "[planner][build_plan]") {
  Fixture& f = fixture();
  // Stage 0 (layer 0) on (1, 2), stage 1 (layer 1) on (1, 1), stage 2 (layers 2-3) on (1, 4).
  // Placed largest first: the (1, 4) stage takes host 0 (devices 0-3); the (1, 2) stage is
  // packed at the start of host 1 (4, 5); the (1, 1) stage next to it (6).
  auto plan = f.build({{0, 0, f.submesh(1, 2), 0, 0.0},
                       {1, 1, f.submesh(1, 1), 0, 0.0},
                       {2, 3, f.submesh(1, 4), 0, 0.0}});
  INFO(plan.status().to_string());
  REQUIRE(plan.has_value());
  REQUIRE(plan->stages.size() == 3);
  CHECK(plan->stages[0].devices == std::vector<int32_t>{4, 5});
  CHECK(plan->stages[1].devices == std::vector<int32_t>{6});
  CHECK(plan->stages[2].devices == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(plan->stages[2].submesh == mesh::SubmeshShape{1, 4});
  CHECK(plan->stages[0].first_layer == 0);
  CHECK(plan->stages[2].last_layer == 3);
  CHECK(plan->validate().is_ok());
}

TEST_CASE("placement: a multi-host submesh takes whole consecutive hosts",
          "[planner][build_plan]") {
  Fixture& f = fixture();
  auto all = f.build({{0, 3, f.submesh(2, 4), 0, 0.0}});
  REQUIRE(all.has_value());
  CHECK(all->stages[0].devices == std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(all->transfers.empty());  // a single stage sends nothing

  // Two full-host stages: one host each, in placement order.
  auto two = f.build({{0, 1, f.submesh(1, 4), 0, 0.0}, {2, 3, f.submesh(1, 4), 0, 0.0}});
  REQUIRE(two.has_value());
  CHECK(two->stages[0].devices == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(two->stages[1].devices == std::vector<int32_t>{4, 5, 6, 7});

  // Nothing is left for a third stage once both hosts are taken.
  auto none = f.build({{0, 2, f.submesh(2, 4), 0, 0.0}, {3, 3, f.submesh(1, 1), 0, 0.0}});
  REQUIRE_FALSE(none.has_value());
  CHECK(none.status().code() == Errc::kInfeasible);
  CHECK(none.status().message() == "cannot place stage 1 on submesh (1, 1) of cluster cpu:2x4");
}

TEST_CASE(
    "step time is sum f_i + (B - 1) max t_i: fills with transfers waited for, times with them "
    "overlapped",
    "[planner][build_plan]") {
  Fixture& f = fixture();
  const std::vector<StageChoice> stages{{0, 0, f.submesh(1, 2), 0, 0.0},
                                        {1, 1, f.submesh(1, 1), 0, 0.0},
                                        {2, 3, f.submesh(1, 4), 0, 0.0}};
  auto plan = f.build(stages);
  REQUIRE(plan.has_value());
  // Each stage's fill is its profiled work (without the DP's guessed transfers) plus the
  // transfers that actually enter it; its steady-state time the larger of the two (sends are
  // asynchronous). The devices do not share cores here, so the fill's work is the work.
  double sum = 0.0;
  double max = 0.0;
  int transfer_bound = 0;
  for (size_t k = 0; k < stages.size(); ++k) {
    const StageCost sc =
        f.profiler->stage(stages[k].first_layer, stages[k].last_layer, stages[k].submesh, 0);
    double incoming = 0.0;
    for (const CrossStageTransfer& t : plan->transfers) {
      if (t.to_stage == static_cast<int32_t>(k)) incoming += t.seconds;
    }
    INFO("stage " << k);
    CHECK(sc.work > 0.0);
    CHECK(plan->stages[k].time == Approx(std::max(sc.work, incoming)).epsilon(1e-12));
    CHECK(sc.time == std::max(sc.work, sc.transfer));
    CHECK(sc.fill == Approx(sc.work + sc.transfer).epsilon(1e-12));
    transfer_bound += incoming > sc.work ? 1 : 0;
    sum += sc.work + incoming;
    max = std::max(max, plan->stages[k].time);
    CHECK(plan->stages[k].memory.persistent == sc.memory.persistent);
    CHECK(plan->stages[k].memory.stash == sc.memory.stash);
  }
  CHECK(plan->step_time == Approx(sum + (kMicroBatches - 1) * max).epsilon(1e-12));
  INFO("stages whose entering transfers outlast their work: " << transfer_bound);
  // Throughput: model FLOPs of B micro-batches / (step time x 8 devices).
  const double flops = model_flops_per_micro_batch(f.g) * kMicroBatches;
  CHECK(plan->tflops_per_device == Approx(flops / (plan->step_time * 8) / 1e12).epsilon(1e-12));
  CHECK(plan->micro_batch == 8);
  CHECK(plan->micro_batches == kMicroBatches);
  CHECK(plan->global_batch == 8 * kMicroBatches);
  CHECK(plan->num_layers == 4);
  CHECK(plan->op_layers == f.clustering.op_layer);
  CHECK(plan->model == "mlp-test");
  CHECK(plan->graph_fingerprint == graph_fingerprint(f.g));
  CHECK(plan->dtype == DType::kF32);
}

TEST_CASE("in flight: stages - k for 1F1B, every micro-batch for GPipe, peak follows",
          "[planner][build_plan]") {
  Fixture& f = fixture();
  const std::vector<StageChoice> stages{{0, 0, f.submesh(1, 2), 0, 0.0},
                                        {1, 1, f.submesh(1, 1), 0, 0.0},
                                        {2, 3, f.submesh(1, 4), 0, 0.0}};
  for (Schedule schedule : {Schedule::k1F1B, Schedule::kGPipe}) {
    INFO(schedule_name(schedule));
    auto plan = f.build(stages, schedule);
    REQUIRE(plan.has_value());
    CHECK(plan->schedule == schedule);
    int64_t max_peak = 0;
    for (size_t k = 0; k < plan->stages.size(); ++k) {
      const StagePlan& s = plan->stages[k];
      const int32_t want = schedule == Schedule::k1F1B ? static_cast<int32_t>(3 - k)
                                                       : static_cast<int32_t>(kMicroBatches);
      CHECK(s.in_flight == want);
      const int64_t all_along =
          s.memory.persistent + s.memory.gradients + s.memory.working + want * s.memory.stash;
      if (schedule == Schedule::k1F1B) {
        CHECK(s.memory.peak == all_along);
      } else {
        // GPipe's first backward holds every stash but only the accumulators made so far; each
        // later backward one stash fewer.
        CHECK(s.memory.peak <= all_along);
        CHECK(s.memory.peak >= all_along - s.memory.stash);
      }
      max_peak = std::max(max_peak, s.memory.peak);
    }
    CHECK(plan->max_memory_per_device == max_peak);
  }
  // The schedules share the step time.
  CHECK(f.build(stages, Schedule::kGPipe)->step_time ==
        Approx(f.build(stages, Schedule::k1F1B)->step_time).epsilon(1e-12));
}

TEST_CASE("transfers are priced on the link between the stages' hosts", "[planner][build_plan]") {
  Fixture& f = fixture();
  // Stages 0 and 1 share host 1; stage 2 is on host 0.
  auto plan = f.build({{0, 0, f.submesh(1, 2), 0, 0.0},
                       {1, 1, f.submesh(1, 1), 0, 0.0},
                       {2, 3, f.submesh(1, 4), 0, 0.0}});
  REQUIRE(plan.has_value());
  std::map<std::string, const graph::Value*> by_name;
  for (const graph::Value& v : f.g.values()) by_name.emplace(v.name, &v);
  int intra = 0;
  int inter = 0;
  std::set<std::pair<std::string, int32_t>> seen;
  for (const CrossStageTransfer& t : plan->transfers) {
    INFO(t.value << ": stage " << t.from_stage << " -> " << t.to_stage);
    CHECK(t.from_stage != t.to_stage);
    CHECK(seen.insert({t.value, t.to_stage}).second);  // each value enters a stage once
    REQUIRE(by_name.count(t.value) == 1);
    CHECK(t.bytes == by_name.at(t.value)->bytes());
    const auto& from = plan->stages[static_cast<size_t>(t.from_stage)];
    const auto& to = plan->stages[static_cast<size_t>(t.to_stage)];
    std::set<int32_t> hosts = hosts_of(from, 4);
    for (int32_t h : hosts_of(to, 4)) hosts.insert(h);
    const bool same_host = hosts.size() == 1;
    const mesh::LinkSpec& link = same_host ? f.cluster.intra_host : f.cluster.inter_host;
    (same_host ? intra : inter) += 1;
    CHECK(t.seconds == Approx(link.latency.value() + static_cast<double>(t.bytes) / link.bandwidth)
                           .epsilon(1e-12));
    CHECK(t.from_spec.dims.size() == by_name.at(t.value)->shape.dims().size());
  }
  // Activations forward and gradients backward across both boundaries.
  CHECK(intra >= 2);  // stage 0 <-> stage 1 on host 1
  CHECK(inter >= 2);  // stage 1 <-> stage 2 across hosts
  // Hand check of one price: 5 GB/s, 20 us inside a host; 1.5 GB/s, 50 us between hosts.
  CHECK(f.cluster.intra_host.bandwidth == 5e9);
  CHECK(f.cluster.inter_host.latency.value() == Approx(50e-6));
}

TEST_CASE("graph_micro_batch is dim 0 of the first data input, else 1", "[planner][build_plan]") {
  CHECK(graph_micro_batch(mlp(8)) == 8);
  CHECK(graph_micro_batch(mlp(3)) == 3);
  graph::Graph none;
  none.add_source("w", Shape{4, 4}, DType::kF32, graph::ValueRole::kParameter);
  CHECK(graph_micro_batch(none) == 1);
  graph::Graph scalar_first;
  scalar_first.add_source("t", Shape{}, DType::kF32, graph::ValueRole::kInput);
  scalar_first.add_source("x", Shape{6, 2}, DType::kF32, graph::ValueRole::kInput);
  CHECK(graph_micro_batch(scalar_first) == 6);
}

TEST_CASE("graph_fingerprint is stable and changes with the graph", "[planner][build_plan]") {
  const graph::Graph a = mlp(8);
  const std::string fp = graph_fingerprint(a);
  CHECK(fp.size() == 16);
  CHECK(fp.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(graph_fingerprint(a) == fp);       // same graph
  CHECK(graph_fingerprint(mlp(8)) == fp);  // rebuilt identically
  const graph::Graph copy = a;
  CHECK(graph_fingerprint(copy) == fp);
  CHECK(graph_fingerprint(mlp(4)) != fp);      // another batch
  CHECK(graph_fingerprint(mlp(8, 64)) != fp);  // another width
  graph::Graph changed = a;
  changed.mutable_value(changed.values_with_role(graph::ValueRole::kInput)[0]).shape = Shape{8, 17};
  CHECK(graph_fingerprint(changed) != fp);
}

TEST_CASE("model FLOPs per micro-batch are the forward and backward FLOPs of graph_cost",
          "[planner][build_plan]") {
  const graph::Graph g = mlp(8);
  const graph::GraphCost c = graph::graph_cost(g);
  CHECK(model_flops_per_micro_batch(g) == c.forward.value() + c.backward.value());
  CHECK(c.update.value() > 0.0);  // Adam updates are left out
  CHECK(model_flops_per_micro_batch(g) < c.total().value());
  // A single dot by hand: x [8, 16] . w [16, 4] = 2 * 8 * 16 * 4 = 1024 FLOPs, forward only.
  graph::Graph d;
  const ValueId x = d.add_source("x", Shape{8, 16}, DType::kF32, graph::ValueRole::kInput);
  const ValueId w = d.add_source("w", Shape{16, 4}, DType::kF32, graph::ValueRole::kParameter);
  OpAttrs a;
  a.dot = DotDims{{}, {}, {1}, {0}};
  REQUIRE(d.add_op(graph::OpKind::kDot, "mm", {x, w}, a, 0, graph::OpPhase::kForward).has_value());
  CHECK(model_flops_per_micro_batch(d) == 1024.0);
}

}  // namespace
}  // namespace meshpipe::planner

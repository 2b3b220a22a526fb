// Tests of planner/baselines.h: every baseline validates and fits memory or says why not, data
// parallelism is one stage on every device with the batch split, the Megatron grid is no slower
// than any grid enumerated here with grid_plan, and grid_plan's errors.
#include "planner/baselines.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <limits>
#include <string>
#include <vector>

#include "graph/models/mlp.h"
#include "graph/training_graph.h"

namespace meshpipe::planner {
namespace {

graph::Graph mlp(int64_t batch = 8) {
  auto fg = graph::models::build_mlp(graph::models::MlpConfig{16, 32, 3, 8}, batch, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(tg->graph);
}

const std::vector<std::string> kNames = {"data parallel", "ZeRO-2",       "ZeRO-3",
                                         "Megatron grid", "equal layers", "equal operators",
                                         "intra-op only", "inter-op only"};

PlannerOptions options() {
  PlannerOptions o;
  o.model = "mlp";
  o.micro_batches = 2;
  o.global_batch = 16;
  o.clustering.num_layers = 3;
  o.profile.memory_levels = 1;
  return o;
}

struct Fixture {
  graph::Graph g = mlp();
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  std::vector<BaselineResult> results;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    AnalyticCostModel cost(x.cluster.device);
    x.results = run_baselines(x.g, x.cluster, cost, options());
    return x;
  }();
  return f;
}

const BaselineResult& result(const std::string& name) {
  for (const BaselineResult& r : fixture().results) {
    if (r.name == name) return r;
  }
  FAIL("no baseline " << name);
  return fixture().results[0];
}

TEST_CASE("every baseline gives a valid plan within memory, or a reason", "[planner][baselines]") {
  const Fixture& f = fixture();
  REQUIRE(f.results.size() == kNames.size());
  const double avail = 0.9 * static_cast<double>(f.cluster.device.memory.value());
  int plans = 0;
  for (size_t k = 0; k < kNames.size(); ++k) {
    const BaselineResult& r = f.results[k];
    CHECK(r.name == kNames[k]);
    INFO(r.name << ": " << r.description << " " << r.status.to_string());
    if (!r.plan) {
      CHECK_FALSE(r.status.is_ok());
      CHECK_FALSE(r.status.message().empty());
      continue;
    }
    ++plans;
    CHECK(r.status.is_ok());
    CHECK_FALSE(r.description.empty());
    CHECK(r.plan->validate().is_ok());
    CHECK(r.plan->model == "mlp");
    CHECK(r.plan->micro_batches == 2);
    CHECK(r.plan->global_batch == 16);
    CHECK(r.plan->graph_fingerprint == graph_fingerprint(f.g));
    CHECK(static_cast<double>(r.plan->max_memory_per_device) <= avail);
    CHECK(r.plan->step_time > 0.0);
    size_t devices = 0;
    for (const StagePlan& s : r.plan->stages) devices += s.devices.size();
    CHECK(devices <= 4);
  }
  // A tiny MLP fits a 4 GiB device whatever the recipe.
  CHECK(plans == 8);
}

TEST_CASE("data parallelism is one stage on every device with the batch split",
          "[planner][baselines]") {
  const Fixture& f = fixture();
  const BaselineResult& dp = result("data parallel");
  REQUIRE(dp.plan);
  REQUIRE(dp.plan->stages.size() == 1);
  const StagePlan& s = dp.plan->stages[0];
  CHECK(s.devices == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(s.mesh.shape[0] == 4);
  CHECK(s.mesh.shape[1] == 1);
  CHECK(s.first_layer == 0);
  CHECK(s.last_layer == dp.plan->num_layers - 1);
  // The data arrives split along the batch over the 4 devices; the weights are whole.
  REQUIRE(s.value_specs.count("features") == 1);
  CHECK(s.value_specs.at("features").to_string() == "S0,R");
  REQUIRE(s.value_specs.count("labels") == 1);
  CHECK(s.value_specs.at("labels").to_string() == "S0");
  int params = 0;
  for (ValueId v : f.g.values_with_role(graph::ValueRole::kParameter)) {
    const std::string& name = f.g.value(v).name;
    INFO(name);
    REQUIRE(s.value_specs.count(name) == 1);
    CHECK(s.value_specs.at(name).used_axes() == 0);
    ++params;
  }
  CHECK(params == 8);
  CHECK(dp.description.find("4 devices") != std::string::npos);
}

TEST_CASE("the best Megatron grid is no slower than any grid enumerated by hand",
          "[planner][baselines]") {
  const Fixture& f = fixture();
  const BaselineResult& best = result("Megatron grid");
  REQUIRE(best.plan);
  AnalyticCostModel cost(f.cluster.device);
  // Every dp x tp x pp = 4 with pp <= 3 layers and tp within the host.
  int grids = 0;
  double fastest = std::numeric_limits<double>::infinity();
  for (int64_t pp : {1, 2, 4}) {
    for (int64_t tp : {1, 2, 4}) {
      if (4 % (pp * tp) != 0) continue;
      const int64_t dp = 4 / (pp * tp);
      if (pp > 3) continue;
      INFO("dp " << dp << " x tp " << tp << " x pp " << pp);
      auto plan = grid_plan(f.g, f.cluster, cost, options(), 2, GridConfig{dp, tp, pp, {}});
      INFO(plan.status().to_string());
      REQUIRE(plan.has_value());
      CHECK(plan->stages.size() == static_cast<size_t>(pp));
      for (const StagePlan& s : plan->stages) {
        CHECK(s.mesh.shape[0] == dp);
        CHECK(s.mesh.shape[1] == tp);
      }
      CHECK(best.plan->step_time <= plan->step_time * (1 + 1e-9));
      fastest = std::min(fastest, plan->step_time);
      ++grids;
    }
  }
  CHECK(grids == 5);  // (4,1,1) (2,2,1) (1,4,1) (2,1,2) (1,2,2)
  // And it is one of them.
  CHECK(best.plan->step_time == Approx(fastest).epsilon(1e-9));
}

TEST_CASE("the best pipeline recipe is the fastest of the grid and the equal-split baselines",
          "[planner][baselines]") {
  // best_pipeline_recipe skips a candidate that cannot beat the fastest recipe of any kind
  // (a lower bound on its step time); run_baselines keeps each kind's fastest and skips only
  // against that kind. The one must be the minimum of the others, under several memories and
  // micro-batch counts (memory decides which candidates exist).
  const Fixture& f = fixture();
  int compared = 0;
  for (const double gib : {64.0, 0.001, 0.0004}) {
    for (const int64_t mbs : {1, 2, 4}) {
      mesh::ClusterSpec cluster = f.cluster;
      cluster.device.memory = Bytes(static_cast<int64_t>(gib * (1ll << 30)));
      AnalyticCostModel cost(cluster.device);
      PlannerOptions o = options();
      o.micro_batches = mbs;
      o.profile.memory_levels = 3;
      o.graph_for_micro_batch = [](int64_t b) -> Expected<graph::Graph> { return mlp(b); };
      auto results = run_baselines(f.g, cluster, cost, o);
      double fastest = std::numeric_limits<double>::infinity();
      for (const BaselineResult& r : results) {
        if (r.name != "Megatron grid" && r.name != "equal layers" && r.name != "equal operators")
          continue;
        if (r.plan) fastest = std::min(fastest, r.plan->step_time);
      }
      ShardingCache cache;
      auto g = graph_for_micro_batch(f.g, o, 16 / mbs);
      REQUIRE(g.has_value());
      auto recipe = best_pipeline_recipe(*g, cluster, cost, o, mbs, cache);
      INFO(gib << " GiB, " << mbs << " micro-batches");
      if (std::isfinite(fastest)) {
        if (!recipe.has_value()) FAIL(recipe.status().to_string());
        CHECK(recipe->step_time == fastest);
        ++compared;
      } else {
        CHECK_FALSE(recipe.has_value());
      }
    }
  }
  CHECK(compared >= 5);
}

TEST_CASE("grid_plan rejects grids that do not fit the cluster or the model",
          "[planner][baselines]") {
  const Fixture& f = fixture();
  AnalyticCostModel cost(f.cluster.device);
  auto zero = grid_plan(f.g, f.cluster, cost, options(), 2, GridConfig{0, 1, 1, {}});
  CHECK(zero.status().code() == Errc::kInvalidArgument);
  CHECK(zero.status().message() == "grid dp 0 x tp 1 x pp 1: sizes must be >= 1");
  auto big = grid_plan(f.g, f.cluster, cost, options(), 2, GridConfig{2, 2, 2, {}});
  CHECK(big.status().message() == "grid dp 2 x tp 2 x pp 2 needs 8 devices, cluster cpu:1x4 has 4");
  auto deep = grid_plan(f.g, f.cluster, cost, options(), 2, GridConfig{1, 1, 4, {}});
  CHECK(deep.status().message() == "grid pp 4 exceeds the 3 clustered layers");
  auto odd = grid_plan(f.g, f.cluster, cost, options(), 2, GridConfig{3, 1, 1, {}});
  CHECK(odd.status().message() == "no submesh of 3 devices on cluster cpu:1x4");
}

TEST_CASE("on devices too small for the model every baseline says why", "[planner][baselines]") {
  const graph::Graph g = mlp();
  mesh::ClusterSpec tiny = *mesh::cluster_preset("cpu:1x2");
  tiny.device.memory = Bytes(2048);  // 2 KiB: the parameters alone are ~10 KB
  AnalyticCostModel cost(tiny.device);
  const auto results = run_baselines(g, tiny, cost, options());
  REQUIRE(results.size() == 8);
  for (const BaselineResult& r : results) {
    INFO(r.name << ": " << r.status.to_string());
    CHECK_FALSE(r.plan.has_value());
    CHECK((r.status.code() == Errc::kResourceExhausted || r.status.code() == Errc::kInfeasible));
    CHECK_FALSE(r.status.message().empty());
  }
}

}  // namespace
}  // namespace meshpipe::planner

// Tests of planner/manual_plan.h: the --stages and --grid text forms, stages priced like the
// equivalent grid_plan, make_plan never slower than a manual plan, the validation errors (each
// naming the stage), the memory rule, and the micro-batch search over fixed layouts.
#include "planner/manual_plan.h"

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

PlannerOptions options() {
  PlannerOptions o;
  o.model = "mlp";
  o.micro_batches = 2;
  o.global_batch = 16;
  o.clustering.num_layers = 3;
  o.profile.memory_levels = 1;
  return o;
}

std::vector<ManualStage> stages(const std::string& text) {
  auto s = parse_manual_stages(text);
  INFO(text << ": " << s.status().to_string());
  REQUIRE(s.has_value());
  return *s;
}

// The error of pricing `text` on `cluster` (empty when it prices).
Status price_error(const std::string& text, const std::string& cluster_name = "cpu:1x4",
                   PlannerOptions o = options()) {
  const graph::Graph g = mlp();
  const mesh::ClusterSpec cluster = *mesh::cluster_preset(cluster_name);
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  return price_manual_stages(g, cluster, cost, o, 2, stages(text), cache).status();
}

void check_error(const Status& s, Errc code, const std::string& message) {
  INFO(s.to_string());
  CHECK(s.code() == code);
  CHECK(s.message() == message);
}

TEST_CASE("the stage text form reads layers, submesh, logical mesh and options",
          "[planner][manual]") {
  const auto s = stages("0-7@1x8:2x4; 8-15 @ 2x8 : 16x1 ,level=2;16@1x1");
  REQUIRE(s.size() == 3);
  CHECK(s[0] == ManualStage{0, 7, {1, 8}, {2, 4}, -1});
  CHECK(s[1] == ManualStage{8, 15, {2, 8}, {16, 1}, 2});
  CHECK(s[2] == ManualStage{16, 16, {1, 1}, {0, 0}, -1});
  CHECK(manual_stages_to_string(s) == "0-7@1x8:2x4;8-15@2x8:16x1,level=2;16-16@1x1");
  CHECK(*parse_manual_stages(manual_stages_to_string(s)) == s);
  const auto r = stages("0-3@1x4,recompute=on;4-7@1x4:2x2,level=1,recompute=off");
  REQUIRE(r.size() == 2);
  CHECK(r[0].recompute == Recompute::kOn);
  CHECK(r[1].recompute == Recompute::kOff);
  CHECK(r[1].level == 1);
  CHECK(manual_stages_to_string(r) == "0-3@1x4,recompute=on;4-7@1x4:2x2,level=1,recompute=off");
  CHECK(stages("0-1@1x2;")[0].last_layer == 1);  // a trailing ';' is allowed
  CHECK(stages("0-1@1x2,level=auto")[0].level == -1);
}

TEST_CASE("malformed stage text is an error naming the stage", "[planner][manual]") {
  const auto error = [](const std::string& text) {
    auto s = parse_manual_stages(text);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().code() == Errc::kInvalidArgument);
    return s.status().message();
  };
  CHECK(error("0-3@1x4;4-7") ==
        "stage 1 ('4-7'): expected LAYERS@HOSTSxDEVICES[:D0xD1], e.g. 0-7@1x8:2x4");
  CHECK(error("0-x@1x4") == "stage 0 ('0-x@1x4'): layers '0-x' are not FIRST-LAST or LAYER");
  CHECK(error("0-3@4") == "stage 0 ('0-3@4'): submesh '4' is not HOSTSxDEVICES, e.g. 1x8");
  CHECK(error("0-3@1x4:0x4") ==
        "stage 0 ('0-3@1x4:0x4'): logical mesh '0x4' is not D0xD1, e.g. 2x4");
  CHECK(error("0@1x1;1-3@1x4,remat") ==
        "stage 1 ('1-3@1x4,remat'): unknown option 'remat' (known: level=K|auto, "
        "recompute=on|off|auto)");
  CHECK(error("0@1x1;1-3@1x4,recompute=yes") ==
        "stage 1 ('1-3@1x4,recompute=yes'): unknown recomputation 'yes' (known: off, on, auto)");
  CHECK(error("0@1x1;1-3@1x4,level=-1") ==
        "stage 1 ('1-3@1x4,level=-1'): level '-1' is not auto or a number");
  CHECK(error(";0@1x1") == "stage 0 is empty (stages are separated by ';')");
  CHECK(error("") == "stage 0 is empty (stages are separated by ';')");
}

TEST_CASE("the grid text form reads dp, tp, pp and the parameter mode", "[planner][manual]") {
  const auto g = parse_grid("dp=2,tp=4,pp=4");
  REQUIRE(g.has_value());
  CHECK(g->dp == 2);
  CHECK(g->tp == 4);
  CHECK(g->pp == 4);
  CHECK(g->parameters == ShardingOptions::ParameterMode::kFree);
  const auto t = parse_grid("tp = 8, params=zero3");
  REQUIRE(t.has_value());
  CHECK(t->dp == 1);
  CHECK(t->tp == 8);
  CHECK(t->pp == 1);
  CHECK(t->parameters == ShardingOptions::ParameterMode::kZero3);
  CHECK(parse_grid("params=replicated")->parameters == ShardingOptions::ParameterMode::kReplicated);
  CHECK(parse_grid("dp=0").status().message() == "grid 'dp=0': dp '0' is not a whole number >= 1");
  CHECK(parse_grid("dp=2,ep=2").status().message() ==
        "grid 'dp=2,ep=2': unknown key 'ep' (expected dp=A,tp=B,pp=C[,params=MODE])");
  CHECK(parse_grid("dp=2,dp=4").status().message() == "grid 'dp=2,dp=4': 'dp' is given twice");
  CHECK(parse_grid("params=zero1").status().message() ==
        "grid 'params=zero1': params 'zero1' is not free, replicated, zero2 or zero3");
}

TEST_CASE("stages written like a grid are priced exactly like grid_plan", "[planner][manual]") {
  const graph::Graph g = mlp();
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  // Every dp x tp x pp = 4 with pp <= 3 layers; grid_plan splits L = 3 layers into pp ranges
  // [k L / pp, (k + 1) L / pp - 1]: pp = 2 gives layers 0-0 and 1-2.
  const std::vector<std::array<int64_t, 3>> grids = {
      {4, 1, 1}, {2, 2, 1}, {1, 4, 1}, {2, 1, 2}, {1, 2, 2}};
  for (const auto& [dp, tp, pp] : grids) {
    std::string text;
    for (int64_t k = 0; k < pp; ++k) {
      if (k > 0) text += ";";
      text += fmt::format("{}-{}@1x{}:{}x{}", k * 3 / pp, (k + 1) * 3 / pp - 1, dp * tp, dp, tp);
    }
    INFO(text);
    auto grid = grid_plan(g, cluster, cost, options(), 2, GridConfig{dp, tp, pp, {}});
    auto manual = manual_plan(g, cluster, cost, options(), 2, stages(text), cache);
    INFO(grid.status().to_string() << " / " << manual.status().to_string());
    REQUIRE(grid.has_value());
    REQUIRE(manual.has_value());
    CHECK(manual->step_time == Approx(grid->step_time).epsilon(1e-12));
    REQUIRE(manual->stages.size() == grid->stages.size());
    for (size_t k = 0; k < manual->stages.size(); ++k) {
      CHECK(manual->stages[k].devices == grid->stages[k].devices);
      CHECK(manual->stages[k].mesh == grid->stages[k].mesh);
      CHECK(manual->stages[k].time == Approx(grid->stages[k].time).epsilon(1e-12));
      CHECK(manual->stages[k].memory == grid->stages[k].memory);
      CHECK(manual->stages[k].value_specs == grid->stages[k].value_specs);
    }
    CHECK(manual->transfers == grid->transfers);
    CHECK(manual->validate().is_ok());
  }
}

TEST_CASE("make_plan is never slower than a manual plan using every device", "[planner][manual]") {
  const graph::Graph g = mlp();
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  auto best = make_plan(g, cluster, cost, options(), cache);
  REQUIRE(best.has_value());
  // Every split of 3 layers into stages, every submesh per stage with 4 devices in all, every
  // logical mesh: 1 stage (3 meshes on (1,4)), 2 stages ((1,2)+(1,2): 2 x 2 meshes, two splits),
  // 3 stages ((1,2)+(1,1)+(1,1) in any order: 2 meshes each).
  const std::vector<std::string> layouts = {"0-2@1x4:4x1",
                                            "0-2@1x4:2x2",
                                            "0-2@1x4:1x4",
                                            "0-0@1x2:2x1;1-2@1x2:2x1",
                                            "0-0@1x2:1x2;1-2@1x2:2x1",
                                            "0-0@1x2:2x1;1-2@1x2:1x2",
                                            "0-0@1x2:1x2;1-2@1x2:1x2",
                                            "0-1@1x2:2x1;2-2@1x2:2x1",
                                            "0-1@1x2:1x2;2-2@1x2:1x2",
                                            "0-0@1x2:2x1;1-1@1x1;2-2@1x1",
                                            "0-0@1x2:1x2;1-1@1x1;2-2@1x1",
                                            "0-0@1x1;1-1@1x2:2x1;2-2@1x1",
                                            "0-0@1x1;1-1@1x1;2-2@1x2:1x2"};
  double fastest = std::numeric_limits<double>::infinity();
  for (const std::string& text : layouts) {
    INFO(text);
    auto manual = manual_plan(g, cluster, cost, options(), 2, stages(text), cache);
    INFO(manual.status().to_string());
    REQUIRE(manual.has_value());
    CHECK(best->step_time <= manual->step_time * (1 + 1e-9));
    fastest = std::min(fastest, manual->step_time);
  }
  CHECK(best->step_time <= fastest * (1 + 1e-9));
}

TEST_CASE("a manual plan of make_plan's own stages reproduces its prediction",
          "[planner][manual]") {
  const graph::Graph g = mlp();
  for (const char* name : {"cpu:1x4", "cpu:2x2"}) {
    INFO(name);
    const mesh::ClusterSpec cluster = *mesh::cluster_preset(name);
    AnalyticCostModel cost(cluster.device);
    ShardingCache cache;
    auto best = make_plan(g, cluster, cost, options(), cache);
    REQUIRE(best.has_value());
    std::vector<ManualStage> own;
    for (const StagePlan& s : best->stages) {
      own.push_back({s.first_layer, s.last_layer, s.submesh, {s.mesh.shape[0], s.mesh.shape[1]}});
    }
    INFO(manual_stages_to_string(own));
    auto manual = manual_plan(g, cluster, cost, options(), 2, own, cache);
    REQUIRE(manual.has_value());
    CHECK(manual->step_time == Approx(best->step_time).epsilon(1e-12));
    CHECK(manual->stages.size() == best->stages.size());
    CHECK(manual->max_memory_per_device == best->max_memory_per_device);
  }
}

TEST_CASE("a stage without a logical mesh takes the fastest offered one", "[planner][manual]") {
  const graph::Graph g = mlp();
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  auto any = manual_plan(g, cluster, cost, options(), 2, stages("0-2@1x4"), cache);
  REQUIRE(any.has_value());
  for (const char* mesh : {"4x1", "2x2", "1x4"}) {
    auto fixed =
        manual_plan(g, cluster, cost, options(), 2, stages(fmt::format("0-2@1x4:{}", mesh)), cache);
    REQUIRE(fixed.has_value());
    CHECK(any->step_time <= fixed->step_time);
  }
  auto fixed = manual_plan(g, cluster, cost, options(), 2, stages("0-2@1x4:1x4"), cache);
  REQUIRE(fixed.has_value());
  CHECK(fixed->stages[0].mesh.shape[0] == 1);
  CHECK(fixed->stages[0].mesh.shape[1] == 4);
}

TEST_CASE("impossible stages are errors naming the stage and why", "[planner][manual]") {
  const Errc bad = Errc::kInvalidArgument;
  check_error(price_error("0-0@1x2;2-2@1x2"), bad,
              "stage 1: starts at layer 2, expected 1 (stages must cover layers 0-2 in order, "
              "each once)");
  check_error(price_error("0-1@1x2;1-2@1x2"), bad,
              "stage 1: starts at layer 1, expected 2 (stages must cover layers 0-2 in order, "
              "each once)");
  check_error(price_error("1-2@1x4"), bad,
              "stage 0: starts at layer 1, expected 0 (stages must cover layers 0-2 in order, "
              "each once)");
  check_error(price_error("0-0@1x1;2-1@1x1"), bad, "stage 1: layers 2-1 run backwards");
  check_error(price_error("0-0@1x2;1-1@1x2"), bad,
              "stage 1: the last stage ends at layer 1, but there are 3 clustered layers (0-2)");
  check_error(price_error("0-3@1x4"), bad,
              "stage 0: layers 0-3 go beyond the 3 clustered layers (0-2)");
  check_error(price_error("0-0@1x1;1-2@1x3"), bad,
              "stage 1: cluster cpu:1x4 has no submesh (1, 3) (its submeshes: (1, 1), (1, 2), "
              "(1, 4))");
  check_error(price_error("0-2@2x2"), bad,
              "stage 0: cluster cpu:1x4 has no submesh (2, 2) (its submeshes: (1, 1), (1, 2), "
              "(1, 4))");
  check_error(price_error("0-0@1x2:2x1;1-2@1x2:2x2"), bad,
              "stage 1: logical mesh (2, 2) has 4 devices, submesh (1, 2) has 2");
  check_error(price_error("0-2@2x2:1x4", "cpu:2x2"), bad,
              "stage 0: logical mesh (1, 4) on submesh (2, 2): mesh axis 1 (4) must stay within "
              "a host (2 devices)");
  check_error(price_error("0-0@1x4;1-2@1x2"), bad,
              "stage 1: stages 0-1 need 6 devices, cluster cpu:1x4 has 4");
  check_error(price_error("0-2@1x4,level=1"), bad,
              "stage 0: memory level 1 does not exist on submesh (1, 4) (levels 0-0)");
  PlannerOptions three = options();
  three.profile.memory_levels = 3;
  check_error(price_error("0-0@1x1,level=1;1-2@1x2", "cpu:1x4", three), bad,
              "stage 0: memory level 1 does not exist on submesh (1, 1) (levels 0-0)");
  CHECK(price_error("0-0@1x1;1-2@1x2,level=2", "cpu:1x4", three).is_ok());
  // Without --layers the stages name the layer count; an impossible one is the clustering's
  // error.
  PlannerOptions inferred = options();
  inferred.clustering.num_layers = 0;
  CHECK(price_error("0-1@1x2;2-3@1x2", "cpu:1x4", inferred).is_ok());
  const Status many = price_error("0-99@1x4", "cpu:1x4", inferred);
  CHECK_FALSE(many.is_ok());
  CHECK(many.message().find("the stages' 100 layers") != std::string::npos);
}

TEST_CASE("a manual plan must fit device memory with its in-flight micro-batches",
          "[planner][manual]") {
  const graph::Graph g = mlp();
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  const auto two = stages("0-0@1x2:2x1;1-2@1x2:2x1");
  auto priced = price_manual_stages(g, cluster, cost, options(), 2, two, cache);
  REQUIRE(priced.has_value());
  // 1F1B: stage 0 of 2 holds 2 micro-batches, stage 1 holds 1.
  CHECK(priced->stages[0].in_flight == 2);
  CHECK(priced->stages[1].in_flight == 1);
  const StageMemory& m = priced->stages[0].memory;
  CHECK(m.peak == m.persistent + m.gradients + m.working + 2 * m.stash);
  CHECK(check_stage_memory(*priced, 0.9).is_ok());
  // A device just below stage 0's peak / 0.9: stage 0 no longer fits.
  const double fraction =
      static_cast<double>(m.peak - 1) / static_cast<double>(cluster.device.memory.value());
  const Status s = check_stage_memory(*priced, fraction);
  CHECK(s.code() == Errc::kInfeasible);
  CHECK(s.message().rfind("stage 0: needs ", 0) == 0);
  CHECK(s.message().find("with 2 micro-batches in flight (1f1b)") != std::string::npos);
  // On a device of 2 KiB nothing fits: manual_plan says which stage.
  cluster.device.memory = Bytes(2048);
  AnalyticCostModel small(cluster.device);
  auto oom = manual_plan(g, cluster, small, options(), 2, two, cache);
  CHECK(oom.status().code() == Errc::kInfeasible);
  CHECK(oom.status().message().rfind("stage 0: needs ", 0) == 0);
}

TEST_CASE("a stage without a memory level takes a leaner one when the fastest does not fit",
          "[planner][manual]") {
  const graph::Graph g = mlp();
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o = options();
  o.profile.memory_levels = 3;
  ShardingCache cache;
  const auto fastest =
      stages("0-1@1x2:2x1,level=0,recompute=off;2-2@1x2:2x1,level=0,recompute=off");
  auto roomy = manual_plan(g, cluster, cost, o, 2, fastest, cache);
  REQUIRE(roomy.has_value());
  // Stage 0 (2 micro-batches in flight) is the larger; a device whose usable share (0.9) is 1
  // byte short of it, where level 0 would still fit with one micro-batch in flight.
  const StageMemory& m0 = roomy->stages[0].memory;
  REQUIRE(roomy->stages[0].in_flight == 2);
  REQUIRE(m0.peak > roomy->stages[1].memory.peak);
  REQUIRE(m0.stash > 0);
  cluster.device.memory = Bytes(static_cast<int64_t>(static_cast<double>(m0.peak - 1) / 0.9));
  CHECK(static_cast<double>(m0.persistent + m0.working + m0.stash) <
        0.9 * static_cast<double>(cluster.device.memory.value()));
  auto level0 = manual_plan(g, cluster, cost, o, 2, fastest, cache);
  CHECK(level0.status().code() == Errc::kInfeasible);
  CHECK(level0.status().message().find("stage 0: needs ") == 0);
  auto any = manual_plan(g, cluster, cost, o, 2,
                         stages("0-1@1x2:2x1,recompute=off;2-2@1x2:2x1,recompute=off"), cache);
  INFO(any.status().to_string());
  REQUIRE(any.has_value());
  CHECK(any->stages[0].memory.peak < m0.peak);
  CHECK(any->step_time >= roomy->step_time);
}

TEST_CASE("price_micro_batchings keeps the fastest micro-batching that fits", "[planner][manual]") {
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  PlannerOptions o = options();
  o.micro_batches = 0;
  o.micro_batch_sizes = {2, 4, 8};
  o.graph_for_micro_batch = [](int64_t micro) -> Expected<graph::Graph> { return mlp(micro); };
  const auto two = stages("0-0@1x2:2x1;1-2@1x2:2x1");
  const auto price = [&](const graph::Graph& g, int64_t b) {
    return price_manual_stages(g, cluster, cost, o, b, two, cache);
  };
  auto best = price_micro_batchings(mlp(2), o, price);
  REQUIRE(best.has_value());
  CHECK(best->fits.is_ok());
  double fastest = std::numeric_limits<double>::infinity();
  for (int64_t micro : {2, 4, 8}) {
    auto p = manual_plan(mlp(micro), cluster, cost, o, 16 / micro, two, cache);
    REQUIRE(p.has_value());
    fastest = std::min(fastest, p->step_time);
  }
  CHECK(best->plan.step_time == Approx(fastest).epsilon(1e-12));
  CHECK(best->plan.global_batch == 16);

  // A micro-batch count that does not divide the batch.
  o.micro_batches = 3;
  auto odd = price_micro_batchings(mlp(2), o, price);
  CHECK(odd.status().code() == Errc::kInvalidArgument);
  CHECK(odd.status().message() == "global batch 16 is not divisible by 3 micro-batches");

  // When nothing fits: the fastest plan, and why it does not fit.
  o.micro_batches = 2;
  o.profile.memory_fraction = 0.01;
  mesh::ClusterSpec tiny = cluster;
  tiny.device.memory = Bytes(4096);
  const auto price_tiny = [&](const graph::Graph& g, int64_t b) {
    return price_manual_stages(g, tiny, cost, o, b, two, cache);
  };
  auto none = price_micro_batchings(mlp(8), o, price_tiny);
  REQUIRE(none.has_value());
  CHECK(none->fits.code() == Errc::kInfeasible);
  CHECK(none->fits.message().rfind("stage 0: ", 0) == 0);

  // A validation error is returned at once.
  const auto price_bad = [&](const graph::Graph& g, int64_t b) {
    return price_manual_stages(g, cluster, cost, o, b, stages("0-0@1x8"), cache);
  };
  CHECK(price_micro_batchings(mlp(8), o, price_bad).status().code() == Errc::kInvalidArgument);
}

}  // namespace
}  // namespace meshpipe::planner

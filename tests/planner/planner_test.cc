// Known answers of the inter-operator planner (make_plan) and its baselines.
#include "planner/planner.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <set>

#include "graph/models/gpt.h"
#include "graph/models/mlp.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "planner/baselines.h"

namespace meshpipe::planner {
namespace {

graph::Graph train(Expected<graph::ForwardGraph> fg) {
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(tg->graph);
}

std::set<int32_t> hosts_of(const Plan& plan, const StagePlan& s) {
  std::set<int32_t> hosts;
  for (int32_t d : s.devices) hosts.insert(d / plan.cluster.devices_per_host);
  return hosts;
}

TEST_CASE("a small model with a large batch on one host gets a single stage", "[planner][plan]") {
  // GPT-125M, 512 sequences of 1024 tokens on 8 V100s: data parallelism inside the host beats
  // any pipeline (no bubble, one gradient all-reduce over NVLink per step).
  auto spec = graph::models::find_model("gpt-125m");
  REQUIRE(spec.has_value());
  const graph::Graph g = train(graph::models::build_model(*spec, {.batch = 8, .dtype = {}}));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:1");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.global_batch = 512;
  o.micro_batches = 64;
  auto plan = make_plan(g, cluster, cost, o);
  INFO(plan.status().to_string());
  REQUIRE(plan.has_value());
  CHECK(plan->stages.size() == 1);
  CHECK(plan->stages[0].devices.size() == 8);
  CHECK(plan->validate().is_ok());
}

TEST_CASE(
    "a deep model with small layers on two hosts with a slow network is pipelined "
    "across the hosts",
    "[planner][plan]") {
  // 16 dense layers of 2048 (67M parameters): data parallelism would all-reduce 268 MB of f32
  // gradients over 3 GB/s every step; a pipeline only sends 64 x 2048 activations per
  // micro-batch between the hosts.
  graph::models::MlpConfig c{2048, 2048, 16, 16};
  const graph::Graph g = train(graph::models::build_mlp(c, 64, DType::kF32));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:2");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.micro_batches = 16;
  o.global_batch = 64 * 16;
  auto plan = make_plan(g, cluster, cost, o);
  INFO(plan.status().to_string());
  REQUIRE(plan.has_value());
  REQUIRE(plan->stages.size() >= 2);
  std::set<int32_t> used;
  for (const StagePlan& s : plan->stages) {
    CHECK(hosts_of(*plan, s).size() == 1);  // no stage spans the slow link
    for (int32_t h : hosts_of(*plan, s)) used.insert(h);
  }
  CHECK(used.size() == 2);  // the pipeline crosses from one host to the other
  CHECK_FALSE(plan->transfers.empty());
}

TEST_CASE("GPT on p3.16xlarge: tensor parallel inside a host, pipeline across hosts",
          "[planner][plan]") {
  // The structure Alpa reports for GPT (docs/algorithms.md §4.2). Hidden 4096 and one 1024-token
  // sequence per micro-batch, 4 micro-batches a step: the weights' gradients (200M parameters a
  // block) are too big to all-reduce for every step, so the weights are split inside a host over
  // NVLink, and only activations cross the 25 Gbps network between pipeline stages.
  const graph::Graph g = train(graph::models::build_gpt(
      graph::models::GptConfig{1024, 4096, 8, 32, 8192, 4}, /*batch=*/1, DType::kF16));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:2");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.global_batch = 4;
  o.micro_batches = 4;
  auto plan = make_plan(g, cluster, cost, o);
  INFO(plan.status().to_string());
  REQUIRE(plan.has_value());
  REQUIRE(plan->stages.size() >= 2);
  std::set<int32_t> used;
  int split_weights = 0;
  for (const StagePlan& s : plan->stages) {
    CHECK(hosts_of(*plan, s).size() == 1);  // no stage spans the network
    for (int32_t h : hosts_of(*plan, s)) used.insert(h);
    for (const auto& [name, spec] : s.value_specs) {
      if (name.find("/mlp/w1") != std::string::npos && spec.used_axes() != 0) {
        ++split_weights;
      }
    }
  }
  CHECK(used.size() == 2);    // the pipeline crosses hosts
  CHECK(split_weights >= 1);  // tensor (operator) parallelism inside the hosts
  CHECK(static_cast<double>(plan->max_memory_per_device) <=
        0.9 * static_cast<double>(cluster.device.memory.value()));
}

TEST_CASE("plans never exceed device memory in their own prediction", "[planner][plan]") {
  // GPT-1.3B does not fit one 16 GB V100 with Adam state (~21 GB): the planner must split it.
  auto spec = graph::models::find_model("gpt-1.3b");
  REQUIRE(spec.has_value());
  const graph::Graph g = train(graph::models::build_model(*spec, {.batch = 8, .dtype = {}}));
  for (const char* name : {"p3.16xlarge:1", "dgx-h100:1"}) {
    INFO(name);
    const mesh::ClusterSpec cluster = *mesh::cluster_preset(name);
    AnalyticCostModel cost(cluster.device);
    PlannerOptions o;
    o.global_batch = 256;
    o.micro_batches = 32;
    auto plan = make_plan(g, cluster, cost, o);
    INFO(plan.status().to_string());
    REQUIRE(plan.has_value());
    for (const StagePlan& s : plan->stages) {
      CHECK(static_cast<double>(s.memory.peak) <=
            0.9 * static_cast<double>(cluster.device.memory.value()));
    }
  }
}

TEST_CASE("a plan survives a JSON round trip", "[planner][plan]") {
  const graph::Graph g = train(
      graph::models::build_gpt(graph::models::GptConfig{64, 128, 4, 4, 256, 4}, 4, DType::kF32));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:2x2");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.micro_batches = 4;
  o.global_batch = 16;
  auto plan = make_plan(g, cluster, cost, o);
  REQUIRE(plan.has_value());
  auto back = plan_from_json(plan_to_json(*plan));
  REQUIRE(back.has_value());
  CHECK(*back == *plan);
  CHECK(back->graph_fingerprint == graph_fingerprint(g));
}

TEST_CASE("the planner is never predicted slower than the best baseline", "[planner][plan]") {
  const graph::Graph g = train(
      graph::models::build_gpt(graph::models::GptConfig{128, 256, 4, 8, 512, 4}, 4, DType::kF32));
  for (const char* name : {"p3.16xlarge:1", "p3.16xlarge:2"}) {
    INFO(name);
    const mesh::ClusterSpec cluster = *mesh::cluster_preset(name);
    AnalyticCostModel cost(cluster.device);
    PlannerOptions o;
    o.micro_batches = 16;
    o.global_batch = 64;
    ShardingCache cache;
    auto plan = make_plan(g, cluster, cost, o, cache);
    REQUIRE(plan.has_value());
    const auto baselines = run_baselines(g, cluster, cost, o, &cache);
    REQUIRE(baselines.size() == 8);
    int with_plan = 0;
    for (const BaselineResult& b : baselines) {
      INFO(b.name << ": " << b.description << " " << b.status.to_string());
      if (!b.plan) continue;
      ++with_plan;
      CHECK(plan->step_time <= b.plan->step_time * (1 + 1e-9));
    }
    CHECK(with_plan >= 5);
  }
}

TEST_CASE("planning is deterministic: the same inputs give the same plan for any thread count",
          "[planner][plan]") {
  const graph::Graph g = train(
      graph::models::build_gpt(graph::models::GptConfig{64, 128, 4, 4, 256, 4}, 2, DType::kF32));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:2");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.micro_batches = 8;
  o.global_batch = 16;
  auto a = make_plan(g, cluster, cost, o);
  auto b = make_plan(g, cluster, cost, o);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  a->times = PlanningTimes{};  // wall-clock figures are reported, not decided
  b->times = PlanningTimes{};
  CHECK(plan_to_json(*a) == plan_to_json(*b));
  // The same for any number of threads solving the intra-op problems.
  const std::string first = plan_to_json(*a);
  int64_t solves = -1;
  for (int threads : {1, 2, 3, 8}) {
    o.profile.threads = threads;
    auto p = make_plan(g, cluster, cost, o);
    REQUIRE(p.has_value());
    INFO(threads << " threads");
    // Every distinct problem solved once, whoever solved it.
    if (solves < 0) solves = p->times.intra_op_solves;
    CHECK(p->times.intra_op_solves == solves);
    p->times = PlanningTimes{};
    const std::string json = plan_to_json(*p);
    CHECK(json == first);
  }
  o.profile.threads = -1;
  CHECK(make_plan(g, cluster, cost, o).status().message().find("threads") != std::string::npos);
}

TEST_CASE("bad planner inputs are errors naming the problem", "[planner][plan]") {
  const graph::Graph g =
      train(graph::models::build_mlp(graph::models::MlpConfig{}, 8, DType::kF32));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x2");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.global_batch = 30;
  o.micro_batches = 4;
  CHECK(make_plan(g, cluster, cost, o).status().message().find("not divisible") !=
        std::string::npos);
  o.global_batch = 32;
  o.micro_batches = 2;  // needs micro-batch 16, but the graph has 8 and no factory was given
  CHECK(make_plan(g, cluster, cost, o).status().message().find("factory") != std::string::npos);
  o.schedule = static_cast<Schedule>(9);  // not a schedule
  CHECK_FALSE(make_plan(g, cluster, cost, o).has_value());
}

}  // namespace
}  // namespace meshpipe::planner

namespace meshpipe::planner {
namespace {

TEST_CASE("the layer count is chosen by the plan it gives: never slower than any candidate's",
          "[planner][plan]") {
  // A Wide-ResNet: the widest-cut rule clusters it coarsely (its early layers carry wide
  // activations), the finest clustering up to max_layers allows other stage boundaries. The
  // searched plan must be the faster of the plans at the two layer counts, each planned alone.
  const graph::Graph g = train(graph::models::build_model(
      *graph::models::find_model("wresnet-tiny"), {.batch = 8, .dtype = {}}));
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:1");
  AnalyticCostModel cost(cluster.device);
  PlannerOptions o;
  o.micro_batches = 8;
  o.global_batch = 64;
  o.clustering.max_layers = 8;
  auto searched_clustering = cluster_layers(g, o.clustering);
  REQUIRE(searched_clustering.has_value());
  const int32_t rule = searched_clustering->num_layers;
  auto plan = make_plan(g, cluster, cost, o);
  REQUIRE(plan.has_value());
  double best_alone = std::numeric_limits<double>::infinity();
  std::set<int32_t> tried;
  for (int32_t l = o.clustering.max_layers; l >= rule; l = l > rule ? std::max(rule, l / 2) : 0) {
    PlannerOptions fixed = o;
    fixed.clustering.num_layers = l;
    if (!cluster_layers(g, fixed.clustering).has_value()) continue;
    auto alone = make_plan(g, cluster, cost, fixed);
    REQUIRE(alone.has_value());
    INFO(l << " layers alone: " << alone->step_time << " s");
    tried.insert(l);
    // The rule's count and the finest feasible one are make_plan's candidates.
    if (l == rule || tried.size() == 1) best_alone = std::min(best_alone, alone->step_time);
    if (l == rule) break;
  }
  INFO("rule: " << rule << " layers; searched plan: " << plan->num_layers << " layers, "
                << plan->step_time << " s");
  CHECK(tried.size() >= 2);
  CHECK(plan->step_time == Approx(best_alone).epsilon(1e-12));
  CHECK(plan->step_time <= best_alone * (1 + 1e-12));
}

TEST_CASE("the default micro-batch sizes reach the global batch per device when above 32",
          "[planner][plan]") {
  // A batch of 256 (as mlp-small's) on 4 devices: sizes 1 ... 64, so 4 micro-batches of 64 (one per
  // device's share) are tried; without a device count, or with 16 devices, 1 ... 32.
  auto fg = graph::models::build_mlp(graph::models::MlpConfig{64, 16, 2, 64}, 1, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  const graph::Graph& g = tg->graph;
  PlannerOptions o;
  o.global_batch = 256;
  o.graph_for_micro_batch = [](int64_t) -> Expected<graph::Graph> { return graph::Graph{}; };
  auto sizes = [&](int64_t devices) {
    std::vector<int64_t> out;
    auto c = micro_batch_candidates(g, o, devices);
    REQUIRE(c.has_value());
    for (const MicroBatching& m : *c) {
      CHECK(m.micro_batch * m.micro_batches == 256);
      out.push_back(m.micro_batch);
    }
    return out;
  };
  const std::vector<int64_t> to_32 = {1, 2, 4, 8, 16, 32};
  CHECK(sizes(0) == to_32);
  CHECK(sizes(16) == to_32);
  CHECK(sizes(4) == std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64});
  CHECK(sizes(1) == std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256});
}

TEST_CASE(
    "the micro-batch search stops at the first size where nothing fits, and finds the plan "
    "of trying every size",
    "[planner][plan]") {
  // An MLP whose activations outweigh its parameters, on 4 devices, global batch 64, sizes
  // 1..16, under several device memories: at each, every size is also planned alone. Where a
  // size does not fit, no larger size fits either (the claim the search relies on), and the
  // searched plan is the fastest of those alone.
  const auto graph_of = [](int64_t micro) -> Expected<graph::Graph> {
    MP_ASSIGN_OR_RETURN(
        graph::ForwardGraph fg,
        graph::models::build_mlp(graph::models::MlpConfig{1024, 16, 3, 512}, micro, DType::kF32));
    MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                        graph::make_training_graph(std::move(fg), graph::OptimizerConfig{}));
    return std::move(tg.graph);
  };
  const std::vector<int64_t> sizes = {1, 2, 4, 8, 16};
  mesh::ClusterSpec roomy = *mesh::cluster_preset("cpu:1x4");
  PlannerOptions o;
  o.global_batch = 64;
  o.micro_batch_sizes = sizes;
  o.graph_for_micro_batch = graph_of;
  o.profile.threads = 1;
  ShardingCache cache;
  // The memory each size's plan needs with room to spare bounds the memories tried.
  std::vector<int64_t> needs;
  for (int64_t micro : sizes) {
    PlannerOptions alone = o;
    alone.micro_batches = o.global_batch / micro;
    AnalyticCostModel cost(roomy.device);
    auto plan = make_plan(*graph_of(micro), roomy, cost, alone, cache);
    REQUIRE(plan.has_value());
    int64_t peak = 0;
    for (const StagePlan& st : plan->stages) peak = std::max(peak, st.memory.peak);
    needs.push_back(peak);
  }
  int pruned = 0;
  for (const int64_t need : needs) {
    for (const double scale : {0.6, 0.8, 1.0}) {
      mesh::ClusterSpec cluster = roomy;
      cluster.device.memory = Bytes(
          static_cast<int64_t>(scale * static_cast<double>(need) / o.profile.memory_fraction));
      AnalyticCostModel cost(cluster.device);
      INFO("device memory " << cluster.device.memory.value());
      double best_alone = std::numeric_limits<double>::infinity();
      bool none_fits_from_here = false;
      for (int64_t micro : sizes) {
        PlannerOptions alone = o;
        alone.micro_batches = o.global_batch / micro;
        auto plan = make_plan(*graph_of(micro), cluster, cost, alone, cache);
        INFO("micro-batch " << micro << ": " << plan.status().to_string());
        if (none_fits_from_here) CHECK_FALSE(plan.has_value());
        if (!plan.has_value()) {
          CHECK(plan.status().code() == Errc::kInfeasible);
          none_fits_from_here = true;
          continue;
        }
        best_alone = std::min(best_alone, plan->step_time);
      }
      auto searched = make_plan(*graph_of(1), cluster, cost, o, cache);
      if (std::isinf(best_alone)) {
        CHECK(searched.status().code() == Errc::kInfeasible);
        continue;
      }
      REQUIRE(searched.has_value());
      CHECK(searched->step_time == Approx(best_alone).epsilon(1e-12));
      if (none_fits_from_here) ++pruned;
    }
  }
  // Some memory made the search stop early with a plan (the case the rule speeds up).
  CHECK(pruned > 0);
}

}  // namespace
}  // namespace meshpipe::planner

// Known answers of the intra-op pass: Megatron's tensor parallelism for a transformer layer on a
// fast intra-host mesh, pure data parallelism for a small model with a large batch, parameter
// sharding under a memory budget, and a clear error for an infeasible budget.
#include "planner/sharding_pass.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>

#include "graph/builder.h"
#include "graph/models/gpt.h"
#include "graph/models/moe.h"
#include "graph/training_graph.h"

namespace meshpipe::planner {
namespace {

using graph::Builder;
using graph::InitSpec;

// One V100-like device; the link numbers are p3.16xlarge's (NVLink inside a host, 25 Gbps
// between hosts).
const mesh::DeviceSpec kDevice{"V100", Bytes(int64_t{16} << 30), 15.7e12, 125e12, 900e9};
constexpr double kNvlinkAlpha = 5e-6;
constexpr double kNvlinkBeta = 1.0 / 130e9;
constexpr double kNetAlpha = 20e-6;
constexpr double kNetBeta = 1.0 / 3.125e9;

graph::TrainingGraph training(graph::ForwardGraph fg) {
  auto tg = graph::make_training_graph(std::move(fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(*tg);
}

std::string spec_of(const graph::Graph& g, const ShardingPlan& plan, const std::string& name) {
  for (const auto& [v, s] : plan.specs) {
    if (g.value(v).name == name) return s.to_string();
  }
  return "(not in stage)";
}

TEST_CASE("a GPT layer on a (1, 4) NVLink mesh gets Megatron's column/row splits",
          "[planner][sharding]") {
  // Hidden 1024, 16 heads, one sequence of 128 tokens: activations (0.5 MB) are far cheaper to
  // all-reduce than the layer's 12.6M weights' gradients, and the batch cannot be split.
  graph::models::GptConfig c{128, 1024, 3, 16, 1024, 4};
  auto fg = graph::models::build_gpt(c, /*batch=*/1, DType::kF32);
  REQUIRE(fg.has_value());
  const graph::TrainingGraph tg = training(std::move(*fg));
  const auto mesh = mesh::logical_mesh(1, 4, 0, 0, kNvlinkAlpha, kNvlinkBeta);
  AnalyticCostModel cost(kDevice);
  ShardingOptions opts;
  opts.first_layer = 1;
  opts.last_layer = 1;
  auto plan = shard_stage(tg.graph, mesh, cost, opts);
  REQUIRE(plan.has_value());
  INFO("ILP: " << plan->stats.nodes << " nodes, solved by " << plan->stats.method);
  // MLP: the first matrix split by columns, the second by rows (one all-reduce forward).
  CHECK(spec_of(tg.graph, *plan, "layer1/mlp/w1") == "R,S1");
  CHECK(spec_of(tg.graph, *plan, "layer1/mlp/b1") == "S1");
  CHECK(spec_of(tg.graph, *plan, "layer1/mlp/w2") == "S1,R");
  // Attention: q, k, v by columns (= by heads), the output projection by rows.
  for (const char* w : {"layer1/attn/wq", "layer1/attn/wk", "layer1/attn/wv"}) {
    CHECK(spec_of(tg.graph, *plan, w) == "R,S1");
  }
  CHECK(spec_of(tg.graph, *plan, "layer1/attn/wo") == "S1,R");
  // Heads are split inside attention.
  CHECK(spec_of(tg.graph, *plan, "layer1/attn/scores") == "R,S1,R,R");
  CHECK(plan->stats.optimal);
}

// An MLP classifier: batch x in -> hidden x layers -> classes.
graph::TrainingGraph mlp(int64_t batch, int64_t in, int64_t hidden, int layers, int64_t classes) {
  Builder b;
  ValueId x = b.input("features", Shape{batch, in}, DType::kF32);
  ValueId labels = b.input("labels", Shape{batch}, DType::kI32);
  int64_t width = in;
  for (int l = 0; l < layers; ++l) {
    b.set_layer(l);
    ValueId w = b.parameter(fmt::format("w{}", l), Shape{width, hidden}, InitSpec::zeros());
    ValueId bias = b.parameter(fmt::format("b{}", l), Shape{hidden}, InitSpec::zeros());
    x = b.relu(b.linear(x, w, bias, fmt::format("fc{}", l)));
    width = hidden;
  }
  ValueId w = b.parameter("head_w", Shape{width, classes}, InitSpec::zeros());
  ValueId bias = b.parameter("head_b", Shape{classes}, InitSpec::zeros());
  ValueId loss = b.cross_entropy(b.linear(x, w, bias, "head"), labels, "loss");
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  return training(std::move(*fg));
}

TEST_CASE("a small model with a large batch on (4, 1) gets pure data parallelism",
          "[planner][sharding]") {
  const graph::TrainingGraph tg = mlp(4096, 64, 64, 3, 16);
  const auto mesh = mesh::logical_mesh(4, 1, kNetAlpha, kNetBeta, 0, 0);
  AnalyticCostModel cost(kDevice);
  auto plan = shard_stage(tg.graph, mesh, cost, ShardingOptions{});
  REQUIRE(plan.has_value());
  for (ValueId p : tg.graph.values_with_role(graph::ValueRole::kParameter)) {
    INFO(tg.graph.value(p).name);
    const std::string s = plan->specs.at(p).to_string();
    CHECK(s.find('S') == std::string::npos);  // replicated
  }
  CHECK(spec_of(tg.graph, *plan, "features") == "S0,R");
  CHECK(spec_of(tg.graph, *plan, "labels") == "S0");
}

TEST_CASE("shrinking the memory budget forces parameter sharding", "[planner][sharding]") {
  // Batch 4096 against width 512: data parallelism is cheapest, with every parameter and both
  // Adam moments replicated (3 x 4 bytes x 0.8M parameters = 9.5 MB per device).
  const graph::TrainingGraph tg = mlp(4096, 512, 512, 2, 64);
  const auto mesh = mesh::logical_mesh(4, 1, kNvlinkAlpha, kNvlinkBeta, 0, 0);
  AnalyticCostModel cost(kDevice);
  auto free_plan = shard_stage(tg.graph, mesh, cost, ShardingOptions{});
  REQUIRE(free_plan.has_value());
  const auto is_replicated = [&](const ShardingPlan& p) {
    for (ValueId v : tg.graph.values_with_role(graph::ValueRole::kParameter)) {
      if (p.specs.at(v).to_string().find('S') != std::string::npos) return false;
    }
    return true;
  };
  CHECK(is_replicated(*free_plan));

  ShardingOptions tight;
  tight.memory_budget = 0.7 * static_cast<double>(free_plan->peak_memory.value());
  auto tight_plan = shard_stage(tg.graph, mesh, cost, tight);
  INFO(tight_plan.status().to_string());
  REQUIRE(tight_plan.has_value());
  CHECK_FALSE(is_replicated(*tight_plan));
  CHECK(tight_plan->persistent_memory < free_plan->persistent_memory);
  CHECK(tight_plan->total_seconds >= free_plan->total_seconds);
}

TEST_CASE("an infeasible memory budget is an error naming the memory constraint",
          "[planner][sharding]") {
  const graph::TrainingGraph tg = mlp(256, 64, 64, 2, 16);
  const auto mesh = mesh::logical_mesh(2, 2, kNvlinkAlpha, kNvlinkBeta, kNvlinkAlpha, kNvlinkBeta);
  AnalyticCostModel cost(kDevice);
  ShardingOptions opts;
  opts.memory_budget = 1024;  // 1 KiB per device
  auto plan = shard_stage(tg.graph, mesh, cost, opts);
  REQUIRE_FALSE(plan.has_value());
  CHECK(plan.status().code() == Errc::kInfeasible);
  CHECK(plan.status().message().find("memory") != std::string::npos);
}

TEST_CASE("ZeRO option: reduce-scattered gradients and sharded optimizer state",
          "[planner][sharding]") {
  // Under a budget that replicated Adam state does not fit, with prefer_reduce_scatter the
  // planner may keep parameters whole and shard only gradients and optimizer state (ZeRO-2).
  const graph::TrainingGraph tg = mlp(4096, 512, 512, 2, 64);
  const auto mesh = mesh::logical_mesh(4, 1, kNvlinkAlpha, kNvlinkBeta, 0, 0);
  AnalyticCostModel cost(kDevice);
  auto free_plan = shard_stage(tg.graph, mesh, cost, ShardingOptions{});
  REQUIRE(free_plan.has_value());
  ShardingOptions zero;
  zero.prefer_reduce_scatter = true;
  zero.memory_budget = 0.7 * static_cast<double>(free_plan->peak_memory.value());
  auto plan = shard_stage(tg.graph, mesh, cost, zero);
  INFO(plan.status().to_string());
  REQUIRE(plan.has_value());
  int sharded_states = 0;
  for (ValueId v : tg.graph.values_with_role(graph::ValueRole::kOptimizerState)) {
    if (plan->specs.count(v) && plan->specs.at(v).to_string().find('S') != std::string::npos) {
      ++sharded_states;
    }
  }
  CHECK(sharded_states > 0);
  CHECK(plan->persistent_memory < free_plan->persistent_memory);
}

TEST_CASE("an MoE layer on a (1, 4) mesh uses expert parallelism with an all-to-all",
          "[planner][sharding]") {
  // 4 experts with an FFN of 8 x 512: the expert weights (4 x 2 x 2M) dwarf the tokens
  // (4 x 256 x 512), so experts are split over the mesh and tokens travel between layouts.
  graph::models::MoeConfig c{256, 512, 2, 8, 1024, 4, 256, 8, 2};
  auto fg = graph::models::build_moe(c, /*batch=*/4, DType::kF32);
  REQUIRE(fg.has_value());
  const graph::TrainingGraph tg = training(std::move(*fg));
  const auto mesh = mesh::logical_mesh(1, 4, 0, 0, kNvlinkAlpha, kNvlinkBeta);
  AnalyticCostModel cost(kDevice);
  ShardingOptions opts;
  opts.first_layer = 0;
  opts.last_layer = 0;
  auto plan = shard_stage(tg.graph, mesh, cost, opts);
  REQUIRE(plan.has_value());
  // Expert weights [E, M, F] and [E, F, M] split by expert.
  CHECK(spec_of(tg.graph, *plan, "layer0/moe/wi") == "S1,R,R");
  CHECK(spec_of(tg.graph, *plan, "layer0/moe/wo") == "S1,R,R");
  // The expert FFN runs split by expert ([E, G, C, F] split on E) ...
  std::string fc1;
  std::string combine;
  for (const auto& d : plan->ops) {
    if (tg.graph.op(d.op).name == "layer0/moe/expert_fc1") fc1 = d.strategy;
    if (tg.graph.op(d.op).name == "layer0/moe/combine") combine = d.strategy;
  }
  INFO("expert_fc1: " << fc1 << "; combine: " << combine);
  CHECK(fc1.rfind("S1,R,R,R = ", 0) == 0);
  // ... and tokens move between the expert layout and the token layout by an all-to-all: the
  // experts' output [E, G, C, M] (split on E) is read by the combine in its own layout.
  const std::string expert_out = spec_of(tg.graph, *plan, "layer0/moe/expert_fc2_bias");
  const auto x = combine.find(" x ");
  REQUIRE(x != std::string::npos);
  const std::string wanted = combine.substr(x + 3, combine.find_first_of(" |(", x + 3) - x - 3);
  CHECK(expert_out == "S1,R,R,R");
  CHECK(wanted != expert_out);
  auto move =
      mesh::plan_resharding(Shape{4, 4, 128, 512}, DType::kF32, *mesh::parse_sharding(expert_out),
                            *mesh::parse_sharding(wanted), mesh);
  REQUIRE(move.has_value());
  REQUIRE(move->steps.size() == 1);
  CHECK(move->steps[0].kind == mesh::CollectiveKind::kAllToAll);
}

}  // namespace
}  // namespace meshpipe::planner

// Identical layer ranges are recognised and solved once.
#include "planner/sharding_cache.h"

#include <catch2/catch.hpp>

#include "graph/models/gpt.h"
#include "graph/training_graph.h"

namespace meshpipe::planner {
namespace {

TEST_CASE("identical transformer layers are solved once and the answer maps by position",
          "[planner][sharding]") {
  graph::models::GptConfig c{64, 256, 6, 8, 512, 4};
  auto fg = graph::models::build_gpt(c, /*batch=*/2, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  const graph::Graph& g = tg->graph;
  // Blocks 1..4 are alike; block 0 has the embedding and block 5 the LM head.
  CHECK(stage_fingerprint(g, 1, 1).text == stage_fingerprint(g, 3, 3).text);
  CHECK(stage_fingerprint(g, 1, 2).text == stage_fingerprint(g, 3, 4).text);
  CHECK(stage_fingerprint(g, 0, 0).text != stage_fingerprint(g, 1, 1).text);
  CHECK(stage_fingerprint(g, 4, 4).text != stage_fingerprint(g, 5, 5).text);

  const auto mesh = mesh::logical_mesh(2, 2, 1e-5, 1e-9, 1e-5, 1e-10);
  const mesh::DeviceSpec device{"test", Bytes(int64_t{16} << 30), 1e13, 1e14, 1e12};
  AnalyticCostModel cost(device);
  ShardingCache cache;
  std::vector<ShardingPlan> plans;
  for (int32_t l = 1; l <= 4; ++l) {
    ShardingOptions o;
    o.first_layer = l;
    o.last_layer = l;
    auto p = cache.shard(g, mesh, cost, o);
    REQUIRE(p.has_value());
    plans.push_back(std::move(*p));
  }
  CHECK(cache.solves() == 1);
  CHECK(cache.hits() == 3);
  // The mapped plan names layer 3's own ops and values, with layer 1's decisions.
  const ShardingPlan& p1 = plans[0];
  const ShardingPlan& p3 = plans[2];
  CHECK(p3.total_seconds == p1.total_seconds);
  CHECK(p3.peak_memory == p1.peak_memory);
  REQUIRE(p3.ops.size() == p1.ops.size());
  for (size_t i = 0; i < p1.ops.size(); ++i) {
    CHECK(g.op(p3.ops[i].op).layer == 3);
    CHECK(p3.ops[i].strategy == p1.ops[i].strategy);
  }
  std::string wq1;
  std::string wq3;
  for (const auto& [v, s] : p1.specs) {
    if (g.value(v).name == "layer1/attn/wq") wq1 = s.to_string();
  }
  for (const auto& [v, s] : p3.specs) {
    if (g.value(v).name == "layer3/attn/wq") wq3 = s.to_string();
  }
  CHECK_FALSE(wq1.empty());
  CHECK(wq1 == wq3);
}

}  // namespace
}  // namespace meshpipe::planner

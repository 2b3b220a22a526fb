// Tests of iteration spaces and strategy construction on small ops.
#include "planner/strategy.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include "graph/builder.h"

namespace meshpipe::planner {
namespace {

using graph::Builder;
using graph::InitSpec;
using mesh::ShardingSpec;

ShardingSpec spec(const std::string& s) { return *mesh::parse_sharding(s); }

struct Fixture {
  graph::Graph g;
  ValueId y;
  mesh::LogicalMesh mesh = mesh::logical_mesh(2, 2, 1e-5, 1e-9, 1e-5, 1e-9);
  // Memory bandwidth high enough that compute time is FLOPs / peak (compute-bound roofline).
  mesh::DeviceSpec device{"test", Bytes(int64_t{16} << 30), 1e12, 1e12, 1e18};
  AnalyticCostModel cost{device};
  StrategyContext ctx() const { return {&g, &mesh, &cost}; }
  const graph::Op& op() const { return g.op(g.value(y).producer); }
};

Fixture matmul_fixture() {
  Builder b;
  ValueId x = b.input("x", Shape{8, 16}, DType::kF32);
  ValueId w = b.parameter("w", Shape{16, 4}, InitSpec::zeros());
  Fixture f;
  f.y = b.matmul(x, w, "mm");
  f.g = b.graph();
  return f;
}

bool has_strategy(const std::vector<Strategy>& list, const std::string& name) {
  return std::any_of(list.begin(), list.end(), [&](const Strategy& s) { return s.name == name; });
}

TEST_CASE("a dot on a 2-D mesh has Alpa's SS, SR and RS families", "[planner]") {
  Fixture f = matmul_fixture();
  auto list = enumerate_strategies(f.ctx(), f.op(), false);
  REQUIRE(list.has_value());
  // SS = SR x RS: rows on axis 0, columns on axis 1, no communication.
  CHECK(has_strategy(*list, "S0,S1 = S0,R x R,S1"));
  // SR = SS x SR with an all-reduce over axis 1 (the contraction is split on axis 1).
  CHECK(has_strategy(*list, "S0,R = S0,S1 x S1,R | all-reduce@1"));
  // RS = RS x SS with an all-reduce over axis 0.
  CHECK(has_strategy(*list, "R,S1 = R,S0 x S0,S1 | all-reduce@0"));
  // Both axes on the rows (S01) and the fully replicated strategy, which comes last.
  CHECK(has_strategy(*list, "S01,R = S01,R x R,R"));
  CHECK(list->back().name == "R,R = R,R x R,R");
  // The replicated strategy computes everything on every device: 4x the per-device FLOPs of a
  // fully split one (2 * 8 * 16 * 4 = 1024 FLOP at 1 TFLOP/s, against 256 FLOP).
  const auto& rep = list->back();
  const auto it = std::find_if(list->begin(), list->end(),
                               [](const Strategy& s) { return s.name == "S0,S1 = S0,R x R,S1"; });
  CHECK(rep.compute == Approx(4.0 * it->compute));
}

TEST_CASE("an all-reduce strategy charges alpha-beta for the output tile", "[planner]") {
  Fixture f = matmul_fixture();
  auto list = enumerate_strategies(f.ctx(), f.op(), /*reduce_scatter=*/true);
  REQUIRE(list.has_value());
  const auto ar = std::find_if(list->begin(), list->end(), [](const Strategy& s) {
    return s.name == "S0,R = S0,S1 x S1,R | all-reduce@1";
  });
  REQUIRE(ar != list->end());
  // Output tile [4, 4] f32 = 64 bytes; all-reduce over 2: 1e-5 + 1e-9 * 2 * (1/2) * 64 + 2e-9.
  CHECK(ar->communication == Approx(1e-5 + 64e-9 + 2e-9).epsilon(1e-9));
  // With reduce-scatter allowed, the variant scatters the sum along the free output dim 1.
  CHECK(has_strategy(*list, "S0,S1 = S0,S1 x S1,R | reduce-scatter@1 dim 1"));
}

TEST_CASE("softmax never splits its axis and layer norm never splits the hidden dim", "[planner]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{4, 8}, InitSpec::zeros());
  ValueId s = b.softmax(x, -1);
  ValueId gm = b.parameter("g", Shape{8}, InitSpec::ones());
  ValueId bt = b.parameter("b", Shape{8}, InitSpec::zeros());
  ValueId ln = b.layer_norm(x, gm, bt);
  Fixture f;
  f.g = b.graph();
  for (ValueId out : {s, ln}) {
    f.y = out;
    auto list = enumerate_strategies(f.ctx(), f.op(), false);
    REQUIRE(list.has_value());
    for (const Strategy& st : *list) {
      CHECK(st.outputs[0].dims[1] == mesh::DimSharding::kR);
    }
  }
  // Following an operand split on the hidden dim gathers it first, at a cost.
  auto space = iteration_space(f.g, f.op());
  REQUIRE(space.has_value());
  auto followed = follow_strategy(f.ctx(), f.op(), *space, 0, spec("S0,S1"));
  REQUIRE(followed.has_value());
  CHECK(followed->inputs[0] == spec("S0,R"));
  CHECK(followed->communication > 0);
}

TEST_CASE("a reshape keeps head sharding when the leading dims divide", "[planner]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{2, 8, 64}, InitSpec::zeros());
  ValueId r = b.reshape(x, Shape{2, 8, 4, 16});  // hidden 64 -> 4 heads x 16
  Fixture f;
  f.g = b.graph();
  f.y = r;
  auto space = iteration_space(f.g, f.op());
  REQUIRE(space.has_value());
  auto s = follow_strategy(f.ctx(), f.op(), *space, 0, spec("S0,R,S1"));
  REQUIRE(s.has_value());
  CHECK(s->outputs[0] == spec("S0,R,S1,R"));
  CHECK(s->communication == 0.0);
}

TEST_CASE("source layouts enumerate 1-D, 2-D and S01 splits and end replicated", "[planner]") {
  Fixture f = matmul_fixture();
  const ValueId w = f.g.values_with_role(graph::ValueRole::kParameter)[0];
  auto list = enumerate_source_strategies(f.ctx(), w);
  // w [16, 4] on (2, 2): axis 0 on dim 0/1/none x axis 1 on dim 0/1/none, S01 on either dim.
  CHECK(list.size() == 9);
  CHECK(list.back().name == "R,R");
  CHECK(has_strategy(list, "S01,R"));
  CHECK(has_strategy(list, "S0,S1"));
  const auto s01 =
      std::find_if(list.begin(), list.end(), [](const Strategy& s) { return s.name == "S01,R"; });
  CHECK(s01->memory == 16.0 * 4 * 4 / 4);
}

TEST_CASE("attention can be split along the query sequence, the causal softmax included",
          "[planner]") {
  // scores = q . k^T over [B, heads, S, hd]: splitting the query rows (S of q) needs whole keys;
  // the causal softmax over the key axis then runs on row blocks (the kernel's row offset).
  Builder b;
  ValueId q = b.parameter("q", Shape{1, 2, 16, 8}, InitSpec::zeros());
  ValueId k = b.parameter("k", Shape{1, 2, 16, 8}, InitSpec::zeros());
  ValueId scores = b.dot(q, k, DotDims{{0, 1}, {0, 1}, {3}, {3}}, "scores");
  ValueId probs = b.softmax(scores, -1, /*causal=*/true, "probs");
  Fixture f;
  f.g = b.graph();
  f.mesh = mesh::logical_mesh(1, 4, 0, 0, 1e-5, 1e-9);
  f.y = scores;
  auto list = enumerate_strategies(f.ctx(), f.op(), false);
  REQUIRE(list.has_value());
  CHECK(has_strategy(*list, "R,R,S1,R = R,R,S1,R x R,R,R,R"));
  f.y = probs;
  auto space = iteration_space(f.g, f.op());
  REQUIRE(space.has_value());
  auto s = follow_strategy(f.ctx(), f.op(), *space, 0, spec("R,R,S1,R"));
  REQUIRE(s.has_value());
  CHECK(s->outputs[0] == spec("R,R,S1,R"));
  CHECK(s->communication == 0.0);
}

TEST_CASE("a strategy's layout re-creates it, resolutions included", "[planner]") {
  Fixture f = matmul_fixture();
  auto list = enumerate_strategies(f.ctx(), f.op(), /*reduce_scatter=*/true);
  REQUIRE(list.has_value());
  auto space = iteration_space(f.g, f.op());
  REQUIRE(space.has_value());
  for (const Strategy& s : *list) {
    const std::string text = layout_to_string(s.layout());
    auto layout = parse_layout(text);
    REQUIRE(layout.has_value());
    CHECK(*layout == s.layout());
    auto again = make_strategy(f.ctx(), f.op(), *space, layout->iter, layout->resolution);
    REQUIRE(again.has_value());
    CHECK(again->name == s.name);
  }
  // The reduce-scatter variant records its collective: output 0, axis 1, dim 1.
  const auto rs = std::find_if(list->begin(), list->end(), [](const Strategy& s) {
    return s.name == "S0,S1 = S0,S1 x S1,R | reduce-scatter@1 dim 1";
  });
  REQUIRE(rs != list->end());
  REQUIRE(rs->resolutions.size() == 1);
  CHECK(rs->resolutions[0].kind == mesh::CollectiveKind::kReduceScatter);
  CHECK(rs->resolutions[0].axis == 1);
  CHECK(rs->resolutions[0].dim == 1);
  CHECK(layout_to_string(rs->layout()) == "S0,R,S1 reduce-scatter");
}

TEST_CASE("layouts parse their text form and reject anything else", "[planner]") {
  auto z = parse_layout("S01,R,S10 zero-axis 1");
  REQUIRE(z.has_value());
  CHECK(z->iter == std::vector<mesh::DimSharding>{mesh::DimSharding::kS01, mesh::DimSharding::kR,
                                                  mesh::DimSharding::kS10});
  CHECK(z->zero_axis == 1);
  CHECK(parse_layout("scalar")->iter.empty());
  for (const char* bad : {"", "S2", "S0,,R", "S0 zero-axis 2", "S0 reduce"}) {
    auto r = parse_layout(bad);
    CHECK_FALSE(r.has_value());
  }
}

}  // namespace
}  // namespace meshpipe::planner

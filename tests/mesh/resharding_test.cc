// Tests of resharding: collective costs, hand-checked decompositions, and the property that
// every decomposition, run on real tiles, produces the target tiles.
#include "mesh/resharding.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "tile_simulator.h"

namespace meshpipe::mesh {
namespace {

ShardingSpec spec(const std::string& text) {
  Expected<ShardingSpec> s = parse_sharding(text);
  REQUIRE(s.has_value());
  return *s;
}

// Mesh (2, 4) with distinct costs per axis, so a step on the wrong axis shows.
const LogicalMesh kMesh = logical_mesh(2, 4, /*alpha0=*/1e-5, /*beta0=*/1e-9, /*alpha1=*/1e-6,
                                       /*beta1=*/1e-10);
// [8, 16] f32: B = 512 bytes.
const Shape kShape{8, 16};

ReshardingPlan plan(const std::string& from, const std::string& to) {
  Expected<ReshardingPlan> p = plan_resharding(kShape, DType::kF32, spec(from), spec(to), kMesh);
  REQUIRE(p.has_value());
  return *p;
}

TEST_CASE("collective names", "[mesh]") {
  CHECK(collective_name(CollectiveKind::kAllGather) == "all-gather");
  CHECK(collective_name(CollectiveKind::kReduceScatter) == "reduce-scatter");
  CHECK(collective_name(CollectiveKind::kAllReduce) == "all-reduce");
  CHECK(collective_name(CollectiveKind::kAllToAll) == "all-to-all");
  CHECK(collective_name(CollectiveKind::kSlice) == "slice");
}

TEST_CASE("collective costs follow the alpha-beta formulas", "[mesh]") {
  // Axis 1: n = 4, alpha = 1e-6, beta = 1e-10, B = 1000.
  const double ag = 1e-6 + 1e-10 * 0.75 * 1000 + 3e-9;
  const double ar = 1e-6 + 1e-10 * 1.5 * 1000 + 2e-9;
  const double rs = 1e-6 + 1e-10 * 0.75 * 1000 + 1e-9;
  const double a2a = 1e-6 + 1e-10 * (3.0 / 16) * 1000 * 2 + 1e-9;
  using K = CollectiveKind;
  CHECK(collective_cost(K::kAllGather, 1000, kMesh, 1).value() == Approx(ag).epsilon(1e-12));
  CHECK(collective_cost(K::kAllReduce, 1000, kMesh, 1).value() == Approx(ar).epsilon(1e-12));
  CHECK(collective_cost(K::kReduceScatter, 1000, kMesh, 1).value() == Approx(rs).epsilon(1e-12));
  CHECK(collective_cost(K::kAllToAll, 1000, kMesh, 1).value() == Approx(a2a).epsilon(1e-12));
  CHECK(collective_cost(K::kSlice, 1000, kMesh, 1).value() == 0.0);
  // At zero bytes only the tie-breakers differ: reduce-scatter < all-reduce < all-gather.
  CHECK(collective_cost(K::kReduceScatter, 0, kMesh, 1) <
        collective_cost(K::kAllReduce, 0, kMesh, 1));
  CHECK(collective_cost(K::kAllReduce, 0, kMesh, 1) < collective_cost(K::kAllGather, 0, kMesh, 1));
  // A size-1 axis costs nothing.
  const LogicalMesh line = logical_mesh(1, 4);
  CHECK(collective_cost(K::kAllReduce, 1 << 20, line, 0).value() == 0.0);
}

TEST_CASE("S0,R -> R,R is one all-gather of the full tensor on axis 0", "[mesh]") {
  const ReshardingPlan p = plan("S0,R", "R,R");
  REQUIRE(p.steps.size() == 1);
  const CollectiveStep& s = p.steps[0];
  CHECK(s.kind == CollectiveKind::kAllGather);
  CHECK(s.axis == 0);
  CHECK(s.dim == 0);
  CHECK(s.bytes == 512);  // the gathered output: all 8 x 16 x 4 bytes
  CHECK(s.after == spec("R,R"));
  // alpha0 + beta0 (n-1)/n B + 3e-9 = 1e-5 + 1e-9 * 1/2 * 512 + 3e-9
  CHECK(p.cost.value() == Approx(1e-5 + 256e-9 + 3e-9).epsilon(1e-12));
  CHECK(p.to_string() == "all-gather(axis 0, dim 0)");
}

TEST_CASE("R,R | P1 -> R,S1 is one reduce-scatter", "[mesh]") {
  const ReshardingPlan p = plan("R,R | P1", "R,S1");
  REQUIRE(p.steps.size() == 1);
  CHECK(p.steps[0].kind == CollectiveKind::kReduceScatter);
  CHECK(p.steps[0].axis == 1);
  CHECK(p.steps[0].dim == 1);
  CHECK(p.steps[0].bytes == 512);  // the input: the whole partial tensor
  // alpha1 + beta1 (n-1)/n B + 1e-9 = 1e-6 + 1e-10 * 3/4 * 512 + 1e-9
  CHECK(p.cost.value() == Approx(1e-6 + 38.4e-9 + 1e-9).epsilon(1e-12));
}

TEST_CASE("S0,R -> R,S0 is one all-to-all, cheaper than all-gather plus slice", "[mesh]") {
  const ReshardingPlan p = plan("S0,R", "R,S0");
  REQUIRE(p.steps.size() == 1);
  const CollectiveStep& s = p.steps[0];
  CHECK(s.kind == CollectiveKind::kAllToAll);
  CHECK(s.axis == 0);
  CHECK(s.dim == 0);        // gathered
  CHECK(s.split_dim == 1);  // split
  CHECK(s.bytes == 256);    // the [4, 16] f32 tile
  // all-to-all: 1e-5 + 1e-9 * (1/4) * 256 * (2/2) + 1e-9 = 1e-5 + 65e-9
  // all-gather: 1e-5 + 1e-9 * (1/2) * 512 + 3e-9 = 1e-5 + 259e-9
  CHECK(p.cost.value() == Approx(1e-5 + 65e-9).epsilon(1e-12));
  CHECK(p.to_string() == "all-to-all(axis 0, dim 0, split dim 1)");
}

TEST_CASE("S01,R -> S0,R is an all-gather on axis 1", "[mesh]") {
  const ReshardingPlan p = plan("S01,R", "S0,R");
  REQUIRE(p.steps.size() == 1);
  CHECK(p.steps[0].kind == CollectiveKind::kAllGather);
  CHECK(p.steps[0].axis == 1);
  CHECK(p.steps[0].dim == 0);
  CHECK(p.steps[0].bytes == 256);  // the gathered [4, 16] f32 tile
  // 1e-6 + 1e-10 * 3/4 * 256 + 3e-9
  CHECK(p.cost.value() == Approx(1e-6 + 19.2e-9 + 3e-9).epsilon(1e-12));
}

TEST_CASE("splitting a replicated tensor is free slices", "[mesh]") {
  const ReshardingPlan p = plan("R,R", "S10,R");
  REQUIRE(p.steps.size() == 2);
  CHECK(p.steps[0].kind == CollectiveKind::kSlice);
  CHECK(p.steps[0].axis == 1);
  CHECK(p.steps[1].axis == 0);
  CHECK(p.steps[0].after == spec("S1,R"));
  CHECK(p.cost.value() == 0.0);
  CHECK(p.to_string() == "slice(axis 1, dim 0) -> slice(axis 0, dim 0)");
}

TEST_CASE("partial sums are all-reduced, reduce-scattered or kept", "[mesh]") {
  // R,R | P0 -> R,R: all-reduce of 512 bytes on axis 0: 1e-5 + 1e-9 * 2 * 1/2 * 512 + 2e-9.
  ReshardingPlan p = plan("R,R | P0", "R,R");
  REQUIRE(p.steps.size() == 1);
  CHECK(p.steps[0].kind == CollectiveKind::kAllReduce);
  CHECK(p.cost.value() == Approx(1e-5 + 512e-9 + 2e-9).epsilon(1e-12));
  // R,R | P01 -> R,R | P1: the axis-1 sums stay, axis 0 is all-reduced.
  p = plan("R,R | P01", "R,R | P1");
  REQUIRE(p.steps.size() == 1);
  CHECK(p.steps[0].kind == CollectiveKind::kAllReduce);
  CHECK(p.steps[0].axis == 0);
  // R,R | P01 -> S01,R: reduce-scatter axis 0 (512 bytes in), then axis 1 (256 bytes in).
  p = plan("R,R | P01", "S01,R");
  REQUIRE(p.steps.size() == 2);
  CHECK(p.steps[0].kind == CollectiveKind::kReduceScatter);
  CHECK(p.steps[0].axis == 0);
  CHECK(p.steps[0].bytes == 512);
  CHECK(p.steps[1].kind == CollectiveKind::kReduceScatter);
  CHECK(p.steps[1].axis == 1);
  CHECK(p.steps[1].bytes == 256);
  // R,R | P1 -> S10,R: reduce-scatter on axis 1 along dim 0, then slice axis 0.
  p = plan("R,R | P1", "S10,R");
  REQUIRE(p.steps.size() == 2);
  CHECK(p.steps[0].kind == CollectiveKind::kReduceScatter);
  CHECK(p.steps[1].kind == CollectiveKind::kSlice);
  // R,S0 | P1 -> R,S01: axis 1 is next after the shared prefix [0] of dim 1.
  p = plan("R,S0 | P1", "R,S01");
  REQUIRE(p.steps.size() == 1);
  CHECK(p.steps[0].kind == CollectiveKind::kReduceScatter);
  CHECK(p.steps[0].dim == 1);
  // R,S0 | P1 -> R,S10: axis 1 would have to go outside axis 0: all-reduce, then regroup.
  p = plan("R,S0 | P1", "R,S10");
  CHECK(p.steps.front().kind == CollectiveKind::kAllReduce);
}

TEST_CASE("resharding rejects invalid specs and new partial sums", "[mesh]") {
  Expected<ReshardingPlan> bad =
      plan_resharding(Shape{6, 8}, DType::kF32, spec("S1,R"), spec("R,R"), kMesh);
  CHECK_FALSE(bad.has_value());
  bad = plan_resharding(Shape{6, 8}, DType::kF32, spec("R,R"), spec("S01,R"), kMesh);
  CHECK_FALSE(bad.has_value());
  bad = plan_resharding(kShape, DType::kF32, spec("R,R"), spec("S0,R,R"), kMesh);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().message().find("resharding target") == 0);
  bad = plan_resharding(kShape, DType::kF32, spec("R,R | P0"), spec("R,R | P1"), kMesh);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().message().find("partial sums over mesh axis 1") != std::string::npos);
}

TEST_CASE("resharding a spec to itself costs nothing", "[mesh]") {
  Rng rng(/*seed=*/11);
  const std::pair<int64_t, int64_t> meshes[] = {{1, 1}, {1, 4}, {4, 1}, {2, 2}, {2, 4}, {4, 2}};
  int checked = 0;
  for (const auto& [d0, d1] : meshes) {
    const LogicalMesh mesh = logical_mesh(d0, d1);
    for (int64_t rank = 0; rank <= 3; ++rank) {
      std::vector<int64_t> dims(static_cast<size_t>(rank), d0 * d1 * (1 + rng.below(2)));
      for (const ShardingSpec& s : testing::all_specs(rank)) {
        if (!validate_sharding(Shape(dims), s, mesh).is_ok()) continue;
        Expected<ReshardingPlan> p = plan_resharding(Shape(dims), DType::kF16, s, s, mesh);
        REQUIRE(p.has_value());
        CHECK(p->steps.empty());
        CHECK(p->cost.value() == 0.0);
        CHECK(p->to_string() == "no-op");
        ++checked;
      }
    }
  }
  CHECK(checked > 200);
}

}  // namespace
}  // namespace meshpipe::mesh

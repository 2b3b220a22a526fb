// The key resharding property: every decomposition, applied step by step to real per-device
// tiles (tile_simulator.h), reproduces the exact tiles of each step's spec and of the target.
#include <catch2/catch.hpp>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "mesh/resharding.h"
#include "tile_simulator.h"

namespace meshpipe::mesh {
namespace {

using testing::Array;

// Expected `bytes` of a step, from collective_cost's definition and the tiles around it.
int64_t expected_bytes(const CollectiveStep& step, int64_t before, int64_t after) {
  switch (step.kind) {
    case CollectiveKind::kAllGather:
      return after;
    case CollectiveKind::kReduceScatter:
    case CollectiveKind::kAllReduce:
    case CollectiveKind::kAllToAll:
      return before;
    case CollectiveKind::kSlice:
      return 0;
  }
  return -1;
}

// Plans from -> to, runs the plan on random tiles and checks every step. Records the kinds
// used in `kinds`.
void check_case(const Shape& shape, const ShardingSpec& from, const ShardingSpec& to,
                const LogicalMesh& mesh, Rng& rng, std::set<CollectiveKind>* kinds) {
  INFO("shape " << shape.to_string() << " mesh " << mesh.to_string() << ": '" << from.to_string()
                << "' -> '" << to.to_string() << "'");
  Expected<ReshardingPlan> plan = plan_resharding(shape, DType::kF32, from, to, mesh);
  REQUIRE(plan.has_value());
  INFO("plan " << plan->to_string());
  const Array full = testing::random_array(shape.dims(), rng);
  std::vector<Array> tiles = testing::initial_tiles(full, from, mesh, rng);
  REQUIRE(testing::max_error(tiles, full, from, mesh) <= 1e-5);
  ShardingSpec cur = from;
  double cost = 0.0;
  for (const CollectiveStep& step : plan->steps) {
    INFO("step " << collective_name(step.kind) << " axis " << step.axis << " dim " << step.dim
                 << " -> '" << step.after.to_string() << "'");
    kinds->insert(step.kind);
    REQUIRE(validate_sharding(shape, step.after, mesh).is_ok());
    const int64_t before = tile_bytes(shape, 4, cur, mesh);
    const int64_t after = tile_bytes(shape, 4, step.after, mesh);
    CHECK(step.bytes == expected_bytes(step, before, after));
    CHECK(step.cost.value() == collective_cost(step.kind, step.bytes, mesh, step.axis).value());
    cost += step.cost.value();
    testing::apply_step(tiles, step, mesh);
    const Shape want_shape = tile_shape(shape, step.after, mesh);
    for (const Array& t : tiles) REQUIRE(Shape(t.shape) == want_shape);
    REQUIRE(testing::max_error(tiles, full, step.after, mesh) <= 1e-5);
    cur = step.after;
  }
  CHECK(cur == to);
  CHECK(plan->cost.value() == Approx(cost).epsilon(1e-12));
  CHECK(testing::max_error(tiles, full, to, mesh) <= 1e-5);
}

const std::pair<int64_t, int64_t> kMeshes[] = {{1, 1}, {1, 4}, {4, 1}, {2, 2}, {2, 4}, {4, 2}};

TEST_CASE("every pair of rank-1 and rank-2 specs reshards correctly on real tiles", "[mesh]") {
  Rng rng(/*seed=*/2024);
  std::set<CollectiveKind> kinds;
  int cases = 0;
  for (const auto& [d0, d1] : kMeshes) {
    const LogicalMesh mesh = logical_mesh(d0, d1, 1e-5, 1e-9, 2e-6, 3e-10);
    for (int64_t rank = 1; rank <= 2; ++rank) {
      const Shape shape(std::vector<int64_t>(static_cast<size_t>(rank), d0 * d1 * 2));
      const std::vector<ShardingSpec> specs = testing::all_specs(rank);
      for (const ShardingSpec& from : specs) {
        for (const ShardingSpec& to : specs) {
          if ((to.partial & ~from.partial) != 0) continue;
          check_case(shape, from, to, mesh, rng, &kinds);
          ++cases;
        }
      }
    }
  }
  CHECK(cases > 1000);
  CHECK(kinds.size() == 5);  // all-gather, reduce-scatter, all-reduce, all-to-all, slice
}

TEST_CASE("random reshardings up to rank 3 reproduce the target tiles", "[mesh]") {
  Rng rng(/*seed=*/99);
  std::set<CollectiveKind> kinds;
  for (int iter = 0; iter < 500; ++iter) {
    const auto [d0, d1] = kMeshes[rng.below(6)];
    // Uneven link costs, so that gather orders and all-to-all choices vary.
    const LogicalMesh mesh =
        logical_mesh(d0, d1, 1e-6 * (1 + rng.below(10)), 1e-10 * (1 + rng.below(100)),
                     1e-6 * (1 + rng.below(10)), 1e-10 * (1 + rng.below(100)));
    const int64_t rank = rng.below(4);
    const ShardingSpec from = testing::random_spec(rank, rng);
    ShardingSpec to = testing::random_spec(rank, rng);
    to.partial = static_cast<uint8_t>(to.partial & from.partial);
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t need = std::lcm(num_shards(from.dims[static_cast<size_t>(d)], mesh),
                                    num_shards(to.dims[static_cast<size_t>(d)], mesh));
      dims.push_back(need * (1 + rng.below(3)));
    }
    check_case(Shape(dims), from, to, mesh, rng, &kinds);
  }
  CHECK(kinds.size() == 5);
}

TEST_CASE("the simulator's collectives move the data they name", "[mesh]") {
  // A [4] tensor on mesh (1, 2) under S1: device 0 holds {0, 1}, device 1 holds {2, 3}.
  const LogicalMesh mesh = logical_mesh(1, 2);
  Array full;
  full.shape = {4};
  full.data = {0, 1, 2, 3};
  Rng rng(/*seed=*/1);
  std::vector<Array> tiles = testing::initial_tiles(full, *parse_sharding("S1"), mesh, rng);
  CHECK(tiles[1].data == std::vector<float>{2, 3});
  CollectiveStep gather;
  gather.kind = CollectiveKind::kAllGather;
  gather.axis = 1;
  gather.dim = 0;
  testing::apply_step(tiles, gather, mesh);
  CHECK(tiles[0].data == std::vector<float>{0, 1, 2, 3});
  CHECK(tiles[1].data == std::vector<float>{0, 1, 2, 3});
  CollectiveStep reduce;
  reduce.kind = CollectiveKind::kReduceScatter;
  reduce.axis = 1;
  reduce.dim = 0;
  testing::apply_step(tiles, reduce, mesh);  // sum {0, 2, 4, 6}, device 1 keeps {4, 6}
  CHECK(tiles[1].data == std::vector<float>{4, 6});
}

}  // namespace
}  // namespace meshpipe::mesh

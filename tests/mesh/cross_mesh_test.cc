// Tests of cross-mesh resharding tasks: the pieces rebuild every destination tile exactly (a
// tile simulation), senders are balanced, and the local all-gather sends each byte once.
#include "mesh/cross_mesh.h"

#include <catch2/catch.hpp>

#include "core/rng.h"
#include "tile_simulator.h"

namespace meshpipe::mesh {
namespace {

using testing::Array;

ShardingSpec spec(const std::string& s) { return *parse_sharding(s); }

// Applies the plan to real data: pieces cut from the source tiles, pasted into the received
// tiles, then the local collectives; returns the largest error against the exact tiles of `to`.
double simulate(const Array& full, const ShardingSpec& from, const LogicalMesh& src,
                const ShardingSpec& to, const LogicalMesh& dst, const CrossMeshPlan& plan) {
  const Shape shape(full.shape);
  std::vector<Array> tiles(static_cast<size_t>(dst.num_devices()));
  for (int64_t j = 0; j < dst.num_devices(); ++j) {
    const auto r = tile_ranges(shape, plan.received, dst, j / dst.size(1), j % dst.size(1));
    Array& t = tiles[static_cast<size_t>(j)];
    for (const DimRange& d : r) t.shape.push_back(d.end - d.begin);
    t.data.assign(static_cast<size_t>(testing::numel_of(t.shape)), NAN);
  }
  for (const TransferPiece& p : plan.pieces) {
    const Array src_tile =
        testing::exact_tile(full, from, src, p.src / src.size(1), p.src % src.size(1));
    const auto src_r = tile_ranges(shape, from, src, p.src / src.size(1), p.src % src.size(1));
    const auto dst_r =
        tile_ranges(shape, plan.received, dst, p.dst / dst.size(1), p.dst % dst.size(1));
    // The piece must lie inside both tiles; copy it element by element.
    Array& out = tiles[static_cast<size_t>(p.dst)];
    const int64_t n = testing::numel_of([&] {
      std::vector<int64_t> e;
      for (const DimRange& d : p.region) e.push_back(d.end - d.begin);
      return e;
    }());
    for (int64_t flat = 0; flat < n; ++flat) {
      int64_t rest = flat;
      int64_t so = 0;
      int64_t doff = 0;
      int64_t sstride = 1;
      int64_t dstride = 1;
      for (int64_t d = shape.rank() - 1; d >= 0; --d) {
        const auto u = static_cast<size_t>(d);
        const int64_t ext = p.region[u].end - p.region[u].begin;
        const int64_t g = p.region[u].begin + rest % ext;
        rest /= ext;
        REQUIRE(g >= src_r[u].begin);
        REQUIRE(g < src_r[u].end);
        REQUIRE(g >= dst_r[u].begin);
        REQUIRE(g < dst_r[u].end);
        so += (g - src_r[u].begin) * sstride;
        doff += (g - dst_r[u].begin) * dstride;
        sstride *= src_r[u].end - src_r[u].begin;
        dstride *= dst_r[u].end - dst_r[u].begin;
      }
      out.data[static_cast<size_t>(doff)] = src_tile.data[static_cast<size_t>(so)];
    }
  }
  for (const CollectiveStep& step : plan.local.steps) testing::apply_step(tiles, step, dst);
  return testing::max_error(tiles, full, to, dst);
}

TEST_CASE("cross-mesh pieces rebuild every destination tile, for every pair of specs", "[mesh]") {
  Rng rng(7);
  const Array full = testing::random_array({4, 8, 4}, rng);
  const LogicalMesh src = logical_mesh(2, 2);
  for (const LogicalMesh& dst : {logical_mesh(1, 4), logical_mesh(2, 1), logical_mesh(2, 2)}) {
    for (const ShardingSpec& from : testing::all_specs(3)) {
      if (from.partial != 0 || !validate_sharding(Shape(full.shape), from, src).is_ok()) continue;
      for (const ShardingSpec& to : testing::all_specs(3)) {
        if (to.partial != 0 || !validate_sharding(Shape(full.shape), to, dst).is_ok()) continue;
        for (bool gather : {false, true}) {
          std::vector<int64_t> load(4, 0);
          auto plan =
              plan_cross_mesh(Shape(full.shape), DType::kF32, from, src, to, dst, &load, {gather});
          REQUIRE(plan.has_value());
          INFO(from.to_string() << " -> " << to.to_string() << " on " << dst.to_string());
          CHECK(simulate(full, from, src, to, dst, *plan) == 0.0);
        }
      }
    }
  }
}

TEST_CASE("the local all-gather sends each byte across once and balances the senders", "[mesh]") {
  // Source: replicated on 2 devices; destination: replicated on 4. Without the optimisation
  // every destination device receives the whole tensor (4x its bytes); with it, each receives a
  // quarter, then all-gathers. Replicated senders split the work evenly.
  const Shape shape{8, 16};
  const int64_t bytes = shape.numel() * 4;
  const LogicalMesh src = logical_mesh(2, 1);
  const LogicalMesh dst = logical_mesh(2, 2);
  std::vector<int64_t> load(2, 0);
  auto plain = plan_cross_mesh(shape, DType::kF32, spec("R,R"), src, spec("R,R"), dst, &load,
                               {/*local_allgather=*/false});
  REQUIRE(plain.has_value());
  int64_t total = 0;
  for (const TransferPiece& p : plain->pieces) total += p.bytes;
  CHECK(total == 4 * bytes);
  CHECK(load[0] == 2 * bytes);
  CHECK(load[1] == 2 * bytes);
  load.assign(2, 0);
  auto opt = plan_cross_mesh(shape, DType::kF32, spec("R,R"), src, spec("R,R"), dst, &load);
  REQUIRE(opt.has_value());
  total = 0;
  for (const TransferPiece& p : opt->pieces) total += p.bytes;
  CHECK(total == bytes);
  CHECK(opt->received == spec("S0,S1"));
  CHECK(opt->local.steps.size() == 2);  // all-gather along each destination axis
  CHECK(load[0] == bytes / 2);
  CHECK(load[1] == bytes / 2);
  CHECK(opt->max_sender_bytes == bytes / 2);
}

TEST_CASE("cross-mesh planning rejects partial specs and a wrong load vector", "[mesh]") {
  const Shape shape{4, 4};
  std::vector<int64_t> load(2, 0);
  auto partial = plan_cross_mesh(shape, DType::kF32, spec("R,R | P0"), logical_mesh(2, 1),
                                 spec("R,R"), logical_mesh(2, 1), &load);
  REQUIRE_FALSE(partial.has_value());
  CHECK_THAT(partial.status().message(), Catch::Contains("partial"));
  std::vector<int64_t> short_load(1, 0);
  auto wrong = plan_cross_mesh(shape, DType::kF32, spec("R,R"), logical_mesh(2, 1), spec("R,R"),
                               logical_mesh(2, 1), &short_load);
  CHECK_FALSE(wrong.has_value());
  auto bad = plan_cross_mesh(Shape{3, 4}, DType::kF32, spec("S0,R"), logical_mesh(2, 1),
                             spec("R,R"), logical_mesh(2, 1), &load);
  CHECK_FALSE(bad.has_value());
}

}  // namespace
}  // namespace meshpipe::mesh

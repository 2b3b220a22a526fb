// Tests of ShardingSpec: text form, validation messages, and the tile algebra.
#include "mesh/sharding.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "tile_simulator.h"

namespace meshpipe::mesh {
namespace {

using R = std::vector<DimRange>;

ShardingSpec spec(const std::string& text) {
  Expected<ShardingSpec> s = parse_sharding(text);
  REQUIRE(s.has_value());
  return *s;
}

TEST_CASE("dim shardings map to mesh axes outermost first and back", "[mesh]") {
  CHECK(dim_axes(DimSharding::kR).empty());
  CHECK(dim_axes(DimSharding::kS0) == std::vector<int>{0});
  CHECK(dim_axes(DimSharding::kS1) == std::vector<int>{1});
  CHECK(dim_axes(DimSharding::kS01) == std::vector<int>{0, 1});
  CHECK(dim_axes(DimSharding::kS10) == std::vector<int>{1, 0});
  for (DimSharding s : {DimSharding::kR, DimSharding::kS0, DimSharding::kS1, DimSharding::kS01,
                        DimSharding::kS10}) {
    CHECK(dim_sharding_of(dim_axes(s)) == s);
  }
  const LogicalMesh mesh = logical_mesh(2, 3);
  CHECK(num_shards(DimSharding::kR, mesh) == 1);
  CHECK(num_shards(DimSharding::kS0, mesh) == 2);
  CHECK(num_shards(DimSharding::kS1, mesh) == 3);
  CHECK(num_shards(DimSharding::kS10, mesh) == 6);
}

TEST_CASE("sharding text round trips, scalars written as 'scalar'", "[mesh]") {
  for (const char* text : {"S0,R", "R,S01", "S10,R | P1", "R,R | P01", "S1 | P0", "scalar",
                           "scalar | P1", "R,S0,S1", "S01"}) {
    CHECK(spec(text).to_string() == text);
  }
  CHECK(spec("scalar").dims.empty());
  CHECK(spec(" S0 , R|P1 ") == spec("S0,R | P1"));
  CHECK(spec("R,R | P10") == spec("R,R | P01"));
  ShardingSpec s;
  s.dims = {DimSharding::kS10, DimSharding::kR};
  s.partial = 0;
  CHECK(s.to_string() == "S10,R");
}

TEST_CASE("bad sharding text names the bad part", "[mesh]") {
  CHECK(parse_sharding("S2,R").status().message().find("bad dim 'S2'") != std::string::npos);
  CHECK(parse_sharding("R,,R").status().message().find("bad dim ''") != std::string::npos);
  CHECK(parse_sharding("R | Q1").status().message().find("'Q1'") != std::string::npos);
  CHECK(parse_sharding("R | P00").status().message().find("'P00'") != std::string::npos);
  CHECK(parse_sharding("").status().message().find("scalar") != std::string::npos);
}

TEST_CASE("replicated specs, used axes and tile counts", "[mesh]") {
  CHECK(ShardingSpec::replicated(3).to_string() == "R,R,R");
  CHECK(ShardingSpec::replicated(0).to_string() == "scalar");
  CHECK(spec("R,R").used_axes() == 0);
  CHECK(spec("S1,R").used_axes() == 2);
  CHECK(spec("S0,R | P1").used_axes() == 3);
  CHECK(spec("R,S10").used_axes() == 3);
  const LogicalMesh mesh = logical_mesh(2, 3);
  CHECK(spec("S0,S1").num_tiles(mesh) == 6);
  CHECK(spec("S1,R | P0").num_tiles(mesh) == 3);
  CHECK(spec("scalar").num_tiles(mesh) == 1);
}

TEST_CASE("validate_sharding says what is wrong", "[mesh]") {
  const LogicalMesh mesh = logical_mesh(2, 4);
  CHECK(validate_sharding(Shape{8, 8}, spec("S0,S1"), mesh).is_ok());
  CHECK(validate_sharding(Shape{8, 6}, spec("R,S1"), mesh)
            .message()
            .find("dim 1 of size 6 is not divisible by 4 shards") != std::string::npos);
  CHECK(validate_sharding(Shape{8, 8, 8}, spec("S0,R,S0"), mesh)
            .message()
            .find("mesh axis 0 is used by dims 0 and 2") != std::string::npos);
  CHECK(validate_sharding(Shape{8, 8}, spec("S1,R | P1"), mesh)
            .message()
            .find("mesh axis 1 splits dim 0 and carries partial sums") != std::string::npos);
  CHECK(validate_sharding(Shape{8, 8}, spec("S01,S1"), mesh)
            .message()
            .find("mesh axis 1 is used by dims 0 and 1") != std::string::npos);
  CHECK(validate_sharding(Shape{8}, spec("S0,R"), mesh)
            .message()
            .find("has rank 2 but shape [8] has rank 1") != std::string::npos);
  CHECK(validate_sharding(Shape{4}, spec("S01"), mesh)
            .message()
            .find("dim 0 of size 4 is not divisible by 8 shards") != std::string::npos);
}

TEST_CASE("splitting over a size-1 mesh axis is one shard and valid", "[mesh]") {
  const LogicalMesh mesh = logical_mesh(1, 4);
  CHECK(validate_sharding(Shape{3, 4}, spec("S0,S1"), mesh).is_ok());
  CHECK(tile_shape(Shape{3, 4}, spec("S0,S1"), mesh) == Shape{3, 1});
  CHECK(validate_sharding(Shape{3}, spec("R | P0"), mesh).is_ok());
}

TEST_CASE("tile shape and bytes divide each dim by its shards", "[mesh]") {
  const LogicalMesh mesh = logical_mesh(2, 3);
  CHECK(tile_shape(Shape{8, 6}, spec("S0,S1"), mesh) == Shape{4, 2});
  CHECK(tile_shape(Shape{12, 6}, spec("S10,R"), mesh) == Shape{2, 6});
  CHECK(tile_shape(Shape{}, spec("scalar | P0"), mesh) == Shape{});
  CHECK(tile_bytes(Shape{8, 6}, 4, spec("S0,S1"), mesh) == 4 * 2 * 4);
  CHECK(tile_bytes(Shape{8, 6}, 2, spec("R,R"), mesh) == 8 * 6 * 2);
}

TEST_CASE("tile ranges of S0,S1, S01 and S10 on a (2, 3) mesh", "[mesh]") {
  const LogicalMesh mesh = logical_mesh(2, 3);
  // S0,S1 on [8, 6]: rows 4*i0 .. 4*i0+3, columns 2*i1 .. 2*i1+1.
  CHECK(tile_ranges(Shape{8, 6}, spec("S0,S1"), mesh, 0, 0) == R{{0, 4}, {0, 2}});
  CHECK(tile_ranges(Shape{8, 6}, spec("S0,S1"), mesh, 1, 2) == R{{4, 8}, {4, 6}});
  CHECK(tile_ranges(Shape{8, 6}, spec("S0,S1"), mesh, 0, 1) == R{{0, 4}, {2, 4}});
  // S01 on [12, 5]: 6 chunks of 2 rows, chunk i0*3 + i1.
  CHECK(tile_ranges(Shape{12, 5}, spec("S01,R"), mesh, 0, 1) == R{{2, 4}, {0, 5}});
  CHECK(tile_ranges(Shape{12, 5}, spec("S01,R"), mesh, 1, 0) == R{{6, 8}, {0, 5}});
  CHECK(tile_ranges(Shape{12, 5}, spec("S01,R"), mesh, 1, 2) == R{{10, 12}, {0, 5}});
  // S10: chunk i1*2 + i0.
  CHECK(tile_ranges(Shape{12, 5}, spec("S10,R"), mesh, 0, 1) == R{{4, 6}, {0, 5}});
  CHECK(tile_ranges(Shape{12, 5}, spec("S10,R"), mesh, 1, 0) == R{{2, 4}, {0, 5}});
  CHECK(tile_ranges(Shape{12, 5}, spec("S10,R"), mesh, 1, 2) == R{{10, 12}, {0, 5}});
  // Partial sums do not change the ranges; R is the whole dim.
  CHECK(tile_ranges(Shape{12, 6}, spec("R,S1 | P0"), mesh, 1, 2) == R{{0, 12}, {4, 6}});
  CHECK(tile_ranges(Shape{}, spec("scalar"), mesh, 1, 1).empty());
}

TEST_CASE("the tiles of all devices cover the tensor exactly replication times", "[mesh]") {
  Rng rng(/*seed=*/7);
  const std::pair<int64_t, int64_t> meshes[] = {{1, 4}, {4, 1}, {2, 2}, {2, 4}, {4, 2}, {2, 3}};
  int checked = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const auto [d0, d1] = meshes[rng.below(6)];
    const LogicalMesh mesh = logical_mesh(d0, d1);
    const int64_t rank = rng.below(4);
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < rank; ++d) dims.push_back(1 + rng.below(12));
    const Shape shape(dims);
    const ShardingSpec s = testing::random_spec(rank, rng);
    if (!validate_sharding(shape, s, mesh).is_ok()) continue;
    ++checked;
    std::vector<int> count(static_cast<size_t>(shape.numel()), 0);
    const std::vector<int64_t> strides = shape.strides();
    for (int64_t i0 = 0; i0 < d0; ++i0) {
      for (int64_t i1 = 0; i1 < d1; ++i1) {
        const std::vector<DimRange> r = tile_ranges(shape, s, mesh, i0, i1);
        REQUIRE(static_cast<int64_t>(r.size()) == rank);
        for (int64_t d = 0; d < rank; ++d) {
          REQUIRE(r[d].end - r[d].begin == tile_shape(shape, s, mesh)[d]);
        }
        // Visit every element of the box r.
        std::vector<int64_t> idx(static_cast<size_t>(rank));
        for (int64_t d = 0; d < rank; ++d) idx[d] = r[d].begin;
        while (true) {
          int64_t flat = 0;
          for (int64_t d = 0; d < rank; ++d) flat += idx[d] * strides[d];
          ++count[static_cast<size_t>(flat)];
          int64_t d = rank - 1;
          while (d >= 0 && ++idx[d] == r[d].end) {
            idx[d] = r[d].begin;
            --d;
          }
          if (d < 0) break;
        }
      }
    }
    const int64_t replication = mesh.num_devices() / s.num_tiles(mesh);
    for (int c : count) REQUIRE(c == replication);
  }
  CHECK(checked > 100);
}

}  // namespace
}  // namespace meshpipe::mesh

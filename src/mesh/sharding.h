// ShardingSpec and tile algebra: how a tensor is laid out over a 2-D logical mesh.
//
//   tensor [8, 6] with spec "S0,S1" on mesh (2, 3): device (i0, i1) holds rows 4*i0 .. 4*i0+3
//   and columns 2*i1 .. 2*i1+1. "S01,R" splits dim 0 into 6 chunks, chunk i0 * 3 + i1 (axis 0
//   major); "S10,R" uses chunk i1 * 2 + i0. "R,R" replicates. A partial spec ("... | P1")
//   holds per-device partial sums that must be added over mesh axis 1.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/shape.h"
#include "core/status.h"
#include "mesh/device_mesh.h"

namespace meshpipe::mesh {

/// How one tensor dim is split over the mesh axes.
enum class DimSharding : uint8_t {
  kR = 0,    ///< not split (replicated along this dim)
  kS0 = 1,   ///< split over mesh axis 0
  kS1 = 2,   ///< split over mesh axis 1
  kS01 = 3,  ///< split over both axes, axis 0 major: chunk i0 * d1 + i1
  kS10 = 4,  ///< split over both axes, axis 1 major: chunk i1 * d0 + i0
};

/// "R", "S0", "S1", "S01", "S10".
std::string_view dim_sharding_name(DimSharding s);
/// Parses dim_sharding_name's text; false when `token` is none of them.
bool parse_dim_sharding(std::string_view token, DimSharding* out);
/// The mesh axes of a dim sharding, outermost first (kS01 -> {0, 1}, kS10 -> {1, 0}).
std::vector<int> dim_axes(DimSharding s);
/// The dim sharding whose axes are `axes` (outermost first; at most 2, distinct).
DimSharding dim_sharding_of(const std::vector<int>& axes);
/// Number of chunks the dim is split into on `mesh`.
int64_t num_shards(DimSharding s, const LogicalMesh& mesh);

/// Per tensor dim, how it is split; plus the mesh axes over which values are partial sums.
struct ShardingSpec {
  std::vector<DimSharding> dims;
  uint8_t partial = 0;  ///< bit a set: partial sums pending over mesh axis a

  /// All dims replicated, no partial sums.
  static ShardingSpec replicated(int64_t rank);
  /// Bit a set when mesh axis a splits some dim or carries partial sums.
  uint8_t used_axes() const;
  /// Total number of distinct tiles (product of num_shards over dims).
  int64_t num_tiles(const LogicalMesh& mesh) const;
  /// "S0,R", "R,S01", "R,R | P1" (partial over axis 1), "scalar" for rank 0.
  std::string to_string() const;

  friend bool operator==(const ShardingSpec&, const ShardingSpec&) = default;
  friend auto operator<=>(const ShardingSpec&, const ShardingSpec&) = default;
};

/// Parses to_string's format ("S0,R", "R,S1 | P0", ...).
Expected<ShardingSpec> parse_sharding(const std::string& text);

/// Ok when the rank matches, every split dim is divisible by its number of shards, and no mesh
/// axis is used twice (by two dims, or by a dim and the partial mask). Errors say which.
Status validate_sharding(const Shape& shape, const ShardingSpec& spec, const LogicalMesh& mesh);

/// Shape of the tile every device holds (the spec must be valid).
Shape tile_shape(const Shape& shape, const ShardingSpec& spec, const LogicalMesh& mesh);

/// Bytes of one device's tile.
int64_t tile_bytes(const Shape& shape, int64_t dtype_bytes, const ShardingSpec& spec,
                   const LogicalMesh& mesh);

/// Half-open index range of one dim.
struct DimRange {
  int64_t begin = 0;
  int64_t end = 0;
  friend bool operator==(const DimRange&, const DimRange&) = default;
};

/// The slice of the full tensor that device (i0, i1) holds, per dim.
std::vector<DimRange> tile_ranges(const Shape& shape, const ShardingSpec& spec,
                                  const LogicalMesh& mesh, int64_t i0, int64_t i1);

}  // namespace meshpipe::mesh

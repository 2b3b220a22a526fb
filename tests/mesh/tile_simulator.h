// Test helper: per-device tiles of a real tensor, collectives applied to them as the runtime
// would, and spec generators (every spec of a rank, or random ones) for property tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "core/shape.h"
#include "mesh/resharding.h"
#include "mesh/sharding.h"

namespace meshpipe::mesh::testing {

/// A dense row-major array of floats.
struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Extents around `dim`: elements before it (outer), its length, and elements after it (inner).
inline void split_at(const std::vector<int64_t>& shape, int64_t dim, int64_t* outer,
                     int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    if (i < dim) *outer *= shape[static_cast<size_t>(i)];
    if (i > dim) *inner *= shape[static_cast<size_t>(i)];
  }
}

/// Elements [begin, begin + len) of `dim`.
inline Array narrow(const Array& a, int64_t dim, int64_t begin, int64_t len) {
  int64_t outer = 0;
  int64_t inner = 0;
  split_at(a.shape, dim, &outer, &inner);
  const int64_t full = a.shape[static_cast<size_t>(dim)];
  MP_CHECK(begin >= 0 && begin + len <= full) << "narrow out of range";
  Array out;
  out.shape = a.shape;
  out.shape[static_cast<size_t>(dim)] = len;
  out.data.reserve(static_cast<size_t>(outer * len * inner));
  for (int64_t o = 0; o < outer; ++o) {
    const auto first = a.data.begin() + (o * full + begin) * inner;
    out.data.insert(out.data.end(), first, first + len * inner);
  }
  return out;
}

/// Chunk k of n equal chunks along `dim`.
inline Array chunk(const Array& a, int64_t dim, int64_t n, int64_t k) {
  const int64_t full = a.shape[static_cast<size_t>(dim)];
  MP_CHECK(full % n == 0) << "chunk: dim " << dim << " of size " << full << " by " << n;
  return narrow(a, dim, k * (full / n), full / n);
}

/// The parts joined along `dim`, in order.
inline Array concat(const std::vector<Array>& parts, int64_t dim) {
  int64_t outer = 0;
  int64_t inner = 0;
  split_at(parts.front().shape, dim, &outer, &inner);
  Array out;
  out.shape = parts.front().shape;
  out.shape[static_cast<size_t>(dim)] = 0;
  for (const Array& p : parts)
    out.shape[static_cast<size_t>(dim)] += p.shape[static_cast<size_t>(dim)];
  for (int64_t o = 0; o < outer; ++o) {
    for (const Array& p : parts) {
      const int64_t block = p.shape[static_cast<size_t>(dim)] * inner;
      const auto first = p.data.begin() + o * block;
      out.data.insert(out.data.end(), first, first + block);
    }
  }
  return out;
}

inline Array sum(const std::vector<Array>& parts) {
  Array out = parts.front();
  for (size_t i = 1; i < parts.size(); ++i) {
    for (size_t j = 0; j < out.data.size(); ++j) out.data[j] += parts[i].data[j];
  }
  return out;
}

/// The block of `full` that device (i0, i1) holds under `spec` (partial sums ignored).
inline Array exact_tile(const Array& full, const ShardingSpec& spec, const LogicalMesh& mesh,
                        int64_t i0, int64_t i1) {
  const std::vector<DimRange> ranges = tile_ranges(Shape(full.shape), spec, mesh, i0, i1);
  Array t = full;
  for (size_t d = 0; d < ranges.size(); ++d) {
    t = narrow(t, static_cast<int64_t>(d), ranges[d].begin, ranges[d].end - ranges[d].begin);
  }
  return t;
}

/// Device indices (i0 * d1 + i1) of each group of devices that differ only in the axes of
/// `mask` (bit a = mesh axis a), members in row-major order of those axes.
inline std::vector<std::vector<int64_t>> groups_over(const LogicalMesh& mesh, uint8_t mask) {
  const bool over0 = (mask & 1u) != 0;
  const bool over1 = (mask & 2u) != 0;
  std::vector<std::vector<int64_t>> groups;
  for (int64_t g0 = 0; g0 < (over0 ? 1 : mesh.size(0)); ++g0) {
    for (int64_t g1 = 0; g1 < (over1 ? 1 : mesh.size(1)); ++g1) {
      std::vector<int64_t> members;
      for (int64_t i0 = over0 ? 0 : g0; i0 < (over0 ? mesh.size(0) : g0 + 1); ++i0) {
        for (int64_t i1 = over1 ? 0 : g1; i1 < (over1 ? mesh.size(1) : g1 + 1); ++i1) {
          members.push_back(i0 * mesh.size(1) + i1);
        }
      }
      groups.push_back(members);
    }
  }
  return groups;
}

/// Each device's tile under `spec`; over partial axes, random addends that sum to the tile.
inline std::vector<Array> initial_tiles(const Array& full, const ShardingSpec& spec,
                                        const LogicalMesh& mesh, Rng& rng) {
  std::vector<Array> tiles(static_cast<size_t>(mesh.num_devices()));
  for (int64_t dev = 0; dev < mesh.num_devices(); ++dev) {
    tiles[static_cast<size_t>(dev)] =
        exact_tile(full, spec, mesh, dev / mesh.size(1), dev % mesh.size(1));
  }
  if (spec.partial == 0) return tiles;
  for (const std::vector<int64_t>& group : groups_over(mesh, spec.partial)) {
    Array rest = tiles[static_cast<size_t>(group.front())];
    for (size_t k = 0; k + 1 < group.size(); ++k) {
      Array& t = tiles[static_cast<size_t>(group[k])];
      for (size_t j = 0; j < t.data.size(); ++j) {
        t.data[j] = static_cast<float>(rng.normal());
        rest.data[j] -= t.data[j];
      }
    }
    tiles[static_cast<size_t>(group.back())] = rest;
  }
  return tiles;
}

/// Runs one collective on the per-device tiles, within the groups along step.axis.
inline void apply_step(std::vector<Array>& tiles, const CollectiveStep& step,
                       const LogicalMesh& mesh) {
  const uint8_t mask = static_cast<uint8_t>(1u << step.axis);
  for (const std::vector<int64_t>& group : groups_over(mesh, mask)) {
    const int64_t n = static_cast<int64_t>(group.size());
    std::vector<Array> in;
    for (int64_t dev : group) in.push_back(tiles[static_cast<size_t>(dev)]);
    for (int64_t k = 0; k < n; ++k) {
      Array& out = tiles[static_cast<size_t>(group[static_cast<size_t>(k)])];
      switch (step.kind) {
        case CollectiveKind::kAllGather:
          out = concat(in, step.dim);
          break;
        case CollectiveKind::kReduceScatter:
          out = chunk(sum(in), step.dim, n, k);
          break;
        case CollectiveKind::kAllReduce:
          out = sum(in);
          break;
        case CollectiveKind::kAllToAll: {
          std::vector<Array> received;
          for (const Array& src : in) received.push_back(chunk(src, step.split_dim, n, k));
          out = concat(received, step.dim);
          break;
        }
        case CollectiveKind::kSlice:
          out = chunk(in[static_cast<size_t>(k)], step.dim, n, k);
          break;
      }
    }
  }
}

/// Largest difference between what the devices hold and the exact tiles of `spec` (over
/// partial axes, the sum of each group against the tile).
inline double max_error(const std::vector<Array>& tiles, const Array& full,
                        const ShardingSpec& spec, const LogicalMesh& mesh) {
  double err = 0.0;
  for (const std::vector<int64_t>& group : groups_over(mesh, spec.partial)) {
    std::vector<Array> parts;
    for (int64_t dev : group) parts.push_back(tiles[static_cast<size_t>(dev)]);
    const Array got = sum(parts);
    const int64_t dev = group.front();
    const Array want = exact_tile(full, spec, mesh, dev / mesh.size(1), dev % mesh.size(1));
    if (got.shape != want.shape) return INFINITY;
    for (size_t j = 0; j < got.data.size(); ++j) {
      err = std::max(err, static_cast<double>(std::fabs(got.data[j] - want.data[j])));
    }
  }
  return err;
}

/// Spec from a per-axis role (-2 unused, -1 partial, d >= 0 splits dim d); when both axes split
/// the same dim, `axis1_outer` puts axis 1 outermost.
inline ShardingSpec spec_from_roles(int64_t rank, int64_t role0, int64_t role1, bool axis1_outer) {
  ShardingSpec spec = ShardingSpec::replicated(rank);
  std::vector<std::vector<int>> axes(static_cast<size_t>(rank));
  const int64_t roles[2] = {role0, role1};
  for (int a = 0; a < 2; ++a) {
    if (roles[a] == -1) spec.partial = static_cast<uint8_t>(spec.partial | (1u << a));
    if (roles[a] >= 0) axes[static_cast<size_t>(roles[a])].push_back(a);
  }
  for (size_t d = 0; d < axes.size(); ++d) {
    if (axis1_outer && axes[d].size() == 2) std::swap(axes[d][0], axes[d][1]);
    spec.dims[d] = dim_sharding_of(axes[d]);
  }
  return spec;
}

/// Every spec of a rank (with and without partial sums), in a fixed order.
inline std::vector<ShardingSpec> all_specs(int64_t rank) {
  std::vector<ShardingSpec> out;
  for (int64_t r0 = -2; r0 < rank; ++r0) {
    for (int64_t r1 = -2; r1 < rank; ++r1) {
      out.push_back(spec_from_roles(rank, r0, r1, false));
      if (r0 >= 0 && r0 == r1) out.push_back(spec_from_roles(rank, r0, r1, true));
    }
  }
  return out;
}

/// A random spec of a rank.
inline ShardingSpec random_spec(int64_t rank, Rng& rng) {
  const int64_t r0 = rng.below(rank + 2) - 2;
  const int64_t r1 = rng.below(rank + 2) - 2;
  return spec_from_roles(rank, r0, r1, rng.below(2) == 1);
}

/// A tensor of the given shape filled with normal values.
inline Array random_array(const std::vector<int64_t>& shape, Rng& rng) {
  Array a;
  a.shape = shape;
  a.data.resize(static_cast<size_t>(numel_of(shape)));
  for (float& v : a.data) v = static_cast<float>(rng.normal());
  return a;
}

}  // namespace meshpipe::mesh::testing

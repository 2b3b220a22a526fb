// Op layouts and what they imply. A layout assigns mesh axes to an op's iteration dims
// (shard/iteration_space.h) and says how partial sums are resolved; from it follow the spec each
// input must arrive in, the spec of each output, the collectives that complete outputs holding
// partial sums, and the work one device does. The planner prices these facts (planner/strategy.h)
// and the runtime lowers them (runtime/lower.h); neither re-derives them.
//
//   dot [B, M, K] x [K, N] on a (2, 4) mesh, layout "S0,R,S1,R" (b m n k):
//     lhs S0,R,R   rhs R,S1   out S0,R,S1          (no reduction dim split: no collective)
//   layout "S0,R,R,S1": k split over axis 1 -> out S0,R,R holds partial sums -> all-reduce@1
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "core/units.h"
#include "graph/graph.h"
#include "mesh/device_mesh.h"
#include "mesh/resharding.h"
#include "mesh/sharding.h"
#include "shard/iteration_space.h"

namespace meshpipe::shard {

/// How outputs holding partial sums are resolved.
enum class PartialResolution : uint8_t {
  kAllReduce,      ///< everyone gets the sum (the output keeps its spec)
  kReduceScatter,  ///< each device keeps a chunk of the sum along the first free output dim
};

/// What re-creates an op's sharding: the iteration-dim assignment, how partial sums are
/// resolved, and, for a ZeRO-2 optimizer update, the mesh axis over which the update runs on a
/// chunk before the new parameter is all-gathered (-1: none).
struct OpLayout {
  std::vector<mesh::DimSharding> iter;
  PartialResolution resolution = PartialResolution::kAllReduce;
  int zero_axis = -1;
  friend bool operator==(const OpLayout&, const OpLayout&) = default;
};

/// "S0,R,S1", "S0,R,S1 reduce-scatter", "S0,R zero-axis 1", "scalar" (no iteration dims).
std::string layout_to_string(const OpLayout& layout);
/// Parses layout_to_string's format; errors quote the text.
Expected<OpLayout> parse_layout(const std::string& text);

/// A collective that completes an output holding partial sums after the local computation.
struct OutputResolution {
  size_t output = 0;                                             ///< output index
  mesh::CollectiveKind kind = mesh::CollectiveKind::kAllReduce;  ///< all-reduce or reduce-scatter
  int axis = 0;                                                  ///< mesh axis whose group sums
  int64_t dim = -1;   ///< reduce-scatter: the output dim that gets split over `axis`
  int64_t bytes = 0;  ///< per-device bytes the collective moves (mesh::collective_cost's)
};

/// The GEMM one device runs for its part of a dot: `batch` products of (m x k) . (k x n).
struct GemmDims {
  int64_t batch = 0;
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  bool known() const { return batch > 0 && m > 0 && n > 0 && k > 0; }
  friend bool operator==(const GemmDims&, const GemmDims&) = default;
};

/// What one device computes for its part of an op; a cost model turns it into seconds.
struct OpWork {
  Flops flops;
  Bytes bytes;  ///< memory traffic (input tiles read + output tiles written)
  DType dtype = DType::kF32;
  bool is_matmul = false;      ///< dots and convolutions (tensor cores, profiled GEMM tables)
  GemmDims gemm;               ///< dots: the per-device GEMM's dims (zeros for other ops)
  std::optional<OpKind> kind;  ///< the op's kind (profiles price some kinds apart)
};

/// An op under one layout on one logical mesh.
struct ShardedOp {
  std::vector<mesh::DimSharding> iter;                           ///< per iteration dim
  PartialResolution resolution = PartialResolution::kAllReduce;  ///< as requested
  int zero_axis = -1;                         ///< ZeRO-2 update chunk axis, else -1
  std::vector<mesh::ShardingSpec> inputs;     ///< spec each input must arrive in
  std::vector<mesh::ShardingSpec> outputs;    ///< spec of each output once resolved (no partials)
  std::vector<OutputResolution> resolutions;  ///< collectives completing partial sums, in order
  bool resolves_partial_sums = false;         ///< some output needed a collective
  int64_t output_bytes = 0;                   ///< this device's resolved output tiles
  OpWork work;                                ///< one device's share

  /// The layout that re-creates this sharding.
  OpLayout layout() const { return {iter, resolution, zero_axis}; }
};

/// `op` with iteration dims assigned by `iter` on `mesh`, or an error when the assignment is
/// invalid (an unsplittable or indivisible dim, a mesh axis used twice).
Expected<ShardedOp> shard_op(const graph::Graph& g, const graph::Op& op, const IterSpace& space,
                             const mesh::LogicalMesh& mesh, std::vector<mesh::DimSharding> iter,
                             PartialResolution resolution = PartialResolution::kAllReduce);

/// `op` under `layout` on `mesh` (its iteration space computed here). Errors name the op, the
/// layout and the mesh.
Expected<ShardedOp> shard_op(const graph::Graph& g, const graph::Op& op,
                             const mesh::LogicalMesh& mesh, const OpLayout& layout);

/// The spec of a tensor whose dims map to iteration dims `map` (-1: whole) under `iter`.
mesh::ShardingSpec spec_of(const std::vector<int>& map, const std::vector<mesh::DimSharding>& iter);

/// Mesh-axis mask of a dim sharding (bit a: axis a).
uint8_t axes_mask(mesh::DimSharding d);

}  // namespace meshpipe::shard

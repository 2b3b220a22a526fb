// Cross-mesh resharding tasks (docs/algorithms.md §3.5): a tensor laid out by one spec on a source
// mesh is needed in another spec on a destination mesh (the next pipeline stage). For every
// destination tile, the source tiles that intersect it are found; each intersecting piece is sent
// by one of the source devices holding it, chosen to balance the bytes each sender sends. With the
// local all-gather optimisation, a destination spec that replicates over a mesh axis is first
// received split over that axis, so each byte crosses the slow link once, and an all-gather inside
// the destination mesh (fast links) completes it.
//
//   source (2, 1) "S0,R"          destination (1, 2) "R,R"   received as "R,S1", then all-gather
//     dev 0: rows 0-1  ---------> dev 0: columns 0-1 of rows 0-3 (two pieces: from dev 0 and 1)
//     dev 1: rows 2-3  ---------> dev 1: columns 2-3 of rows 0-3
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "mesh/resharding.h"
#include "mesh/sharding.h"

namespace meshpipe::mesh {

/// One piece of a tensor that one source device sends to one destination device.
struct TransferPiece {
  int32_t src = 0;               ///< sending device: index i0 * d1 + i1 in the source mesh
  int32_t dst = 0;               ///< receiving device: index in the destination mesh
  std::vector<DimRange> region;  ///< the piece in full-tensor coordinates
  int64_t bytes = 0;
};

/// How a tensor moves between two meshes.
struct CrossMeshPlan {
  ShardingSpec received;              ///< the layout the pieces build on the destination mesh
  ReshardingPlan local;               ///< received -> destination spec, inside the destination mesh
  std::vector<TransferPiece> pieces;  ///< by destination device, then by source tile
  int64_t max_sender_bytes = 0;       ///< the busiest sender's bytes in this plan
};

/// Options of plan_cross_mesh.
struct CrossMeshOptions {
  bool local_allgather = true;  ///< receive split over replicated axes, then all-gather
};

/// Plans moving a tensor of `shape` from spec `from` on `src` to spec `to` on `dst`. `load`
/// (one entry per source device, in bytes) carries the senders' load across calls: each piece
/// goes to the least-loaded device holding it (the lowest index on ties), and its bytes are
/// added. Errors when a spec is invalid for its mesh, is partial, or `load` has the wrong size.
Expected<CrossMeshPlan> plan_cross_mesh(const Shape& shape, DType dtype, const ShardingSpec& from,
                                        const LogicalMesh& src, const ShardingSpec& to,
                                        const LogicalMesh& dst, std::vector<int64_t>* load,
                                        const CrossMeshOptions& options = {});

}  // namespace meshpipe::mesh

// Resharding a tensor from one ShardingSpec to another on the same logical mesh, decomposed
// into collectives along mesh axes, and the alpha-beta cost of each (docs/algorithms.md §1.4).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/units.h"
#include "mesh/collective_kind.h"
#include "mesh/sharding.h"

namespace meshpipe::mesh {

/// Time of one collective along mesh `axis` moving `bytes`, where `bytes` is the per-device
/// buffer at its larger end (all-gather: the gathered output; reduce-scatter: the input;
/// all-reduce and all-to-all: the buffer). With n = mesh.size(axis), alpha/beta of that axis:
///   all-gather     alpha + beta (n-1)/n B          + 3e-9
///   all-reduce     alpha + beta 2(n-1)/n B         + 2e-9
///   reduce-scatter alpha + beta (n-1)/n B          + 1e-9
///   all-to-all     alpha + beta (n-1)/n^2 B (n/2)  + 1e-9
///   slice          0
/// The small constants break ties as Alpa's do (reduce-scatter < all-reduce < all-gather).
/// n = 1 costs 0.
Seconds collective_cost(CollectiveKind kind, int64_t bytes, const LogicalMesh& mesh, int axis);

/// One step of a resharding.
struct CollectiveStep {
  CollectiveKind kind = CollectiveKind::kSlice;
  int axis = 0;            ///< mesh axis the groups run along
  int64_t dim = -1;        ///< tensor dim gathered, scattered or sliced (all-to-all: gathered)
  int64_t split_dim = -1;  ///< all-to-all only: the dim that gets split
  int64_t bytes = 0;       ///< per-device bytes as collective_cost defines them
  ShardingSpec after;      ///< the spec once this step is done
  Seconds cost;
};

/// A resharding as a sequence of steps and its total cost.
struct ReshardingPlan {
  std::vector<CollectiveStep> steps;
  Seconds cost;
  std::string to_string() const;  ///< "all-gather(axis 1, dim 0) -> slice(axis 0, dim 1)"
};

/// Decomposes from -> to. Partial sums are resolved first (reduce-scatter when the target
/// splits a dim over that axis, else all-reduce); then, per dim, mesh axes not shared with the
/// target's prefix are all-gathered (innermost first) and the target's extra axes sliced; a
/// single-axis move between two dims becomes one all-to-all when that is cheaper. Identical
/// specs give no steps and cost 0. Errors when a spec is invalid for the shape or when `to`
/// has partial sums that `from` lacks.
Expected<ReshardingPlan> plan_resharding(const Shape& shape, DType dtype, const ShardingSpec& from,
                                         const ShardingSpec& to, const LogicalMesh& mesh);

}  // namespace meshpipe::mesh

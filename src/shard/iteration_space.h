// The iteration space of an op: the loop dims that a sharding can split across mesh axes, and how
// each input and output dim maps onto them. One description per op kind replaces per-kind strategy
// tables: a layout is an assignment of mesh axes to iteration dims (docs/algorithms.md §1.3).
//
//   dot [B, M, K] x [K, N] -> [B, M, N]:  iteration dims b, m, n, k (k is a reduction: split, it
//   leaves partial sums that an all-reduce resolves); softmax: the softmax axis is not splittable;
//   conv2d [N, C, H, W] x [K, C, R, S]: n, k, c split, spatial dims stay whole.
#pragma once

#include <string>
#include <vector>

#include "graph/graph.h"

namespace meshpipe::shard {

/// How an op's dims may be split.
struct IterSpace {
  std::vector<int64_t> sizes;             ///< size of each iteration dim
  std::vector<bool> splittable;           ///< may be split over mesh axes
  std::vector<std::string> labels;        ///< "b", "m", "n", "k", "c", ... for strategy names
  std::vector<std::vector<int>> inputs;   ///< per input, per dim: iteration dim, or -1 = whole
  std::vector<std::vector<int>> outputs;  ///< per output, per dim: iteration dim, or -1 = whole

  /// True when iteration dim `it` appears in some input but not in output `o`: splitting it
  /// leaves output `o` as partial sums.
  bool is_reduction_for(int it, size_t o) const;
};

/// The iteration space of one op (every kind of op_kind.h).
Expected<IterSpace> iteration_space(const graph::Graph& g, const graph::Op& op);

/// The iteration space of a source value (parameter, optimizer state, data input): one
/// splittable iteration dim per tensor dim, mapped to the single output.
IterSpace source_space(const Shape& shape);

}  // namespace meshpipe::shard

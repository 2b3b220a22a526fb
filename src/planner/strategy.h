// Sharding strategies of one op on a 2-D logical mesh. A strategy assigns mesh axes to the op's
// iteration dims (iteration_space.h); from that follow the specs it needs for its inputs, the
// specs of its outputs, its per-device compute, the collectives that resolve partial sums, and
// its memory. Enumeration lists every valid assignment; following derives one strategy from an
// operand's spec (docs/algorithms.md §1.5). The geometry is shard::shard_op's; this file adds the
// prices.
#pragma once

#include <string>
#include <vector>

#include "graph/graph.h"
#include "mesh/resharding.h"
#include "mesh/sharding.h"
#include "planner/cost_model.h"
#include "shard/iteration_space.h"
#include "shard/op_layout.h"

namespace meshpipe::planner {

// The op-sharding algebra lives in shard/ (below the planner and the runtime); the planner
// names its types as its own.
using shard::iteration_space;
using shard::IterSpace;
using shard::layout_to_string;
using shard::OpLayout;
using shard::OutputResolution;
using shard::parse_layout;
using shard::PartialResolution;
using shard::source_space;

/// One strategy of an op (or of a source value): its sharding (shard::ShardedOp: iteration
/// dims, input and output specs, resolutions; zero_axis is set by the sharding pass) priced by
/// a cost model.
struct Strategy : shard::ShardedOp {
  std::string name;            ///< "S0,R,S1 = S0,R,R x R,S1 | all-reduce@1"
  double compute = 0.0;        ///< seconds on one device
  double communication = 0.0;  ///< seconds of collectives inside the op
  double memory = 0.0;         ///< bytes of this device's output tiles
};

/// What strategy building needs besides the op.
struct StrategyContext {
  const graph::Graph* graph = nullptr;
  const mesh::LogicalMesh* mesh = nullptr;
  const CostModel* cost = nullptr;
};

/// The strategy with iteration-dim assignment `iter`, or an error when it is invalid (an
/// unsplittable or indivisible dim, a mesh axis used twice).
Expected<Strategy> make_strategy(const StrategyContext& ctx, const graph::Op& op,
                                 const IterSpace& space, std::vector<mesh::DimSharding> iter,
                                 PartialResolution resolution = PartialResolution::kAllReduce);

/// Every valid strategy of an op: each mesh axis of size > 1 unused or on one splittable
/// iteration dim, both axes on one dim as S01; with `reduce_scatter`, strategies whose outputs
/// hold partial sums also come in a reduce-scatter variant. Deterministic order; the fully
/// replicated strategy is last.
Expected<std::vector<Strategy>> enumerate_strategies(const StrategyContext& ctx,
                                                     const graph::Op& op, bool reduce_scatter);

/// Every valid layout of a source value (parameter, optimizer state, data input), same order
/// rule. Compute and communication are 0; memory is the tile size.
std::vector<Strategy> enumerate_source_strategies(const StrategyContext& ctx, ValueId value);

/// The strategy of `op` that reads input `input` in `spec` as far as the op allows: dims the op
/// cannot split are gathered first, and the cost of that resharding is added to communication.
Expected<Strategy> follow_strategy(const StrategyContext& ctx, const graph::Op& op,
                                   const IterSpace& space, size_t input,
                                   const mesh::ShardingSpec& spec);

}  // namespace meshpipe::planner

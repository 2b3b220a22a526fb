// Sharding strategies of one op on a 2-D logical mesh. A strategy assigns mesh axes to the op's
// iteration dims (iteration_space.h); from that follow the specs it needs for its inputs, the
// specs of its outputs, its per-device compute, the collectives that resolve partial sums, and
// its memory. Enumeration lists every valid assignment; following derives one strategy from an
// operand's spec (ALPA.md §1.5).
#pragma once

#include <string>
#include <vector>

#include "graph/graph.h"
#include "mesh/resharding.h"
#include "mesh/sharding.h"
#include "planner/cost_model.h"
#include "planner/iteration_space.h"

namespace meshpipe::planner {

/// How outputs holding partial sums are resolved.
enum class PartialResolution : uint8_t {
  kAllReduce,      ///< everyone gets the sum (the output keeps its spec)
  kReduceScatter,  ///< each device keeps a chunk of the sum along the first free output dim
};

/// A collective that completes an output holding partial sums after the local computation.
struct OutputResolution {
  size_t output = 0;                                             ///< output index
  mesh::CollectiveKind kind = mesh::CollectiveKind::kAllReduce;  ///< all-reduce or reduce-scatter
  int axis = 0;                                                  ///< mesh axis whose group sums
  int64_t dim = -1;  ///< reduce-scatter: the output dim that gets split over `axis`
};

/// What the runtime needs to re-create an op's strategy: the iteration-dim assignment, how
/// partial sums are resolved, and, for a ZeRO-2 optimizer update, the mesh axis over which the
/// update runs on a chunk before the new parameter is all-gathered (-1: none).
struct OpLayout {
  std::vector<mesh::DimSharding> iter;
  PartialResolution resolution = PartialResolution::kAllReduce;
  int zero_axis = -1;
  friend bool operator==(const OpLayout&, const OpLayout&) = default;
};

/// "S0,R,S1", "S0,R,S1 reduce-scatter", "S0,R zero-axis 1", "scalar" (no iteration dims).
std::string layout_to_string(const OpLayout& layout);
/// Parses layout_to_string's format.
Expected<OpLayout> parse_layout(const std::string& text);

/// One strategy of an op (or of a source value).
struct Strategy {
  std::string name;                           ///< "S0,R,S1 = S0,R,R x R,S1 | all-reduce@1"
  std::vector<mesh::DimSharding> iter;        ///< per iteration dim
  std::vector<mesh::ShardingSpec> inputs;     ///< spec each input must arrive in
  std::vector<mesh::ShardingSpec> outputs;    ///< spec of each output (never partial)
  double compute = 0.0;                       ///< seconds on one device
  double communication = 0.0;                 ///< seconds of collectives inside the op
  double memory = 0.0;                        ///< bytes of this device's output tiles
  bool resolves_partial_sums = false;         ///< some output needed a collective to be complete
  std::vector<OutputResolution> resolutions;  ///< those collectives, in order
  PartialResolution resolution = PartialResolution::kAllReduce;  ///< as requested
  int zero_axis = -1;  ///< ZeRO-2 update chunk axis (set by the sharding pass), else -1

  /// The layout that re-creates this strategy with make_strategy.
  OpLayout layout() const { return {iter, resolution, zero_axis}; }
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

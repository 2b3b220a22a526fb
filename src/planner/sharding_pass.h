// The intra-operator pass: for one stage of a training graph (a layer range, forward + backward +
// update ops) on one 2-D logical mesh, choose the sharding of every op by an ILP
// (docs/algorithms.md §1).
//
// Pipeline: iteration spaces -> strategies per op -> groups (followers share their operand's
// decision, docs/algorithms.md §1.5) -> IlpProblem (nodes = groups, edges = resharding between
// groups, memory rows at dot/conv liveness points) -> solve_ilp -> decode to a ShardingPlan.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/units.h"
#include "graph/graph.h"
#include "mesh/sharding.h"
#include "planner/cost_model.h"
#include "planner/ilp.h"
#include "planner/strategy.h"

namespace meshpipe::planner {

/// Options of the intra-op pass.
struct ShardingOptions {
  int32_t first_layer = -1;  ///< stage = ops tagged first_layer..last_layer; -1: all
  int32_t last_layer = -1;
  double memory_budget = -1.0;  ///< bytes per device for (c); <= 0: unconstrained
  /// ZeRO-style: gradients may be reduce-scattered, and a parameter may keep its optimizer
  /// state (and gradient) sharded over a mesh axis while the parameter stays whole (ZeRO-2);
  /// docs/algorithms.md §1.6 (prefer_reduce_scatter).
  bool prefer_reduce_scatter = false;
  /// Data inputs arrive split along their batch dim (dim 0) over every mesh axis whose size
  /// divides it, as a data loader hands each device its slice (Alpa's input layout). Off: the
  /// ILP may also choose other layouts for them, replication included.
  bool batch_split_inputs = true;
  /// Ops that carry the data batch keep it on mesh axis 0 (alone or with axis 1), Alpa's
  /// force_batch_dim_to_mesh_dim = 0: axis 0 is the data-parallel axis of a 2-D logical mesh.
  /// kAuto applies it when both mesh axes are larger than 1.
  enum class ForceBatch : uint8_t { kAuto, kOn, kOff };
  ForceBatch force_batch_to_axis0 = ForceBatch::kAuto;
  /// Micro-batches per training step (gradient accumulation): gradient synchronisation and
  /// optimizer updates happen once per step, so their costs count 1 / micro_batches per
  /// micro-batch (Alpa divides gradient all-reduce costs the same way).
  int64_t micro_batches = 1;
  /// Restricts parameter layouts (for baselines): kFree lets the ILP choose; kReplicated keeps
  /// every parameter whole (data parallelism); kZero2 keeps parameters whole and shards their
  /// gradient and optimizer state over mesh axis 0 (needs prefer_reduce_scatter); kZero3 shards
  /// parameters (and so their state) over axis 0 along the first divisible dim.
  enum class ParameterMode : uint8_t { kFree, kReplicated, kZero2, kZero3 };
  ParameterMode parameter_mode = ParameterMode::kFree;
  /// Activations and gradients that cross the stage boundary use one canonical layout: the
  /// batch dim split over mesh axis 0 when it divides, everything else whole (Megatron's layout
  /// between blocks). Values entering the stage arrive in it; values leaving are converted to it
  /// inside the stage, at a cost. Stages composed from separately solved pieces then agree.
  bool canonical_boundaries = false;
  SolveOptions solver;

  Status validate() const;
};

/// The decision for one op.
struct OpDecision {
  OpId op;
  std::string strategy;        ///< e.g. "S0,R,S1 = S0,R,R x R,S1"
  OpLayout layout;             ///< what re-creates the strategy (runtime lowering)
  double compute = 0.0;        ///< seconds
  double communication = 0.0;  ///< seconds (collectives inside the op)
};

/// Sizes and timing of the ILP that produced a plan.
struct IlpStats {
  int64_t ops = 0;    ///< ops in the stage
  int64_t nodes = 0;  ///< ILP nodes after merging followers
  int64_t edges = 0;
  int64_t variables = 0;
  int64_t constraints = 0;
  double solve_seconds = 0.0;
  std::string method;
  bool optimal = false;
};

/// The result of the intra-op pass for one stage on one mesh.
struct ShardingPlan {
  mesh::LogicalMesh mesh;
  std::map<ValueId, mesh::ShardingSpec> specs;  ///< every value the stage reads or writes
  std::vector<OpDecision> ops;                  ///< the stage's ops, in op order
  double compute_seconds = 0.0;
  double communication_seconds = 0.0;  ///< collectives inside ops
  double resharding_seconds = 0.0;     ///< between ops
  double total_seconds = 0.0;          ///< the ILP objective
  Bytes persistent_memory;             ///< parameters + optimizer states per device
  /// Parameter gradients as the runtime accumulates them over micro-batches (live from their
  /// production to the update).
  Bytes gradient_memory;
  /// Per micro-batch: what the forward leaves for the backward (values produced in the stage).
  Bytes stash_memory;
  /// Persistent values the forward reads in another spec than stored (ZeRO-3 gathers): with
  /// recomputation they are gathered again in the backward and live through it.
  Bytes forward_parameter_copies;
  /// persistent + the peak of live activations, resharded copies and gradients over one
  /// micro-batch's forward, backward and update (with several micro-batches every accumulator
  /// counts all along, with one each gradient from its production on)
  Bytes peak_memory;
  /// The peak of the step's first backward of this stage, when the accumulators are allocated as
  /// their gradients arrive (persistent included); peak_memory counts them all along. Equal to
  /// peak_memory with one micro-batch.
  Bytes first_backward_memory;
  /// peak_memory, first_backward_memory and stash_memory when the stage recomputes its forward
  /// before its backward (keeping only what other units read, and the data inputs).
  Bytes recompute_peak_memory;
  Bytes recompute_first_backward_memory;
  Bytes recompute_stash_memory;
  IlpStats stats;
};

/// Runs the pass. Errors: an op with no valid strategy (named), an infeasible memory budget
/// (the message names the memory constraint), or a solver failure.
Expected<ShardingPlan> shard_stage(const graph::Graph& g, const mesh::LogicalMesh& mesh,
                                   const CostModel& cost, const ShardingOptions& options);

}  // namespace meshpipe::planner

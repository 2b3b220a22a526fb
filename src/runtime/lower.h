// Lowering a Plan to per-device instruction programs (runtime/program.h). Each stage's ops run
// on every device of its submesh on local tiles (runtime/local_op.h); values are resharded
// between ops by collectives inside the mesh (mesh/resharding.h) and cross between stages as
// load-balanced pieces (mesh/cross_mesh.h); the stages' forward and backward tasks are ordered
// by the pipeline schedule (GPipe or 1F1B) over the plan's micro-batches; parameter gradients
// are accumulated over micro-batches with their synchronisation (the collectives that resolve
// their partial sums) deferred to after the last micro-batch, then averaged and fed to the
// optimizer updates, which write the persistent parameters and states in place.
#pragma once

#include <optional>
#include <string>

#include "core/status.h"
#include "graph/graph.h"
#include "planner/plan.h"
#include "runtime/program.h"

namespace meshpipe::runtime {

/// Options of lower().
struct LowerOptions {
  std::optional<planner::Schedule> schedule;  ///< empty: the plan's
  bool local_allgather = true;  ///< cross-mesh: each byte crosses once, then all-gather
  bool defer_grad_sync = true;  ///< gradient collectives once per step, not per micro-batch
  /// Consecutive fp32 all-reduces along one mesh axis (the gradient synchronisation after the
  /// last micro-batch) run as one all-reduce of a packed buffer of at most this many bytes
  /// (fuse_all_reduces in program.h); 0: every all-reduce on its own.
  int64_t fuse_all_reduce_bytes = int64_t{32} << 20;
  Status validate() const;
};

/// Lowers `plan` for the training graph `g` (one micro-batch of forward, backward and optimizer
/// update, the graph the plan was made for). The plan is bound to the graph first
/// (planner::bind_plan); each op's layout gives its sharding through shard::shard_op, so the
/// planner's search is never re-run. A batch norm whose batch is split over mesh axes becomes
/// its pieces with explicit all-reduce instructions between them. Errors: a plan made for
/// another graph (the fingerprints differ), an op without a layout in its stage, a layout the
/// op cannot take.
Expected<Program> lower(const planner::Plan& plan, const graph::Graph& g,
                        const LowerOptions& options = {});

/// The order of one stage's tasks: (phase, micro-batch) with phase kForward or kBackward.
/// GPipe: every forward, then every backward; 1F1B: stage s of n warms up with min(n-s-1, m)
/// forwards, then alternates forward and backward, then cools down (docs/algorithms.md §3.2).
std::vector<std::pair<Phase, int32_t>> stage_schedule(planner::Schedule schedule, int32_t stage,
                                                      int32_t stages, int32_t micro_batches);

}  // namespace meshpipe::runtime

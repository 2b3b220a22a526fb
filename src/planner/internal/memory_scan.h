// The planner's memory model of one stage's micro-batch (docs/algorithms.md §2.5): which
// buffers the lowering (runtime/lower.cc) allocates for the chosen strategies and how long they
// live, scanned in op order. Internal to planner/: used by the intra-op pass (sharding_pass.cc)
// to report a ShardingPlan's memory.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "graph/graph.h"
#include "mesh/device_mesh.h"
#include "planner/cost_model.h"
#include "planner/sharding_pass.h"
#include "planner/strategy.h"

namespace meshpipe::planner::internal {

// What one micro-batch of the stage holds, buffer by buffer as the lowering allocates them
// (runtime/lower.cc): every value in the spec its producer resolves it to, from its production
// to its last reader; a copy resharded for readers that want another spec from its first to its
// last such reader (a persistent value's copy, e.g. a ZeRO-3 gathered parameter, per phase);
// updated parameters and optimizer states in place (no new buffer); parameter gradients in
// their accumulators (`gradients`, live from their production to the update: the lowering keeps
// them across micro-batches), plus, with several micro-batches, each micro-batch's gradient
// while it is added. `stash`: what is still live after the last forward op (read by backward),
// values produced in other stages excluded (the stage DP adds those it receives; data inputs
// count).
struct MemoryScan {
  // Largest live non-persistent bytes; with several micro-batches the accumulators are
  // excluded (live all step), with one they count from their production on.
  int64_t peak = 0;
  // The same peak while the first micro-batch's backward allocates the accumulators (those
  // produced so far count, with the gradient being added).
  int64_t first_peak = 0;
  int64_t stash = 0;
  int64_t gradients = 0;
  int64_t forward_copies = 0;  // persistent values resharded for the forward (ZeRO-3 gathers)
  // The same when the stage recomputes its forward in the backward: `stash` is then what its
  // forward keeps (what other units read, and the data inputs).
  int64_t recompute_peak = 0;
  int64_t recompute_first_peak = 0;
  int64_t recompute_stash = 0;
};

/// What the scan needs of the stage: its graph, mesh, cost model (kernel scratch), micro-batch
/// count, ops (sorted ids), parameter gradients (values read by update ops, and the pieces of
/// gradient sums) and the gradient sums of two pieces (graph::gradient_piece_sums: the runtime
/// adds the pieces' accumulators after the synchronisation, so the sum has no buffer of its own).
struct MemoryScanInput {
  const graph::Graph& g;
  const mesh::LogicalMesh& mesh;
  const CostModel& cost;
  int64_t micro_batches = 1;
  const std::vector<OpId>& ops;
  const std::set<ValueId>& gradient_values;
  const std::set<OpId>& piece_sums;
};

/// The memory of one micro-batch of the stage under the chosen strategy of every op.
MemoryScan scan_memory(const MemoryScanInput& in, const ShardingPlan& plan,
                       const std::map<OpId, const Strategy*>& chosen);

}  // namespace meshpipe::planner::internal

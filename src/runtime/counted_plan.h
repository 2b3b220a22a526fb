// Plans whose memory is counted, not only estimated: the planner's memory model (planner/
// memory_scan.cc) prices every candidate stage during the search, and the plan it returns is
// then lowered (in compact form, runtime/compact_program.h) and its peak per device counted the
// way the simulator and the runtime's buffer pool hold it (runtime::peak_memory). The count
// replaces the estimate in the plan (the estimate is kept beside it), so the memory a plan
// promises is what a run of it holds; a plan whose count does not fit is planned again with
// less memory promised to the search, and never returned.
#pragma once

#include "core/status.h"
#include "graph/graph.h"
#include "mesh/cluster.h"
#include "planner/cost_model.h"
#include "planner/plan.h"
#include "planner/planner.h"
#include "planner/sharding_cache.h"

namespace meshpipe::runtime {

/// Lowers `plan` for `g` (its training graph, one micro-batch) and writes each stage's counted
/// peak (the largest over its devices) into StageMemory::peak, the model's estimate into
/// StageMemory::estimated; Plan::max_memory_per_device follows. Errors: those of lowering.
Status count_plan_memory(planner::Plan& plan, const graph::Graph& g);

/// planner::make_plan with the returned plan's memory counted (count_plan_memory). When a stage's
/// count exceeds options.profile.memory_fraction of a device, the search runs again with the
/// fraction lowered by the overshoot, up to 3 times; then the error names the stage. `g` is the
/// graph make_plan takes (the plan's own micro-batch size comes from
/// options.graph_for_micro_batch when it differs). The plan's planning times (Plan::times:
/// phases, total, ILPs solved and reused) add up every search made; the step times compared are
/// those of the last.
Expected<planner::Plan> make_counted_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                          const planner::CostModel& cost,
                                          const planner::PlannerOptions& options,
                                          planner::ShardingCache* cache = nullptr);

}  // namespace meshpipe::runtime

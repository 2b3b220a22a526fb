// A plan bound to the training graph it was made for. A Plan keys its layouts and specs by op
// and value names, so that a plan file can be read and explained without the model; binding
// resolves them once, against the graph, into values keyed by ids: each op's stage and layout,
// each stage's value specs. What the runtime's lowering reads; a plan that does not fit the
// graph is refused here, naming what differs.
#pragma once

#include <map>
#include <vector>

#include "core/ids.h"
#include "core/status.h"
#include "graph/graph.h"
#include "mesh/sharding.h"
#include "planner/plan.h"
#include "shard/op_layout.h"

namespace meshpipe::planner {

/// A plan's layouts and specs by id.
struct PlanBinding {
  std::vector<int32_t> stage_of_op;        ///< by op index: the stage that runs it
  std::vector<shard::OpLayout> op_layout;  ///< by op index
  /// Per stage: the spec recorded for each value (persistent values are stored in it).
  std::vector<std::map<ValueId, mesh::ShardingSpec>> value_specs;
};

/// Binds `plan` to `g`. Errors: another graph's plan (the fingerprints differ), an op_layers
/// list of another length, a layer no stage covers, an op without a layout in its stage, a
/// layout or spec for an op or value the graph does not have.
Expected<PlanBinding> bind_plan(const Plan& plan, const graph::Graph& g);

}  // namespace meshpipe::planner

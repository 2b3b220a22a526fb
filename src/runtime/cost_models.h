// The cost model a plan for a cluster is made with: the analytic model of the cluster's device
// (planner/cost_model.h), the scratch its kernels need while they run (kernels::
// kernel_workspace_bytes of the CPU column for CPU devices, of the CUDA column for GPUs: im2col
// columns, packed operands, sort buffers), which the planner's memory model then counts during
// each op, and the device interpreter's block rounding. The planner cannot see the kernels
// (docs/style.md rule 2); the runtime, which runs them, injects what they need.
#pragma once

#include <memory>

#include "mesh/cluster.h"
#include "planner/cost_model.h"

namespace meshpipe::runtime {

/// The analytic model of `cluster`'s device, or the profiled one when the cluster carries a
/// measured profile (ClusterSpec::profile, planner::ProfiledCostModel), with the scratch of the
/// kernels of its devices (the CPU's for the "cpu" kind, CUDA's for every other) and the
/// interpreter's block rounding: what `meshpipe plan` and `train` plan with.
std::unique_ptr<planner::CostModel> cost_model_for(const mesh::ClusterSpec& cluster);

}  // namespace meshpipe::runtime

// Plans whose memory is counted on their lowered programs (see counted_plan.h).
#include "runtime/counted_plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "planner/manual_plan.h"
#include "runtime/compact_program.h"
#include "runtime/simulator.h"

namespace meshpipe::runtime {

Status count_plan_memory(planner::Plan& plan, const graph::Graph& g) {
  auto program = lower_compact(plan, g);
  if (!program.has_value()) return program.status().with_context("counting the plan's memory");
  const std::vector<int64_t> peaks = peak_memory(*program, plan.cluster);
  plan.max_memory_per_device = 0;
  for (planner::StagePlan& s : plan.stages) {
    int64_t counted = 0;
    for (int32_t d : s.devices) {
      if (d >= 0 && static_cast<size_t>(d) < peaks.size()) {
        counted = std::max(counted, peaks[static_cast<size_t>(d)]);
      }
    }
    if (s.memory.estimated == 0) s.memory.estimated = s.memory.peak;
    s.memory.peak = counted;
    plan.max_memory_per_device = std::max(plan.max_memory_per_device, counted);
  }
  return Status::ok();
}

Expected<planner::Plan> make_counted_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                          const planner::CostModel& cost,
                                          const planner::PlannerOptions& options,
                                          planner::ShardingCache* cache) {
  planner::ShardingCache own;
  planner::ShardingCache& memo = cache != nullptr ? *cache : own;
  planner::PlannerOptions o = options;
  const double fraction = options.profile.memory_fraction;
  const double device = static_cast<double>(cluster.device.memory.value());
  constexpr int kTries = 4;
  Status fits = Status::ok();
  // The planning times of every search so far: a plan found on a later try reports them all.
  planner::PlanningTimes spent;
  for (int attempt = 0; attempt < kTries; ++attempt) {
    MP_ASSIGN_OR_RETURN(planner::Plan plan, planner::make_plan(g, cluster, cost, o, memo));
    spent.clustering += plan.times.clustering;
    spent.stage_costs += plan.times.stage_costs;
    spent.stage_dp += plan.times.stage_dp;
    spent.total += plan.times.total;
    spent.intra_op_solves += plan.times.intra_op_solves;
    spent.intra_op_reused += plan.times.intra_op_reused;
    plan.times.clustering = spent.clustering;
    plan.times.stage_costs = spent.stage_costs;
    plan.times.stage_dp = spent.stage_dp;
    plan.times.total = spent.total;
    plan.times.intra_op_solves = spent.intra_op_solves;
    plan.times.intra_op_reused = spent.intra_op_reused;
    MP_ASSIGN_OR_RETURN(graph::Graph own_graph,
                        planner::graph_for_micro_batch(g, o, plan.micro_batch));
    MP_RETURN_IF_ERROR(count_plan_memory(plan, own_graph));
    fits = planner::check_stage_memory(plan, fraction);
    if (fits.is_ok()) return plan;
    // Promise the search less by the count's overshoot of what the plan may use.
    const double over = static_cast<double>(plan.max_memory_per_device) / (fraction * device);
    o.profile.memory_fraction = o.profile.memory_fraction / over * 0.99;
    if (o.progress) {
      o.progress(fmt::format("memory counted {:.1f}% over: planning again with {:.3f} of a device",
                             100.0 * (over - 1.0), o.profile.memory_fraction),
                 attempt + 1, kTries);
    }
  }
  return fits.with_context(
      fmt::format("the plan's lowered program does not fit after {} searches with less memory "
                  "promised (counted, not estimated)",
                  kTries));
}

}  // namespace meshpipe::runtime

// Test helper: every plan kind (the planner's own, counted; every baseline) for a tiny model on
// cpu:1x4, the matrix the memory and compact-program tests walk.
#pragma once

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/planner.h"
#include "runtime/cost_models.h"
#include "runtime/counted_plan.h"

namespace meshpipe::runtime::testing {

/// make_counted_plan's plan ("meshpipe") and every baseline that has a plan, by name; with
/// `count_baselines` the baselines' memory is counted on their programs too.
inline std::vector<std::pair<std::string, planner::Plan>> every_plan_kind(
    const graph::Graph& g, const std::string& model, int64_t micro_batches,
    planner::Schedule schedule, planner::Recompute recompute, bool count_baselines) {
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  const auto cost = cost_model_for(*cl);
  planner::PlannerOptions po;
  po.model = model;
  po.micro_batches = micro_batches;
  po.schedule = schedule;
  po.profile.recompute = recompute;
  std::vector<std::pair<std::string, planner::Plan>> out;
  auto mine = make_counted_plan(g, *cl, *cost, po);
  if (!mine.has_value()) FAIL(mine.status().to_string());
  out.emplace_back("meshpipe", std::move(*mine));
  for (planner::BaselineResult& b : planner::run_baselines(g, *cl, *cost, po)) {
    if (!b.plan) continue;
    if (count_baselines) {
      const Status counted = count_plan_memory(*b.plan, g);
      if (!counted.is_ok()) FAIL(b.name << ": " << counted.to_string());
    }
    out.emplace_back(b.name, std::move(*b.plan));
  }
  return out;
}

}  // namespace meshpipe::runtime::testing

// Test helpers: a written-down plan (planner::grid_plan: data x tensor x pipeline parallel, a
// parameter layout) of a graph on a CPU cluster, and its lowered program; failures end the test
// with the error.
#pragma once

#include <catch2/catch.hpp>
#include <string>

#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/lower.h"

namespace meshpipe::runtime::testing {

inline planner::Plan grid_plan(const graph::Graph& g, int64_t micro_batches,
                               const planner::GridConfig& grid, int32_t layers = 4,
                               const std::string& cluster = "cpu:1x4") {
  auto cl = mesh::cluster_preset(cluster);
  REQUIRE(cl.has_value());
  planner::AnalyticCostModel cost(cl->device);
  planner::PlannerOptions po;
  po.clustering.num_layers = layers;
  auto p = planner::grid_plan(g, *cl, cost, po, micro_batches, grid);
  if (!p.has_value()) FAIL(p.status().to_string());
  return *p;
}

inline Program lowered(const planner::Plan& plan, const graph::Graph& g,
                       const LowerOptions& options = {}) {
  auto prog = lower(plan, g, options);
  if (!prog.has_value()) FAIL(prog.status().to_string());
  return std::move(*prog);
}

}  // namespace meshpipe::runtime::testing

// Activation recomputation is exact and saves memory: every zoo tiny model under every plan kind
// (data, tensor, pipeline, ZeRO-2/3, the planner's mixed plan), run with every stage recomputing
// and with none, takes the same steps (losses equal to float32 rounding over two steps, so the
// updated parameters agree too); recomputing stages keep less between forward and backward.
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "planner/planner.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

struct Steps {
  std::vector<double> losses;
  std::vector<int64_t> peaks;  // per device
};

Steps run_steps(const planner::Plan& plan, const std::string& model, int64_t micro_batch,
                int steps) {
  graph::TrainingGraph tg = testing::zoo_training_graph(model, micro_batch);
  auto prog = lower(plan, tg.graph);
  if (!prog.has_value()) FAIL(prog.status().to_string());
  auto run = InProcessRun::create(std::move(*prog), tg.graph);
  if (!run.has_value()) FAIL(run.status().to_string());
  REQUIRE((*run)->initialize(5).is_ok());
  graph::TrainingGraph whole = testing::zoo_training_graph(model, micro_batch * plan.micro_batches);
  auto data = SyntheticData::create(whole.graph, whole.inputs, 11);
  REQUIRE(data.has_value());
  Steps out;
  for (int s = 0; s < steps; ++s) {
    auto batches = split_micro_batches(whole.graph, data->next_batch(), (*run)->program().inputs,
                                       plan.micro_batches);
    REQUIRE(batches.has_value());
    auto r = (*run)->step(*batches);
    if (!r.has_value()) FAIL(r.status().to_string());
    out.losses.push_back(r->loss);
    out.peaks = r->peak_bytes;
  }
  return out;
}

TEST_CASE("recomputation takes the same steps as stashing, on every tiny model and plan kind",
          "[runtime][recompute]") {
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  planner::AnalyticCostModel cost(cl->device);
  int plans = 0;
  int pipelined = 0;
  for (const auto& [model, micro_batch] : std::vector<std::pair<std::string, int64_t>>{
           {"gpt-tiny", 4}, {"moe-tiny", 4}, {"mlp-tiny", 4}, {"wresnet-tiny", 2}}) {
    graph::TrainingGraph tg = testing::zoo_training_graph(model, micro_batch);
    planner::PlannerOptions po;
    po.model = model;
    po.micro_batches = 4;
    po.profile.recompute = planner::Recompute::kOff;
    std::vector<std::pair<std::string, planner::Plan>> kinds;
    auto mine = planner::make_plan(tg.graph, *cl, cost, po);
    if (!mine.has_value()) FAIL(mine.status().to_string());
    kinds.emplace_back("meshpipe", *mine);
    for (planner::BaselineResult& b : planner::run_baselines(tg.graph, *cl, cost, po)) {
      if (b.plan) kinds.emplace_back(b.name, std::move(*b.plan));
    }
    for (const auto& [kind, plan] : kinds) {
      INFO(model << " " << kind);
      for (const planner::StagePlan& s : plan.stages) REQUIRE_FALSE(s.recompute);
      planner::Plan again = plan;
      for (planner::StagePlan& s : again.stages) s.recompute = true;
      const Steps a = run_steps(plan, model, micro_batch, 2);
      const Steps b = run_steps(again, model, micro_batch, 2);
      REQUIRE(a.losses.size() == b.losses.size());
      for (size_t k = 0; k < a.losses.size(); ++k) {
        INFO("step " << k << ": stashing " << a.losses[k] << ", recomputing " << b.losses[k]);
        CHECK(std::abs(a.losses[k] - b.losses[k]) <= 1e-6 * std::abs(a.losses[k]));
      }
      // The first stage keeps the most micro-batches in flight: with several in flight,
      // recomputing needs less memory there (with one, it only adds the recomputed working set).
      const int32_t d0 = plan.stages[0].devices[0];
      if (plan.stages[0].in_flight > 1) {
        ++pipelined;
        CHECK(b.peaks[size_t(d0)] < a.peaks[size_t(d0)]);
      }
      ++plans;
    }
  }
  CHECK(plans >= 30);
  CHECK(pipelined >= 8);
}

}  // namespace
}  // namespace meshpipe::runtime

namespace meshpipe::runtime {
namespace {

TEST_CASE("the stage DP recomputes in some stages only when memory is tight, and that plan trains",
          "[runtime][recompute]") {
  // gpt-tiny in 4 clustered layers, 8 micro-batches of 2 on cpu:1x4: as the device shrinks, the
  // stages that need the most memory (early stages hold more micro-batches in flight) recompute
  // first.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 2);
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  planner::AnalyticCostModel cost(cl->device);
  planner::PlannerOptions po;
  po.model = "gpt-tiny";
  po.micro_batches = 8;
  po.clustering.num_layers = 4;
  po.profile.only_submeshes = {{1, 1}};  // a pipeline of single-device stages
  po.profile.recompute = planner::Recompute::kOff;
  auto roomy = planner::make_plan(tg.graph, *cl, cost, po);
  if (!roomy.has_value()) FAIL(roomy.status().to_string());
  REQUIRE(roomy->stages.size() == 4);
  std::optional<planner::Plan> mixed;
  po.profile.recompute = planner::Recompute::kAuto;
  for (double f = 1.0; f > 0.2 && !mixed; f -= 0.02) {
    mesh::ClusterSpec small = *cl;
    small.device.memory = Bytes(static_cast<int64_t>(
        f * static_cast<double>(roomy->max_memory_per_device) / po.profile.memory_fraction));
    auto p = planner::make_plan(tg.graph, small, cost, po);
    if (!p.has_value()) continue;
    int on = 0;
    for (const planner::StagePlan& s : p->stages) on += s.recompute ? 1 : 0;
    INFO("memory x" << f << ": " << on << " of " << p->stages.size() << " stages recompute");
    for (const planner::StagePlan& s : p->stages) {
      CHECK(static_cast<double>(s.memory.peak) <=
            po.profile.memory_fraction * static_cast<double>(small.device.memory.value()));
    }
    if (on > 0 && on < static_cast<int>(p->stages.size())) mixed = *p;
  }
  REQUIRE(mixed.has_value());
  // The mixed plan takes the same steps as the same stages without recomputation, in less
  // memory where it recomputes.
  planner::Plan stashing = *mixed;
  for (planner::StagePlan& s : stashing.stages) s.recompute = false;
  const Steps a = run_steps(stashing, "gpt-tiny", 2, 2);
  const Steps b = run_steps(*mixed, "gpt-tiny", 2, 2);
  for (size_t k = 0; k < a.losses.size(); ++k) {
    CHECK(std::abs(a.losses[k] - b.losses[k]) <= 1e-6 * std::abs(a.losses[k]));
  }
  // The stages that recompute are those that need the most memory without it (early stages hold
  // more micro-batches in flight; a layer's own size counts too).
  int64_t most_kept = 0;
  int64_t least_recomputed = std::numeric_limits<int64_t>::max();
  for (const planner::StagePlan& s : mixed->stages) {
    const size_t d = static_cast<size_t>(s.devices[0]);
    INFO("device " << d << " recompute " << s.recompute << ": stashing " << a.peaks[d] << ", mixed "
                   << b.peaks[d]);
    if (s.recompute && s.in_flight > 1) CHECK(b.peaks[d] < a.peaks[d]);
    if (!s.recompute) CHECK(b.peaks[d] == a.peaks[d]);
    if (s.recompute) {
      least_recomputed = std::min(least_recomputed, a.peaks[d]);
    } else {
      most_kept = std::max(most_kept, a.peaks[d]);
    }
  }
  CHECK(least_recomputed >= most_kept);
}

}  // namespace
}  // namespace meshpipe::runtime

// Counted plans (runtime/counted_plan.h): the plan make_counted_plan returns has each stage's
// peak counted on its lowered program (the simulator's count, independently recomputed here),
// and never a count above what a stage may use, even when the memory model the search uses
// underestimates: then the search runs again with less memory promised, or the error says so.
#include "runtime/counted_plan.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "mesh/cluster.h"
#include "planner/planner.h"
#include "runtime/cost_models.h"
#include "runtime/lower.h"
#include "runtime/simulator.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

// The cluster's own model, but every buffer estimated at 60% of its size: a memory model that
// underestimates (the counted peak does not use it).
class Underestimating : public planner::CostModel {
 public:
  explicit Underestimating(const mesh::ClusterSpec& c) : base_(cost_model_for(c)) {}
  Seconds collective(mesh::CollectiveKind kind, int64_t bytes, const mesh::LogicalMesh& mesh,
                     int axis) const override {
    return base_->collective(kind, bytes, mesh, axis);
  }
  Seconds compute(const planner::ComputeWork& work) const override { return base_->compute(work); }
  int64_t allocation_bytes(int64_t bytes) const override {
    return base_->allocation_bytes(bytes) * 3 / 5;
  }

 private:
  std::unique_ptr<planner::CostModel> base_;
};

TEST_CASE("a counted plan's peaks are its program's and never above what a stage may use",
          "[runtime][counted]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  auto base = mesh::cluster_preset("cpu:1x4");
  REQUIRE(base.has_value());
  // The honest count of the planner's plan with memory to spare.
  const auto honest = cost_model_for(*base);
  planner::PlannerOptions po;
  po.model = "gpt-tiny";
  po.micro_batches = 4;
  auto roomy = make_counted_plan(tg.graph, *base, *honest, po);
  REQUIRE(roomy.has_value());
  const int64_t roomy_peak = roomy->max_memory_per_device;
  REQUIRE(roomy_peak > 0);
  int fitted = 0, replanned = 0, refused = 0;
  // Devices from roomy to far too small, planned with the underestimating model.
  for (double share : {2.0, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2}) {
    mesh::ClusterSpec cl = *base;
    cl.device.memory = Bytes(static_cast<int64_t>(share * static_cast<double>(roomy_peak) / 0.9));
    Underestimating lying(cl);
    planner::PlannerOptions o = po;
    bool again = false;
    o.progress = [&](const std::string& phase, int64_t, int64_t) {
      if (phase.rfind("memory", 0) == 0) again = true;
    };
    INFO("device memory " << cl.device.memory.value() << " bytes");
    auto plan = make_counted_plan(tg.graph, cl, lying, o);
    replanned += again ? 1 : 0;
    if (!plan.has_value()) {
      ++refused;
      CHECK((plan.status().code() == Errc::kInfeasible ||
             plan.status().message().find("fit") != std::string::npos));
      continue;
    }
    ++fitted;
    if (again) {
      // The planning times count every search: more sub-problems than the first search alone.
      auto first = planner::make_plan(tg.graph, cl, lying, po);
      REQUIRE(first.has_value());
      CHECK(plan->times.intra_op_solves + plan->times.intra_op_reused >
            first->times.intra_op_solves + first->times.intra_op_reused);
    }
    const double limit = 0.9 * static_cast<double>(cl.device.memory.value());
    CHECK(static_cast<double>(plan->max_memory_per_device) <= limit);
    // Each stage's peak is the count of its lowered program's devices, and the model's
    // estimate is kept beside it.
    auto prog = lower(*plan, tg.graph);
    REQUIRE(prog.has_value());
    auto sim = simulate(*prog, cl);
    REQUIRE(sim.has_value());
    for (const planner::StagePlan& s : plan->stages) {
      int64_t most = 0;
      for (const SimulatedDevice& d : sim->devices) {
        if (d.stage == static_cast<int32_t>(&s - plan->stages.data())) {
          most = std::max(most, d.peak_bytes);
        }
      }
      CHECK(s.memory.peak == most);
      CHECK(s.memory.estimated > 0);
    }
  }
  CHECK(fitted >= 3);
  CHECK(replanned >= 1);  // the underestimate was caught and the search ran again
  CHECK(refused >= 1);    // and a device too small is an error, not a plan that does not fit
}

}  // namespace
}  // namespace meshpipe::runtime

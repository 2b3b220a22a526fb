// Tests of planner/plan_binding.h: bind_plan on a real plan of gpt-tiny (every op in the stage
// whose layer range holds its layer, with the layout that stage recorded; specs by value id),
// and the errors for plans that do not fit the graph, each naming the op or value.
#include "planner/plan_binding.h"

#include <catch2/catch.hpp>
#include <string>

#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "planner/baselines.h"
#include "planner/planner.h"

namespace meshpipe::planner {
namespace {

graph::Graph gpt_tiny(int64_t batch) {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  auto fg = graph::models::build_model(*spec, {.batch = batch, .dtype = {}});
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(tg->graph);
}

struct Fixture {
  graph::Graph g = gpt_tiny(4);
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x2");
  Plan plan;
  Plan pipeline;  // two stages of one device each (a fixed grid), for stage boundaries
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    AnalyticCostModel cost(x.cluster.device);
    PlannerOptions o;
    o.model = "gpt-tiny";
    o.micro_batches = 2;
    o.global_batch = 8;
    auto plan = make_plan(x.g, x.cluster, cost, o);
    INFO(plan.status().to_string());
    REQUIRE(plan.has_value());
    x.plan = *plan;
    auto pipe = grid_plan(x.g, x.cluster, cost, o, 2, GridConfig{1, 1, 2, {}});
    INFO(pipe.status().to_string());
    REQUIRE(pipe.has_value());
    x.pipeline = *pipe;
    return x;
  }();
  return f;
}

// Checks the binding against the plan it came from, op by op and value by value.
void check_binding(const Plan& plan, const graph::Graph& g, const PlanBinding& b) {
  REQUIRE(b.stage_of_op.size() == static_cast<size_t>(g.num_ops()));
  REQUIRE(b.op_layout.size() == static_cast<size_t>(g.num_ops()));
  REQUIRE(b.value_specs.size() == plan.stages.size());
  for (size_t i = 0; i < b.stage_of_op.size(); ++i) {
    const graph::Op& op = g.ops()[i];
    INFO("op " << op.name << " in layer " << plan.op_layers[i]);
    const int32_t s = b.stage_of_op[i];
    REQUIRE((s >= 0 && s < static_cast<int32_t>(plan.stages.size())));
    const StagePlan& sp = plan.stages[static_cast<size_t>(s)];
    CHECK(sp.first_layer <= plan.op_layers[i]);
    CHECK(plan.op_layers[i] <= sp.last_layer);
    REQUIRE(sp.op_layouts.count(op.name) == 1);
    CHECK(b.op_layout[i] == sp.op_layouts.at(op.name));
  }
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    CHECK(b.value_specs[s].size() == plan.stages[s].value_specs.size());
    for (const auto& [id, spec] : b.value_specs[s]) {
      const std::string& name = g.value(id).name;
      REQUIRE(plan.stages[s].value_specs.count(name) == 1);
      CHECK(plan.stages[s].value_specs.at(name) == spec);
    }
  }
}

TEST_CASE("a plan from make_plan binds to its graph, op by op and value by value",
          "[planner][binding]") {
  const Fixture& f = fixture();
  REQUIRE(f.plan.validate().is_ok());
  auto b = bind_plan(f.plan, f.g);
  INFO(b.status().to_string());
  REQUIRE(b.has_value());
  check_binding(f.plan, f.g, *b);
}

TEST_CASE("a two-stage plan puts each op in the stage holding its layer", "[planner][binding]") {
  const Fixture& f = fixture();
  REQUIRE(f.pipeline.stages.size() == 2);
  auto b = bind_plan(f.pipeline, f.g);
  INFO(b.status().to_string());
  REQUIRE(b.has_value());
  check_binding(f.pipeline, f.g, *b);
  // Both stages run something; the first op (a forward op of layer 0) runs on stage 0 and the
  // ops of the last layer on stage 1.
  int first = 0;
  int second = 0;
  for (int32_t s : b->stage_of_op) (s == 0 ? first : second) += 1;
  CHECK(first > 0);
  CHECK(second > 0);
  CHECK(b->stage_of_op.front() == 0);
  const int32_t last_layer = f.pipeline.stages[1].last_layer;
  for (size_t i = 0; i < b->stage_of_op.size(); ++i) {
    if (f.pipeline.op_layers[i] == last_layer) CHECK(b->stage_of_op[i] == 1);
    if (f.pipeline.op_layers[i] < f.pipeline.stages[1].first_layer) CHECK(b->stage_of_op[i] == 0);
    // A one-device stage splits nothing: every iteration dim of every layout is whole.
    for (mesh::DimSharding d : b->op_layout[i].iter) CHECK(d == mesh::DimSharding::kR);
  }
}

TEST_CASE("a plan for another graph is refused by its fingerprint", "[planner][binding]") {
  const Fixture& f = fixture();
  const graph::Graph other = gpt_tiny(2);  // another batch: another training graph
  auto b = bind_plan(f.plan, other);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().code() == Errc::kInvalidArgument);
  const std::string m = b.status().message();
  CHECK(m.find("the plan was made for another training graph") != std::string::npos);
  CHECK(m.find("fingerprint " + f.plan.graph_fingerprint + " in the plan") != std::string::npos);
  CHECK(m.find("model 'gpt-tiny'") != std::string::npos);

  Plan tampered = f.plan;
  tampered.graph_fingerprint = "0123456789abcdef";
  CHECK(bind_plan(tampered, f.g)
            .status()
            .message()
            .find("fingerprint 0123456789abcdef in the "
                  "plan") != std::string::npos);
}

TEST_CASE("op_layers of the wrong length is an error naming both counts", "[planner][binding]") {
  const Fixture& f = fixture();
  Plan p = f.plan;
  p.op_layers.pop_back();
  auto b = bind_plan(p, f.g);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().message() == "plan field 'op_layers' has " + std::to_string(f.g.num_ops() - 1) +
                                    " entries, the training graph " +
                                    std::to_string(f.g.num_ops()) + " ops");
}

TEST_CASE("an op in a layer no stage covers is named", "[planner][binding]") {
  const Fixture& f = fixture();
  Plan p = f.plan;
  p.op_layers[3] = p.stages.back().last_layer + 5;
  auto b = bind_plan(p, f.g);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().message() == "op '" + f.g.ops()[3].name + "' is in layer " +
                                    std::to_string(p.op_layers[3]) + ", which no stage covers");
}

TEST_CASE("an op without a layout in its stage is named", "[planner][binding]") {
  const Fixture& f = fixture();
  Plan p = f.pipeline;
  const graph::Op& last = f.g.ops().back();
  REQUIRE(p.stages[1].op_layouts.erase(last.name) == 1);
  auto b = bind_plan(p, f.g);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().code() == Errc::kInvalidArgument);
  CHECK(b.status().message() == "stage 1 has no layout for op '" + last.name + "'");
  // Stage 0 holding the layout does not help: the op belongs to stage 1.
  p.stages[0].op_layouts[last.name] = f.pipeline.stages[1].op_layouts.at(last.name);
  CHECK_FALSE(bind_plan(p, f.g).has_value());
}

TEST_CASE("a layout for an op the graph lacks is named with its stage", "[planner][binding]") {
  const Fixture& f = fixture();
  Plan p = f.pipeline;
  p.stages[1].op_layouts["layer9/ghost"] = shard::OpLayout{};
  auto b = bind_plan(p, f.g);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().message() ==
        "plan field 'stages[1].op_layouts' names op 'layer9/ghost', which the training graph "
        "does not have");
}

TEST_CASE("a spec for a value the graph lacks is named with its stage", "[planner][binding]") {
  const Fixture& f = fixture();
  Plan p = f.plan;
  p.stages[0].value_specs["no/such/value"] = mesh::ShardingSpec::replicated(2);
  auto b = bind_plan(p, f.g);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().code() == Errc::kInvalidArgument);
  CHECK(b.status().message() ==
        "plan field 'stages[0].value_specs' names value 'no/such/value', which the training "
        "graph does not have");
}

}  // namespace
}  // namespace meshpipe::planner

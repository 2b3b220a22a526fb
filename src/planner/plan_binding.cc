// bind_plan: a Plan's name-keyed layouts and specs resolved against its training graph.
#include "planner/plan_binding.h"

#include <fmt/format.h>

#include "planner/build_plan.h"

namespace meshpipe::planner {

Expected<PlanBinding> bind_plan(const Plan& plan, const graph::Graph& g) {
  const std::string fp = graph_fingerprint(g);
  if (!plan.graph_fingerprint.empty() && plan.graph_fingerprint != fp) {
    return make_error(Errc::kInvalidArgument,
                      "the plan was made for another training graph (fingerprint {} in the "
                      "plan, {} for model '{}'; another optimizer, batch or --precision changes "
                      "the graph, and `meshpipe plan` plans f32 or the model's own dtype only)",
                      plan.graph_fingerprint, fp, plan.model);
  }
  const size_t n = static_cast<size_t>(g.num_ops());
  if (plan.op_layers.size() != n) {
    return make_error(Errc::kInvalidArgument,
                      "plan field 'op_layers' has {} entries, the training graph {} ops",
                      plan.op_layers.size(), n);
  }
  PlanBinding b;
  b.stage_of_op.assign(n, -1);
  b.op_layout.resize(n);
  for (size_t i = 0; i < n; ++i) {
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      if (plan.op_layers[i] >= plan.stages[s].first_layer &&
          plan.op_layers[i] <= plan.stages[s].last_layer) {
        b.stage_of_op[i] = static_cast<int32_t>(s);
      }
    }
    const graph::Op& op = g.ops()[i];
    if (b.stage_of_op[i] < 0) {
      return make_error(Errc::kInvalidArgument, "op '{}' is in layer {}, which no stage covers",
                        op.name, plan.op_layers[i]);
    }
    const StagePlan& sp = plan.stages[static_cast<size_t>(b.stage_of_op[i])];
    auto it = sp.op_layouts.find(op.name);
    if (it == sp.op_layouts.end()) {
      return make_error(Errc::kInvalidArgument, "stage {} has no layout for op '{}'",
                        b.stage_of_op[i], op.name);
    }
    b.op_layout[i] = it->second;
  }

  std::map<std::string, OpId> op_ids;
  for (size_t i = 0; i < n; ++i) op_ids.emplace(g.ops()[i].name, OpId(static_cast<int32_t>(i)));
  std::map<std::string, ValueId> value_ids;
  for (int64_t v = 0; v < g.num_values(); ++v) {
    value_ids.emplace(g.values()[static_cast<size_t>(v)].name, ValueId(static_cast<int32_t>(v)));
  }
  b.value_specs.resize(plan.stages.size());
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const StagePlan& sp = plan.stages[s];
    for (const auto& [name, layout] : sp.op_layouts) {
      if (op_ids.count(name) == 0) {
        return make_error(Errc::kInvalidArgument,
                          "plan field 'stages[{}].op_layouts' names op '{}', which the training "
                          "graph does not have",
                          s, name);
      }
    }
    for (const auto& [name, spec] : sp.value_specs) {
      auto v = value_ids.find(name);
      if (v == value_ids.end()) {
        return make_error(Errc::kInvalidArgument,
                          "plan field 'stages[{}].value_specs' names value '{}', which the "
                          "training graph does not have",
                          s, name);
      }
      const Shape& shape = g.values()[v->second.index()].shape;
      MP_RETURN_IF_ERROR(
          mesh::validate_sharding(shape, spec, sp.mesh)
              .with_context(fmt::format("plan field 'stages[{}].value_specs['{}']' "
                                        "({} on a value of shape {})",
                                        s, name, spec.to_string(), shape.to_string())));
      b.value_specs[s].emplace(v->second, spec);
    }
  }
  return b;
}

}  // namespace meshpipe::planner

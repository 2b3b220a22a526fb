// Building the training step: backward pass and optimizer updates.
#include "graph/training_graph.h"

#include <fmt/format.h>

#include <map>

#include "graph/autodiff.h"

namespace meshpipe::graph {
namespace {

// The first forward op that reads `v` (invalid if none).
OpId first_forward_user(const Graph& g, ValueId v) {
  for (OpId id : g.users(v)) {
    if (g.op(id).phase == OpPhase::kForward) return id;
  }
  return OpId();
}

}  // namespace

Expected<TrainingGraph> make_training_graph(Graph forward, ValueId loss,
                                            const OptimizerConfig& optimizer) {
  MP_RETURN_IF_ERROR(optimizer.validate());
  TrainingGraph t;
  t.graph = std::move(forward);
  t.loss = loss;
  t.inputs = t.graph.values_with_role(ValueRole::kInput);
  Graph& g = t.graph;
  if (g.outputs().empty()) g.add_output(loss);

  MP_ASSIGN_OR_RETURN(auto grads, append_backward(g, loss));
  if (grads.empty()) {
    return make_error(Errc::kInvalidArgument, "the loss '{}' depends on no parameter",
                      g.value(loss).name);
  }

  std::map<int32_t, std::pair<ValueId, ValueId>> step_of_layer;  // layer -> (step, step + 1)
  for (const auto& [param, grad] : grads) {
    const std::string pname = g.value(param).name;
    const Shape shape = g.value(param).shape;
    const OpId user = first_forward_user(g, param);
    const int32_t layer = user.is_valid() ? g.op(user).layer : 0;
    OpAttrs a;
    a.lr = optimizer.lr;
    a.weight_decay = optimizer.weight_decay;
    std::vector<ValueId> inputs{param, grad};
    OpKind kind = OpKind::kSgdUpdate;
    std::vector<ValueId> states;
    if (optimizer.kind == OptimizerConfig::Kind::kSgd && optimizer.momentum > 0) {
      kind = OpKind::kSgdMomentumUpdate;
      a.momentum = optimizer.momentum;
      states.push_back(g.add_source(pname + "/momentum", shape, DType::kF32,
                                    ValueRole::kOptimizerState, InitSpec::zeros()));
    } else if (optimizer.kind == OptimizerConfig::Kind::kAdam) {
      kind = OpKind::kAdamUpdate;
      a.beta1 = optimizer.beta1;
      a.beta2 = optimizer.beta2;
      a.eps = optimizer.eps;
      states.push_back(g.add_source(pname + "/adam_m", shape, DType::kF32,
                                    ValueRole::kOptimizerState, InitSpec::zeros()));
      states.push_back(g.add_source(pname + "/adam_v", shape, DType::kF32,
                                    ValueRole::kOptimizerState, InitSpec::zeros()));
      auto it = step_of_layer.find(layer);
      if (it == step_of_layer.end()) {
        const std::string sname = fmt::format("layer{}/optimizer/step", layer);
        ValueId step = g.add_source(sname, Shape{}, DType::kF32, ValueRole::kOptimizerState,
                                    InitSpec::zeros());
        OpAttrs inc;
        inc.alpha = 1.0f;
        inc.beta = 1.0f;
        MP_ASSIGN_OR_RETURN(OpId op, g.add_op(OpKind::kScale, sname + "/increment", {step}, inc,
                                              layer, OpPhase::kUpdate, ValueRole::kUpdated, user));
        const ValueId next = g.op(op).outputs[0];
        g.add_alias(step, next);
        t.optimizer_states.push_back(step);
        it = step_of_layer.emplace(layer, std::make_pair(step, next)).first;
      }
      states.push_back(it->second.second);
    }
    for (ValueId s : states) inputs.push_back(s);
    MP_ASSIGN_OR_RETURN(OpId op, g.add_op(kind, pname + "/update", inputs, a, layer,
                                          OpPhase::kUpdate, ValueRole::kUpdated, user));
    const std::vector<ValueId> outs = g.op(op).outputs;
    g.add_alias(param, outs[0]);
    // Moment/momentum states are inputs 2.. (the shared step counter is aliased above).
    for (size_t i = 1; i < outs.size(); ++i) {
      g.add_alias(inputs[i + 1], outs[i]);
      t.optimizer_states.push_back(inputs[i + 1]);
    }
    t.parameters.push_back({param, grad, outs[0]});
  }
  MP_RETURN_IF_ERROR(g.validate());
  return t;
}

Expected<TrainingGraph> make_training_graph(ForwardGraph forward,
                                            const OptimizerConfig& optimizer) {
  std::vector<ValueId> inputs = forward.inputs;
  MP_ASSIGN_OR_RETURN(TrainingGraph t,
                      make_training_graph(std::move(forward.graph), forward.loss, optimizer));
  t.inputs = std::move(inputs);
  return t;
}

}  // namespace meshpipe::graph

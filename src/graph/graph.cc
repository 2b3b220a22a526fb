// Graph construction, queries and validation.
#include "graph/graph.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "graph/shape_inference.h"

namespace meshpipe::graph {

std::string_view value_role_name(ValueRole role) {
  switch (role) {
    case ValueRole::kParameter:
      return "parameter";
    case ValueRole::kOptimizerState:
      return "optimizer_state";
    case ValueRole::kInput:
      return "input";
    case ValueRole::kActivation:
      return "activation";
    case ValueRole::kGradient:
      return "gradient";
    case ValueRole::kUpdated:
      return "updated";
  }
  return "?";
}

std::string_view op_phase_name(OpPhase phase) {
  switch (phase) {
    case OpPhase::kForward:
      return "forward";
    case OpPhase::kBackward:
      return "backward";
    case OpPhase::kUpdate:
      return "update";
  }
  return "?";
}

ValueId Graph::add_source(std::string name, Shape shape, DType dtype, ValueRole role,
                          InitSpec init) {
  Value v;
  v.name = std::move(name);
  v.shape = std::move(shape);
  v.dtype = dtype;
  v.role = role;
  v.init = init;
  v.requires_grad = role == ValueRole::kParameter;
  values_.push_back(std::move(v));
  return ValueId(static_cast<int32_t>(values_.size() - 1));
}

namespace {

// The kinds that read OpAttrs::axis as a dim of their first input.
bool uses_axis(OpKind kind) {
  switch (kind) {
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax:
    case OpKind::kSoftmaxGrad:
    case OpKind::kLogSoftmaxGrad:
    case OpKind::kSlice:
    case OpKind::kConcat:
    case OpKind::kPad:
      return true;
    default:
      return false;
  }
}

}  // namespace

Expected<OpId> Graph::add_op(OpKind kind, std::string name, std::vector<ValueId> inputs,
                             OpAttrs attrs, int32_t layer, OpPhase phase, ValueRole output_role,
                             OpId forward) {
  std::vector<TensorType> types;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].is_valid() || inputs[i].value() >= num_values()) {
      return make_error(Errc::kInvalidArgument,
                        "op '{}' ({}): input {} is not a value of this "
                        "graph",
                        name, op_kind_name(kind), i);
    }
    const Value& v = value(inputs[i]);
    types.push_back({v.shape, v.dtype});
  }
  // An axis is stored non-negative: kernels and the sharding algebra read it as an index.
  if (uses_axis(kind) && !types.empty() && attrs.axis < 0) {
    const int64_t axis = normalize_axis(attrs.axis, types[0].shape.rank());
    if (axis >= 0) attrs.axis = axis;
  }
  auto out_types = infer_output_types(kind, attrs, types);
  if (!out_types.has_value()) {
    std::vector<std::string> in_shapes;
    for (const TensorType& t : types) in_shapes.push_back(t.shape.to_string());
    return out_types.status().with_context(fmt::format(
        "op '{}' ({}) with inputs {}", name, op_kind_name(kind), fmt::join(in_shapes, " ")));
  }
  const OpId id(static_cast<int32_t>(ops_.size()));
  const OpKindInfo& info = op_kind_info(kind);
  bool requires_grad = false;
  for (ValueId in : inputs) requires_grad = requires_grad || value(in).requires_grad;

  Op op;
  op.kind = kind;
  op.name = std::move(name);
  op.inputs = std::move(inputs);
  op.attrs = std::move(attrs);
  op.layer = layer;
  op.phase = phase;
  op.forward = forward;
  for (size_t i = 0; i < out_types->size(); ++i) {
    Value v;
    v.name = out_types->size() == 1 ? op.name : fmt::format("{}:{}", op.name, i);
    v.shape = (*out_types)[i].shape;
    v.dtype = (*out_types)[i].dtype;
    v.role = output_role;
    v.producer = id;
    v.output_index = static_cast<int32_t>(i);
    v.requires_grad = requires_grad && ((info.diff_outputs >> i) & 1u) != 0;
    values_.push_back(std::move(v));
    op.outputs.push_back(ValueId(static_cast<int32_t>(values_.size() - 1)));
  }
  ops_.push_back(std::move(op));
  return id;
}

std::vector<OpId> Graph::users(ValueId id) const {
  std::vector<OpId> out;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const auto& ins = ops_[i].inputs;
    if (std::find(ins.begin(), ins.end(), id) != ins.end()) {
      out.push_back(OpId(static_cast<int32_t>(i)));
    }
  }
  return out;
}

std::vector<ValueId> Graph::values_with_role(ValueRole role) const {
  std::vector<ValueId> out;
  for (size_t i = 0; i < values_.size(); ++i) {
    if (values_[i].role == role) out.push_back(ValueId(static_cast<int32_t>(i)));
  }
  return out;
}

void Graph::set_layers(const std::vector<int32_t>& layers) {
  for (size_t i = 0; i < ops_.size() && i < layers.size(); ++i) ops_[i].layer = layers[i];
}

int32_t Graph::num_layers() const {
  int32_t n = 0;
  for (const Op& op : ops_) n = std::max(n, op.layer + 1);
  return n;
}

Status Graph::validate() const {
  std::vector<bool> defined(values_.size(), false);
  for (size_t i = 0; i < values_.size(); ++i) {
    if (!values_[i].producer.is_valid()) defined[i] = true;
  }
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    std::vector<TensorType> types;
    for (ValueId in : op.inputs) {
      if (!in.is_valid() || in.value() >= num_values() || !defined[in.index()]) {
        return make_error(Errc::kInternal, "op '{}' reads a value before it is produced", op.name);
      }
      types.push_back({value(in).shape, value(in).dtype});
    }
    auto out = infer_output_types(op.kind, op.attrs, types);
    if (!out.has_value()) return out.status().with_context(fmt::format("op '{}'", op.name));
    if (out->size() != op.outputs.size()) {
      return make_error(Errc::kInternal, "op '{}' has {} outputs, expected {}", op.name,
                        op.outputs.size(), out->size());
    }
    for (size_t k = 0; k < op.outputs.size(); ++k) {
      const Value& v = value(op.outputs[k]);
      if (!(v.shape == (*out)[k].shape) || v.producer.index() != i) {
        return make_error(Errc::kInternal, "op '{}' output {} is inconsistent", op.name, k);
      }
      defined[op.outputs[k].index()] = true;
    }
  }
  for (const Alias& a : aliases_) {
    if (!(value(a.source).shape == value(a.updated).shape)) {
      return make_error(Errc::kInternal, "alias {} -> {} changes the shape", value(a.source).name,
                        value(a.updated).name);
    }
  }
  return Status::ok();
}

std::string describe_op(const Graph& g, OpId id) {
  const Op& op = g.op(id);
  std::vector<std::string> ins;
  for (ValueId v : op.inputs) ins.push_back(g.value(v).shape.to_string());
  std::vector<std::string> outs;
  for (ValueId v : op.outputs) outs.push_back(g.value(v).shape.to_string());
  return fmt::format("{} '{}' {} -> {}", op_kind_name(op.kind), op.name, fmt::join(ins, " x "),
                     fmt::join(outs, ", "));
}

}  // namespace meshpipe::graph

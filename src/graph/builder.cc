// Builder methods: thin wrappers that fill OpAttrs and call Graph::add_op.
#include "graph/builder.h"

#include <fmt/format.h>

namespace meshpipe::graph {

std::string Builder::scoped_name(const std::string& name, OpKind kind) {
  std::string base = name.empty() ? fmt::format("{}{}", op_kind_name(kind), counter_++) : name;
  std::string out;
  for (const std::string& s : scopes_) out += s + "/";
  return out + base;
}

ValueId Builder::parameter(const std::string& name, Shape shape, InitSpec init, DType dtype) {
  if (!status_.is_ok()) return ValueId();
  if (!shape.is_valid()) {
    status_ = make_error(Errc::kInvalidArgument, "parameter '{}' has an invalid shape {}",
                         scoped_name(name, OpKind::kConstant), shape.to_string());
    return ValueId();
  }
  if (init.kind == InitSpec::Kind::kValues &&
      (init.values == nullptr || static_cast<int64_t>(init.values->size()) != shape.numel())) {
    status_ = make_error(Errc::kInvalidArgument, "parameter '{}' of shape {} is given {} values",
                         scoped_name(name, OpKind::kConstant), shape.to_string(),
                         init.values == nullptr ? 0 : init.values->size());
    return ValueId();
  }
  return graph_.add_source(scoped_name(name, OpKind::kConstant), std::move(shape), dtype,
                           ValueRole::kParameter, init);
}

ValueId Builder::input(const std::string& name, Shape shape, DType dtype) {
  if (!status_.is_ok()) return ValueId();
  if (!shape.is_valid()) {
    status_ = make_error(Errc::kInvalidArgument, "input '{}' has an invalid shape {}", name,
                         shape.to_string());
    return ValueId();
  }
  ValueId id = graph_.add_source(name, std::move(shape), dtype, ValueRole::kInput);
  inputs_.push_back(id);
  return id;
}

std::vector<ValueId> Builder::op(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                                 const std::string& name) {
  if (!status_.is_ok()) return {};
  for (ValueId in : inputs) {
    if (!in.is_valid()) {
      status_ = make_error(Errc::kInvalidArgument, "op '{}' ({}) got an invalid input",
                           scoped_name(name, kind), op_kind_name(kind));
      return {};
    }
  }
  auto id = graph_.add_op(kind, scoped_name(name, kind), std::move(inputs), std::move(attrs),
                          layer_, OpPhase::kForward);
  if (!id.has_value()) {
    status_ = id.status();
    return {};
  }
  return graph_.op(*id).outputs;
}

ValueId Builder::single(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                        const std::string& name) {
  auto outs = op(kind, std::move(inputs), std::move(attrs), name);
  return outs.empty() ? ValueId() : outs[0];
}

ValueId Builder::dot(ValueId lhs, ValueId rhs, DotDims dims, const std::string& name) {
  OpAttrs a;
  a.dot = std::move(dims);
  return single(OpKind::kDot, {lhs, rhs}, std::move(a), name);
}

ValueId Builder::matmul(ValueId x, ValueId w, const std::string& name) {
  const int64_t r = shape(x).rank();
  return dot(x, w, DotDims{{}, {}, {r - 1}, {0}}, name);
}

ValueId Builder::linear(ValueId x, ValueId w, ValueId b, const std::string& name) {
  ValueId y = matmul(x, w, name.empty() ? "" : name);
  return bias_add(y, b, {shape(y).rank() - 1}, name.empty() ? "" : name + "_bias");
}

ValueId Builder::add(ValueId a, ValueId b, const std::string& name) {
  return single(OpKind::kAdd, {a, b}, {}, name);
}
ValueId Builder::sub(ValueId a, ValueId b, const std::string& name) {
  return single(OpKind::kSub, {a, b}, {}, name);
}
ValueId Builder::mul(ValueId a, ValueId b, const std::string& name) {
  return single(OpKind::kMul, {a, b}, {}, name);
}
ValueId Builder::div(ValueId a, ValueId b, const std::string& name) {
  return single(OpKind::kDiv, {a, b}, {}, name);
}

ValueId Builder::scale(ValueId x, float alpha, float beta, const std::string& name) {
  OpAttrs a;
  a.alpha = alpha;
  a.beta = beta;
  return single(OpKind::kScale, {x}, std::move(a), name);
}

ValueId Builder::bias_add(ValueId x, ValueId b, std::vector<int64_t> dims,
                          const std::string& name) {
  OpAttrs a;
  a.axes = std::move(dims);
  return single(OpKind::kBiasAdd, {x, b}, std::move(a), name);
}

ValueId Builder::relu(ValueId x, const std::string& name) {
  return single(OpKind::kRelu, {x}, {}, name);
}
ValueId Builder::gelu(ValueId x, const std::string& name) {
  return single(OpKind::kGelu, {x}, {}, name);
}
ValueId Builder::gelu_erf(ValueId x, const std::string& name) {
  return single(OpKind::kGeluErf, {x}, {}, name);
}
ValueId Builder::tanh(ValueId x, const std::string& name) {
  return single(OpKind::kTanh, {x}, {}, name);
}
ValueId Builder::convert(ValueId x, DType dtype, const std::string& name) {
  OpAttrs a;
  a.dtype = dtype;
  return single(OpKind::kConvert, {x}, std::move(a), name);
}

ValueId Builder::softmax(ValueId x, int64_t axis, bool causal, const std::string& name) {
  OpAttrs a;
  a.axis = normalize_axis(axis, shape(x).rank());
  a.causal = causal;
  if (a.axis < 0) a.axis = axis;  // keep the bad value so the error names it
  return single(OpKind::kSoftmax, {x}, std::move(a), name);
}

ValueId Builder::log_softmax(ValueId x, int64_t axis, const std::string& name) {
  OpAttrs a;
  a.axis = normalize_axis(axis, shape(x).rank());
  if (a.axis < 0) a.axis = axis;
  return single(OpKind::kLogSoftmax, {x}, std::move(a), name);
}

ValueId Builder::layer_norm(ValueId x, ValueId gamma, ValueId beta, float eps,
                            const std::string& name) {
  OpAttrs a;
  a.eps = eps;
  return single(OpKind::kLayerNorm, {x, gamma, beta}, std::move(a), name);
}

ValueId Builder::batch_norm(ValueId x, ValueId gamma, ValueId beta, float eps,
                            const std::string& name) {
  OpAttrs a;
  a.eps = eps;
  return single(OpKind::kBatchNorm, {x, gamma, beta}, std::move(a), name);
}

ValueId Builder::embedding(ValueId table, ValueId ids, const std::string& name) {
  return single(OpKind::kEmbedding, {table, ids}, {}, name);
}

ValueId Builder::cross_entropy(ValueId logits, ValueId labels, const std::string& name) {
  return single(OpKind::kCrossEntropy, {logits, labels}, {}, name);
}

ValueId Builder::reshape(ValueId x, Shape shape, const std::string& name) {
  OpAttrs a;
  a.shape = std::move(shape);
  return single(OpKind::kReshape, {x}, std::move(a), name);
}

ValueId Builder::transpose(ValueId x, std::vector<int64_t> perm, const std::string& name) {
  OpAttrs a;
  a.axes = std::move(perm);
  return single(OpKind::kTranspose, {x}, std::move(a), name);
}

ValueId Builder::slice(ValueId x, int64_t axis, int64_t start, int64_t end,
                       const std::string& name) {
  OpAttrs a;
  a.axis = normalize_axis(axis, shape(x).rank());
  if (a.axis < 0) a.axis = axis;
  a.start = start;
  a.end = end;
  return single(OpKind::kSlice, {x}, std::move(a), name);
}

ValueId Builder::concat(std::vector<ValueId> xs, int64_t axis, const std::string& name) {
  OpAttrs a;
  a.axis = xs.empty() ? axis : normalize_axis(axis, shape(xs[0]).rank());
  if (a.axis < 0) a.axis = axis;
  return single(OpKind::kConcat, std::move(xs), std::move(a), name);
}

ValueId Builder::reduce_sum(ValueId x, std::vector<int64_t> axes, const std::string& name) {
  OpAttrs a;
  a.axes = std::move(axes);
  return single(OpKind::kReduceSum, {x}, std::move(a), name);
}

ValueId Builder::reduce_mean(ValueId x, std::vector<int64_t> axes, const std::string& name) {
  OpAttrs a;
  a.axes = std::move(axes);
  return single(OpKind::kReduceMean, {x}, std::move(a), name);
}

ValueId Builder::broadcast(ValueId x, Shape shape, std::vector<int64_t> dims,
                           const std::string& name) {
  OpAttrs a;
  a.shape = std::move(shape);
  a.axes = std::move(dims);
  return single(OpKind::kBroadcast, {x}, std::move(a), name);
}

ValueId Builder::conv2d(ValueId x, ValueId w, Window2d window, const std::string& name) {
  OpAttrs a;
  a.window = window;
  return single(OpKind::kConv2d, {x, w}, std::move(a), name);
}

ValueId Builder::max_pool2d(ValueId x, Window2d window, const std::string& name) {
  OpAttrs a;
  a.window = window;
  return single(OpKind::kMaxPool2d, {x}, std::move(a), name);
}

ValueId Builder::avg_pool2d(ValueId x, Window2d window, const std::string& name) {
  OpAttrs a;
  a.window = window;
  return single(OpKind::kAvgPool2d, {x}, std::move(a), name);
}

std::pair<ValueId, ValueId> Builder::topk_gating(ValueId probs, int64_t k, int64_t capacity,
                                                 const std::string& name) {
  OpAttrs a;
  a.k = k;
  a.capacity = capacity;
  auto outs = op(OpKind::kTopKGating, {probs}, std::move(a), name);
  if (outs.size() != 2) return {ValueId(), ValueId()};
  return {outs[0], outs[1]};
}

Shape Builder::shape(ValueId v) const {
  if (!v.is_valid() || v.value() >= graph_.num_values()) return Shape();
  return graph_.value(v).shape;
}

Expected<ForwardGraph> Builder::finish(ValueId loss) && {
  if (!status_.is_ok()) return status_;
  if (!loss.is_valid()) return make_error(Errc::kInvalidArgument, "no loss value was given");
  if (graph_.value(loss).shape.numel() != 1) {
    return make_error(Errc::kInvalidArgument, "the loss '{}' must be a scalar, got {}",
                      graph_.value(loss).name, graph_.value(loss).shape.to_string());
  }
  graph_.add_output(loss);
  ForwardGraph out{std::move(graph_), loss, std::move(inputs_)};
  return out;
}

}  // namespace meshpipe::graph

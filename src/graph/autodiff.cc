// Reverse-mode autodiff: the driver (reachability, the loss seed, accumulation of gradients
// read by several ops) and the gradient emitter; each kind's rule lives with its family in ops/.
#include "graph/autodiff.h"

#include <fmt/format.h>

#include <algorithm>

#include "graph/internal/op_def.h"

namespace meshpipe::graph {
namespace internal {

std::vector<ValueId> GradEmitter::emit(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                                       const std::string& suffix) {
  if (!status_.is_ok()) return {};
  auto id =
      g_.add_op(kind, fmt::format("{}/{}", fwd_.name, suffix), std::move(inputs), std::move(attrs),
                fwd_.layer, OpPhase::kBackward, ValueRole::kGradient, fwd_id_);
  if (!id.has_value()) {
    status_ = id.status();
    return {};
  }
  return g_.op(*id).outputs;
}

ValueId GradEmitter::emit1(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                           const std::string& suffix) {
  auto outs = emit(kind, std::move(inputs), std::move(attrs), suffix);
  return outs.empty() ? ValueId() : outs[0];
}

ValueId GradEmitter::scale(ValueId x, float alpha, const std::string& suffix) {
  OpAttrs a;
  a.alpha = alpha;
  return emit1(OpKind::kScale, {x}, a, suffix);
}

ValueId GradEmitter::transpose(ValueId x, std::vector<int64_t> perm, const std::string& suffix) {
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == int64_t(i);
  if (identity) return x;
  OpAttrs a;
  a.axes = std::move(perm);
  return emit1(OpKind::kTranspose, {x}, a, suffix);
}

ValueId GradEmitter::reduce_sum(ValueId x, std::vector<int64_t> axes, const std::string& suffix) {
  if (axes.empty()) return x;
  OpAttrs a;
  a.axes = std::move(axes);
  return emit1(OpKind::kReduceSum, {x}, a, suffix);
}

std::vector<int64_t> complement(int64_t rank, const std::vector<int64_t>& dims) {
  std::vector<int64_t> out;
  for (int64_t d = 0; d < rank; ++d) {
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) out.push_back(d);
  }
  return out;
}

}  // namespace internal

namespace {
constexpr std::string_view kSeedSuffix = "/grad_seed";
}  // namespace

bool is_loss_seed(const Op& op) {
  return op.kind == OpKind::kConstant && op.phase == OpPhase::kBackward && op.inputs.empty() &&
         op.name.size() > kSeedSuffix.size() && op.name.ends_with(kSeedSuffix);
}

Expected<std::map<ValueId, ValueId>> append_backward(Graph& g, ValueId loss) {
  if (!loss.is_valid() || loss.value() >= g.num_values()) {
    return make_error(Errc::kInvalidArgument, "the loss is not a value of the graph");
  }
  if (g.value(loss).shape.numel() != 1) {
    return make_error(Errc::kInvalidArgument, "the loss must be a scalar, got {}",
                      g.value(loss).shape.to_string());
  }
  const int64_t num_forward_ops = g.num_ops();

  // Values that reach the loss (backward reachability over the forward ops).
  std::vector<bool> reaches(static_cast<size_t>(g.num_values()), false);
  reaches[loss.index()] = true;
  for (int64_t i = num_forward_ops - 1; i >= 0; --i) {
    const Op& op = g.op(OpId(static_cast<int32_t>(i)));
    bool any = false;
    for (ValueId o : op.outputs) any = any || reaches[o.index()];
    if (!any) continue;
    for (ValueId v : op.inputs) reaches[v.index()] = true;
  }

  std::map<ValueId, ValueId> grad;
  {
    OpAttrs seed;
    seed.shape = g.value(loss).shape;
    seed.alpha = 1.0f;
    const Op* producer =
        g.value(loss).producer.is_valid() ? &g.op(g.value(loss).producer) : nullptr;
    auto id = g.add_op(OpKind::kConstant, g.value(loss).name + std::string(kSeedSuffix), {}, seed,
                       producer ? producer->layer : 0, OpPhase::kBackward, ValueRole::kGradient,
                       g.value(loss).producer);
    if (!id.has_value()) return id.status();
    grad[loss] = g.op(*id).outputs[0];
  }

  for (int64_t i = num_forward_ops - 1; i >= 0; --i) {
    const Op op = g.op(OpId(static_cast<int32_t>(i)));  // copy: add_op may reallocate
    std::vector<ValueId> dys;
    bool any = false;
    for (ValueId o : op.outputs) {
      auto it = grad.find(o);
      const bool has = it != grad.end() && g.value(o).requires_grad;
      dys.push_back(has ? it->second : ValueId());
      any = any || has;
    }
    if (!any) continue;
    bool needs_input_grad = false;
    for (ValueId v : op.inputs) {
      needs_input_grad = needs_input_grad || (g.value(v).requires_grad && reaches[v.index()]);
    }
    if (!needs_input_grad) continue;
    if (!dys[0].is_valid()) continue;  // only output 0 of multi-output ops is differentiable

    internal::GradEmitter e(g, op, OpId(static_cast<int32_t>(i)));
    const internal::GradFn rule = internal::op_def(op.kind).grad;
    std::vector<ValueId> in_grads = rule != nullptr ? rule(e, g, op, dys) : std::vector<ValueId>{};
    MP_RETURN_IF_ERROR(e.status());
    if (in_grads.size() != op.inputs.size()) {
      return make_error(Errc::kInternal, "no gradient rule for op '{}' ({})", op.name,
                        op_kind_name(op.kind));
    }
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const ValueId v = op.inputs[k];
      if (!in_grads[k].is_valid() || !g.value(v).requires_grad || !reaches[v.index()]) continue;
      auto it = grad.find(v);
      if (it == grad.end()) {
        grad[v] = in_grads[k];
        continue;
      }
      auto sum = g.add_op(OpKind::kAdd, fmt::format("{}/grad_acc{}", g.value(v).name, k),
                          {it->second, in_grads[k]}, {}, op.layer, OpPhase::kBackward,
                          ValueRole::kGradient, OpId(static_cast<int32_t>(i)));
      if (!sum.has_value()) return sum.status();
      it->second = g.op(*sum).outputs[0];
    }
  }

  std::map<ValueId, ValueId> out;
  for (ValueId p : g.values_with_role(ValueRole::kParameter)) {
    auto it = grad.find(p);
    if (it != grad.end()) out[p] = it->second;
  }
  return out;
}

std::set<OpId> gradient_piece_sums(const Graph& g) {
  std::set<ValueId> updated;
  for (const Op& op : g.ops()) {
    if (is_optimizer_update(op.kind) && op.inputs.size() > 1) updated.insert(op.inputs[1]);
  }
  std::set<OpId> out;
  for (size_t i = 0; i < g.ops().size(); ++i) {
    const Op& op = g.ops()[i];
    if (op.kind != OpKind::kAdd || op.phase != OpPhase::kBackward || op.inputs.size() != 2 ||
        op.inputs[0] == op.inputs[1] || updated.count(op.outputs[0]) == 0) {
      continue;
    }
    const auto made_backward = [&](ValueId in) {
      const Value& v = g.value(in);
      return v.producer.is_valid() && g.op(v.producer).phase == OpPhase::kBackward &&
             g.users(in).size() == 1;
    };
    if (made_backward(op.inputs[0]) && made_backward(op.inputs[1]) &&
        g.users(op.outputs[0]).size() == 1) {
      out.insert(OpId(static_cast<int32_t>(i)));
    }
  }
  return out;
}

}  // namespace meshpipe::graph

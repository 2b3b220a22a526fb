// Reverse-mode autodiff: one rule per forward op kind, emitting ops from op_kind.h.
#include "graph/autodiff.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace meshpipe::graph {
namespace {

// Emits backward ops for one forward op; collects input gradients.
class GradEmitter {
 public:
  GradEmitter(Graph& g, const Op& fwd, OpId fwd_id) : g_(g), fwd_(fwd), fwd_id_(fwd_id) {}

  // Adds a backward op and returns its outputs (the caller checks status()).
  std::vector<ValueId> emit(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                            const std::string& suffix) {
    if (!status_.is_ok()) return {};
    auto id =
        g_.add_op(kind, fmt::format("{}/{}", fwd_.name, suffix), std::move(inputs),
                  std::move(attrs), fwd_.layer, OpPhase::kBackward, ValueRole::kGradient, fwd_id_);
    if (!id.has_value()) {
      status_ = id.status();
      return {};
    }
    return g_.op(*id).outputs;
  }
  ValueId emit1(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                const std::string& suffix) {
    auto outs = emit(kind, std::move(inputs), std::move(attrs), suffix);
    return outs.empty() ? ValueId() : outs[0];
  }

  ValueId scale(ValueId x, float alpha, const std::string& suffix) {
    OpAttrs a;
    a.alpha = alpha;
    return emit1(OpKind::kScale, {x}, a, suffix);
  }
  ValueId transpose(ValueId x, std::vector<int64_t> perm, const std::string& suffix) {
    bool identity = true;
    for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == int64_t(i);
    if (identity) return x;
    OpAttrs a;
    a.axes = std::move(perm);
    return emit1(OpKind::kTranspose, {x}, a, suffix);
  }
  ValueId reduce_sum(ValueId x, std::vector<int64_t> axes, const std::string& suffix) {
    if (axes.empty()) return x;
    OpAttrs a;
    a.axes = std::move(axes);
    return emit1(OpKind::kReduceSum, {x}, a, suffix);
  }

  const Status& status() const { return status_; }

 private:
  Graph& g_;
  const Op& fwd_;
  OpId fwd_id_;
  Status status_;
};

std::vector<int64_t> complement(int64_t rank, const std::vector<int64_t>& dims) {
  std::vector<int64_t> out;
  for (int64_t d = 0; d < rank; ++d) {
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) out.push_back(d);
  }
  return out;
}

// Position of `x` in `v`.
int64_t index_of(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) - v.begin();
}

// Gradients of out = dot(a, b): each is a dot of dy with the other operand, then a transpose
// back to the operand's layout. Output dims of the forward dot are [batch, a free, b free].
std::vector<ValueId> dot_grads(GradEmitter& e, const Graph& g, const Op& op, ValueId dy) {
  const DotDims& d = op.attrs.dot;
  const Shape& sa = g.value(op.inputs[0]).shape;
  const Shape& sb = g.value(op.inputs[1]).shape;
  const std::vector<int64_t> a_free = dot_free_dims(sa.rank(), d.lhs_batch, d.lhs_contract);
  const std::vector<int64_t> b_free = dot_free_dims(sb.rank(), d.rhs_batch, d.rhs_contract);
  const int64_t nb = static_cast<int64_t>(d.lhs_batch.size());
  const int64_t na = static_cast<int64_t>(a_free.size());
  std::vector<int64_t> dy_batch(static_cast<size_t>(nb));
  std::iota(dy_batch.begin(), dy_batch.end(), 0);
  std::vector<ValueId> grads(2);

  if (g.value(op.inputs[0]).requires_grad) {
    // g_a = dot(dy, b): contract dy's b-free dims with b's free dims.
    DotDims ga;
    ga.lhs_batch = dy_batch;
    ga.rhs_batch = d.rhs_batch;
    for (size_t i = 0; i < b_free.size(); ++i) {
      ga.lhs_contract.push_back(nb + na + static_cast<int64_t>(i));
      ga.rhs_contract.push_back(b_free[i]);
    }
    OpAttrs attrs;
    attrs.dot = ga;
    ValueId raw = e.emit1(OpKind::kDot, {dy, op.inputs[1]}, attrs, "grad_lhs");
    // raw dims: [batch, a free, b's contracting dims in ascending b order].
    const std::vector<int64_t> b_rest = dot_free_dims(sb.rank(), ga.rhs_batch, ga.rhs_contract);
    std::vector<int64_t> perm(static_cast<size_t>(sa.rank()));
    for (int64_t ad = 0; ad < sa.rank(); ++ad) {
      const int64_t bi = index_of(d.lhs_batch, ad);
      const int64_t fi = index_of(a_free, ad);
      const int64_t ci = index_of(d.lhs_contract, ad);
      int64_t src = 0;
      if (bi < nb) {
        src = bi;
      } else if (fi < na) {
        src = nb + fi;
      } else {
        src = nb + na + index_of(b_rest, d.rhs_contract[static_cast<size_t>(ci)]);
      }
      perm[static_cast<size_t>(ad)] = src;
    }
    grads[0] = e.transpose(raw, perm, "grad_lhs_t");
  }
  if (g.value(op.inputs[1]).requires_grad) {
    // g_b = dot(a, dy): contract a's free dims with dy's a-free dims.
    DotDims gb;
    gb.lhs_batch = d.lhs_batch;
    gb.rhs_batch = dy_batch;
    for (size_t i = 0; i < a_free.size(); ++i) {
      gb.lhs_contract.push_back(a_free[i]);
      gb.rhs_contract.push_back(nb + static_cast<int64_t>(i));
    }
    OpAttrs attrs;
    attrs.dot = gb;
    ValueId raw = e.emit1(OpKind::kDot, {op.inputs[0], dy}, attrs, "grad_rhs");
    // raw dims: [batch, a's contracting dims in ascending a order, b free].
    const std::vector<int64_t> a_rest = dot_free_dims(sa.rank(), gb.lhs_batch, gb.lhs_contract);
    const int64_t nc = static_cast<int64_t>(a_rest.size());
    std::vector<int64_t> perm(static_cast<size_t>(sb.rank()));
    for (int64_t bd = 0; bd < sb.rank(); ++bd) {
      const int64_t bi = index_of(d.rhs_batch, bd);
      const int64_t fi = index_of(b_free, bd);
      const int64_t ci = index_of(d.rhs_contract, bd);
      int64_t src = 0;
      if (bi < nb) {
        src = bi;
      } else if (fi < static_cast<int64_t>(b_free.size())) {
        src = nb + nc + fi;
      } else {
        src = nb + index_of(a_rest, d.lhs_contract[static_cast<size_t>(ci)]);
      }
      perm[static_cast<size_t>(bd)] = src;
    }
    grads[1] = e.transpose(raw, perm, "grad_rhs_t");
  }
  return grads;
}

// Input gradients of one forward op given the gradients of its outputs (invalid = none).
std::vector<ValueId> op_grads(GradEmitter& e, const Graph& g, const Op& op,
                              const std::vector<ValueId>& dys) {
  const ValueId dy = dys[0];
  const auto in = [&](size_t i) { return op.inputs[i]; };
  const auto out = [&](size_t i) { return op.outputs[i]; };
  const Shape& x_shape = g.value(op.inputs[0]).shape;
  OpAttrs a;
  switch (op.kind) {
    case OpKind::kDot:
      return dot_grads(e, g, op, dy);
    case OpKind::kAdd:
      return {dy, dy};
    case OpKind::kSub:
      return {dy, g.value(in(1)).requires_grad ? e.scale(dy, -1.0f, "grad_rhs") : ValueId()};
    case OpKind::kMul:
      return {g.value(in(0)).requires_grad ? e.emit1(OpKind::kMul, {dy, in(1)}, a, "grad_lhs")
                                           : ValueId(),
              g.value(in(1)).requires_grad ? e.emit1(OpKind::kMul, {dy, in(0)}, a, "grad_rhs")
                                           : ValueId()};
    case OpKind::kDiv: {
      ValueId da = g.value(in(0)).requires_grad ? e.emit1(OpKind::kDiv, {dy, in(1)}, a, "grad_lhs")
                                                : ValueId();
      ValueId db;
      if (g.value(in(1)).requires_grad) {
        // d(a/b)/db = -(a/b)/b = -y/b.
        ValueId t = e.emit1(OpKind::kMul, {dy, out(0)}, a, "grad_rhs_mul");
        ValueId t2 = e.emit1(OpKind::kDiv, {t, in(1)}, a, "grad_rhs_div");
        db = e.scale(t2, -1.0f, "grad_rhs");
      }
      return {da, db};
    }
    case OpKind::kScale:
      return {e.scale(dy, op.attrs.alpha, "grad")};
    case OpKind::kBiasAdd:
      return {dy, g.value(in(1)).requires_grad
                      ? e.reduce_sum(dy, complement(x_shape.rank(), op.attrs.axes), "grad_bias")
                      : ValueId()};
    case OpKind::kRelu:
      return {e.emit1(OpKind::kReluGrad, {out(0), dy}, a, "grad")};
    case OpKind::kGelu:
      return {e.emit1(OpKind::kGeluGrad, {in(0), dy}, a, "grad")};
    case OpKind::kTanh:
      return {e.emit1(OpKind::kTanhGrad, {out(0), dy}, a, "grad")};
    case OpKind::kSoftmax:
      a.axis = op.attrs.axis;
      return {e.emit1(OpKind::kSoftmaxGrad, {out(0), dy}, a, "grad")};
    case OpKind::kLogSoftmax:
      a.axis = op.attrs.axis;
      return {e.emit1(OpKind::kLogSoftmaxGrad, {out(0), dy}, a, "grad")};
    case OpKind::kLayerNorm:
    case OpKind::kBatchNorm: {
      a.eps = op.attrs.eps;
      const OpKind gk =
          op.kind == OpKind::kLayerNorm ? OpKind::kLayerNormGrad : OpKind::kBatchNormGrad;
      auto outs = e.emit(gk, {dy, in(0), out(1), out(2), in(1)}, a, "grad");
      if (outs.size() != 3) return {};
      return {outs[0], outs[1], outs[2]};
    }
    case OpKind::kEmbedding:
      a.shape = g.value(in(0)).shape;
      return {e.emit1(OpKind::kEmbeddingGrad, {in(1), dy}, a, "grad"), ValueId()};
    case OpKind::kCrossEntropy:
      return {e.emit1(OpKind::kCrossEntropyGrad, {in(0), in(1), dy}, a, "grad"), ValueId()};
    case OpKind::kReshape:
      a.shape = x_shape;
      return {e.emit1(OpKind::kReshape, {dy}, a, "grad")};
    case OpKind::kTranspose: {
      std::vector<int64_t> inv(op.attrs.axes.size());
      for (size_t i = 0; i < inv.size(); ++i)
        inv[static_cast<size_t>(op.attrs.axes[i])] = int64_t(i);
      return {e.transpose(dy, inv, "grad")};
    }
    case OpKind::kSlice:
      a.shape = x_shape;
      a.axis = op.attrs.axis;
      a.start = op.attrs.start;
      return {e.emit1(OpKind::kPad, {dy}, a, "grad")};
    case OpKind::kConcat: {
      std::vector<ValueId> grads;
      int64_t offset = 0;
      for (size_t i = 0; i < op.inputs.size(); ++i) {
        const int64_t size = g.value(in(i)).shape[op.attrs.axis];
        OpAttrs s;
        s.axis = op.attrs.axis;
        s.start = offset;
        s.end = offset + size;
        grads.push_back(g.value(in(i)).requires_grad
                            ? e.emit1(OpKind::kSlice, {dy}, s, fmt::format("grad{}", i))
                            : ValueId());
        offset += size;
      }
      return grads;
    }
    case OpKind::kReduceSum:
    case OpKind::kReduceMean: {
      a.shape = x_shape;
      a.axes = complement(x_shape.rank(), op.attrs.axes);
      ValueId b = e.emit1(OpKind::kBroadcast, {dy}, a, "grad");
      if (op.kind == OpKind::kReduceSum) return {b};
      int64_t count = 1;
      for (int64_t d : op.attrs.axes) count *= x_shape[d];
      return {e.scale(b, 1.0f / static_cast<float>(count), "grad_mean")};
    }
    case OpKind::kBroadcast:
      return {e.reduce_sum(dy, complement(op.attrs.shape.rank(), op.attrs.axes), "grad")};
    case OpKind::kConv2d: {
      a.window = op.attrs.window;
      ValueId dx;
      ValueId dw;
      if (g.value(in(0)).requires_grad) {
        a.shape = x_shape;
        dx = e.emit1(OpKind::kConv2dGradInput, {dy, in(1)}, a, "grad_input");
      }
      if (g.value(in(1)).requires_grad) {
        a.shape = g.value(in(1)).shape;
        dw = e.emit1(OpKind::kConv2dGradFilter, {in(0), dy}, a, "grad_filter");
      }
      return {dx, dw};
    }
    case OpKind::kMaxPool2d:
      a.window = op.attrs.window;
      return {e.emit1(OpKind::kMaxPool2dGrad, {in(0), dy}, a, "grad")};
    case OpKind::kAvgPool2d:
      a.window = op.attrs.window;
      a.shape = x_shape;
      return {e.emit1(OpKind::kAvgPool2dGrad, {dy}, a, "grad")};
    case OpKind::kTopKGating:
      a.k = op.attrs.k;
      a.capacity = op.attrs.capacity;
      return {e.emit1(OpKind::kTopKGatingGrad, {in(0), dy}, a, "grad")};
    default:
      break;
  }
  return {};
}

}  // namespace

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
    auto id = g.add_op(OpKind::kConstant, g.value(loss).name + "/grad_seed", {}, seed,
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

    GradEmitter e(g, op, OpId(static_cast<int32_t>(i)));
    std::vector<ValueId> in_grads = op_grads(e, g, op, dys);
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

}  // namespace meshpipe::graph

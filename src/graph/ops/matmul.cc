// The dot (a batched matmul with any batch and contracting dims): shapes from
// core/op_geometry.h, 2 FLOPs per multiply-add, and the gradients as dots plus transposes (none
// for a weight that contracts its last dim: rhs_grad_in_place).
#include <algorithm>
#include <numeric>

#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

// Position of `x` in `v`.
int64_t index_of(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) - v.begin();
}

Expected<Types> infer_dot(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "lhs"));
  MP_RETURN_IF_ERROR(expect_f32(in[1], "rhs"));
  MP_ASSIGN_OR_RETURN(Shape out, dot_output_shape(in[0].shape, in[1].shape, a.dot));
  return Types{{out, in[0].dtype}};
}

Flops dot_flops(const Graph& g, const Op& op) {
  const DotSizes s =
      dot_sizes(g.value(op.inputs[0]).shape, g.value(op.inputs[1]).shape, op.attrs.dot);
  return Flops(2.0 * static_cast<double>(s.batch) * static_cast<double>(s.m) *
               static_cast<double>(s.n) * static_cast<double>(s.k));
}

// g_a = dot(dy, b) contracting dy's b-free dims with b's free dims, then a transpose back to
// a's layout. dy dims: [batch, a free, b free]; the raw product's: [batch, a free, b's
// contracting dims in ascending b order].
ValueId lhs_grad(GradEmitter& e, const Graph& g, const Op& op, ValueId dy) {
  const DotDims& d = op.attrs.dot;
  const Shape sa = g.value(op.inputs[0]).shape;
  const Shape sb = g.value(op.inputs[1]).shape;
  const std::vector<int64_t> a_free = dot_free_dims(sa.rank(), d.lhs_batch, d.lhs_contract);
  const std::vector<int64_t> b_free = dot_free_dims(sb.rank(), d.rhs_batch, d.rhs_contract);
  const int64_t nb = static_cast<int64_t>(d.lhs_batch.size());
  const int64_t na = static_cast<int64_t>(a_free.size());
  DotDims ga;
  ga.lhs_batch.resize(static_cast<size_t>(nb));
  std::iota(ga.lhs_batch.begin(), ga.lhs_batch.end(), 0);
  ga.rhs_batch = d.rhs_batch;
  for (size_t i = 0; i < b_free.size(); ++i) {
    ga.lhs_contract.push_back(nb + na + static_cast<int64_t>(i));
    ga.rhs_contract.push_back(b_free[i]);
  }
  OpAttrs attrs;
  attrs.dot = ga;
  const ValueId raw = e.emit1(K::kDot, {dy, op.inputs[1]}, attrs, "grad_lhs");
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
  return e.transpose(raw, perm, "grad_lhs_t");
}

// g_b = dot(dy, a) contracting dy's a-free dims with a's free dims, when its dims
// [batch, b free, a's contracting dims in ascending a order] are b's layout (a weight that
// contracts its last dim, as a tied LM head or attention's keys): the gradient comes out with
// no transpose, so a partial sum of it (a split batch) stays partial until it is resolved,
// once per step for an accumulated gradient. Empty when another layout comes out.
ValueId rhs_grad_in_place(GradEmitter& e, const Graph& g, const Op& op, ValueId dy) {
  const DotDims& d = op.attrs.dot;
  const Shape sa = g.value(op.inputs[0]).shape;
  const Shape sb = g.value(op.inputs[1]).shape;
  const std::vector<int64_t> a_free = dot_free_dims(sa.rank(), d.lhs_batch, d.lhs_contract);
  const std::vector<int64_t> b_free = dot_free_dims(sb.rank(), d.rhs_batch, d.rhs_contract);
  const auto nb = static_cast<int64_t>(d.lhs_batch.size());
  const auto na = static_cast<int64_t>(a_free.size());
  const auto nf = static_cast<int64_t>(b_free.size());
  // a's contracting dims in ascending a order: the product's last dims.
  std::vector<int64_t> a_rest = d.lhs_contract;
  std::sort(a_rest.begin(), a_rest.end());
  for (int64_t bd = 0; bd < sb.rank(); ++bd) {
    const int64_t bi = index_of(d.rhs_batch, bd);
    const int64_t fi = index_of(b_free, bd);
    const int64_t ci = index_of(d.rhs_contract, bd);
    int64_t src = 0;
    if (bi < nb) {
      src = bi;
    } else if (fi < nf) {
      src = nb + fi;
    } else {
      src = nb + nf + index_of(a_rest, d.lhs_contract[static_cast<size_t>(ci)]);
    }
    if (src != bd) return ValueId();
  }
  // The batch dims of a in the order of dy's (d.lhs_batch), as must be for a's free dims.
  DotDims gd;
  gd.lhs_batch.resize(static_cast<size_t>(nb));
  std::iota(gd.lhs_batch.begin(), gd.lhs_batch.end(), 0);
  gd.rhs_batch = d.lhs_batch;
  for (int64_t i = 0; i < na; ++i) {
    gd.lhs_contract.push_back(nb + i);
    gd.rhs_contract.push_back(a_free[static_cast<size_t>(i)]);
  }
  OpAttrs attrs;
  attrs.dot = gd;
  return e.emit1(K::kDot, {dy, op.inputs[0]}, attrs, "grad_rhs");
}

// g_b = dot(a, dy) contracting a's free dims with dy's a-free dims, then a transpose back to
// b's layout. The raw product's dims: [batch, a's contracting dims in ascending a order, b free].
ValueId rhs_grad(GradEmitter& e, const Graph& g, const Op& op, ValueId dy) {
  if (const ValueId in_place = rhs_grad_in_place(e, g, op, dy); in_place.is_valid())
    return in_place;
  const DotDims& d = op.attrs.dot;
  const Shape sa = g.value(op.inputs[0]).shape;
  const Shape sb = g.value(op.inputs[1]).shape;
  const std::vector<int64_t> a_free = dot_free_dims(sa.rank(), d.lhs_batch, d.lhs_contract);
  const std::vector<int64_t> b_free = dot_free_dims(sb.rank(), d.rhs_batch, d.rhs_contract);
  const int64_t nb = static_cast<int64_t>(d.lhs_batch.size());
  DotDims gb;
  gb.lhs_batch = d.lhs_batch;
  gb.rhs_batch.resize(static_cast<size_t>(nb));
  std::iota(gb.rhs_batch.begin(), gb.rhs_batch.end(), 0);
  for (size_t i = 0; i < a_free.size(); ++i) {
    gb.lhs_contract.push_back(a_free[i]);
    gb.rhs_contract.push_back(nb + static_cast<int64_t>(i));
  }
  OpAttrs attrs;
  attrs.dot = gb;
  const ValueId raw = e.emit1(K::kDot, {op.inputs[0], dy}, attrs, "grad_rhs");
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
  return e.transpose(raw, perm, "grad_rhs_t");
}

std::vector<ValueId> grad_dot(GradEmitter& e, const Graph& g, const Op& op,
                              const std::vector<ValueId>& dys) {
  std::vector<ValueId> grads(2);
  if (g.value(op.inputs[0]).requires_grad) grads[0] = lhs_grad(e, g, op, dys[0]);
  if (g.value(op.inputs[1]).requires_grad) grads[1] = rhs_grad(e, g, op, dys[0]);
  return grads;
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kDot, infer_dot, dot_flops, grad_dot},
};

}  // namespace

std::span<const OpDef> matmul_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

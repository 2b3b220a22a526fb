// The dot (a batched matmul with any batch and contracting dims): shapes from
// core/op_geometry.h, 2 FLOPs per multiply-add, and the gradients as dots plus transposes (none
// for a weight that contracts its last dim: rhs_grad).
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

// Where each dim of b comes from in a product whose dims are [batch, then b's free dims and a's
// contracting dims (ascending in a: `a_rest`), b's free dims first when `free_first`].
std::vector<int64_t> rhs_source_dims(const DotDims& d, int64_t b_rank,
                                     const std::vector<int64_t>& b_free,
                                     const std::vector<int64_t>& a_rest, bool free_first) {
  const auto nb = static_cast<int64_t>(d.lhs_batch.size());
  const auto nf = static_cast<int64_t>(b_free.size());
  const auto nc = static_cast<int64_t>(a_rest.size());
  std::vector<int64_t> perm(static_cast<size_t>(b_rank));
  for (int64_t bd = 0; bd < b_rank; ++bd) {
    const int64_t bi = index_of(d.rhs_batch, bd);
    const int64_t fi = index_of(b_free, bd);
    int64_t src = 0;
    if (bi < nb) {
      src = bi;
    } else if (fi < nf) {
      src = nb + (free_first ? 0 : nc) + fi;
    } else {
      const int64_t ci = index_of(d.rhs_contract, bd);
      src = nb + (free_first ? nf : 0) + index_of(a_rest, d.lhs_contract[static_cast<size_t>(ci)]);
    }
    perm[static_cast<size_t>(bd)] = src;
  }
  return perm;
}

// g_b = dot(dy, a) contracting dy's a-free dims with a's free dims when its dims [batch, b free,
// a's contracting dims] are b's layout (a weight that contracts its last dim, as a tied LM
// head or attention's keys): the gradient comes out with no transpose, so a partial sum of it
// (a split batch) stays partial until it is resolved, once per step for an accumulated
// gradient. Otherwise g_b = dot(a, dy) contracting a's free dims with dy's a-free dims, then a
// transpose back to b's layout from [batch, a's contracting dims, b free].
ValueId rhs_grad(GradEmitter& e, const Graph& g, const Op& op, ValueId dy) {
  const DotDims& d = op.attrs.dot;
  const Shape sa = g.value(op.inputs[0]).shape;
  const Shape sb = g.value(op.inputs[1]).shape;
  const std::vector<int64_t> a_free = dot_free_dims(sa.rank(), d.lhs_batch, d.lhs_contract);
  const std::vector<int64_t> b_free = dot_free_dims(sb.rank(), d.rhs_batch, d.rhs_contract);
  std::vector<int64_t> a_rest = d.lhs_contract;  // the products' dims from a, ascending in a
  std::sort(a_rest.begin(), a_rest.end());
  const auto nb = static_cast<int64_t>(d.lhs_batch.size());
  const std::vector<int64_t> swapped = rhs_source_dims(d, sb.rank(), b_free, a_rest, true);
  std::vector<int64_t> identity(swapped.size());
  std::iota(identity.begin(), identity.end(), 0);
  const bool in_place = swapped == identity;
  // dy's dims: [batch (in a's lhs_batch order), a free, b free].
  DotDims gd;
  std::vector<int64_t> dy_batch(static_cast<size_t>(nb));
  std::iota(dy_batch.begin(), dy_batch.end(), 0);
  std::vector<int64_t> dy_a_free;
  for (size_t i = 0; i < a_free.size(); ++i) dy_a_free.push_back(nb + static_cast<int64_t>(i));
  if (in_place) {
    gd = DotDims{dy_batch, d.lhs_batch, dy_a_free, a_free};
  } else {
    gd = DotDims{d.lhs_batch, dy_batch, a_free, dy_a_free};
  }
  OpAttrs attrs;
  attrs.dot = gd;
  if (in_place) return e.emit1(K::kDot, {dy, op.inputs[0]}, attrs, "grad_rhs");
  const ValueId raw = e.emit1(K::kDot, {op.inputs[0], dy}, attrs, "grad_rhs");
  return e.transpose(raw, rhs_source_dims(d, sb.rank(), b_free, a_rest, false), "grad_rhs_t");
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

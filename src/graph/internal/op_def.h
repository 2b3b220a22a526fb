// The per-kind rules of the graph IR (private to src/graph): each family file in ops/ lists one
// OpDef row per kind; shape inference, the cost counts and autodiff dispatch through op_def().
// Also the helpers the rules share (argument checks, element counts, the gradient emitter).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "core/units.h"
#include "graph/graph.h"
#include "graph/shape_inference.h"

namespace meshpipe::graph::internal {

/// The input or output types of one op.
using Types = std::vector<TensorType>;

/// Emits the backward ops of one forward op (autodiff.cc): each is named "<forward>/<suffix>",
/// has phase kBackward and the forward op's layer tag. The first error sticks in status().
class GradEmitter {
 public:
  GradEmitter(Graph& g, const Op& fwd, OpId fwd_id) : g_(g), fwd_(fwd), fwd_id_(fwd_id) {}

  /// Adds a backward op and returns its outputs (empty after an error).
  std::vector<ValueId> emit(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                            const std::string& suffix);
  /// emit() for a single-output op; an invalid id after an error.
  ValueId emit1(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs, const std::string& suffix);
  /// alpha * x.
  ValueId scale(ValueId x, float alpha, const std::string& suffix);
  /// x transposed by `perm`; x itself when perm is the identity.
  ValueId transpose(ValueId x, std::vector<int64_t> perm, const std::string& suffix);
  /// x summed over `axes`; x itself when there are none.
  ValueId reduce_sum(ValueId x, std::vector<int64_t> axes, const std::string& suffix);

  /// The first error of an emit, or ok.
  const Status& status() const { return status_; }

 private:
  Graph& g_;
  const Op& fwd_;
  OpId fwd_id_;
  Status status_;
};

/// Output types of one op; the inputs already have the kind's arity and valid shapes.
using InferFn = Expected<Types> (*)(const OpAttrs& attrs, const Types& in);
/// Floating-point operations of one op of a graph.
using FlopsFn = Flops (*)(const Graph& g, const Op& op);
/// Bytes one op of a graph reads plus writes.
using BytesFn = Bytes (*)(const Graph& g, const Op& op);
/// Input gradients of a forward op (one per input, invalid: none) given its output gradients
/// `dys` (dys[0] valid); empty after an emitter error.
using GradFn = std::vector<ValueId> (*)(GradEmitter& e, const Graph& g, const Op& op,
                                        const std::vector<ValueId>& dys);

/// The graph-side rules of one op kind: one row per kind in a family file of ops/, written
/// {kind, infer, flops, grad} (bytes only where a kind overrides the common count).
struct OpDef {
  OpKind kind{};
  InferFn infer = nullptr;  ///< every graph kind
  FlopsFn flops = nullptr;  ///< every graph kind (no_flops for pure data movement)
  GradFn grad = nullptr;    ///< exactly the kinds with differentiable outputs (diff_outputs != 0)
  BytesFn bytes = nullptr;  ///< optional; null: every input read and every output written once
};

/// The row of `kind`; lowering-only kinds have no rules. The first call builds the table from
/// kOpFamilies and aborts (MP_CHECK) when check_op_defs rejects the rows.
const OpDef& op_def(OpKind kind);

/// Ok when `rows` hold exactly one row per kind that is not lowering only, none for the
/// lowering-only kinds, and each row has the rules OpDef requires; else the first problem.
Status check_op_defs(std::span<const OpDef> rows);

// ---- the families: the rows of their kinds ----

/// add, sub, mul, div, scale, bias_add, the activations and their gradients, constant.
std::span<const OpDef> elementwise_ops();
/// dot.
std::span<const OpDef> matmul_ops();
/// conv2d, max/avg pooling and their gradients.
std::span<const OpDef> conv_pool_ops();
/// layer norm, batch norm, softmax, log-softmax and their gradients.
std::span<const OpDef> norm_ops();
/// embedding and its gradient.
std::span<const OpDef> embedding_ops();
/// cross entropy and its gradient.
std::span<const OpDef> loss_ops();
/// reshape, transpose, slice, concat, pad, reduce_sum/mean, broadcast.
std::span<const OpDef> layout_ops();
/// top-k gating and its gradient.
std::span<const OpDef> moe_ops();
/// SGD, SGD with momentum and Adam updates.
std::span<const OpDef> update_ops();

/// A family's row list.
using OpFamily = std::span<const OpDef> (*)();
/// Every family; op_def() builds its table from these rows.
inline constexpr OpFamily kOpFamilies[] = {
    &elementwise_ops, &matmul_ops, &conv_pool_ops, &norm_ops,   &embedding_ops,
    &loss_ops,        &layout_ops, &moe_ops,       &update_ops,
};

// ---- argument checks of the inference rules (shape_inference.cc) ----

/// `what` must be floating point.
Status expect_f32(const TensorType& t, const char* what);
/// `what` must be i32.
Status expect_int(const TensorType& t, const char* what);
/// `a` and `b` must have equal shapes.
Status expect_same_shape(const TensorType& a, const TensorType& b, const char* what);
/// `t` must have rank `rank`.
Status expect_rank(const TensorType& t, int64_t rank, const char* what);
/// `dims` must be strictly increasing dims of a shape of rank `rank`.
Status expect_increasing(const std::vector<int64_t>& dims, int64_t rank, const char* what);
/// `s` without its last dim (the row statistics of layer norm).
Shape drop_last(const Shape& s);
/// (saved value, dy) -> dx shaped like the saved value: the activation and softmax gradients.
Expected<Types> infer_like_saved(const OpAttrs& attrs, const Types& in);

// ---- element counts of the FLOP rules (cost.cc) ----

/// Elements of value `v`.
double numel(const Graph& g, ValueId v);
/// Elements of the op's first output (0 without outputs).
double output_elements(const Graph& g, const Op& op);
/// Elements of the op's first input (0 without inputs).
double input_elements(const Graph& g, const Op& op);
/// Pure data movement: 0 FLOPs.
Flops no_flops(const Graph& g, const Op& op);

/// kPerElement FLOPs per element of the first output.
template <int kPerElement>
Flops flops_per_output(const Graph& g, const Op& op) {
  return Flops(static_cast<double>(kPerElement) * output_elements(g, op));
}

/// kPerElement FLOPs per element of the first input.
template <int kPerElement>
Flops flops_per_input(const Graph& g, const Op& op) {
  return Flops(static_cast<double>(kPerElement) * input_elements(g, op));
}

// ---- dims of the gradient rules (autodiff.cc) ----

/// The dims 0..rank-1 not in `dims`, ascending.
std::vector<int64_t> complement(int64_t rank, const std::vector<int64_t>& dims);

}  // namespace meshpipe::graph::internal

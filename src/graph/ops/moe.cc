// Mixture-of-experts routing: top-k gating of probabilities [G, S, E] into combine and dispatch
// tensors [G, S, E, C] (attrs.k, attrs.capacity), and its gradient. FLOPs: 2k per probability.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

Expected<Types> infer_topk_gating(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_rank(in[0], 3, "gate probabilities [G, S, E]"));
  const int64_t e = in[0].shape[2];
  if (a.k < 1 || a.k > e || a.capacity < 1) {
    return make_error(Errc::kInvalidArgument,
                      "top-k gating needs 1 <= k <= experts ({}) and capacity >= 1 "
                      "(k = {}, capacity = {})",
                      e, a.k, a.capacity);
  }
  // In the gates' dtype: the dispatched tokens, the experts' activations and their gradients
  // then stay in the model's dtype (f32 masks would widen every expert tensor of an f16 model).
  const Shape out{in[0].shape[0], in[0].shape[1], e, a.capacity};
  return Types{{out, in[0].dtype}, {out, in[0].dtype}};
}

// (probs, dcombine) -> dprobs.
Expected<Types> infer_topk_gating_grad(const OpAttrs&, const Types& in) { return Types{in[0]}; }

Flops topk_gating_flops(const Graph& g, const Op& op) {
  return Flops(2.0 * input_elements(g, op) * static_cast<double>(op.attrs.k));
}

// Only the combine output (0) carries a gradient.
std::vector<ValueId> grad_topk_gating(GradEmitter& e, const Graph&, const Op& op,
                                      const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.k = op.attrs.k;
  a.capacity = op.attrs.capacity;
  return {e.emit1(K::kTopKGatingGrad, {op.inputs[0], dys[0]}, a, "grad")};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kTopKGating, infer_topk_gating, topk_gating_flops, grad_topk_gating},
    {K::kTopKGatingGrad, infer_topk_gating_grad, topk_gating_flops},
};

}  // namespace

std::span<const OpDef> moe_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

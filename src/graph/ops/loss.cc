// Losses: the mean cross entropy of logits [..., V] against i32 labels [...], and its gradient.
// FLOPs: 5 per logit forward and backward.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

Expected<Types> infer_cross_entropy(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "logits"));
  MP_RETURN_IF_ERROR(expect_int(in[1], "labels"));
  if (in[0].shape.rank() < 1 || !(drop_last(in[0].shape) == in[1].shape)) {
    return make_error(Errc::kInvalidArgument,
                      "labels {} must have the logits' shape {} without its last dim",
                      in[1].shape.to_string(), in[0].shape.to_string());
  }
  return Types{{Shape{}, DType::kF32}};  // the mean loss is kept in f32 for half logits too
}

// (logits, labels, dloss) -> dlogits.
Expected<Types> infer_cross_entropy_grad(const OpAttrs&, const Types& in) { return Types{in[0]}; }

// Only the logits get a gradient; the labels are integers.
std::vector<ValueId> grad_cross_entropy(GradEmitter& e, const Graph&, const Op& op,
                                        const std::vector<ValueId>& dys) {
  return {e.emit1(K::kCrossEntropyGrad, {op.inputs[0], op.inputs[1], dys[0]}, {}, "grad"),
          ValueId()};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kCrossEntropy, infer_cross_entropy, flops_per_input<5>, grad_cross_entropy},
    {K::kCrossEntropyGrad, infer_cross_entropy_grad, flops_per_input<5>},
};

}  // namespace

std::span<const OpDef> loss_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

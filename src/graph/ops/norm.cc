// Normalisations: layer norm, batch norm, softmax, log-softmax and their gradients. FLOPs: the
// norms 8 per input element forward and 16 backward; the softmaxes 5 per output element (max,
// subtract, exp, sum, divide) and 10 for their gradients.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

// ---- shapes ----

// gamma and beta (inputs 1, 2) must have shape `param`.
Status expect_params(const Types& in, const Shape& param) {
  if (!(in[1].shape == param) || !(in[2].shape == param)) {
    return make_error(Errc::kInvalidArgument, "gamma {} and beta {} must have shape {}",
                      in[1].shape.to_string(), in[2].shape.to_string(), param.to_string());
  }
  return Status::ok();
}

Expected<Types> infer_layer_norm(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  if (in[0].shape.rank() < 1) {
    return make_error(Errc::kInvalidArgument, "layer norm needs rank >= 1");
  }
  MP_RETURN_IF_ERROR(expect_params(in, Shape{in[0].shape[in[0].shape.rank() - 1]}));
  const Shape rows = drop_last(in[0].shape);
  return Types{in[0], {rows, DType::kF32}, {rows, DType::kF32}};
}

Expected<Types> infer_batch_norm(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  if (in[0].shape.rank() != 2 && in[0].shape.rank() != 4) {
    return make_error(Errc::kInvalidArgument, "batch norm needs NC or NCHW input, got {}",
                      in[0].shape.to_string());
  }
  const Shape param{in[0].shape[1]};
  MP_RETURN_IF_ERROR(expect_params(in, param));
  return Types{in[0], {param, DType::kF32}, {param, DType::kF32}};
}

// (dy, x, mean, rstd, gamma) -> (dx, dgamma, dbeta).
Expected<Types> infer_norm_grad(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "gradient and input"));
  return Types{in[1], in[4], in[4]};
}

Expected<Types> infer_softmax(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
  if (axis < 0) {
    return make_error(Errc::kInvalidArgument, "axis {} is out of range for shape {}", a.axis,
                      in[0].shape.to_string());
  }
  if (a.causal && (in[0].shape.rank() < 2 || axis != in[0].shape.rank() - 1)) {
    return make_error(Errc::kInvalidArgument,
                      "a causal softmax needs rank >= 2 and the last axis (shape {})",
                      in[0].shape.to_string());
  }
  return Types{in[0]};
}

// ---- gradients ----

// The norm gradient reads (dy, x, mean, rstd, gamma) and yields (dx, dgamma, dbeta).
template <OpKind kGradKind>
std::vector<ValueId> grad_norm(GradEmitter& e, const Graph&, const Op& op,
                               const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.eps = op.attrs.eps;
  auto outs = e.emit(kGradKind, {dys[0], op.inputs[0], op.outputs[1], op.outputs[2], op.inputs[1]},
                     a, "grad");
  if (outs.size() != 3) return {};
  return {outs[0], outs[1], outs[2]};
}

// The softmax gradients read (y, dy) and the axis.
template <OpKind kGradKind>
std::vector<ValueId> grad_softmax(GradEmitter& e, const Graph&, const Op& op,
                                  const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.axis = op.attrs.axis;
  return {e.emit1(kGradKind, {op.outputs[0], dys[0]}, a, "grad")};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kLayerNorm, infer_layer_norm, flops_per_input<8>, grad_norm<K::kLayerNormGrad>},
    {K::kBatchNorm, infer_batch_norm, flops_per_input<8>, grad_norm<K::kBatchNormGrad>},
    {K::kSoftmax, infer_softmax, flops_per_output<5>, grad_softmax<K::kSoftmaxGrad>},
    {K::kLogSoftmax, infer_softmax, flops_per_output<5>, grad_softmax<K::kLogSoftmaxGrad>},
    {K::kLayerNormGrad, infer_norm_grad, flops_per_input<16>},
    {K::kBatchNormGrad, infer_norm_grad, flops_per_input<16>},
    {K::kSoftmaxGrad, infer_like_saved, flops_per_output<10>},
    {K::kLogSoftmaxGrad, infer_like_saved, flops_per_output<10>},
};

}  // namespace

std::span<const OpDef> norm_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

// Elementwise ops: add, sub, mul, div, scale, bias_add, relu, gelu, tanh, the activation
// gradients, constant and convert (a change of storage type). FLOPs per output element:
// add/sub/mul/div/scale/bias/relu and relu_grad 1; tanh and tanh_grad 4; gelu and gelu_grad 8
// (cubic, tanh, products); constant and convert 0.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

// ---- shapes ----

// add, sub, mul, div: equal shapes.
Expected<Types> infer_binary(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "lhs"));
  MP_RETURN_IF_ERROR(expect_f32(in[1], "rhs"));
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "operands"));
  return Types{in[0]};
}

// scale and the activations.
Expected<Types> infer_unary(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  return Types{in[0]};
}

Expected<Types> infer_bias_add(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  MP_RETURN_IF_ERROR(expect_f32(in[1], "bias"));
  MP_RETURN_IF_ERROR(expect_increasing(a.axes, in[0].shape.rank(), "bias"));
  if (static_cast<int64_t>(a.axes.size()) != in[1].shape.rank()) {
    return make_error(Errc::kInvalidArgument, "bias has rank {} but {} dims are mapped",
                      in[1].shape.rank(), a.axes.size());
  }
  for (size_t i = 0; i < a.axes.size(); ++i) {
    if (in[1].shape[static_cast<int64_t>(i)] != in[0].shape[a.axes[i]]) {
      return make_error(Errc::kInvalidArgument,
                        "bias dim {} has size {} but input dim {} has {} (input {}, bias {})", i,
                        in[1].shape[static_cast<int64_t>(i)], a.axes[i], in[0].shape[a.axes[i]],
                        in[0].shape.to_string(), in[1].shape.to_string());
    }
  }
  return Types{in[0]};
}

// convert: a floating tensor to another floating storage type.
Expected<Types> infer_convert(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  if (!is_floating(a.dtype)) {
    return make_error(Errc::kInvalidArgument, "convert targets a floating type, got {}",
                      dtype_name(a.dtype));
  }
  return Types{{in[0].shape, a.dtype}};
}

Expected<Types> infer_constant(const OpAttrs& a, const Types&) {
  if (!a.shape.is_valid()) {
    return make_error(Errc::kInvalidArgument, "invalid constant shape {}", a.shape.to_string());
  }
  return Types{{a.shape, DType::kF32}};
}

// ---- gradients ----

std::vector<ValueId> grad_add(GradEmitter&, const Graph&, const Op&,
                              const std::vector<ValueId>& dys) {
  return {dys[0], dys[0]};
}

std::vector<ValueId> grad_sub(GradEmitter& e, const Graph& g, const Op& op,
                              const std::vector<ValueId>& dys) {
  return {dys[0],
          g.value(op.inputs[1]).requires_grad ? e.scale(dys[0], -1.0f, "grad_rhs") : ValueId()};
}

std::vector<ValueId> grad_mul(GradEmitter& e, const Graph& g, const Op& op,
                              const std::vector<ValueId>& dys) {
  const ValueId dy = dys[0];
  const ValueId da = g.value(op.inputs[0]).requires_grad
                         ? e.emit1(K::kMul, {dy, op.inputs[1]}, {}, "grad_lhs")
                         : ValueId();
  const ValueId db = g.value(op.inputs[1]).requires_grad
                         ? e.emit1(K::kMul, {dy, op.inputs[0]}, {}, "grad_rhs")
                         : ValueId();
  return {da, db};
}

std::vector<ValueId> grad_div(GradEmitter& e, const Graph& g, const Op& op,
                              const std::vector<ValueId>& dys) {
  const ValueId dy = dys[0];
  const ValueId da = g.value(op.inputs[0]).requires_grad
                         ? e.emit1(K::kDiv, {dy, op.inputs[1]}, {}, "grad_lhs")
                         : ValueId();
  ValueId db;
  if (g.value(op.inputs[1]).requires_grad) {
    // d(a/b)/db = -(a/b)/b = -y/b.
    const ValueId t = e.emit1(K::kMul, {dy, op.outputs[0]}, {}, "grad_rhs_mul");
    const ValueId t2 = e.emit1(K::kDiv, {t, op.inputs[1]}, {}, "grad_rhs_div");
    db = e.scale(t2, -1.0f, "grad_rhs");
  }
  return {da, db};
}

std::vector<ValueId> grad_scale(GradEmitter& e, const Graph&, const Op& op,
                                const std::vector<ValueId>& dys) {
  return {e.scale(dys[0], op.attrs.alpha, "grad")};
}

// The gradient of a conversion is the incoming gradient converted back to the input's type.
std::vector<ValueId> grad_convert(GradEmitter& e, const Graph& g, const Op& op,
                                  const std::vector<ValueId>& dys) {
  OpAttrs back;
  back.dtype = g.value(op.inputs[0]).dtype;
  return {e.emit1(K::kConvert, {dys[0]}, back, "grad")};
}

std::vector<ValueId> grad_bias_add(GradEmitter& e, const Graph& g, const Op& op,
                                   const std::vector<ValueId>& dys) {
  const int64_t rank = g.value(op.inputs[0]).shape.rank();
  return {dys[0], g.value(op.inputs[1]).requires_grad
                      ? e.reduce_sum(dys[0], complement(rank, op.attrs.axes), "grad_bias")
                      : ValueId()};
}

// relu and tanh: the gradient kind reads the output and dy.
template <OpKind kGradKind>
std::vector<ValueId> grad_from_output(GradEmitter& e, const Graph&, const Op& op,
                                      const std::vector<ValueId>& dys) {
  return {e.emit1(kGradKind, {op.outputs[0], dys[0]}, {}, "grad")};
}

// gelu (either form): the gradient kind reads the input and dy.
template <OpKind kGradKind>
std::vector<ValueId> grad_from_input(GradEmitter& e, const Graph&, const Op& op,
                                     const std::vector<ValueId>& dys) {
  return {e.emit1(kGradKind, {op.inputs[0], dys[0]}, {}, "grad")};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kAdd, infer_binary, flops_per_output<1>, grad_add},
    {K::kSub, infer_binary, flops_per_output<1>, grad_sub},
    {K::kMul, infer_binary, flops_per_output<1>, grad_mul},
    {K::kDiv, infer_binary, flops_per_output<1>, grad_div},
    {K::kScale, infer_unary, flops_per_output<1>, grad_scale},
    {K::kBiasAdd, infer_bias_add, flops_per_output<1>, grad_bias_add},
    {K::kRelu, infer_unary, flops_per_output<1>, grad_from_output<K::kReluGrad>},
    {K::kGelu, infer_unary, flops_per_output<8>, grad_from_input<K::kGeluGrad>},
    {K::kGeluErf, infer_unary, flops_per_output<8>, grad_from_input<K::kGeluErfGrad>},
    {K::kTanh, infer_unary, flops_per_output<4>, grad_from_output<K::kTanhGrad>},
    {K::kConstant, infer_constant, no_flops},
    {K::kConvert, infer_convert, no_flops, grad_convert},
    {K::kReluGrad, infer_like_saved, flops_per_output<1>},
    {K::kGeluGrad, infer_like_saved, flops_per_output<8>},
    {K::kGeluErfGrad, infer_like_saved, flops_per_output<10>},
    {K::kTanhGrad, infer_like_saved, flops_per_output<4>},
};

}  // namespace

std::span<const OpDef> elementwise_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

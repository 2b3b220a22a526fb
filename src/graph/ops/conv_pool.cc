// Convolution and pooling over NCHW images (attrs.window) and their gradients. FLOPs: conv2d
// and its gradients 2 per multiply-add; pooling and its gradients one per window element.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

// ---- shapes ----

// The output of a window over x (NCHW) with `channels` output channels.
Expected<Types> infer_window(const TensorType& x, const Window2d& w, int64_t channels) {
  MP_RETURN_IF_ERROR(expect_rank(x, 4, "input (NCHW)"));
  MP_ASSIGN_OR_RETURN(int64_t ho, window_output_size(x.shape[2], w.kernel_h, w.stride_h, w.pad_h));
  MP_ASSIGN_OR_RETURN(int64_t wo, window_output_size(x.shape[3], w.kernel_w, w.stride_w, w.pad_w));
  return Types{{Shape{x.shape[0], channels, ho, wo}, x.dtype}};
}

// The channels a pool keeps (0 for an input of the wrong rank, which infer_window rejects).
int64_t pool_channels(const TensorType& x) { return x.shape.rank() == 4 ? x.shape[1] : 0; }

Expected<Types> infer_conv2d(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  MP_RETURN_IF_ERROR(expect_rank(in[1], 4, "filter (OIHW)"));
  if (in[0].shape.rank() == 4 && in[1].shape[1] != in[0].shape[1]) {
    return make_error(
        Errc::kInvalidArgument, "filter {} expects {} input channels but the input {} has {}",
        in[1].shape.to_string(), in[1].shape[1], in[0].shape.to_string(), in[0].shape[1]);
  }
  if (in[1].shape[2] != a.window.kernel_h || in[1].shape[3] != a.window.kernel_w) {
    return make_error(Errc::kInvalidArgument, "filter {} does not match window {}",
                      in[1].shape.to_string(), window_to_string(a.window));
  }
  return infer_window(in[0], a.window, in[1].shape[0]);
}

Expected<Types> infer_pool(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
  return infer_window(in[0], a.window, pool_channels(in[0]));
}

Expected<Types> infer_max_pool_grad(const OpAttrs& a, const Types& in) {
  MP_ASSIGN_OR_RETURN(Types pooled, infer_window(in[0], a.window, pool_channels(in[0])));
  MP_RETURN_IF_ERROR(expect_same_shape(pooled[0], in[1], "pooled output and gradient"));
  return Types{in[0]};
}

// conv2d_grad_input, conv2d_grad_filter, avg_pool2d_grad: the shape is an attribute.
Expected<Types> infer_attr_shape(const OpAttrs& a, const Types& in) {
  return Types{{a.shape, in[0].dtype}};
}

// ---- FLOPs ----

// Multiply-adds per output element of a convolution with filter shape w [K, C, R, S].
double filter_volume(const Shape& w) { return static_cast<double>(w[1] * w[2] * w[3]); }

double window_elements(const Op& op) {
  return static_cast<double>(op.attrs.window.kernel_h * op.attrs.window.kernel_w);
}

Flops conv2d_flops(const Graph& g, const Op& op) {
  return Flops(2.0 * output_elements(g, op) * filter_volume(g.value(op.inputs[1]).shape));
}

Flops conv2d_grad_input_flops(const Graph& g, const Op& op) {
  return Flops(2.0 * numel(g, op.inputs[0]) * filter_volume(g.value(op.inputs[1]).shape));
}

Flops conv2d_grad_filter_flops(const Graph& g, const Op& op) {
  return Flops(2.0 * numel(g, op.inputs[1]) * filter_volume(op.attrs.shape));
}

Flops pool_flops(const Graph& g, const Op& op) {
  return Flops(output_elements(g, op) * window_elements(op));
}

// max_pool2d_grad reads (x, dy), avg_pool2d_grad (dy): one per window element of dy.
template <int kDyInput>
Flops pool_grad_flops(const Graph& g, const Op& op) {
  return Flops(numel(g, op.inputs[kDyInput]) * window_elements(op));
}

// ---- gradients ----

std::vector<ValueId> grad_conv2d(GradEmitter& e, const Graph& g, const Op& op,
                                 const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.window = op.attrs.window;
  ValueId dx;
  ValueId dw;
  if (g.value(op.inputs[0]).requires_grad) {
    a.shape = g.value(op.inputs[0]).shape;
    dx = e.emit1(K::kConv2dGradInput, {dys[0], op.inputs[1]}, a, "grad_input");
  }
  if (g.value(op.inputs[1]).requires_grad) {
    a.shape = g.value(op.inputs[1]).shape;
    dw = e.emit1(K::kConv2dGradFilter, {op.inputs[0], dys[0]}, a, "grad_filter");
  }
  return {dx, dw};
}

std::vector<ValueId> grad_max_pool(GradEmitter& e, const Graph&, const Op& op,
                                   const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.window = op.attrs.window;
  return {e.emit1(K::kMaxPool2dGrad, {op.inputs[0], dys[0]}, a, "grad")};
}

std::vector<ValueId> grad_avg_pool(GradEmitter& e, const Graph& g, const Op& op,
                                   const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.window = op.attrs.window;
  a.shape = g.value(op.inputs[0]).shape;
  return {e.emit1(K::kAvgPool2dGrad, {dys[0]}, a, "grad")};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kConv2d, infer_conv2d, conv2d_flops, grad_conv2d},
    {K::kMaxPool2d, infer_pool, pool_flops, grad_max_pool},
    {K::kAvgPool2d, infer_pool, pool_flops, grad_avg_pool},
    {K::kConv2dGradInput, infer_attr_shape, conv2d_grad_input_flops},
    {K::kConv2dGradFilter, infer_attr_shape, conv2d_grad_filter_flops},
    {K::kMaxPool2dGrad, infer_max_pool_grad, pool_grad_flops<1>},
    {K::kAvgPool2dGrad, infer_attr_shape, pool_grad_flops<0>},
};

}  // namespace

std::span<const OpDef> conv_pool_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

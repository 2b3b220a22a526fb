// OpKind -> kernel call.
#include "runtime/op_dispatch.h"

#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/layout.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/moe.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "kernels/pool.h"
#include "kernels/softmax.h"

namespace meshpipe::runtime {

using graph::OpKind;
namespace k = kernels;

int64_t op_workspace_bytes(const graph::Graph& g, const graph::Op& op) {
  std::vector<Shape> inputs;
  for (ValueId v : op.inputs) inputs.push_back(g.value(v).shape);
  return op_workspace_bytes(op, inputs);
}

int64_t op_workspace_bytes(const graph::Op& op, const std::vector<Shape>& inputs) {
  switch (op.kind) {
    case OpKind::kDot:
      return k::dot_workspace_bytes(inputs[0], inputs[1], op.attrs.dot);
    case OpKind::kConv2d:
      return k::conv2d_workspace_bytes(inputs[0], inputs[1], op.attrs.window);
    case OpKind::kConv2dGradInput:
      return k::conv2d_workspace_bytes(op.attrs.shape, inputs[1], op.attrs.window);
    case OpKind::kConv2dGradFilter:
      return k::conv2d_workspace_bytes(inputs[0], op.attrs.shape, op.attrs.window);
    default:
      return 0;
  }
}

bool op_can_run_in_place(const graph::Op& op, size_t input_index, size_t output_index) {
  switch (op.kind) {
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
      return output_index == 0 && input_index < 2;
    case OpKind::kScale:
    case OpKind::kRelu:
    case OpKind::kGelu:
    case OpKind::kTanh:
    case OpKind::kBiasAdd:
      return output_index == 0 && input_index == 0;
    case OpKind::kSgdUpdate:
      return output_index == 0 && input_index == 0;
    case OpKind::kSgdMomentumUpdate:
      // p -> p', m -> m'
      return (output_index == 0 && input_index == 0) || (output_index == 1 && input_index == 2);
    case OpKind::kAdamUpdate:
      // p -> p', m -> m', v -> v'
      return (output_index == 0 && input_index == 0) || (output_index == 1 && input_index == 2) ||
             (output_index == 2 && input_index == 3);
    default:
      return false;
  }
}

Status run_op(const k::KernelContext& ctx, const graph::Op& op,
              const std::vector<k::TensorView>& in, const std::vector<k::TensorView>& out,
              const k::TensorView& ws, IndexOffsets offsets) {
  for (const auto* list : {&in, &out}) {
    for (const k::TensorView& v : *list) {
      if (v.dtype != DType::kF32 && v.dtype != DType::kI32) {
        return make_error(Errc::kInvalidArgument,
                          "op '{}' ({}): the CPU kernels compute in f32, got a {} tensor; build "
                          "the model with dtype f32 to run it",
                          op.name, op_kind_name(op.kind), dtype_name(v.dtype));
      }
    }
  }
  const graph::OpAttrs& a = op.attrs;
  switch (op.kind) {
    case OpKind::kDot:
      k::dot(ctx, in[0], in[1], a.dot, out[0], ws);
      break;
    case OpKind::kAdd:
      k::binary(ctx, k::BinaryOp::kAdd, in[0], in[1], out[0]);
      break;
    case OpKind::kSub:
      k::binary(ctx, k::BinaryOp::kSub, in[0], in[1], out[0]);
      break;
    case OpKind::kMul:
      k::binary(ctx, k::BinaryOp::kMul, in[0], in[1], out[0]);
      break;
    case OpKind::kDiv:
      k::binary(ctx, k::BinaryOp::kDiv, in[0], in[1], out[0]);
      break;
    case OpKind::kScale:
      k::affine_scalar(ctx, in[0], a.alpha, a.beta, out[0]);
      break;
    case OpKind::kBiasAdd:
      k::bias_add(ctx, in[0], in[1], a.axes, out[0]);
      break;
    case OpKind::kRelu:
      k::unary(ctx, k::UnaryOp::kRelu, in[0], out[0]);
      break;
    case OpKind::kGelu:
      k::unary(ctx, k::UnaryOp::kGelu, in[0], out[0]);
      break;
    case OpKind::kTanh:
      k::unary(ctx, k::UnaryOp::kTanh, in[0], out[0]);
      break;
    case OpKind::kSoftmax:
      k::softmax(ctx, in[0], a.axis, a.causal, offsets.row, out[0]);
      break;
    case OpKind::kLogSoftmax:
      k::log_softmax(ctx, in[0], a.axis, out[0]);
      break;
    case OpKind::kLayerNorm:
      k::layer_norm(ctx, in[0], in[1], in[2], a.eps, out[0], out[1], out[2]);
      break;
    case OpKind::kBatchNorm:
      k::batch_norm(ctx, in[0], in[1], in[2], a.eps, out[0], out[1], out[2]);
      break;
    case OpKind::kEmbedding:
      k::embedding(ctx, in[0], in[1], offsets.id, out[0]);
      break;
    case OpKind::kCrossEntropy:
      k::cross_entropy(ctx, in[0], in[1], out[0]);
      break;
    case OpKind::kReshape:
      k::copy(ctx, in[0], out[0]);
      break;
    case OpKind::kTranspose:
      k::transpose(ctx, in[0], a.axes, out[0]);
      break;
    case OpKind::kSlice:
      k::slice(ctx, in[0], a.axis, a.start, out[0]);
      break;
    case OpKind::kConcat:
      k::concat(ctx, in, a.axis, out[0]);
      break;
    case OpKind::kReduceSum:
      k::reduce(ctx, in[0], a.axes, false, out[0]);
      break;
    case OpKind::kReduceMean:
      k::reduce(ctx, in[0], a.axes, true, out[0]);
      break;
    case OpKind::kBroadcast:
      k::broadcast(ctx, in[0], a.axes, out[0]);
      break;
    case OpKind::kConv2d:
      k::conv2d(ctx, in[0], in[1], a.window, out[0], ws);
      break;
    case OpKind::kMaxPool2d:
      k::max_pool2d(ctx, in[0], a.window, out[0]);
      break;
    case OpKind::kAvgPool2d:
      k::avg_pool2d(ctx, in[0], a.window, out[0]);
      break;
    case OpKind::kTopKGating:
      k::topk_gating(ctx, in[0], a.k, a.capacity, out[0], out[1]);
      break;
    case OpKind::kConstant:
      k::fill(ctx, out[0], a.alpha);
      break;
    case OpKind::kReluGrad:
      k::unary_grad(ctx, k::UnaryOp::kRelu, in[0], in[1], out[0]);
      break;
    case OpKind::kGeluGrad:
      k::unary_grad(ctx, k::UnaryOp::kGelu, in[0], in[1], out[0]);
      break;
    case OpKind::kTanhGrad:
      k::unary_grad(ctx, k::UnaryOp::kTanh, in[0], in[1], out[0]);
      break;
    case OpKind::kSoftmaxGrad:
      k::softmax_grad(ctx, in[0], in[1], a.axis, out[0]);
      break;
    case OpKind::kLogSoftmaxGrad:
      k::log_softmax_grad(ctx, in[0], in[1], a.axis, out[0]);
      break;
    case OpKind::kLayerNormGrad:
      k::layer_norm_grad(ctx, in[0], in[1], in[2], in[3], in[4], out[0], out[1], out[2]);
      break;
    case OpKind::kBatchNormGrad:
      k::batch_norm_grad(ctx, in[0], in[1], in[2], in[3], in[4], out[0], out[1], out[2]);
      break;
    case OpKind::kEmbeddingGrad:
      k::embedding_grad(ctx, in[0], in[1], offsets.id, out[0]);
      break;
    case OpKind::kCrossEntropyGrad:
      k::cross_entropy_grad(ctx, in[0], in[1], in[2], out[0]);
      break;
    case OpKind::kPad:
      k::pad(ctx, in[0], a.axis, a.start, out[0]);
      break;
    case OpKind::kConv2dGradInput:
      k::conv2d_grad_input(ctx, in[0], in[1], a.window, out[0], ws);
      break;
    case OpKind::kConv2dGradFilter:
      k::conv2d_grad_filter(ctx, in[0], in[1], a.window, out[0], ws);
      break;
    case OpKind::kMaxPool2dGrad:
      k::max_pool2d_grad(ctx, in[0], in[1], a.window, out[0]);
      break;
    case OpKind::kAvgPool2dGrad:
      k::avg_pool2d_grad(ctx, in[0], a.window, out[0]);
      break;
    case OpKind::kTopKGatingGrad:
      k::topk_gating_grad(ctx, in[0], in[1], a.k, a.capacity, out[0]);
      break;
    case OpKind::kSgdUpdate:
      k::sgd_update(ctx, in[0], in[1], a.lr, a.weight_decay, out[0]);
      break;
    case OpKind::kSgdMomentumUpdate:
      k::sgd_momentum_update(ctx, in[0], in[1], in[2], a.lr, a.momentum, a.weight_decay, out[0],
                             out[1]);
      break;
    case OpKind::kAdamUpdate: {
      k::AdamParams hp;
      hp.lr = a.lr;
      hp.beta1 = a.beta1;
      hp.beta2 = a.beta2;
      hp.eps = a.eps;
      hp.weight_decay = a.weight_decay;
      k::adam_update(ctx, in[0], in[1], in[2], in[3], in[4], hp, out[0], out[1], out[2]);
      break;
    }
  }
  return Status::ok();
}

}  // namespace meshpipe::runtime

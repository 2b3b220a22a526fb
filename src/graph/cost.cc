// Per-op FLOP and byte counts.
//
// Elementwise weights (FLOPs per output element), chosen to reflect the arithmetic of the CPU
// kernels: add/sub/mul/div/scale/bias/relu 1; tanh 4; gelu 8 (cubic, tanh, products);
// softmax/log-softmax 5 (max, subtract, exp, sum, divide) and 2x that for their gradients;
// layer/batch norm 8 forward, 16 backward; cross-entropy 5 per logit forward and backward;
// pooling one per window element; Adam 12 per parameter, SGD 2, SGD with momentum 4.
#include "graph/cost.h"

namespace meshpipe::graph {
namespace {

double numel(const Graph& g, ValueId v) { return static_cast<double>(g.value(v).shape.numel()); }

}  // namespace

Flops op_flops(const Graph& g, const Op& op) {
  const double out = op.outputs.empty() ? 0.0 : numel(g, op.outputs[0]);
  const double in0 = op.inputs.empty() ? 0.0 : numel(g, op.inputs[0]);
  switch (op.kind) {
    case OpKind::kDot: {
      const DotSizes s =
          dot_sizes(g.value(op.inputs[0]).shape, g.value(op.inputs[1]).shape, op.attrs.dot);
      return Flops(2.0 * static_cast<double>(s.batch) * static_cast<double>(s.m) *
                   static_cast<double>(s.n) * static_cast<double>(s.k));
    }
    case OpKind::kConv2d: {
      const Shape& w = g.value(op.inputs[1]).shape;  // [K, C, R, S]
      return Flops(2.0 * out * static_cast<double>(w[1] * w[2] * w[3]));
    }
    case OpKind::kConv2dGradInput: {
      const Shape& w = g.value(op.inputs[1]).shape;
      return Flops(2.0 * numel(g, op.inputs[0]) * static_cast<double>(w[1] * w[2] * w[3]));
    }
    case OpKind::kConv2dGradFilter: {
      const Shape& w = op.attrs.shape;
      return Flops(2.0 * numel(g, op.inputs[1]) * static_cast<double>(w[1] * w[2] * w[3]));
    }
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
    case OpKind::kScale:
    case OpKind::kBiasAdd:
    case OpKind::kRelu:
    case OpKind::kReluGrad:
      return Flops(out);
    case OpKind::kTanh:
    case OpKind::kTanhGrad:
      return Flops(4.0 * out);
    case OpKind::kGelu:
    case OpKind::kGeluGrad:
      return Flops(8.0 * out);
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax:
      return Flops(5.0 * out);
    case OpKind::kSoftmaxGrad:
    case OpKind::kLogSoftmaxGrad:
      return Flops(10.0 * out);
    case OpKind::kLayerNorm:
    case OpKind::kBatchNorm:
      return Flops(8.0 * in0);
    case OpKind::kLayerNormGrad:
    case OpKind::kBatchNormGrad:
      return Flops(16.0 * in0);
    case OpKind::kCrossEntropy:
    case OpKind::kCrossEntropyGrad:
      return Flops(5.0 * in0);
    case OpKind::kReduceSum:
    case OpKind::kReduceMean:
      return Flops(in0);
    case OpKind::kEmbeddingGrad:
      return Flops(numel(g, op.inputs[1]));
    case OpKind::kMaxPool2d:
    case OpKind::kAvgPool2d:
      return Flops(out * static_cast<double>(op.attrs.window.kernel_h * op.attrs.window.kernel_w));
    case OpKind::kMaxPool2dGrad:
    case OpKind::kAvgPool2dGrad:
      return Flops(numel(g, op.inputs[op.kind == OpKind::kMaxPool2dGrad ? 1 : 0]) *
                   static_cast<double>(op.attrs.window.kernel_h * op.attrs.window.kernel_w));
    case OpKind::kTopKGating:
    case OpKind::kTopKGatingGrad:
      return Flops(2.0 * in0 * static_cast<double>(op.attrs.k));
    case OpKind::kSgdUpdate:
      return Flops(2.0 * in0);
    case OpKind::kSgdMomentumUpdate:
      return Flops(4.0 * in0);
    case OpKind::kAdamUpdate:
      return Flops(12.0 * in0);
    default:
      return Flops(0.0);
  }
}

Bytes op_bytes(const Graph& g, const Op& op) {
  int64_t b = 0;
  for (ValueId v : op.inputs) b += g.value(v).bytes();
  for (ValueId v : op.outputs) b += g.value(v).bytes();
  return Bytes(b);
}

GraphCost graph_cost(const Graph& g) {
  GraphCost c;
  for (const Op& op : g.ops()) {
    const Flops f = op_flops(g, op);
    switch (op.phase) {
      case OpPhase::kForward:
        c.forward += f;
        break;
      case OpPhase::kBackward:
        c.backward += f;
        break;
      case OpPhase::kUpdate:
        c.update += f;
        break;
    }
  }
  for (const Value& v : g.values()) {
    if (v.role == ValueRole::kParameter) {
      c.parameter_bytes += Bytes(v.bytes());
      c.parameter_count += v.shape.numel();
    } else if (v.role == ValueRole::kOptimizerState) {
      c.optimizer_state_bytes += Bytes(v.bytes());
    }
  }
  return c;
}

int64_t parameter_count(const Graph& g) {
  int64_t n = 0;
  for (const Value& v : g.values()) {
    if (v.role == ValueRole::kParameter) n += v.shape.numel();
  }
  return n;
}

}  // namespace meshpipe::graph

// The closed set of operations, with per-kind metadata: the vocabulary the graph IR, the kernel
// backend table (kernels/backend.h) and the lowering share. Kinds marked "lowering only" never
// appear in a graph; the runtime emits them when it splits an op (a synchronised batch norm).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace meshpipe {

/// Every operation the IR knows: forward ops (first), ops that only autodiff emits (the
/// gradients), and optimizer updates. Inputs/outputs per kind are listed in the comments; the
/// attributes each kind reads are in OpAttrs (core/op_attrs.h).
enum class OpKind : uint16_t {
  // ---- forward ----
  kDot,           ///< (lhs, rhs) -> out. attrs.dot: batch/contracting dims
  kAdd,           ///< (a, b) -> a + b, equal shapes
  kSub,           ///< (a, b) -> a - b
  kMul,           ///< (a, b) -> a * b
  kDiv,           ///< (a, b) -> a / b
  kScale,         ///< (x) -> alpha * x + beta (attrs.alpha, attrs.beta)
  kBiasAdd,       ///< (x, b) -> x + b broadcast; b's dim i is x's dim attrs.axes[i]
  kRelu,          ///< (x) -> max(x, 0)
  kGelu,          ///< (x) -> gelu(x), tanh approximation
  kTanh,          ///< (x) -> tanh(x)
  kSoftmax,       ///< (x) -> softmax over attrs.axis; attrs.causal masks j > i (last two dims)
  kLogSoftmax,    ///< (x) -> log_softmax over attrs.axis
  kLayerNorm,     ///< (x, gamma, beta) -> (y, mean, rstd) over the last dim; attrs.eps
  kBatchNorm,     ///< (x, gamma, beta) -> (y, mean, rstd) per channel (dim 1); attrs.eps
  kEmbedding,     ///< (table [V, H], ids int) -> [ids..., H]
  kCrossEntropy,  ///< (logits [..., V], labels int [...]) -> scalar mean loss
  kReshape,       ///< (x) -> x with shape attrs.shape
  kTranspose,     ///< (x) -> out dim i = x dim attrs.axes[i]
  kSlice,         ///< (x) -> x[start:end] along attrs.axis (attrs.start, attrs.end)
  kConcat,        ///< (x0, x1, ...) -> concatenation along attrs.axis
  kReduceSum,     ///< (x) -> sum over attrs.axes (removed from the shape)
  kReduceMean,    ///< (x) -> mean over attrs.axes
  kBroadcast,     ///< (x) -> shape attrs.shape; x's dim i is out dim attrs.axes[i]
  kConv2d,        ///< (x NCHW, w OIHW) -> y; attrs.window
  kMaxPool2d,     ///< (x) -> y; attrs.window
  kAvgPool2d,     ///< (x) -> y; attrs.window
  kTopKGating,    ///< (probs [G,S,E]) -> (combine [G,S,E,C], dispatch [G,S,E,C]); attrs.k, capacity
  kConstant,      ///< () -> tensor of shape attrs.shape filled with attrs.alpha
  kConvert,       ///< (x) -> x stored as attrs.dtype (f32, f16, bf16; round to nearest even)
  // ---- gradients (emitted by autodiff) ----
  kReluGrad,          ///< (y, dy) -> dx
  kGeluGrad,          ///< (x, dy) -> dx
  kTanhGrad,          ///< (y, dy) -> dx
  kSoftmaxGrad,       ///< (y, dy) -> dx; attrs.axis
  kLogSoftmaxGrad,    ///< (y, dy) -> dx; attrs.axis
  kLayerNormGrad,     ///< (dy, x, mean, rstd, gamma) -> (dx, dgamma, dbeta)
  kBatchNormGrad,     ///< (dy, x, mean, rstd, gamma) -> (dx, dgamma, dbeta)
  kEmbeddingGrad,     ///< (ids, dy) -> dtable of shape attrs.shape
  kCrossEntropyGrad,  ///< (logits, labels, dloss) -> dlogits
  kPad,               ///< (x) -> zeros of shape attrs.shape with x at attrs.start along attrs.axis
  kConv2dGradInput,   ///< (dy, w) -> dx of shape attrs.shape
  kConv2dGradFilter,  ///< (x, dy) -> dw of shape attrs.shape
  kMaxPool2dGrad,     ///< (x, dy) -> dx
  kAvgPool2dGrad,     ///< (dy) -> dx of shape attrs.shape
  kTopKGatingGrad,    ///< (probs, dcombine) -> dprobs
  // ---- optimizer ----
  kSgdUpdate,          ///< (p, g) -> p'; attrs.lr, weight_decay
  kSgdMomentumUpdate,  ///< (p, g, m) -> (p', m'); attrs.lr, momentum, weight_decay
  kAdamUpdate,         ///< (p, g, m, v, step) -> (p', m', v'); attrs.lr, beta1, beta2, eps, wd
  // ---- lowering only: a batch norm whose batch is split over mesh axes runs as pieces with
  // all-reduces between them (explicit collective instructions); attrs.count = global N*H*W ----
  kBatchNormSums,       ///< (x) -> per-channel sums of x
  kBatchNormStats,      ///< (x, sums) -> (mean = sums / count, centered square sums)
  kBatchNormApply,      ///< (x, mean, sq, gamma, beta) -> (y, rstd); attrs.eps, count
  kBatchNormGradSums,   ///< (dy, x, mean, rstd) -> (dgamma, dbeta) of this device's part
  kBatchNormGradApply,  ///< (dy, x, mean, rstd, gamma, dgamma, dbeta) -> dx; attrs.count
  // ---- added later, at the end so that the numbers of the kinds above stay the same ----
  kGeluErf,      ///< (x) -> x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)): PyTorch's exact GELU
  kGeluErfGrad,  ///< (x, dy) -> dx
};

/// Number of op kinds.
inline constexpr int kNumOpKinds = static_cast<int>(OpKind::kGeluErfGrad) + 1;

/// Static facts about an op kind.
struct OpKindInfo {
  std::string_view name;  ///< "dot", "layer_norm", ...
  int num_inputs;         ///< -1: variadic (at least one)
  int num_outputs;
  uint32_t diff_outputs;       ///< bit i set: output i carries a gradient
  bool is_elementwise;         ///< output element i depends only on input elements i
  bool lowering_only = false;  ///< never in a graph; emitted by the runtime's lowering
};

/// Metadata of a kind.
const OpKindInfo& op_kind_info(OpKind kind);
/// "dot", ...
inline std::string_view op_kind_name(OpKind kind) { return op_kind_info(kind).name; }
/// Parses a name produced by op_kind_name.
std::optional<OpKind> parse_op_kind(std::string_view name);

/// An optimizer's parameter update (SGD, SGD with momentum, Adam): inputs (p, g, states...),
/// outputs (p', states'...).
inline bool is_optimizer_update(OpKind k) {
  return k == OpKind::kSgdUpdate || k == OpKind::kSgdMomentumUpdate || k == OpKind::kAdamUpdate;
}

}  // namespace meshpipe

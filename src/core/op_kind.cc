// The op-kind metadata table.
#include "core/op_kind.h"

#include <array>

#include "core/check.h"

namespace meshpipe {
namespace {

using K = OpKind;

struct Entry {
  OpKind kind;
  OpKindInfo info;
};

// name, inputs, outputs, differentiable outputs, elementwise, lowering only
constexpr Entry kEntries[] = {
    {K::kDot, {"dot", 2, 1, 1, false}},
    {K::kAdd, {"add", 2, 1, 1, true}},
    {K::kSub, {"sub", 2, 1, 1, true}},
    {K::kMul, {"mul", 2, 1, 1, true}},
    {K::kDiv, {"div", 2, 1, 1, true}},
    {K::kScale, {"scale", 1, 1, 1, true}},
    {K::kBiasAdd, {"bias_add", 2, 1, 1, false}},
    {K::kRelu, {"relu", 1, 1, 1, true}},
    {K::kGelu, {"gelu", 1, 1, 1, true}},
    {K::kTanh, {"tanh", 1, 1, 1, true}},
    {K::kSoftmax, {"softmax", 1, 1, 1, false}},
    {K::kLogSoftmax, {"log_softmax", 1, 1, 1, false}},
    {K::kLayerNorm, {"layer_norm", 3, 3, 1, false}},
    {K::kBatchNorm, {"batch_norm", 3, 3, 1, false}},
    {K::kEmbedding, {"embedding", 2, 1, 1, false}},
    {K::kCrossEntropy, {"cross_entropy", 2, 1, 1, false}},
    {K::kReshape, {"reshape", 1, 1, 1, false}},
    {K::kTranspose, {"transpose", 1, 1, 1, false}},
    {K::kSlice, {"slice", 1, 1, 1, false}},
    {K::kConcat, {"concat", -1, 1, 1, false}},
    {K::kReduceSum, {"reduce_sum", 1, 1, 1, false}},
    {K::kReduceMean, {"reduce_mean", 1, 1, 1, false}},
    {K::kBroadcast, {"broadcast", 1, 1, 1, false}},
    {K::kConv2d, {"conv2d", 2, 1, 1, false}},
    {K::kMaxPool2d, {"max_pool2d", 1, 1, 1, false}},
    {K::kAvgPool2d, {"avg_pool2d", 1, 1, 1, false}},
    {K::kTopKGating, {"topk_gating", 1, 2, 1, false}},
    {K::kConstant, {"constant", 0, 1, 0, false}},
    {K::kConvert, {"convert", 1, 1, 1, true}},
    {K::kReluGrad, {"relu_grad", 2, 1, 0, true}},
    {K::kGeluGrad, {"gelu_grad", 2, 1, 0, true}},
    {K::kTanhGrad, {"tanh_grad", 2, 1, 0, true}},
    {K::kSoftmaxGrad, {"softmax_grad", 2, 1, 0, false}},
    {K::kLogSoftmaxGrad, {"log_softmax_grad", 2, 1, 0, false}},
    {K::kLayerNormGrad, {"layer_norm_grad", 5, 3, 0, false}},
    {K::kBatchNormGrad, {"batch_norm_grad", 5, 3, 0, false}},
    {K::kEmbeddingGrad, {"embedding_grad", 2, 1, 0, false}},
    {K::kCrossEntropyGrad, {"cross_entropy_grad", 3, 1, 0, false}},
    {K::kPad, {"pad", 1, 1, 0, false}},
    {K::kConv2dGradInput, {"conv2d_grad_input", 2, 1, 0, false}},
    {K::kConv2dGradFilter, {"conv2d_grad_filter", 2, 1, 0, false}},
    {K::kMaxPool2dGrad, {"max_pool2d_grad", 2, 1, 0, false}},
    {K::kAvgPool2dGrad, {"avg_pool2d_grad", 1, 1, 0, false}},
    {K::kTopKGatingGrad, {"topk_gating_grad", 2, 1, 0, false}},
    {K::kSgdUpdate, {"sgd_update", 2, 1, 0, true}},
    {K::kSgdMomentumUpdate, {"sgd_momentum_update", 3, 2, 0, true}},
    {K::kAdamUpdate, {"adam_update", 5, 3, 0, false}},
    {K::kBatchNormSums, {"batch_norm_sums", 1, 1, 0, false, true}},
    {K::kBatchNormStats, {"batch_norm_stats", 2, 2, 0, false, true}},
    {K::kBatchNormApply, {"batch_norm_apply", 5, 2, 0, false, true}},
    {K::kBatchNormGradSums, {"batch_norm_grad_sums", 4, 2, 0, false, true}},
    {K::kBatchNormGradApply, {"batch_norm_grad_apply", 7, 1, 0, false, true}},
    {K::kGeluErf, {"gelu_erf", 1, 1, 1, true}},
    {K::kGeluErfGrad, {"gelu_erf_grad", 2, 1, 0, true}},
};

static_assert(std::size(kEntries) == kNumOpKinds, "every op kind needs a metadata entry");

constexpr bool entries_in_order() {
  for (size_t i = 0; i < std::size(kEntries); ++i) {
    if (static_cast<size_t>(kEntries[i].kind) != i) return false;
  }
  return true;
}
static_assert(entries_in_order(), "metadata entries must follow the enum order");

}  // namespace

const OpKindInfo& op_kind_info(OpKind kind) {
  const auto i = static_cast<size_t>(kind);
  MP_CHECK(i < std::size(kEntries)) << "op kind " << i;
  return kEntries[i].info;
}

std::optional<OpKind> parse_op_kind(std::string_view name) {
  for (const Entry& e : kEntries) {
    if (e.info.name == name) return e.kind;
  }
  return std::nullopt;
}

}  // namespace meshpipe

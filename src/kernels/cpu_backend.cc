// The CPU column of the kernel backend table (kernels/backend.h): one row per op kind, each a
// call into the float32 CPU kernels of its family with the operands the kind lists in
// core/op_kind.h. The table is built once; find_kernel indexes it by kind.
#include <vector>

#include "kernels/backend.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/internal/backends.h"
#include "kernels/layout.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/moe.h"
#include "kernels/norm.h"
#include "kernels/optimizer.h"
#include "kernels/pool.h"
#include "kernels/softmax.h"

namespace meshpipe::kernels {

namespace {

using K = OpKind;
using Args = KernelArgs;
using Table = std::array<OpKernel, kNumOpKinds>;

struct Row {
  OpKind kind;
  OpKernel kernel;
};

// OpKernel::in_place: per output, the inputs (bit i: input i) it may overwrite.
constexpr std::array<uint8_t, 3> kOut0OnIn0 = {0b1, 0, 0};
constexpr std::array<uint8_t, 3> kOut0OnIn0Or1 = {0b11, 0, 0};

template <BinaryOp op>
void run_binary(const Args& a) {
  binary(*a.ctx, op, a.in[0], a.in[1], a.out[0]);
}

template <UnaryOp op>
void run_unary(const Args& a) {
  unary(*a.ctx, op, a.in[0], a.out[0]);
}

template <UnaryOp op>
void run_unary_grad(const Args& a) {
  unary_grad(*a.ctx, op, a.in[0], a.in[1], a.out[0]);
}

void run_adam(const Args& a) {
  const OpAttrs& t = *a.attrs;
  AdamParams hp;
  hp.lr = t.lr;
  hp.beta1 = t.beta1;
  hp.beta2 = t.beta2;
  hp.eps = t.eps;
  hp.weight_decay = t.weight_decay;
  hp.grad_scale = t.grad_scale;
  adam_update(*a.ctx, a.in[0], a.in[1], a.in[2], a.in[3], a.in[4], hp, a.out[0], a.out[1],
              a.out[2]);
}

// A reshape is a copy between views of equal size: input 0 is read with the output's shape.
void run_reshape(const Args& a) {
  TensorView x = a.in[0];
  x.shape = a.out[0].shape;
  x.strides = x.shape.strides();
  copy(*a.ctx, x, a.out[0]);
}

const std::vector<Row>& rows() {
  static const std::vector<Row> r = {
      {K::kDot,
       {[](const Args& a) { dot(*a.ctx, a.in[0], a.in[1], a.attrs->dot, a.out[0], a.workspace); },
        [](std::span<const Shape> in, const OpAttrs& t) {
          return dot_workspace_bytes(in[0], in[1], t.dot);
        }}},
      {K::kAdd, {run_binary<BinaryOp::kAdd>, nullptr, kOut0OnIn0Or1}},
      {K::kSub, {run_binary<BinaryOp::kSub>, nullptr, kOut0OnIn0Or1}},
      {K::kMul, {run_binary<BinaryOp::kMul>, nullptr, kOut0OnIn0Or1}},
      {K::kDiv, {run_binary<BinaryOp::kDiv>, nullptr, kOut0OnIn0Or1}},
      {K::kScale,
       {[](const Args& a) {
          affine_scalar(*a.ctx, a.in[0], a.attrs->alpha, a.attrs->beta, a.out[0]);
        },
        nullptr, kOut0OnIn0}},
      {K::kBiasAdd,
       {[](const Args& a) { bias_add(*a.ctx, a.in[0], a.in[1], a.attrs->axes, a.out[0]); }, nullptr,
        kOut0OnIn0}},
      {K::kRelu, {run_unary<UnaryOp::kRelu>, nullptr, kOut0OnIn0}},
      {K::kGelu, {run_unary<UnaryOp::kGelu>, nullptr, kOut0OnIn0}},
      {K::kGeluErf, {run_unary<UnaryOp::kGeluErf>, nullptr, kOut0OnIn0}},
      {K::kTanh, {run_unary<UnaryOp::kTanh>, nullptr, kOut0OnIn0}},
      {K::kSoftmax, {[](const Args& a) {
         softmax(*a.ctx, a.in[0], a.attrs->axis, a.attrs->causal, a.row_offset, a.out[0]);
       }}},
      {K::kLogSoftmax,
       {[](const Args& a) { log_softmax(*a.ctx, a.in[0], a.attrs->axis, a.out[0]); }}},
      {K::kLayerNorm, {[](const Args& a) {
         layer_norm(*a.ctx, a.in[0], a.in[1], a.in[2], a.attrs->eps, a.out[0], a.out[1], a.out[2]);
       }}},
      {K::kBatchNorm, {[](const Args& a) {
         batch_norm(*a.ctx, a.in[0], a.in[1], a.in[2], a.attrs->eps, a.out[0], a.out[1], a.out[2]);
       }}},
      {K::kEmbedding,
       {[](const Args& a) { embedding(*a.ctx, a.in[0], a.in[1], a.id_offset, a.out[0]); }}},
      {K::kCrossEntropy,
       {[](const Args& a) { cross_entropy(*a.ctx, a.in[0], a.in[1], a.out[0]); }}},
      {K::kReshape, {run_reshape, nullptr, {0, 0, 0}, /*is_view=*/true}},
      {K::kTranspose, {[](const Args& a) { transpose(*a.ctx, a.in[0], a.attrs->axes, a.out[0]); }}},
      {K::kSlice,
       {[](const Args& a) { slice(*a.ctx, a.in[0], a.attrs->axis, a.attrs->start, a.out[0]); }}},
      {K::kConcat, {[](const Args& a) {
         concat(*a.ctx, std::vector<TensorView>(a.in.begin(), a.in.end()), a.attrs->axis, a.out[0]);
       }}},
      {K::kReduceSum,
       {[](const Args& a) { reduce(*a.ctx, a.in[0], a.attrs->axes, false, a.out[0]); }}},
      {K::kReduceMean,
       {[](const Args& a) { reduce(*a.ctx, a.in[0], a.attrs->axes, true, a.out[0]); }}},
      {K::kBroadcast, {[](const Args& a) { broadcast(*a.ctx, a.in[0], a.attrs->axes, a.out[0]); }}},
      {K::kConv2d,
       {[](const Args& a) {
          conv2d(*a.ctx, a.in[0], a.in[1], a.attrs->window, a.out[0], a.workspace);
        },
        [](std::span<const Shape> in, const OpAttrs& t) {
          return conv2d_workspace_bytes(in[0], in[1], t.window);
        }}},
      {K::kMaxPool2d,
       {[](const Args& a) { max_pool2d(*a.ctx, a.in[0], a.attrs->window, a.out[0]); }}},
      {K::kAvgPool2d,
       {[](const Args& a) { avg_pool2d(*a.ctx, a.in[0], a.attrs->window, a.out[0]); }}},
      {K::kTopKGating, {[](const Args& a) {
         topk_gating(*a.ctx, a.in[0], a.attrs->k, a.attrs->capacity, a.out[0], a.out[1]);
       }}},
      {K::kConstant, {[](const Args& a) { fill(*a.ctx, a.out[0], a.attrs->alpha); }}},
      // run_kernel widens half inputs and rounds half outputs, so a conversion is an f32 copy.
      {K::kConvert, {[](const Args& a) { copy(*a.ctx, a.in[0], a.out[0]); }}},
      {K::kReluGrad, {run_unary_grad<UnaryOp::kRelu>}},
      {K::kGeluGrad, {run_unary_grad<UnaryOp::kGelu>}},
      {K::kGeluErfGrad, {run_unary_grad<UnaryOp::kGeluErf>}},
      {K::kTanhGrad, {run_unary_grad<UnaryOp::kTanh>}},
      {K::kSoftmaxGrad,
       {[](const Args& a) { softmax_grad(*a.ctx, a.in[0], a.in[1], a.attrs->axis, a.out[0]); }}},
      {K::kLogSoftmaxGrad, {[](const Args& a) {
         log_softmax_grad(*a.ctx, a.in[0], a.in[1], a.attrs->axis, a.out[0]);
       }}},
      {K::kLayerNormGrad, {[](const Args& a) {
         layer_norm_grad(*a.ctx, a.in[0], a.in[1], a.in[2], a.in[3], a.in[4], a.out[0], a.out[1],
                         a.out[2]);
       }}},
      {K::kBatchNormGrad, {[](const Args& a) {
         batch_norm_grad(*a.ctx, a.in[0], a.in[1], a.in[2], a.in[3], a.in[4], a.out[0], a.out[1],
                         a.out[2]);
       }}},
      {K::kEmbeddingGrad,
       {[](const Args& a) { embedding_grad(*a.ctx, a.in[0], a.in[1], a.id_offset, a.out[0]); }}},
      {K::kCrossEntropyGrad,
       {[](const Args& a) { cross_entropy_grad(*a.ctx, a.in[0], a.in[1], a.in[2], a.out[0]); }}},
      {K::kPad,
       {[](const Args& a) { pad(*a.ctx, a.in[0], a.attrs->axis, a.attrs->start, a.out[0]); }}},
      {K::kConv2dGradInput,
       {[](const Args& a) {
          conv2d_grad_input(*a.ctx, a.in[0], a.in[1], a.attrs->window, a.out[0], a.workspace);
        },
        [](std::span<const Shape> in, const OpAttrs& t) {
          return conv2d_workspace_bytes(t.shape, in[1], t.window);
        }}},
      {K::kConv2dGradFilter,
       {[](const Args& a) {
          conv2d_grad_filter(*a.ctx, a.in[0], a.in[1], a.attrs->window, a.out[0], a.workspace);
        },
        [](std::span<const Shape> in, const OpAttrs& t) {
          return conv2d_workspace_bytes(in[0], t.shape, t.window);
        }}},
      {K::kMaxPool2dGrad, {[](const Args& a) {
         max_pool2d_grad(*a.ctx, a.in[0], a.in[1], a.attrs->window, a.out[0]);
       }}},
      {K::kAvgPool2dGrad,
       {[](const Args& a) { avg_pool2d_grad(*a.ctx, a.in[0], a.attrs->window, a.out[0]); }}},
      {K::kTopKGatingGrad, {[](const Args& a) {
         topk_gating_grad(*a.ctx, a.in[0], a.in[1], a.attrs->k, a.attrs->capacity, a.out[0]);
       }}},
      {K::kSgdUpdate,
       {[](const Args& a) {
          sgd_update(*a.ctx, a.in[0], a.in[1], a.attrs->lr, a.attrs->weight_decay, a.out[0],
                     a.attrs->grad_scale);
        },
        nullptr, kOut0OnIn0}},
      // p -> p', m -> m'
      {K::kSgdMomentumUpdate,
       {[](const Args& a) {
          sgd_momentum_update(*a.ctx, a.in[0], a.in[1], a.in[2], a.attrs->lr, a.attrs->momentum,
                              a.attrs->weight_decay, a.out[0], a.out[1], a.attrs->grad_scale);
        },
        nullptr,
        {0b1, 0b100, 0}}},
      // p -> p', m -> m', v -> v'
      {K::kAdamUpdate, {run_adam, nullptr, {0b1, 0b100, 0b1000}}},
      // The pieces of a synchronised batch norm (all-reduces between them are instructions).
      {K::kBatchNormSums,
       {[](const Args& a) { batch_norm_channel_sums(*a.ctx, a.in[0], a.out[0]); }}},
      {K::kBatchNormStats, {[](const Args& a) {
         batch_norm_mean_from_sums(*a.ctx, a.in[1], a.attrs->count, a.out[0]);
         batch_norm_centered_square_sums(*a.ctx, a.in[0], a.out[0], a.out[1]);
       }}},
      {K::kBatchNormApply, {[](const Args& a) {
         batch_norm_from_sums(*a.ctx, a.in[0], a.in[1], a.in[2], a.attrs->count, a.in[3], a.in[4],
                              a.attrs->eps, a.out[0], a.out[1]);
       }}},
      {K::kBatchNormGradSums, {[](const Args& a) {
         batch_norm_grad_sums(*a.ctx, a.in[0], a.in[1], a.in[2], a.in[3], a.out[0], a.out[1]);
       }}},
      {K::kBatchNormGradApply, {[](const Args& a) {
         batch_norm_grad_input(*a.ctx, a.in[0], a.in[1], a.in[2], a.in[3], a.in[4], a.in[5],
                               a.in[6], a.attrs->count, a.out[0]);
       }}},
  };
  return r;
}

const Table& cpu_table() {
  static const Table table = [] {
    Table t{};
    for (const Row& r : rows()) t[static_cast<size_t>(r.kind)] = r.kernel;
    return t;
  }();
  return table;
}

}  // namespace

namespace internal {

const OpKernel* cpu_kernel(OpKind kind) {
  const OpKernel& e = cpu_table()[static_cast<size_t>(kind)];
  return e.run != nullptr ? &e : nullptr;
}

}  // namespace internal
}  // namespace meshpipe::kernels

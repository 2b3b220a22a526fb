// Tests of graph/shape_inference.h: the output shapes and dtypes of every op kind on
// hand-computed cases, and the errors for bad inputs (arity, rank, mismatched dims, dtypes,
// lowering-only kinds).
#include "graph/shape_inference.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace meshpipe::graph {
namespace {

TensorType f32(Shape s) { return {std::move(s), DType::kF32}; }
TensorType i32(Shape s) { return {std::move(s), DType::kI32}; }

std::vector<TensorType> infer(OpKind kind, const OpAttrs& a, const std::vector<TensorType>& in) {
  auto out = infer_output_types(kind, a, in);
  INFO(op_kind_name(kind) << ": " << out.status().to_string());
  REQUIRE(out.has_value());
  return *out;
}

// The single output's shape; checks the dtype too.
Shape one(OpKind kind, const OpAttrs& a, const std::vector<TensorType>& in,
          DType dtype = DType::kF32) {
  const auto out = infer(kind, a, in);
  REQUIRE(out.size() == 1);
  CHECK(out[0].dtype == dtype);
  return out[0].shape;
}

std::string error(OpKind kind, const OpAttrs& a, const std::vector<TensorType>& in) {
  auto out = infer_output_types(kind, a, in);
  REQUIRE_FALSE(out.has_value());
  CHECK(out.status().code() == Errc::kInvalidArgument);
  return out.status().message();
}

OpAttrs window(int64_t k, int64_t s, int64_t p) {
  OpAttrs a;
  a.window = Window2d{k, k, s, s, p, p};
  return a;
}

TEST_CASE("dot: batch dims, then lhs free, then rhs free, the lhs dtype", "[graph][shape]") {
  OpAttrs a;
  a.dot = DotDims{{}, {}, {2}, {0}};
  CHECK(one(OpKind::kDot, a, {f32({2, 3, 4}), f32({4, 5})}) == Shape{2, 3, 5});
  // [B, M, K] x [B, N, K] contracting K, batch B -> [B, M, N].
  a.dot = DotDims{{0}, {0}, {2}, {2}};
  CHECK(one(OpKind::kDot, a, {f32({2, 3, 4}), f32({2, 5, 4})}) == Shape{2, 3, 5});
  a.dot = DotDims{{}, {}, {1}, {0}};
  CHECK(one(OpKind::kDot, a, {{Shape{3, 4}, DType::kF16}, {Shape{4, 6}, DType::kF16}},
            DType::kF16) == Shape{3, 6});
  CHECK(error(OpKind::kDot, a, {f32({3, 4}), f32({5, 6})}) ==
        "contracting dim sizes differ: lhs dim 1 has 4, rhs dim 0 has 5 (lhs [3, 4], rhs [5, 6])");
  CHECK(error(OpKind::kDot, a, {i32({3, 4}), f32({4, 6})}) ==
        "lhs must be floating point, got i32");
  a.dot = DotDims{{0}, {}, {1}, {0}};
  CHECK(error(OpKind::kDot, a, {f32({3, 4}), f32({4, 6})}) == "lhs has 1 batch dims but rhs has 0");
  a.dot = DotDims{{}, {}, {2}, {0}};
  CHECK(error(OpKind::kDot, a, {f32({3, 4}), f32({4, 6})}) ==
        "lhs contracting dim 2 is out of range for rank 2");
}

TEST_CASE("binary elementwise ops keep the shape and reject different shapes", "[graph][shape]") {
  for (OpKind k : {OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv}) {
    INFO(op_kind_name(k));
    CHECK(one(k, {}, {f32({2, 3}), f32({2, 3})}) == Shape{2, 3});
    CHECK(error(k, {}, {f32({2, 3}), f32({3, 2})}) == "operands: shapes differ: [2, 3] vs [3, 2]");
    CHECK(error(k, {}, {i32({2}), i32({2})}) == "lhs must be floating point, got i32");
  }
}

TEST_CASE("unary ops keep shape and dtype, integer inputs are rejected", "[graph][shape]") {
  for (OpKind k : {OpKind::kScale, OpKind::kRelu, OpKind::kGelu, OpKind::kTanh}) {
    INFO(op_kind_name(k));
    CHECK(one(k, {}, {f32({5, 1, 2})}) == Shape{5, 1, 2});
    CHECK(one(k, {}, {{Shape{4}, DType::kBF16}}, DType::kBF16) == Shape{4});
    CHECK(error(k, {}, {i32({4})}) == "input must be floating point, got i32");
  }
}

TEST_CASE("bias_add maps bias dims onto input dims and checks their sizes", "[graph][shape]") {
  OpAttrs a;
  a.axes = {1};
  CHECK(one(OpKind::kBiasAdd, a, {f32({2, 3, 4}), f32({3})}) == Shape{2, 3, 4});
  a.axes = {0, 2};
  CHECK(one(OpKind::kBiasAdd, a, {f32({2, 3, 4}), f32({2, 4})}) == Shape{2, 3, 4});
  CHECK(error(OpKind::kBiasAdd, a, {f32({2, 3, 4}), f32({2, 5})}) ==
        "bias dim 1 has size 5 but input dim 2 has 4 (input [2, 3, 4], bias [2, 5])");
  CHECK(error(OpKind::kBiasAdd, a, {f32({2, 3, 4}), f32({2})}) ==
        "bias has rank 1 but 2 dims are mapped");
  a.axes = {2, 1};
  CHECK(error(OpKind::kBiasAdd, a, {f32({2, 3, 4}), f32({4, 3})}) ==
        "bias dims must be strictly increasing, got [2, 1]");
  a.axes = {3};
  CHECK(error(OpKind::kBiasAdd, a, {f32({2, 3, 4}), f32({4})}) ==
        "bias dim 3 is out of range for rank 3");
}

TEST_CASE("softmax and log-softmax keep the shape, the axis must exist, causal needs the last",
          "[graph][shape]") {
  OpAttrs a;
  a.axis = -1;
  CHECK(one(OpKind::kSoftmax, a, {f32({2, 3})}) == Shape{2, 3});
  CHECK(one(OpKind::kLogSoftmax, a, {f32({2, 3})}) == Shape{2, 3});
  a.axis = 2;
  CHECK(error(OpKind::kSoftmax, a, {f32({2, 3})}) == "axis 2 is out of range for shape [2, 3]");
  CHECK(error(OpKind::kLogSoftmax, a, {f32({2, 3})}) == "axis 2 is out of range for shape [2, 3]");
  a.axis = 0;
  a.causal = true;
  CHECK(error(OpKind::kSoftmax, a, {f32({4, 4})}) ==
        "a causal softmax needs rank >= 2 and the last axis (shape [4, 4])");
  a.axis = 1;
  CHECK(one(OpKind::kSoftmax, a, {f32({4, 4})}) == Shape{4, 4});
  a.axis = 0;
  CHECK(error(OpKind::kSoftmax, a, {f32({4})}) ==
        "a causal softmax needs rank >= 2 and the last axis (shape [4])");
}

TEST_CASE("layer norm gives y and per-row mean and rstd, batch norm per-channel statistics",
          "[graph][shape]") {
  const auto ln = infer(OpKind::kLayerNorm, {}, {f32({2, 3, 8}), f32({8}), f32({8})});
  REQUIRE(ln.size() == 3);
  CHECK(ln[0].shape == Shape{2, 3, 8});
  CHECK(ln[1].shape == Shape{2, 3});
  CHECK(ln[2].shape == Shape{2, 3});
  CHECK(ln[1].dtype == DType::kF32);
  CHECK(error(OpKind::kLayerNorm, {}, {f32({2, 8}), f32({8}), f32({4})}) ==
        "gamma [8] and beta [4] must have shape [8]");

  const auto bn = infer(OpKind::kBatchNorm, {}, {f32({4, 3, 5, 5}), f32({3}), f32({3})});
  REQUIRE(bn.size() == 3);
  CHECK(bn[0].shape == Shape{4, 3, 5, 5});
  CHECK(bn[1].shape == Shape{3});
  CHECK(bn[2].shape == Shape{3});
  CHECK(infer(OpKind::kBatchNorm, {}, {f32({4, 3}), f32({3}), f32({3})})[1].shape == Shape{3});
  CHECK(error(OpKind::kBatchNorm, {}, {f32({4, 3, 5}), f32({3}), f32({3})}) ==
        "batch norm needs NC or NCHW input, got [4, 3, 5]");
  CHECK(error(OpKind::kBatchNorm, {}, {f32({4, 3, 5, 5}), f32({4}), f32({3})}) ==
        "gamma [4] and beta [3] must have shape [3]");
}

TEST_CASE("embedding appends the hidden dim to the ids' shape, ids must be i32", "[graph][shape]") {
  CHECK(one(OpKind::kEmbedding, {}, {f32({10, 6}), i32({2, 3})}) == Shape{2, 3, 6});
  CHECK(error(OpKind::kEmbedding, {}, {f32({10, 6}), f32({2, 3})}) == "ids must be i32, got f32");
  CHECK(error(OpKind::kEmbedding, {}, {f32({10}), i32({2})}) ==
        "table must have rank 2, got shape [10]");
}

TEST_CASE("cross-entropy is a scalar, labels are the logits' shape without the last dim",
          "[graph][shape]") {
  CHECK(one(OpKind::kCrossEntropy, {}, {f32({2, 3, 10}), i32({2, 3})}) == Shape{});
  CHECK(error(OpKind::kCrossEntropy, {}, {f32({2, 3, 10}), i32({3, 2})}) ==
        "labels [3, 2] must have the logits' shape [2, 3, 10] without its last dim");
  CHECK(error(OpKind::kCrossEntropy, {}, {f32({2, 10}), f32({2})}) ==
        "labels must be i32, got f32");
}

TEST_CASE("reshape, transpose, slice and concat move dims as their attributes say",
          "[graph][shape]") {
  OpAttrs r;
  r.shape = Shape{3, 2, 4};
  CHECK(one(OpKind::kReshape, r, {f32({6, 4})}) == Shape{3, 2, 4});
  CHECK(one(OpKind::kReshape, r, {i32({24})}, DType::kI32) == Shape{3, 2, 4});
  r.shape = Shape{5, 5};
  CHECK(error(OpKind::kReshape, r, {f32({6, 4})}) ==
        "cannot reshape [6, 4] (24 elements) to [5, 5]");

  OpAttrs t;
  t.axes = {2, 0, 1};
  CHECK(one(OpKind::kTranspose, t, {f32({2, 3, 4})}) == Shape{4, 2, 3});
  t.axes = {0, 0, 1};
  CHECK(error(OpKind::kTranspose, t, {f32({2, 3, 4})}) ==
        "[0, 0, 1] is not a permutation of 3 dims");
  t.axes = {1, 0};
  CHECK(error(OpKind::kTranspose, t, {f32({2, 3, 4})}) == "[1, 0] is not a permutation of 3 dims");

  OpAttrs s;
  s.axis = 1;
  s.start = 1;
  s.end = 4;
  CHECK(one(OpKind::kSlice, s, {f32({4, 6})}) == Shape{4, 3});
  s.axis = -1;  // the last axis
  CHECK(one(OpKind::kSlice, s, {f32({4, 6})}) == Shape{4, 3});
  s.end = 7;
  CHECK(error(OpKind::kSlice, s, {f32({4, 6})}) == "slice [1, 7) of axis -1 is invalid for [4, 6]");
  s.end = 1;
  CHECK(error(OpKind::kSlice, s, {f32({4, 6})}) == "slice [1, 1) of axis -1 is invalid for [4, 6]");

  OpAttrs c;
  c.axis = 1;
  CHECK(one(OpKind::kConcat, c, {f32({2, 3}), f32({2, 5}), f32({2, 1})}) == Shape{2, 9});
  CHECK(one(OpKind::kConcat, c, {f32({2, 3})}) == Shape{2, 3});
  CHECK(error(OpKind::kConcat, c, {f32({2, 3}), f32({3, 3})}) ==
        "input 1 shape [3, 3] differs from [2, 3] outside axis 1");
  CHECK(error(OpKind::kConcat, c, {f32({2, 3}), i32({2, 3})}) ==
        "input 1 has shape [2, 3] dtype i32");
  CHECK(error(OpKind::kConcat, c, {}) == "expects at least one input");
  c.axis = 2;
  CHECK(error(OpKind::kConcat, c, {f32({2, 3})}) == "axis 2 is out of range");
}

TEST_CASE("reductions drop their axes, broadcast maps input dims into the target",
          "[graph][shape]") {
  OpAttrs a;
  a.axes = {0, 2};
  CHECK(one(OpKind::kReduceSum, a, {f32({2, 3, 4})}) == Shape{3});
  a.axes = {0, 1, 2};
  CHECK(one(OpKind::kReduceMean, a, {f32({2, 3, 4})}) == Shape{});
  a.axes = {};
  CHECK(one(OpKind::kReduceSum, a, {f32({2, 3})}) == Shape{2, 3});
  a.axes = {1, 1};
  CHECK(error(OpKind::kReduceSum, a, {f32({2, 3})}) ==
        "reduce dims must be strictly increasing, got [1, 1]");

  OpAttrs b;
  b.shape = Shape{2, 3, 4};
  b.axes = {1};
  CHECK(one(OpKind::kBroadcast, b, {f32({3})}) == Shape{2, 3, 4});
  CHECK(error(OpKind::kBroadcast, b, {f32({4})}) ==
        "input dim 0 (4) does not match target [2, 3, 4]");
  CHECK(error(OpKind::kBroadcast, b, {f32({3, 4})}) == "input has rank 2 but 1 dims are mapped");
}

TEST_CASE("conv2d and pooling: (in + 2 pad - kernel) / stride + 1 per spatial dim",
          "[graph][shape]") {
  // 3x3, stride 1, pad 1 keeps 8x8; stride 2: (8 + 2 - 3) / 2 + 1 = 4.
  CHECK(one(OpKind::kConv2d, window(3, 1, 1), {f32({2, 3, 8, 8}), f32({4, 3, 3, 3})}) ==
        Shape{2, 4, 8, 8});
  CHECK(one(OpKind::kConv2d, window(3, 2, 1), {f32({2, 3, 8, 8}), f32({4, 3, 3, 3})}) ==
        Shape{2, 4, 4, 4});
  CHECK(error(OpKind::kConv2d, window(3, 1, 1), {f32({2, 3, 8, 8}), f32({4, 2, 3, 3})}) ==
        "filter [4, 2, 3, 3] expects 2 input channels but the input [2, 3, 8, 8] has 3");
  CHECK(error(OpKind::kConv2d, window(5, 1, 1), {f32({2, 3, 8, 8}), f32({4, 3, 3, 3})}) ==
        "filter [4, 3, 3, 3] does not match window k5x5 s1x1 p1x1");
  CHECK(error(OpKind::kConv2d, window(3, 1, 0), {f32({2, 3, 2, 2}), f32({4, 3, 3, 3})}) ==
        "window of size 3 does not fit input of size 2 with padding 0");
  CHECK(error(OpKind::kConv2d, window(3, 1, 1), {f32({2, 3, 8}), f32({4, 3, 3, 3})}) ==
        "input (NCHW) must have rank 4, got shape [2, 3, 8]");
  CHECK(error(OpKind::kConv2d, window(3, 1, 1), {f32({2, 3, 8, 8}), f32({4, 3, 3})}) ==
        "filter (OIHW) must have rank 4, got shape [4, 3, 3]");

  // 2x2 windows of stride 2 halve 8x8; 3x3 stride 2 pad 1 over 7: (7 + 2 - 3) / 2 + 1 = 4.
  CHECK(one(OpKind::kMaxPool2d, window(2, 2, 0), {f32({2, 3, 8, 8})}) == Shape{2, 3, 4, 4});
  CHECK(one(OpKind::kAvgPool2d, window(3, 2, 1), {f32({1, 5, 7, 7})}) == Shape{1, 5, 4, 4});
  CHECK(error(OpKind::kMaxPool2d, window(2, 0, 0), {f32({2, 3, 8, 8})}) ==
        "window needs kernel > 0, stride > 0, padding >= 0 (got 2, 0, 0)");
  CHECK(error(OpKind::kAvgPool2d, window(2, 2, 0), {f32({3, 8, 8})}) ==
        "input (NCHW) must have rank 4, got shape [3, 8, 8]");
}

TEST_CASE("top-k gating gives combine and dispatch [G, S, E, C], constant fills its shape",
          "[graph][shape]") {
  OpAttrs a;
  a.k = 2;
  a.capacity = 5;
  const auto out = infer(OpKind::kTopKGating, a, {f32({2, 4, 3})});
  REQUIRE(out.size() == 2);
  CHECK(out[0].shape == Shape{2, 4, 3, 5});
  CHECK(out[1].shape == Shape{2, 4, 3, 5});
  CHECK(out[1].dtype == DType::kF32);
  a.k = 4;
  CHECK(error(OpKind::kTopKGating, a, {f32({2, 4, 3})}) ==
        "top-k gating needs 1 <= k <= experts (3) and capacity >= 1 (k = 4, capacity = 5)");
  a.k = 1;
  a.capacity = 0;
  CHECK_FALSE(infer_output_types(OpKind::kTopKGating, a, {f32({2, 4, 3})}).has_value());
  CHECK(error(OpKind::kTopKGating, a, {f32({4, 3})}) ==
        "gate probabilities [G, S, E] must have rank 3, got shape [4, 3]");

  OpAttrs c;
  c.shape = Shape{3, 2};
  CHECK(one(OpKind::kConstant, c, {}) == Shape{3, 2});
  c.shape = Shape{};
  CHECK(one(OpKind::kConstant, c, {}) == Shape{});  // a scalar
  c.shape = Shape{3, 0};
  CHECK(error(OpKind::kConstant, c, {}) == "invalid constant shape [3, 0]");
}

TEST_CASE("activation and softmax gradients have the saved value's shape", "[graph][shape]") {
  for (OpKind k : {OpKind::kReluGrad, OpKind::kGeluGrad, OpKind::kTanhGrad, OpKind::kSoftmaxGrad,
                   OpKind::kLogSoftmaxGrad}) {
    INFO(op_kind_name(k));
    CHECK(one(k, {}, {f32({3, 4}), f32({3, 4})}) == Shape{3, 4});
    CHECK(error(k, {}, {f32({3, 4}), f32({4, 3})}) ==
          "saved value and gradient: shapes differ: [3, 4] vs [4, 3]");
  }
}

TEST_CASE("normalisation gradients give dx like x and dgamma, dbeta like gamma", "[graph][shape]") {
  for (OpKind k : {OpKind::kLayerNormGrad, OpKind::kBatchNormGrad}) {
    INFO(op_kind_name(k));
    const auto out = infer(k, {}, {f32({4, 3}), f32({4, 3}), f32({4}), f32({4}), f32({3})});
    REQUIRE(out.size() == 3);
    CHECK(out[0].shape == Shape{4, 3});
    CHECK(out[1].shape == Shape{3});
    CHECK(out[2].shape == Shape{3});
    CHECK(error(k, {}, {f32({4, 2}), f32({4, 3}), f32({4}), f32({4}), f32({3})}) ==
          "gradient and input: shapes differ: [4, 2] vs [4, 3]");
  }
}

TEST_CASE("gradients with a target shape attribute produce it", "[graph][shape]") {
  OpAttrs a;
  a.shape = Shape{10, 6};
  CHECK(one(OpKind::kEmbeddingGrad, a, {i32({2, 3}), f32({2, 3, 6})}) == Shape{10, 6});
  CHECK(error(OpKind::kEmbeddingGrad, a, {f32({2, 3}), f32({2, 3, 6})}) ==
        "ids must be i32, got f32");
  a.shape = Shape{2, 3, 8, 8};
  CHECK(one(OpKind::kConv2dGradInput, a, {f32({2, 4, 8, 8}), f32({4, 3, 3, 3})}) ==
        Shape{2, 3, 8, 8});
  a.shape = Shape{4, 3, 3, 3};
  CHECK(one(OpKind::kConv2dGradFilter, a, {f32({2, 3, 8, 8}), f32({2, 4, 8, 8})}) ==
        Shape{4, 3, 3, 3});
  a.shape = Shape{2, 3, 8, 8};
  CHECK(one(OpKind::kAvgPool2dGrad, a, {f32({2, 3, 4, 4})}) == Shape{2, 3, 8, 8});
  CHECK(one(OpKind::kCrossEntropyGrad, {}, {f32({2, 10}), i32({2}), f32({})}) == Shape{2, 10});
  OpAttrs g;
  g.k = 1;
  g.capacity = 2;
  CHECK(one(OpKind::kTopKGatingGrad, g, {f32({2, 4, 3}), f32({2, 4, 3, 2})}) == Shape{2, 4, 3});
}

TEST_CASE("max-pool gradient checks dy against the pooled shape", "[graph][shape]") {
  const OpAttrs a = window(2, 2, 0);
  CHECK(one(OpKind::kMaxPool2dGrad, a, {f32({2, 3, 8, 8}), f32({2, 3, 4, 4})}) ==
        Shape{2, 3, 8, 8});
  CHECK(error(OpKind::kMaxPool2dGrad, a, {f32({2, 3, 8, 8}), f32({2, 3, 8, 8})}) ==
        "pooled output and gradient: shapes differ: [2, 3, 4, 4] vs [2, 3, 8, 8]");
}

TEST_CASE("pad places x inside the target shape along its axis", "[graph][shape]") {
  OpAttrs a;
  a.shape = Shape{2, 6};
  a.axis = 1;
  a.start = 3;  // columns 3..5 of 6
  CHECK(one(OpKind::kPad, a, {f32({2, 3})}) == Shape{2, 6});
  a.start = 4;  // 4 + 3 > 6
  CHECK(error(OpKind::kPad, a, {f32({2, 3})}) == "cannot pad [2, 3] into [2, 6] at 4 along axis 1");
  a.start = 0;
  a.shape = Shape{6};
  CHECK(error(OpKind::kPad, a, {f32({2, 3})}) == "cannot pad [2, 3] into [6] at 0 along axis 1");
}

TEST_CASE("optimizer updates return the new parameter and states", "[graph][shape]") {
  CHECK(one(OpKind::kSgdUpdate, {}, {f32({4, 2}), f32({4, 2})}) == Shape{4, 2});
  CHECK(error(OpKind::kSgdUpdate, {}, {f32({4, 2}), f32({2, 4})}) ==
        "parameter and gradient: shapes differ: [4, 2] vs [2, 4]");
  const auto mom = infer(OpKind::kSgdMomentumUpdate, {}, {f32({4}), f32({4}), f32({4})});
  REQUIRE(mom.size() == 2);
  CHECK(mom[1].shape == Shape{4});
  const auto adam =
      infer(OpKind::kAdamUpdate, {}, {f32({4, 2}), f32({4, 2}), f32({4, 2}), f32({4, 2}), f32({})});
  REQUIRE(adam.size() == 3);
  for (const TensorType& t : adam) CHECK(t.shape == Shape{4, 2});
  CHECK(error(OpKind::kAdamUpdate, {},
              {f32({4, 2}), f32({4, 2}), f32({4, 3}), f32({4, 2}), f32({})}) ==
        "parameter and first moment: shapes differ: [4, 2] vs [4, 3]");
  CHECK(
      error(OpKind::kAdamUpdate, {}, {f32({4, 2}), f32({4, 2}), f32({4, 2}), f32({2}), f32({})}) ==
      "parameter and second moment: shapes differ: [4, 2] vs [2]");
}

TEST_CASE("every kind checks its input count before anything else", "[graph][shape]") {
  CHECK(error(OpKind::kDot, {}, {f32({2, 2})}) == "expects 2 inputs, got 1");
  CHECK(error(OpKind::kRelu, {}, {f32({2}), f32({2})}) == "expects 1 inputs, got 2");
  CHECK(error(OpKind::kConstant, {}, {f32({2})}) == "expects 0 inputs, got 1");
  CHECK(error(OpKind::kAdamUpdate, {}, {f32({2}), f32({2}), f32({2}), f32({2})}) ==
        "expects 5 inputs, got 4");
  CHECK(error(OpKind::kRelu, {}, {f32({2, 0})}) == "input 0 has an invalid shape [2, 0]");
  CHECK(error(OpKind::kAdd, {}, {f32({2}), f32({-1})}) == "input 1 has an invalid shape [-1]");
}

TEST_CASE("lowering-only kinds are never ops of a graph", "[graph][shape]") {
  int rejected = 0;
  for (int k = 0; k < kNumOpKinds; ++k) {
    const auto kind = static_cast<OpKind>(k);
    if (!op_kind_info(kind).lowering_only) continue;
    std::vector<TensorType> in(static_cast<size_t>(op_kind_info(kind).num_inputs), f32({2, 3}));
    INFO(op_kind_name(kind));
    CHECK(error(kind, {}, in) == std::string(op_kind_name(kind)) +
                                     " is a piece the runtime's lowering emits, not an op of a "
                                     "graph");
    ++rejected;
  }
  CHECK(rejected == 5);  // sums, stats, apply, grad_sums, grad_apply
}

TEST_CASE("every graph op kind has a rule: a valid call never reports a missing rule",
          "[graph][shape]") {
  // One valid input set per kind would repeat the cases above; here every non-lowering kind is
  // called with its arity and the error, if any, must not be the internal "no rule" one.
  for (int k = 0; k < kNumOpKinds; ++k) {
    const auto kind = static_cast<OpKind>(k);
    const OpKindInfo& info = op_kind_info(kind);
    if (info.lowering_only) continue;
    const int n = info.num_inputs < 0 ? 1 : info.num_inputs;
    std::vector<TensorType> in(static_cast<size_t>(n), f32({2, 2, 2, 2}));
    auto out = infer_output_types(kind, {}, in);
    INFO(op_kind_name(kind) << ": " << out.status().to_string());
    CHECK(out.status().code() != Errc::kInternal);
  }
}

// ---- once bugs, now fixed ----

TEST_CASE("binary ops refuse an integer rhs next to a float lhs", "[graph][shape]") {
  // The CPU kernel reads both operands as floats: an i32 rhs would abort it.
  auto out = infer_output_types(OpKind::kAdd, {}, {f32({2}), i32({2})});
  CHECK_FALSE(out.has_value());
}

TEST_CASE("pad refuses a negative start and target dims that differ off the axis",
          "[graph][shape]") {
  // Either would abort the CPU pad kernel (start >= 0, equal dims off the pad axis).
  OpAttrs a;
  a.axis = 1;
  a.start = -1;
  a.shape = Shape{2, 3};
  CHECK_FALSE(infer_output_types(OpKind::kPad, a, {f32({2, 3})}).has_value());
  a.start = 0;
  a.shape = Shape{4, 6};  // dim 0: 2 in x, 4 in the target
  CHECK_FALSE(infer_output_types(OpKind::kPad, a, {f32({2, 3})}).has_value());
}

}  // namespace
}  // namespace meshpipe::graph

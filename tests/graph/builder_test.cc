// Tests of the graph builder, shape inference errors and graph invariants.
#include "graph/builder.h"

#include <catch2/catch.hpp>

namespace meshpipe::graph {
namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("the builder names ops by scope and tags them with the current layer", "[graph]") {
  Builder b;
  ValueId x = b.input("x", Shape{4, 8}, DType::kF32);
  b.set_layer(3);
  b.push_scope("layer3");
  b.push_scope("mlp");
  ValueId w = b.parameter("w", Shape{8, 16}, InitSpec::normal(0.02f));
  ValueId y = b.matmul(x, w, "fc");
  b.pop_scope();
  b.pop_scope();
  ValueId loss = b.reduce_sum(y, {0, 1}, "loss");
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  const Graph& g = fg->graph;
  CHECK(g.value(w).name == "layer3/mlp/w");
  CHECK(g.value(y).name == "layer3/mlp/fc");
  CHECK(g.value(y).shape == Shape{4, 16});
  CHECK(g.op(g.value(y).producer).layer == 3);
  CHECK(g.value(y).requires_grad);
  CHECK_FALSE(g.value(x).requires_grad);
  CHECK(g.num_layers() == 4);
  CHECK(g.validate().is_ok());
  CHECK(fg->inputs == std::vector<ValueId>{x});
}

TEST_CASE("a shape error names the op, its inputs and the mismatch", "[graph]") {
  Builder b;
  b.push_scope("block2");
  ValueId x = b.input("x", Shape{4, 8}, DType::kF32);
  ValueId w = b.parameter("w", Shape{7, 16}, InitSpec::zeros());
  ValueId y = b.matmul(x, w, "proj");
  CHECK_FALSE(y.is_valid());
  const std::string msg = b.status().message();
  CHECK(contains(msg, "block2/proj"));
  CHECK(contains(msg, "dot"));
  CHECK(contains(msg, "[4, 8] [7, 16]"));
  CHECK(contains(msg, "lhs dim 1 has 8, rhs dim 0 has 7"));
  // Later calls are no-ops and finish() reports the first error.
  CHECK_FALSE(b.relu(y).is_valid());
  auto fg = std::move(b).finish(y);
  REQUIRE_FALSE(fg.has_value());
  CHECK(contains(fg.status().message(), "block2/proj"));
}

TEST_CASE("shape inference covers layout, reductions and windows", "[graph]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{2, 3, 8, 8}, InitSpec::zeros());
  CHECK(b.shape(b.transpose(x, {0, 2, 3, 1})) == Shape{2, 8, 8, 3});
  CHECK(b.shape(b.reshape(x, Shape{6, 64})) == Shape{6, 64});
  CHECK(b.shape(b.slice(x, 2, 1, 5)) == Shape{2, 3, 4, 8});
  CHECK(b.shape(b.concat({x, x}, 1)) == Shape{2, 6, 8, 8});
  CHECK(b.shape(b.reduce_mean(x, {2, 3})) == Shape{2, 3});
  ValueId w = b.parameter("w", Shape{5, 3, 3, 3}, InitSpec::zeros());
  CHECK(b.shape(b.conv2d(x, w, Window2d{3, 3, 2, 2, 1, 1})) == Shape{2, 5, 4, 4});
  CHECK(b.shape(b.max_pool2d(x, Window2d{3, 3, 2, 2, 1, 1})) == Shape{2, 3, 4, 4});
  ValueId p = b.parameter("p", Shape{2, 6, 4}, InitSpec::zeros());
  auto [combine, dispatch] = b.topk_gating(p, 2, 3);
  CHECK(b.shape(combine) == Shape{2, 6, 4, 3});
  CHECK(b.shape(dispatch) == Shape{2, 6, 4, 3});
  CHECK(b.status().is_ok());
}

TEST_CASE("invalid attributes are rejected with the reason", "[graph]") {
  auto error_of = [](auto&& build) {
    Builder b;
    ValueId x = b.parameter("x", Shape{2, 3, 4}, InitSpec::zeros());
    build(b, x);
    return b.status().message();
  };
  CHECK(contains(error_of([](Builder& b, ValueId x) {
                   b.transpose(x, {0, 0, 1});
                 }),
                 "not a permutation"));
  CHECK(contains(error_of([](Builder& b, ValueId x) {
                   b.reshape(x, Shape{5, 5});
                 }),
                 "cannot reshape [2, 3, 4]"));
  CHECK(contains(error_of([](Builder& b, ValueId x) { b.slice(x, 1, 2, 9); }), "slice [2, 9)"));
  CHECK(contains(error_of([](Builder& b, ValueId x) { b.softmax(x, 1, true); }), "causal softmax"));
  CHECK(contains(error_of([](Builder& b, ValueId x) {
                   b.reduce_sum(x, {2, 1});
                 }),
                 "strictly increasing"));
  CHECK(contains(error_of([](Builder& b, ValueId x) { b.topk_gating(x, 5, 2); }),
                 "1 <= k <= experts"));
  CHECK(contains(error_of([](Builder& b, ValueId x) {
                   ValueId ids = b.input("ids", Shape{2}, DType::kF32);
                   b.embedding(b.reshape(x, Shape{6, 4}), ids);
                 }),
                 "ids must be i32"));
}

TEST_CASE("the loss must be a scalar", "[graph]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{2, 3}, InitSpec::zeros());
  auto fg = std::move(b).finish(x);
  REQUIRE_FALSE(fg.has_value());
  CHECK(contains(fg.status().message(), "must be a scalar"));
}

TEST_CASE("op kind names round-trip", "[graph]") {
  for (int i = 0; i < kNumOpKinds; ++i) {
    const auto kind = static_cast<OpKind>(i);
    auto parsed = parse_op_kind(op_kind_name(kind));
    REQUIRE(parsed.has_value());
    CHECK(*parsed == kind);
  }
}

}  // namespace
}  // namespace meshpipe::graph

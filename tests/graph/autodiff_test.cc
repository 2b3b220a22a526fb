// Structural tests of autodiff and make_training_graph (numerical checks are in
// tests/runtime/gradcheck_test.cc).
#include "graph/autodiff.h"

#include <catch2/catch.hpp>

#include "graph/training_graph.h"

namespace meshpipe::graph {
namespace {

TEST_CASE("backward ops inherit the layer of the forward op and sum fan-out", "[graph]") {
  Builder b;
  ValueId x = b.input("x", Shape{4, 8}, DType::kF32);
  b.set_layer(0);
  ValueId w = b.parameter("w", Shape{8, 8}, InitSpec::normal(0.1f));
  ValueId h = b.matmul(x, w, "h");
  b.set_layer(1);
  ValueId h2 = b.matmul(h, w, "h2");  // w is read twice: its gradient is a sum
  ValueId loss = b.reduce_sum(h2, {0, 1}, "loss");
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  Graph g = std::move(fg->graph);
  auto grads = append_backward(g, loss);
  REQUIRE(grads.has_value());
  REQUIRE(grads->count(w) == 1);
  const Value& gw = g.value(grads->at(w));
  CHECK(gw.shape == Shape{8, 8});
  CHECK(gw.role == ValueRole::kGradient);
  CHECK(g.op(gw.producer).kind == OpKind::kAdd);
  for (const Op& op : g.ops()) {
    if (op.phase != OpPhase::kBackward) continue;
    if (op.name.rfind("h2/", 0) == 0) CHECK(op.layer == 1);
    if (op.name.rfind("h/", 0) == 0) CHECK(op.layer == 0);
  }
  CHECK(g.validate().is_ok());
}

TEST_CASE("a weight that contracts its last dim gets its gradient from a dot, no transpose",
          "[graph]") {
  // logits = x . wte^T (a tied LM head): the gradient of wte is dot(dy, x), already [V, H], so a
  // partial sum of it (a split batch) can stay partial; a weight whose gradient comes out in
  // another layout still gets the transpose.
  const auto transposes_in_backward = [](DotDims dims, Shape w_shape) {
    Builder b;
    ValueId x = b.input("x", Shape{2, 3, 4}, DType::kF32);
    b.set_layer(0);
    ValueId w = b.parameter("w", std::move(w_shape), InitSpec::normal(0.1f));
    ValueId y = b.dot(x, w, dims, "y");
    const int64_t rank = b.graph().value(y).shape.rank();
    std::vector<int64_t> all(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) all[static_cast<size_t>(i)] = i;
    ValueId loss = b.reduce_sum(y, all, "loss");
    auto fg = std::move(b).finish(loss);
    REQUIRE(fg.has_value());
    Graph g = std::move(fg->graph);
    auto grads = append_backward(g, loss);
    REQUIRE(grads.has_value());
    const Value& gw = g.value(grads->at(w));
    CHECK(gw.shape == g.value(w).shape);
    int n = 0;
    for (const Op& op : g.ops())
      n += op.phase == OpPhase::kBackward && op.kind == OpKind::kTranspose;
    return n;
  };
  CHECK(transposes_in_backward(DotDims{{}, {}, {2}, {1}}, Shape{5, 4}) == 0);
  CHECK(transposes_in_backward(DotDims{{}, {}, {2}, {0}}, Shape{4, 5}) == 0);  // [H, F] as is
  CHECK(transposes_in_backward(DotDims{{}, {}, {2}, {2}}, Shape{5, 6, 4}) == 0);
  // x's dims 1 and 2 against w's 2 and 0: neither product comes out as w [4, 5, 3].
  CHECK(transposes_in_backward(DotDims{{}, {}, {1, 2}, {2, 0}}, Shape{4, 5, 3}) == 1);
}

TEST_CASE("a training graph aliases every parameter and Adam state to its update", "[graph]") {
  Builder b;
  ValueId x = b.input("x", Shape{2, 4}, DType::kF32);
  ValueId labels = b.input("labels", Shape{2}, DType::kI32);
  b.set_layer(0);
  ValueId w = b.parameter("w", Shape{4, 3}, InitSpec::normal(0.1f));
  ValueId bias = b.parameter("b", Shape{3}, InitSpec::zeros());
  b.set_layer(1);
  ValueId unused = b.parameter("unused", Shape{3}, InitSpec::zeros());
  (void)unused;
  ValueId loss = b.cross_entropy(b.linear(x, w, bias, "fc"), labels, "loss");
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  OptimizerConfig adam;
  adam.lr = 0.01f;
  auto tg = make_training_graph(std::move(*fg), adam);
  REQUIRE(tg.has_value());
  // w and b are trained; "unused" gets no gradient and no update.
  REQUIRE(tg->parameters.size() == 2);
  // 2 moments per parameter plus one step counter for layer 1 (where fc reads w and b).
  CHECK(tg->optimizer_states.size() == 5);
  CHECK(tg->graph.aliases().size() == 7);  // 2 parameters + 5 optimizer states
  for (const ParameterUpdate& p : tg->parameters) {
    const Op& up = tg->graph.op(tg->graph.value(p.updated).producer);
    CHECK(up.kind == OpKind::kAdamUpdate);
    CHECK(up.phase == OpPhase::kUpdate);
    CHECK(up.layer == 1);  // the layer of the first forward op that reads the parameter
    CHECK(up.attrs.lr == 0.01f);
  }
  CHECK(tg->inputs.size() == 2);
}

TEST_CASE("a loss that depends on no parameter is an error", "[graph]") {
  Builder b;
  ValueId x = b.input("x", Shape{2, 4}, DType::kF32);
  ValueId loss = b.reduce_sum(x, {0, 1});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  auto tg = make_training_graph(std::move(*fg), OptimizerConfig{});
  REQUIRE_FALSE(tg.has_value());
  CHECK(tg.status().message().find("depends on no parameter") != std::string::npos);
}

TEST_CASE("optimizer settings are validated", "[graph]") {
  OptimizerConfig c;
  c.lr = -1.0f;
  CHECK_FALSE(c.validate().is_ok());
  c.lr = 0.1f;
  c.beta1 = 1.0f;
  CHECK_FALSE(c.validate().is_ok());
  CHECK_FALSE(parse_optimizer_kind("lamb").has_value());
}

}  // namespace
}  // namespace meshpipe::graph

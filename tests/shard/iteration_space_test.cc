// Tests of shard/iteration_space.h: the iteration dims (sizes, labels, splittability) of each op
// family and how every input and output dim maps onto them, which dims are reductions, and the
// source space.
#include "shard/iteration_space.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "graph/builder.h"

namespace meshpipe::shard {
namespace {

using graph::Builder;
using graph::InitSpec;
using graph::OpKind;
using Map = std::vector<int>;

IterSpace space_of(const graph::Graph& g, ValueId out) {
  auto s = iteration_space(g, g.op(g.value(out).producer));
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  // Every map entry names an existing iteration dim or -1.
  const int n = static_cast<int>(s->sizes.size());
  CHECK(s->splittable.size() == s->sizes.size());
  CHECK(s->labels.size() == s->sizes.size());
  for (const auto* list : {&s->inputs, &s->outputs}) {
    for (const Map& m : *list) {
      for (int it : m) CHECK((it >= -1 && it < n));
    }
  }
  return *s;
}

TEST_CASE("a dot iterates over batch, lhs free, rhs free and contracting dims", "[shard][space]") {
  // [B=2, M=8, K=16] x [B=2, K=16, N=12] -> [2, 8, 12]: b0, m0, n0, k0.
  Builder b;
  ValueId lhs = b.parameter("lhs", Shape{2, 8, 16}, InitSpec::zeros());
  ValueId rhs = b.parameter("rhs", Shape{2, 16, 12}, InitSpec::zeros());
  ValueId out = b.dot(lhs, rhs, DotDims{{0}, {0}, {2}, {1}});
  const IterSpace s = space_of(b.graph(), out);
  CHECK(s.sizes == std::vector<int64_t>{2, 8, 12, 16});
  CHECK(s.labels == std::vector<std::string>{"b0", "m0", "n0", "k0"});
  CHECK(s.splittable == std::vector<bool>{true, true, true, true});
  REQUIRE(s.inputs.size() == 2);
  CHECK(s.inputs[0] == Map{0, 1, 3});  // lhs [b, m, k]
  CHECK(s.inputs[1] == Map{0, 3, 2});  // rhs [b, k, n]
  REQUIRE(s.outputs.size() == 1);
  CHECK(s.outputs[0] == Map{0, 1, 2});  // out [b, m, n]
  CHECK(s.is_reduction_for(3, 0));
  for (int it : {0, 1, 2}) CHECK_FALSE(s.is_reduction_for(it, 0));
}

TEST_CASE("a plain matmul with a size-1 dim: that dim cannot be split", "[shard][space]") {
  // x [1, 4] . w [4, 6]: m0 has size 1.
  Builder b;
  ValueId x = b.input("x", Shape{1, 4}, DType::kF32);
  ValueId w = b.parameter("w", Shape{4, 6}, InitSpec::zeros());
  const IterSpace s = space_of(b.graph(), b.matmul(x, w));
  CHECK(s.labels == std::vector<std::string>{"m0", "n0", "k0"});
  CHECK(s.sizes == std::vector<int64_t>{1, 6, 4});
  CHECK(s.splittable == std::vector<bool>{false, true, true});
}

TEST_CASE("conv2d and its gradients share n, c, k with the reduction moving", "[shard][space]") {
  // x [N=4, C=3, 8, 8] * w [K=6, C=3, 3, 3] -> y [4, 6, 8, 8].
  Builder b;
  ValueId x = b.input("x", Shape{4, 3, 8, 8}, DType::kF32);
  ValueId w = b.parameter("w", Shape{6, 3, 3, 3}, InitSpec::zeros());
  const Window2d win{3, 3, 1, 1, 1, 1};
  ValueId y = b.conv2d(x, w, win);
  const Map xmap{0, 1, -1, -1};  // n, c
  const Map wmap{2, 1, -1, -1};  // k, c
  const Map ymap{0, 2, -1, -1};  // n, k
  {
    const IterSpace s = space_of(b.graph(), y);
    CHECK(s.labels == std::vector<std::string>{"n", "c", "k"});
    CHECK(s.sizes == std::vector<int64_t>{4, 3, 6});
    CHECK(s.inputs == std::vector<Map>{xmap, wmap});
    CHECK(s.outputs == std::vector<Map>{ymap});
    CHECK(s.is_reduction_for(1, 0));  // c
    CHECK_FALSE(s.is_reduction_for(2, 0));
  }
  OpAttrs gi;
  gi.window = win;
  gi.shape = Shape{4, 3, 8, 8};
  const ValueId dx = b.op(OpKind::kConv2dGradInput, {y, w}, gi, "dx").at(0);
  OpAttrs gf;
  gf.window = win;
  gf.shape = Shape{6, 3, 3, 3};
  const ValueId dw = b.op(OpKind::kConv2dGradFilter, {x, y}, gf, "dw").at(0);
  REQUIRE(b.status().is_ok());
  {
    const IterSpace s = space_of(b.graph(), dx);  // (dy, w) -> dx
    CHECK(s.sizes == std::vector<int64_t>{4, 3, 6});
    CHECK(s.inputs == std::vector<Map>{ymap, wmap});
    CHECK(s.outputs == std::vector<Map>{xmap});
    CHECK(s.is_reduction_for(2, 0));  // k
    CHECK_FALSE(s.is_reduction_for(0, 0));
  }
  {
    const IterSpace s = space_of(b.graph(), dw);  // (x, dy) -> dw
    CHECK(s.inputs == std::vector<Map>{xmap, ymap});
    CHECK(s.outputs == std::vector<Map>{wmap});
    CHECK(s.is_reduction_for(0, 0));  // n: summed over the batch
    CHECK_FALSE(s.is_reduction_for(1, 0));
  }
}

TEST_CASE("softmax keeps its axis whole, its gradient does the same", "[shard][space]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{4, 6, 8}, InitSpec::zeros());
  ValueId y = b.softmax(x, 1);  // over the middle axis
  const IterSpace s = space_of(b.graph(), y);
  CHECK(s.sizes == std::vector<int64_t>{4, 6, 8});
  CHECK(s.splittable == std::vector<bool>{true, false, true});
  CHECK(s.inputs == std::vector<Map>{{0, -1, 2}});
  CHECK(s.outputs == std::vector<Map>{{0, -1, 2}});
  OpAttrs a;
  a.axis = 2;
  const ValueId dx = b.op(OpKind::kLogSoftmaxGrad, {x, x}, a, "lsg").at(0);
  const IterSpace g = space_of(b.graph(), dx);
  CHECK(g.splittable == std::vector<bool>{true, true, false});
  CHECK(g.inputs == std::vector<Map>{{0, 1, -1}, {0, 1, -1}});
  CHECK(g.outputs == std::vector<Map>{{0, 1, -1}});
}

TEST_CASE("layer norm splits rows only, its gradient sums dgamma and dbeta over rows",
          "[shard][space]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{2, 3, 8}, InitSpec::zeros());
  ValueId gm = b.parameter("g", Shape{8}, InitSpec::ones());
  ValueId bt = b.parameter("b", Shape{8}, InitSpec::zeros());
  ValueId y = b.layer_norm(x, gm, bt, 1e-5f, "ln");
  const IterSpace s = space_of(b.graph(), y);
  CHECK(s.sizes == std::vector<int64_t>{2, 3, 8});
  CHECK(s.splittable == std::vector<bool>{true, true, false});
  CHECK(s.inputs == std::vector<Map>{{0, 1, -1}, {-1}, {-1}});
  CHECK(s.outputs == std::vector<Map>{{0, 1, -1}, {0, 1}, {0, 1}});
  CHECK_FALSE(s.is_reduction_for(0, 1));

  const graph::Op& ln = b.graph().op(b.graph().value(y).producer);
  const ValueId mean = ln.outputs[1];
  const ValueId rstd = ln.outputs[2];
  const ValueId dx = b.op(OpKind::kLayerNormGrad, {x, x, mean, rstd, gm}, {}, "lng").at(0);
  const IterSpace g = space_of(b.graph(), dx);
  CHECK(g.inputs == std::vector<Map>{{0, 1, -1}, {0, 1, -1}, {0, 1}, {0, 1}, {-1}});
  CHECK(g.outputs == std::vector<Map>{{0, 1, -1}, {-1}, {-1}});
  // Rows split leave dgamma and dbeta as partial sums, not dx.
  CHECK(g.is_reduction_for(0, 1));
  CHECK(g.is_reduction_for(1, 2));
  CHECK_FALSE(g.is_reduction_for(0, 0));
}

TEST_CASE("batch norm splits N and C, the statistics are partial over N", "[shard][space]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{4, 3, 5, 5}, InitSpec::zeros());
  ValueId gm = b.parameter("g", Shape{3}, InitSpec::ones());
  ValueId bt = b.parameter("b", Shape{3}, InitSpec::zeros());
  ValueId y = b.batch_norm(x, gm, bt);
  const IterSpace s = space_of(b.graph(), y);
  CHECK(s.splittable == std::vector<bool>{true, true, false, false});
  CHECK(s.inputs == std::vector<Map>{{0, 1, -1, -1}, {1}, {1}});
  CHECK(s.outputs == std::vector<Map>{{0, 1, -1, -1}, {1}, {1}});
  CHECK(s.is_reduction_for(0, 1));  // mean over N
  CHECK_FALSE(s.is_reduction_for(1, 1));
}

TEST_CASE("an embedding iterates over ids, hidden and vocabulary, the vocabulary is reduced",
          "[shard][space]") {
  Builder b;
  ValueId table = b.parameter("table", Shape{10, 6}, InitSpec::zeros());
  ValueId ids = b.input("ids", Shape{2, 3}, DType::kI32);
  ValueId e = b.embedding(table, ids);
  const IterSpace s = space_of(b.graph(), e);
  CHECK(s.labels == std::vector<std::string>{"i0", "i1", "h", "v"});
  CHECK(s.sizes == std::vector<int64_t>{2, 3, 6, 10});
  CHECK(s.inputs == std::vector<Map>{{3, 2}, {0, 1}});
  CHECK(s.outputs == std::vector<Map>{{0, 1, 2}});
  CHECK(s.is_reduction_for(3, 0));
  CHECK_FALSE(s.is_reduction_for(2, 0));

  OpAttrs a;
  a.shape = Shape{10, 6};
  const ValueId dt = b.op(OpKind::kEmbeddingGrad, {ids, e}, a, "eg").at(0);
  const IterSpace g = space_of(b.graph(), dt);
  CHECK(g.inputs == std::vector<Map>{{0, 1}, {0, 1, 2}});
  CHECK(g.outputs == std::vector<Map>{{3, 2}});
  CHECK(g.is_reduction_for(0, 0));  // positions summed into table rows
}

TEST_CASE("top-k gating splits only groups", "[shard][space]") {
  Builder b;
  ValueId probs = b.parameter("probs", Shape{2, 4, 3}, InitSpec::zeros());
  const auto [combine, dispatch] = b.topk_gating(probs, 1, 2);
  const IterSpace s = space_of(b.graph(), combine);
  CHECK(s.labels == std::vector<std::string>{"g"});
  CHECK(s.sizes == std::vector<int64_t>{2});
  CHECK(s.inputs == std::vector<Map>{{0, -1, -1}});
  CHECK(s.outputs == std::vector<Map>{{0, -1, -1, -1}, {0, -1, -1, -1}});
  OpAttrs a;
  a.k = 1;
  a.capacity = 2;
  const ValueId dp = b.op(OpKind::kTopKGatingGrad, {probs, combine}, a, "tg").at(0);
  const IterSpace g = space_of(b.graph(), dp);
  CHECK(g.inputs == std::vector<Map>{{0, -1, -1}, {0, -1, -1, -1}});
  CHECK(g.outputs == std::vector<Map>{{0, -1, -1}});
  CHECK(dispatch.is_valid());
}

TEST_CASE("updates map every state onto the parameter's dims, Adam's step is a scalar",
          "[shard][space]") {
  Builder b;
  ValueId p = b.parameter("p", Shape{4, 8}, InitSpec::zeros());
  ValueId step = b.parameter("step", Shape{}, InitSpec::ones());
  const auto adam = b.op(OpKind::kAdamUpdate, {p, p, p, p, step}, {}, "adam");
  REQUIRE(adam.size() == 3);
  const IterSpace s = space_of(b.graph(), adam[0]);
  CHECK(s.sizes == std::vector<int64_t>{4, 8});
  CHECK(s.inputs == std::vector<Map>{{0, 1}, {0, 1}, {0, 1}, {0, 1}, {}});
  CHECK(s.outputs == std::vector<Map>{{0, 1}, {0, 1}, {0, 1}});
  for (int it : {0, 1}) {
    for (size_t o = 0; o < 3; ++o) CHECK_FALSE(s.is_reduction_for(it, o));
  }
  const auto sgd = b.op(OpKind::kSgdMomentumUpdate, {p, p, p}, {}, "sgdm");
  const IterSpace m = space_of(b.graph(), sgd.at(0));
  CHECK(m.inputs == std::vector<Map>{{0, 1}, {0, 1}, {0, 1}});
  CHECK(m.outputs == std::vector<Map>{{0, 1}, {0, 1}});
}

TEST_CASE("reductions, transposes and reshapes map output dims back to input dims",
          "[shard][space]") {
  Builder b;
  ValueId x = b.parameter("x", Shape{2, 8, 64}, InitSpec::zeros());
  const IterSpace r = space_of(b.graph(), b.reduce_sum(x, {1}));
  CHECK(r.inputs == std::vector<Map>{{0, 1, 2}});
  CHECK(r.outputs == std::vector<Map>{{0, 2}});
  CHECK(r.is_reduction_for(1, 0));

  const IterSpace t = space_of(b.graph(), b.transpose(x, {2, 0, 1}));
  CHECK(t.outputs == std::vector<Map>{{2, 0, 1}});

  // [2, 8, 64] -> [2, 8, 4, 16]: groups (2), (8), (64 -> 4 x 16); the last group's iteration
  // dim has size gcd(64, 4) = 4 and maps the leading dims of each side.
  const IterSpace h = space_of(b.graph(), b.reshape(x, Shape{2, 8, 4, 16}));
  CHECK(h.sizes == std::vector<int64_t>{2, 8, 4});
  CHECK(h.inputs == std::vector<Map>{{0, 1, 2}});
  CHECK(h.outputs == std::vector<Map>{{0, 1, 2, -1}});
}

TEST_CASE("lowering-only kinds have no iteration space", "[shard][space]") {
  const graph::Graph g;
  graph::Op op;
  op.kind = OpKind::kBatchNormGradApply;
  op.name = "bn_piece";
  auto s = iteration_space(g, op);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().code() == Errc::kInternal);
  CHECK(s.status().message() == "no iteration space for op 'bn_piece' (batch_norm_grad_apply)");
}

TEST_CASE("a source splits any dim larger than one", "[shard][space]") {
  const IterSpace s = source_space(Shape{4, 1, 6});
  CHECK(s.sizes == std::vector<int64_t>{4, 1, 6});
  CHECK(s.splittable == std::vector<bool>{true, false, true});
  CHECK(s.labels == std::vector<std::string>{"d0", "d1", "d2"});
  CHECK(s.inputs.empty());
  CHECK(s.outputs == std::vector<Map>{{0, 1, 2}});
  CHECK(source_space(Shape{}).outputs == std::vector<Map>{{}});
}

// ---- once a bug, now fixed ----

TEST_CASE("a softmax over axis -1 keeps its last dim whole", "[shard]") {
  // Graph::add_op stores a negative axis normalised; iteration_space reads it as an index (it
  // once marked the axis splittable and wrote out of bounds).
  graph::Graph g;
  const ValueId x = g.add_source("x", Shape{4, 8}, DType::kF32, graph::ValueRole::kParameter);
  OpAttrs a;
  a.axis = -1;
  auto op = g.add_op(OpKind::kSoftmax, "sm", {x}, a, 0, graph::OpPhase::kForward);
  REQUIRE(op.has_value());
  auto s = iteration_space(g, g.op(*op));
  REQUIRE(s.has_value());
  CHECK(s->splittable == std::vector<bool>{true, false});
  CHECK(s->outputs == std::vector<Map>{{0, -1}});
}

}  // namespace
}  // namespace meshpipe::shard

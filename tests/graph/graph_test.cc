// Tests of the graph IR container (graph/graph.h): sources and ops with their ids, outputs and
// gradient flags, the queries (users, roles, aliases, layers), validate() on broken invariants
// and describe_op.
#include "graph/graph.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace meshpipe::graph {
namespace {

OpAttrs matmul_attrs() {
  OpAttrs a;
  a.dot.lhs_contract = {1};
  a.dot.rhs_contract = {0};
  return a;
}

// x [8, 16] (input) . w [16, 4] (parameter) -> mm [8, 4] -> relu (layer 1) -> r.
struct Small {
  Graph g;
  ValueId x;
  ValueId w;
  OpId mm;
  OpId relu;
};

Small small_graph() {
  Small s;
  s.x = s.g.add_source("x", Shape{8, 16}, DType::kF32, ValueRole::kInput);
  s.w = s.g.add_source("w", Shape{16, 4}, DType::kF32, ValueRole::kParameter,
                       InitSpec::normal(0.02f));
  auto mm = s.g.add_op(OpKind::kDot, "mm", {s.x, s.w}, matmul_attrs(), 0, OpPhase::kForward);
  REQUIRE(mm.has_value());
  s.mm = *mm;
  auto relu = s.g.add_op(OpKind::kRelu, "r", {s.g.op(s.mm).outputs[0]}, {}, 1, OpPhase::kForward);
  REQUIRE(relu.has_value());
  s.relu = *relu;
  return s;
}

TEST_CASE("sources get consecutive ids and only parameters require gradients", "[graph]") {
  Graph g;
  const ValueId a =
      g.add_source("a", Shape{2, 3}, DType::kF16, ValueRole::kParameter, InitSpec::uniform(0.5f));
  const ValueId b = g.add_source("b", Shape{4}, DType::kI32, ValueRole::kInput);
  const ValueId c = g.add_source("c", Shape{}, DType::kF32, ValueRole::kOptimizerState);
  CHECK(a.value() == 0);
  CHECK(b.value() == 1);
  CHECK(c.value() == 2);
  CHECK(g.num_values() == 3);
  CHECK(g.num_ops() == 0);
  const Value& va = g.value(a);
  CHECK(va.name == "a");
  CHECK(va.shape == Shape{2, 3});
  CHECK(va.dtype == DType::kF16);
  CHECK(va.role == ValueRole::kParameter);
  CHECK(va.init.kind == InitSpec::Kind::kUniform);
  CHECK(va.init.scale == 0.5f);
  CHECK_FALSE(va.producer.is_valid());
  CHECK(va.requires_grad);
  CHECK_FALSE(g.value(b).requires_grad);
  CHECK_FALSE(g.value(c).requires_grad);
  // bytes = elements x element size: 6 x 2 (f16), 4 x 4 (i32), a scalar f32 is 4.
  CHECK(va.bytes() == 12);
  CHECK(g.value(b).bytes() == 16);
  CHECK(g.value(c).bytes() == 4);
}

TEST_CASE("add_op infers and creates its outputs, named after the op", "[graph]") {
  Small s = small_graph();
  CHECK(s.mm.value() == 0);
  CHECK(s.relu.value() == 1);
  const Op& mm = s.g.op(s.mm);
  CHECK(mm.kind == OpKind::kDot);
  CHECK(mm.name == "mm");
  CHECK(mm.inputs == std::vector<ValueId>{s.x, s.w});
  REQUIRE(mm.outputs.size() == 1);
  CHECK(mm.outputs[0].value() == 2);  // after the two sources
  const Value& out = s.g.value(mm.outputs[0]);
  CHECK(out.name == "mm");
  CHECK(out.shape == Shape{8, 4});
  CHECK(out.role == ValueRole::kActivation);
  CHECK(out.producer == s.mm);
  CHECK(out.output_index == 0);
  CHECK(out.requires_grad);  // depends on the parameter w
  CHECK(s.g.op(s.relu).layer == 1);
  CHECK(s.g.value(s.g.op(s.relu).outputs[0]).requires_grad);

  // Several outputs are named "<op>:<i>"; only the differentiable output requires a gradient.
  Graph& g = s.g;
  const ValueId gamma = g.add_source("gamma", Shape{4}, DType::kF32, ValueRole::kParameter);
  const ValueId beta = g.add_source("beta", Shape{4}, DType::kF32, ValueRole::kParameter);
  auto ln = g.add_op(OpKind::kLayerNorm, "ln", {g.op(s.relu).outputs[0], gamma, beta}, {}, 1,
                     OpPhase::kForward, ValueRole::kActivation);
  REQUIRE(ln.has_value());
  const Op& lop = g.op(*ln);
  REQUIRE(lop.outputs.size() == 3);
  CHECK(g.value(lop.outputs[0]).name == "ln:0");
  CHECK(g.value(lop.outputs[2]).name == "ln:2");
  CHECK(g.value(lop.outputs[1]).output_index == 1);
  CHECK(g.value(lop.outputs[0]).requires_grad);
  CHECK_FALSE(g.value(lop.outputs[1]).requires_grad);
  CHECK_FALSE(g.value(lop.outputs[2]).requires_grad);
}

TEST_CASE("add_op records role, phase and forward link, and ops on data need no gradient",
          "[graph]") {
  Graph g;
  const ValueId x = g.add_source("x", Shape{3}, DType::kF32, ValueRole::kInput);
  auto fwd = g.add_op(OpKind::kTanh, "t", {x}, {}, 2, OpPhase::kForward);
  REQUIRE(fwd.has_value());
  CHECK_FALSE(g.value(g.op(*fwd).outputs[0]).requires_grad);
  auto bwd = g.add_op(OpKind::kTanhGrad, "t/grad", {g.op(*fwd).outputs[0], x}, {}, 2,
                      OpPhase::kBackward, ValueRole::kGradient, *fwd);
  REQUIRE(bwd.has_value());
  const Op& op = g.op(*bwd);
  CHECK(op.phase == OpPhase::kBackward);
  CHECK(op.forward == *fwd);
  CHECK(g.value(op.outputs[0]).role == ValueRole::kGradient);
  CHECK_FALSE(g.op(*fwd).forward.is_valid());
}

TEST_CASE("add_op errors name the op, its kind and inputs, and leave the graph unchanged",
          "[graph]") {
  Small s = small_graph();
  const int64_t ops = s.g.num_ops();
  const int64_t values = s.g.num_values();
  auto bad_id = s.g.add_op(OpKind::kAdd, "sum", {s.x, ValueId(99)}, {}, 0, OpPhase::kForward);
  REQUIRE_FALSE(bad_id.has_value());
  CHECK(bad_id.status().code() == Errc::kInvalidArgument);
  CHECK(bad_id.status().message() == "op 'sum' (add): input 1 is not a value of this graph");
  auto invalid = s.g.add_op(OpKind::kRelu, "r2", {ValueId()}, {}, 0, OpPhase::kForward);
  CHECK(invalid.status().message() == "op 'r2' (relu): input 0 is not a value of this graph");

  // w [16, 4] . x [8, 16] contracting dim 1 with dim 0: 4 != 8.
  auto mismatch = s.g.add_op(OpKind::kDot, "bad", {s.w, s.x}, matmul_attrs(), 0, OpPhase::kForward);
  REQUIRE_FALSE(mismatch.has_value());
  CHECK(mismatch.status().message() ==
        "op 'bad' (dot) with inputs [16, 4] [8, 16]: contracting dim sizes differ: lhs dim 1 has "
        "4, rhs dim 0 has 8 (lhs [16, 4], rhs [8, 16])");
  CHECK(s.g.num_ops() == ops);
  CHECK(s.g.num_values() == values);
}

TEST_CASE("users lists the reading ops in op order, once each", "[graph]") {
  Graph g;
  const ValueId x = g.add_source("x", Shape{4}, DType::kF32, ValueRole::kInput);
  const ValueId y = g.add_source("y", Shape{4}, DType::kF32, ValueRole::kInput);
  auto a = g.add_op(OpKind::kRelu, "a", {y}, {}, 0, OpPhase::kForward);
  auto b = g.add_op(OpKind::kAdd, "b", {x, x}, {}, 0, OpPhase::kForward);
  auto c = g.add_op(OpKind::kMul, "c", {y, x}, {}, 0, OpPhase::kForward);
  REQUIRE((a.has_value() && b.has_value() && c.has_value()));
  CHECK(g.users(x) == std::vector<OpId>{*b, *c});
  CHECK(g.users(y) == std::vector<OpId>{*a, *c});
  CHECK(g.users(g.op(*c).outputs[0]).empty());
}

TEST_CASE("values_with_role lists ids in order, outputs and aliases are recorded", "[graph]") {
  Small s = small_graph();
  Graph& g = s.g;
  const ValueId m = g.add_source("m", Shape{16, 4}, DType::kF32, ValueRole::kOptimizerState);
  const ValueId w2 = g.add_source("w2", Shape{4}, DType::kF32, ValueRole::kParameter);
  CHECK(g.values_with_role(ValueRole::kParameter) == std::vector<ValueId>{s.w, w2});
  CHECK(g.values_with_role(ValueRole::kInput) == std::vector<ValueId>{s.x});
  CHECK(g.values_with_role(ValueRole::kOptimizerState) == std::vector<ValueId>{m});
  CHECK(g.values_with_role(ValueRole::kActivation) ==
        std::vector<ValueId>{g.op(s.mm).outputs[0], g.op(s.relu).outputs[0]});
  CHECK(g.values_with_role(ValueRole::kUpdated).empty());

  const ValueId loss = g.op(s.relu).outputs[0];
  g.add_output(loss);
  CHECK(g.outputs() == std::vector<ValueId>{loss});
  g.add_alias(s.w, m);
  REQUIRE(g.aliases().size() == 1);
  CHECK(g.aliases()[0].source == s.w);
  CHECK(g.aliases()[0].updated == m);
  CHECK(g.validate().is_ok());  // equal shapes [16, 4]
}

TEST_CASE("num_layers is one more than the largest layer tag, set_layers re-tags", "[graph]") {
  CHECK(Graph().num_layers() == 0);
  Small s = small_graph();
  CHECK(s.g.num_layers() == 2);  // tags 0 and 1
  s.g.set_layers({4, 2});
  CHECK(s.g.op(s.mm).layer == 4);
  CHECK(s.g.op(s.relu).layer == 2);
  CHECK(s.g.num_layers() == 5);
  s.g.set_layers({0});  // a short list re-tags a prefix only
  CHECK(s.g.op(s.mm).layer == 0);
  CHECK(s.g.op(s.relu).layer == 2);
  CHECK(s.g.num_layers() == 3);
}

TEST_CASE("validate accepts a built graph and catches broken invariants", "[graph]") {
  CHECK(small_graph().g.validate().is_ok());

  SECTION("an output whose shape no longer matches inference") {
    Small s = small_graph();
    s.g.mutable_value(s.g.op(s.relu).outputs[0]).shape = Shape{8, 5};
    const Status st = s.g.validate();
    CHECK(st.code() == Errc::kInternal);
    CHECK(st.message() == "op 'r' output 0 is inconsistent");
  }
  SECTION("an output claiming another producer") {
    Small s = small_graph();
    s.g.mutable_value(s.g.op(s.relu).outputs[0]).producer = s.mm;
    CHECK(s.g.validate().message() == "op 'r' output 0 is inconsistent");
  }
  SECTION("a read before the value is produced") {
    Small s = small_graph();
    // x now claims to be produced by op 1 (the relu), which runs after the dot reading it.
    s.g.mutable_value(s.x).producer = s.relu;
    const Status st = s.g.validate();
    CHECK(st.code() == Errc::kInternal);
    CHECK(st.message() == "op 'mm' reads a value before it is produced");
  }
  SECTION("an input whose shape makes the op invalid") {
    Small s = small_graph();
    s.g.mutable_value(s.w).shape = Shape{15, 4};
    const Status st = s.g.validate();
    CHECK(st.code() == Errc::kInvalidArgument);
    CHECK(st.message().rfind("op 'mm': contracting dim sizes differ", 0) == 0);
  }
  SECTION("an alias that changes the shape") {
    Small s = small_graph();
    s.g.add_alias(s.w, s.x);
    const Status st = s.g.validate();
    CHECK(st.code() == Errc::kInternal);
    CHECK(st.message() == "alias w -> x changes the shape");
  }
}

TEST_CASE("describe_op names kind, op and shapes", "[graph]") {
  Small s = small_graph();
  CHECK(describe_op(s.g, s.mm) == "dot 'mm' [8, 16] x [16, 4] -> [8, 4]");
  CHECK(describe_op(s.g, s.relu) == "relu 'r' [8, 4] -> [8, 4]");
  const ValueId gamma = s.g.add_source("g", Shape{4}, DType::kF32, ValueRole::kParameter);
  auto ln = s.g.add_op(OpKind::kLayerNorm, "ln", {s.g.op(s.relu).outputs[0], gamma, gamma}, {}, 1,
                       OpPhase::kForward);
  REQUIRE(ln.has_value());
  CHECK(describe_op(s.g, *ln) == "layer_norm 'ln' [8, 4] x [4] x [4] -> [8, 4], [8], [8]");
}

TEST_CASE("roles and phases have stable names", "[graph]") {
  CHECK(value_role_name(ValueRole::kParameter) == "parameter");
  CHECK(value_role_name(ValueRole::kOptimizerState) == "optimizer_state");
  CHECK(value_role_name(ValueRole::kInput) == "input");
  CHECK(value_role_name(ValueRole::kActivation) == "activation");
  CHECK(value_role_name(ValueRole::kGradient) == "gradient");
  CHECK(value_role_name(ValueRole::kUpdated) == "updated");
  CHECK(op_phase_name(OpPhase::kForward) == "forward");
  CHECK(op_phase_name(OpPhase::kBackward) == "backward");
  CHECK(op_phase_name(OpPhase::kUpdate) == "update");
}

}  // namespace
}  // namespace meshpipe::graph

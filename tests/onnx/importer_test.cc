// Tests of onnx/importer.h on models written with the test encoder: the graph an MLP with
// PyTorch's exact-GELU chain becomes (ops, parameters with the file's values, layers), the
// LayerNorm decomposition, the causal mask, tied and deduplicated initializers, and the errors
// (unknown op, non-causal mask, symbolic dims) naming the node.
#include "onnx/importer.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <string>

#include "onnx/encoder.h"

namespace meshpipe::onnx {
namespace {

using test::Enc;
using test::raw_floats;

using test::attr_i;
using test::attr_ints;
using test::attr_t;
using test::int_tensor;
using test::node;
using test::scalar_const;
using test::tensor;
using test::value_info;

Expected<ImportedModel> import_bytes(const std::vector<Enc>& nodes, const std::vector<Enc>& inits,
                                     const std::vector<Enc>& inputs,
                                     const std::vector<Enc>& outputs, ImportOptions o = {}) {
  auto model =
      decode_model(std::make_shared<std::string>(test::model_bytes(nodes, inits, inputs, outputs)));
  if (!model.has_value()) return model.status();
  return import_model(*model, o);
}

int count_kind(const graph::Graph& g, OpKind k) {
  int n = 0;
  for (const graph::Op& op : g.ops()) n += op.kind == k ? 1 : 0;
  return n;
}

const graph::Value* find_value(const graph::Graph& g, const std::string& name) {
  for (const graph::Value& v : g.values()) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

// x [2, 3] -> Gemm(w1 [4, 3], b1, transB) -> GELU (the erf chain PyTorch writes) -> Gemm(w2)
// -> logits [2, 5].
std::vector<Enc> mlp_nodes() {
  return {
      node("Gemm", "/0/Gemm", {"x", "0.weight", "0.bias"}, {"h"}, {attr_i("transB", 1)}),
      scalar_const("/1/c_sqrt2", std::sqrt(2.0f)),
      node("Div", "/1/Div", {"h", "/1/c_sqrt2"}, {"a"}),
      node("Erf", "/1/Erf", {"a"}, {"e"}),
      scalar_const("/1/c_one", 1.0f),
      node("Add", "/1/Add", {"e", "/1/c_one"}, {"f"}),
      node("Mul", "/1/Mul", {"h", "f"}, {"g"}),
      scalar_const("/1/c_half", 0.5f),
      node("Mul", "/1/Mul_1", {"g", "/1/c_half"}, {"act"}),
      node("Gemm", "/2/Gemm", {"act", "2.weight", "2.bias"}, {"logits"}, {attr_i("transB", 1)})};
}
std::vector<Enc> mlp_inits() {
  std::vector<float> w1(12), w2(20);
  for (size_t k = 0; k < w1.size(); ++k) w1[k] = 0.1f * static_cast<float>(k) - 0.5f;
  for (size_t k = 0; k < w2.size(); ++k) w2[k] = 0.05f * static_cast<float>(k) - 0.4f;
  return {tensor("0.weight", {4, 3}, w1), tensor("0.bias", {4}, {0.1f, 0.2f, 0.3f, 0.4f}),
          tensor("2.weight", {5, 4}, w2), tensor("2.bias", {5}, {0, 0, 0, 0, 0})};
}

TEST_CASE("an MLP with PyTorch's exact GELU chain imports as dots, bias adds and gelu_erf",
          "[onnx]") {
  ImportOptions o;
  o.loss = LossKind::kCrossEntropy;
  auto m = import_bytes(mlp_nodes(), mlp_inits(), {value_info("x", 1, {2, 3})},
                        {value_info("logits", 1, {2, 5})}, o);
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  const graph::Graph& g = m->forward.graph;
  CHECK(count_kind(g, OpKind::kDot) == 2);
  CHECK(count_kind(g, OpKind::kBiasAdd) == 2);
  CHECK(count_kind(g, OpKind::kGeluErf) == 1);
  CHECK(count_kind(g, OpKind::kCrossEntropy) == 1);
  CHECK(m->summary.parameters == 12 + 4 + 20 + 5);
  CHECK(m->summary.parameter_tensors == 4);
  CHECK(m->summary.layers == std::vector<std::string>{"0", "1", "2"});
  // Parameters carry the file's values; the labels input is added, shaped like the logits
  // without the class dim.
  const graph::Value* b1 = find_value(g, "0.bias");
  REQUIRE(b1 != nullptr);
  REQUIRE(b1->init.kind == graph::InitSpec::Kind::kValues);
  CHECK(*b1->init.values == std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f});
  const graph::Value* labels = find_value(g, "labels");
  REQUIRE(labels != nullptr);
  CHECK(labels->shape == Shape{2});
  // Each op is in the layer of its module ("/2/Gemm" -> layer 2).
  for (const graph::Op& op : g.ops()) {
    if (op.kind == OpKind::kGeluErf) CHECK(op.layer == 1);
  }
}

TEST_CASE("an unknown op, a symbolic batch, a missing output: errors that name them", "[onnx]") {
  auto nodes = mlp_nodes();
  nodes.push_back(node("Celu", "/3/Celu", {"logits"}, {"y"}));
  auto m =
      import_bytes(nodes, mlp_inits(), {value_info("x", 1, {2, 3})}, {value_info("y", 1, {2, 5})});
  REQUIRE_FALSE(m.has_value());
  CHECK(m.status().message().rfind("node '/3/Celu' (Celu): op type 'Celu' is not imported", 0) ==
        0);
  auto sym = import_bytes(mlp_nodes(), mlp_inits(), {value_info("x", 1, {2, 3}, "batch")},
                          {value_info("logits", 1, {2, 5})});
  CHECK(sym.status().message() ==
        "input 'x': dim 0 is 'batch', not a number (give the batch with --batch for dim 0; "
        "other dims must be exported fixed)");
  ImportOptions b;
  b.batch = 7;
  b.loss = LossKind::kCrossEntropy;
  auto with_batch = import_bytes(mlp_nodes(), mlp_inits(), {value_info("x", 1, {2, 3}, "batch")},
                                 {value_info("logits", 1, {2, 5})}, b);
  INFO(with_batch.status().to_string());
  REQUIRE(with_batch.has_value());
  CHECK(find_value(with_batch->forward.graph, "labels")->shape == Shape{7});
  // Not a scalar loss.
  auto not_loss = import_bytes(mlp_nodes(), mlp_inits(), {value_info("x", 1, {2, 3})},
                               {value_info("logits", 1, {2, 5})});
  CHECK(not_loss.status().message().find("is not a scalar loss") != std::string::npos);
  ImportOptions named;
  named.output = "nope";
  auto missing = import_bytes(mlp_nodes(), mlp_inits(), {value_info("x", 1, {2, 3})},
                              {value_info("logits", 1, {2, 5})}, named);
  CHECK(missing.status().message() == "the model has no output 'nope' (outputs: logits)");
}

// Attention scores [1, 2, 3, 3] masked by Where(mask == 0, -inf, scores) with a lower-triangular
// mask buffer (a float initializer used only as a constant), then Softmax.
std::vector<Enc> attention_nodes() {
  return {node("MatMul", "/blocks.0/MatMul", {"q", "kt"}, {"s"}),
          scalar_const("/blocks.0/zero", 0.0f),
          node("Equal", "/blocks.0/Equal", {"mask", "/blocks.0/zero"}, {"cond"}),
          scalar_const("/blocks.0/ninf", -INFINITY),
          node("Where", "/blocks.0/Where", {"cond", "/blocks.0/ninf", "s"}, {"masked"}),
          node("Softmax", "/blocks.0/Softmax", {"masked"}, {"p"}, {attr_i("axis", -1)}),
          node("ReduceSum", "/blocks.0/ReduceSum", {"p"}, {"loss"}, {attr_i("keepdims", 0)})};
}

TEST_CASE("a causal mask applied with Where before a softmax becomes the causal softmax",
          "[onnx]") {
  const std::vector<float> tril = {1, 0, 0, 1, 1, 0, 1, 1, 1};
  auto m = import_bytes(attention_nodes(), {tensor("mask", {1, 1, 3, 3}, tril)},
                        {value_info("q", 1, {1, 2, 3, 4}), value_info("kt", 1, {1, 2, 4, 3})},
                        {value_info("loss", 1, {})});
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  int causal = 0;
  for (const graph::Op& op : m->forward.graph.ops()) {
    if (op.kind == OpKind::kSoftmax) causal += op.attrs.causal ? 1 : 0;
  }
  CHECK(causal == 1);
  CHECK(m->summary.parameters == 0);  // the mask buffer is not a parameter
  // A mask that is not causal is refused, naming the position.
  const std::vector<float> wrong = {1, 1, 0, 1, 1, 0, 1, 1, 1};
  auto bad = import_bytes(attention_nodes(), {tensor("mask", {1, 1, 3, 3}, wrong)},
                          {value_info("q", 1, {1, 2, 3, 4}), value_info("kt", 1, {1, 2, 4, 3})},
                          {value_info("loss", 1, {})});
  CHECK(bad.status().message() ==
        "node '/blocks.0/Where' (Where): the mask is not causal (position (0, 1) is kept)");
}

TEST_CASE("PyTorch's LayerNorm decomposition imports as one layer norm", "[onnx]") {
  std::vector<Enc> nodes = {
      node("ReduceMean", "/ln/ReduceMean", {"x"}, {"m"}, {attr_ints("axes", {-1})}),
      node("Sub", "/ln/Sub", {"x", "m"}, {"d"}),
      scalar_const("/ln/two", 2.0f),
      node("Pow", "/ln/Pow", {"d", "/ln/two"}, {"p"}),
      node("ReduceMean", "/ln/ReduceMean_1", {"p"}, {"v"}, {attr_ints("axes", {-1})}),
      scalar_const("/ln/eps", 1e-5f),
      node("Add", "/ln/Add", {"v", "/ln/eps"}, {"ve"}),
      node("Sqrt", "/ln/Sqrt", {"ve"}, {"s"}),
      node("Div", "/ln/Div", {"d", "s"}, {"n"}),
      node("Mul", "/ln/Mul", {"n", "ln.weight"}, {"y1"}),
      node("Add", "/ln/Add_1", {"y1", "ln.bias"}, {"y"}),
      node("ReduceSum", "/ln/ReduceSum", {"y"}, {"loss"}, {attr_i("keepdims", 0)})};
  auto m = import_bytes(
      nodes, {tensor("ln.weight", {4}, {1, 1, 1, 1}), tensor("ln.bias", {4}, {0, 0, 0, 0})},
      {value_info("x", 1, {2, 4})}, {value_info("loss", 1, {})});
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  CHECK(count_kind(m->forward.graph, OpKind::kLayerNorm) == 1);
  CHECK(count_kind(m->forward.graph, OpKind::kReduceMean) == 0);
  bool eps_ok = false;
  for (const graph::Op& op : m->forward.graph.ops()) {
    if (op.kind == OpKind::kLayerNorm) eps_ok = std::abs(op.attrs.eps - 1e-5f) < 1e-12f;
  }
  CHECK(eps_ok);
}

TEST_CASE("a shared initializer is one parameter; an Identity copy of one is its own", "[onnx]") {
  // wte used by the embedding and, transposed, by the head (tied); 'b' deduplicated by the
  // exporter into an Identity 'b2' (two parameters in PyTorch).
  std::vector<Enc> nodes = {
      node("Gather", "/wte/Gather", {"wte", "ids"}, {"e"}),
      node("Identity", "Identity_0", {"b"}, {"b2"}),
      node("Add", "/Add", {"e", "b"}, {"e1"}),
      node("Add", "/Add_1", {"e1", "b2"}, {"e2"}),
      node("Transpose", "/head/Transpose", {"wte"}, {"wt"}, {attr_ints("perm", {1, 0})}),
      node("MatMul", "/head/MatMul", {"e2", "wt"}, {"logits"})};
  ImportOptions o;
  o.loss = LossKind::kCrossEntropy;
  auto m = import_bytes(
      nodes,
      {tensor("wte", {5, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}), tensor("b", {2}, {0.5f, 0.5f})},
      {value_info("ids", 7, {3})}, {value_info("logits", 1, {3, 5})}, o);
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  CHECK(m->summary.parameter_tensors == 3);  // wte, b, b2
  CHECK(m->summary.parameters == 10 + 2 + 2);
  CHECK(find_value(m->forward.graph, "b2") != nullptr);
  // The head reads wte itself, contracting its last dim: no transpose (its gradient then comes
  // out of a dot in wte's layout and stays a partial sum under data parallelism).
  int transposes = 0;
  for (const graph::Op& op : m->forward.graph.ops()) {
    transposes += op.kind == OpKind::kTranspose ? 1 : 0;
    if (op.kind == OpKind::kDot) {
      CHECK(m->forward.graph.value(op.inputs[1]).name == "wte");
      CHECK(op.attrs.dot.rhs_contract == std::vector<int64_t>{1});
    }
  }
  CHECK(transposes == 0);
}

TEST_CASE("a transpose read only by matrix products is folded into them, else kept", "[onnx]") {
  // Attention's q @ k.transpose(-2, -1) on [2, 2, 3, 4] (batch, heads, seq, head dim): the dot
  // reads k, contracting its dim 3. 'kt2' is also read by an Add, so it stays a transpose.
  std::vector<Enc> nodes = {
      node("Transpose", "/t", {"k"}, {"kt"}, {attr_ints("perm", {0, 1, 3, 2})}),
      node("MatMul", "/qk", {"q", "kt"}, {"s"}),
      node("Transpose", "/t2", {"k"}, {"kt2"}, {attr_ints("perm", {0, 1, 3, 2})}),
      node("MatMul", "/qk2", {"q", "kt2"}, {"s2"}),
      node("Add", "/a", {"kt2", "kt2"}, {"kk"}),
      node("ReduceSum", "/r1", {"s"}, {"l1"}, {attr_i("keepdims", 0)}),
      node("ReduceSum", "/r2", {"s2"}, {"l2"}, {attr_i("keepdims", 0)}),
      node("ReduceSum", "/r3", {"kk"}, {"l3"}, {attr_i("keepdims", 0)}),
      node("Add", "/b", {"l1", "l2"}, {"l12"}),
      node("Add", "/c", {"l12", "l3"}, {"loss"})};
  ImportOptions o;
  o.loss = LossKind::kOutput;
  auto m =
      import_bytes(nodes, {}, {value_info("q", 1, {2, 2, 3, 4}), value_info("k", 1, {2, 2, 3, 4})},
                   {value_info("loss", 1, {})}, o);
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  const graph::Graph& g = m->forward.graph;
  CHECK(count_kind(g, OpKind::kTranspose) == 1);
  int folded = 0;
  for (const graph::Op& op : g.ops()) {
    if (op.kind != OpKind::kDot || g.value(op.inputs[1]).name != "k") continue;
    ++folded;
    CHECK(op.attrs.dot.rhs_batch == std::vector<int64_t>{0, 1});
    CHECK(op.attrs.dot.rhs_contract == std::vector<int64_t>{3});
    CHECK(g.value(op.outputs[0]).shape == Shape{2, 2, 3, 3});
  }
  CHECK(folded == 1);
}

TEST_CASE("shape arithmetic folds: Shape, Gather, Unsqueeze, Concat feed a Reshape", "[onnx]") {
  std::vector<Enc> nodes = {
      node("Shape", "/Shape", {"x"}, {"sh"}),
      node("Constant", "/c0", {}, {"i0"}, {attr_t("value", int_tensor("", {}, {0}))}),
      node("Gather", "/Gather", {"sh", "i0"}, {"b"}, {attr_i("axis", 0)}),
      node("Constant", "/ax", {}, {"ax"}, {attr_t("value", int_tensor("", {1}, {0}))}),
      node("Unsqueeze", "/Unsqueeze", {"b", "ax"}, {"b1"}),
      node("Constant", "/rest", {}, {"rest"}, {attr_t("value", int_tensor("", {1}, {-1}))}),
      node("Concat", "/Concat", {"b1", "rest"}, {"target"}, {attr_i("axis", 0)}),
      node("Reshape", "/Reshape", {"x", "target"}, {"flat"}),
      node("ReduceSum", "/ReduceSum", {"flat"}, {"loss"}, {attr_i("keepdims", 0)})};
  auto m = import_bytes(nodes, {}, {value_info("x", 1, {2, 3, 4})}, {value_info("loss", 1, {})});
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  bool found = false;
  for (const graph::Op& op : m->forward.graph.ops()) {
    if (op.kind == OpKind::kReshape) {
      found = true;
      CHECK(m->forward.graph.value(op.outputs[0]).shape == Shape{2, 12});
    }
  }
  CHECK(found);
}

TEST_CASE("Pad: zero pads vanish, constant zero pads concatenate zeros, others are refused",
          "[onnx]") {
  const auto pad_model = [](const std::vector<int64_t>& pads, const std::string& mode,
                            float value) {
    std::vector<Enc> attrs;
    if (!mode.empty()) {
      Enc a;
      a.s(1, "mode").i(20, 3).s(4, mode);
      attrs.push_back(a);
    }
    std::vector<Enc> nodes = {
        node("Constant", "/pads", {}, {"pads"},
             {attr_t("value", int_tensor("", {static_cast<int64_t>(pads.size())}, pads))}),
        scalar_const("/value", value), node("Pad", "/Pad", {"x", "pads", "/value"}, {"p"}, attrs),
        node("ReduceSum", "/ReduceSum", {"p"}, {"loss"}, {attr_i("keepdims", 0)})};
    return import_bytes(nodes, {}, {value_info("x", 1, {2, 3})}, {value_info("loss", 1, {})});
  };
  // PyTorch's all-zero Pad before an AveragePool: nothing is added.
  auto none = pad_model({0, 0, 0, 0}, "", 0.0f);
  INFO(none.status().to_string());
  REQUIRE(none.has_value());
  CHECK(count_kind(none->forward.graph, OpKind::kConcat) == 0);
  // [2, 3] with one row before and two columns after: [3, 5], two concatenations.
  auto some = pad_model({1, 0, 0, 2}, "constant", 0.0f);
  INFO(some.status().to_string());
  REQUIRE(some.has_value());
  CHECK(count_kind(some->forward.graph, OpKind::kConcat) == 2);
  bool found = false;
  for (const graph::Op& op : some->forward.graph.ops()) {
    if (op.kind == OpKind::kReduceSum) {
      found = true;
      CHECK(some->forward.graph.value(op.inputs[0]).shape == Shape{3, 5});
    }
  }
  CHECK(found);
  const auto refused = [&](const std::vector<int64_t>& pads, const std::string& mode, float value,
                           const std::string& what) {
    auto m = pad_model(pads, mode, value);
    REQUIRE_FALSE(m.has_value());
    INFO(m.status().message());
    CHECK(m.status().message().find("node '/Pad' (Pad)") != std::string::npos);
    CHECK(m.status().message().find(what) != std::string::npos);
  };
  refused({0, 1, 0, 1}, "reflect", 0.0f, "reflect padding is not imported");
  refused({0, 1, 0, 1}, "constant", 1.5f, "padding with 1.5");
  refused({0, -1, 0, 0}, "constant", 0.0f, "negative (cropping)");
  refused({0, 1, 0}, "constant", 0.0f, "3 pads for a rank-2 input");
  refused({1 << 20, 1 << 20, 1 << 20, 1 << 20}, "constant", 0.0f, "more than 2^40");
}

TEST_CASE("F.pad's pads, reversed by a negative-step Slice, fold", "[onnx]") {
  // F.pad takes its pads last dim first; PyTorch's export reorders them for ONNX with Slices of
  // step -1 (start -1, end -2^63 + 1). Here the folded reversal of [2, 0, 0, 1] is [1, 0, 0, 2].
  std::vector<Enc> nodes = {
      node("Constant", "/p", {}, {"p"}, {attr_t("value", int_tensor("", {4}, {2, 0, 0, 1}))}),
      node("Constant", "/s", {}, {"s"}, {attr_t("value", int_tensor("", {1}, {-1}))}),
      node("Constant", "/e", {}, {"e"},
           {attr_t("value", int_tensor("", {1}, {std::numeric_limits<int64_t>::min() + 1}))}),
      node("Constant", "/a", {}, {"a"}, {attr_t("value", int_tensor("", {1}, {0}))}),
      node("Constant", "/st", {}, {"st"}, {attr_t("value", int_tensor("", {1}, {-1}))}),
      node("Slice", "/Slice", {"p", "s", "e", "a", "st"}, {"pads"}),
      node("Pad", "/Pad", {"x", "pads"}, {"y"}),
      node("ReduceSum", "/ReduceSum", {"y"}, {"loss"}, {attr_i("keepdims", 0)})};
  auto m = import_bytes(nodes, {}, {value_info("x", 1, {2, 3})}, {value_info("loss", 1, {})});
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  // pads [1, 0, 0, 2]: one row before, two columns after: [3, 5].
  bool found = false;
  for (const graph::Op& op : m->forward.graph.ops()) {
    if (op.kind == OpKind::kReduceSum) {
      found = true;
      CHECK(m->forward.graph.value(op.inputs[0]).shape == Shape{3, 5});
    }
  }
  CHECK(found);
}

}  // namespace
}  // namespace meshpipe::onnx

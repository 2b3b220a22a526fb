// The op-definition registry (graph/internal/op_def.h): every graph kind has a row with the rules
// it needs, lowering-only kinds have none, and check_op_defs rejects broken row sets.
#include "graph/internal/op_def.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <vector>

namespace meshpipe::graph::internal {
namespace {

using Catch::Matchers::Contains;

// The rows of every family, in kOpFamilies order.
std::vector<OpDef> all_rows() {
  std::vector<OpDef> rows;
  for (const OpFamily family : kOpFamilies) {
    const std::span<const OpDef> r = family();
    rows.insert(rows.end(), r.begin(), r.end());
  }
  return rows;
}

// `rows` with the row of `kind` changed by `edit`.
template <class Edit>
std::vector<OpDef> with_edit(std::vector<OpDef> rows, OpKind kind, Edit edit) {
  auto it = std::find_if(rows.begin(), rows.end(), [&](const OpDef& d) { return d.kind == kind; });
  REQUIRE(it != rows.end());
  edit(*it);
  return rows;
}

TEST_CASE("every graph kind has infer and FLOP rules, and a gradient iff differentiable",
          "[graph]") {
  for (int i = 0; i < kNumOpKinds; ++i) {
    const auto kind = static_cast<OpKind>(i);
    const OpKindInfo& info = op_kind_info(kind);
    const OpDef& d = op_def(kind);
    INFO(info.name);
    CHECK(d.kind == kind);
    if (info.lowering_only) {
      CHECK(d.infer == nullptr);
      CHECK(d.flops == nullptr);
      CHECK(d.bytes == nullptr);
      CHECK(d.grad == nullptr);
      continue;
    }
    CHECK(d.infer != nullptr);
    CHECK(d.flops != nullptr);
    CHECK((d.grad != nullptr) == (info.diff_outputs != 0));
  }
}

TEST_CASE("the families hold exactly one row per graph kind", "[graph]") {
  const std::vector<OpDef> rows = all_rows();
  CHECK(check_op_defs(rows).is_ok());
  int lowering_only = 0;
  for (int i = 0; i < kNumOpKinds; ++i) {
    lowering_only += op_kind_info(static_cast<OpKind>(i)).lowering_only ? 1 : 0;
  }
  CHECK(static_cast<int>(rows.size()) == kNumOpKinds - lowering_only);
}

TEST_CASE("check_op_defs rejects duplicate, missing and misplaced rows", "[graph]") {
  const std::vector<OpDef> rows = all_rows();

  std::vector<OpDef> duplicate = rows;
  duplicate.push_back(rows.front());
  CHECK_THAT(check_op_defs(duplicate).message(), Contains("has two rows"));

  std::vector<OpDef> missing = rows;
  std::erase_if(missing, [](const OpDef& d) { return d.kind == OpKind::kRelu; });
  CHECK_THAT(check_op_defs(missing).message(), Contains("relu has no row"));

  std::vector<OpDef> lowering = rows;
  lowering.push_back(OpDef{.kind = OpKind::kBatchNormSums});
  CHECK_THAT(check_op_defs(lowering).message(), Contains("batch_norm_sums is lowering only"));
}

TEST_CASE("check_op_defs rejects rows without the rules their kind needs", "[graph]") {
  const std::vector<OpDef> rows = all_rows();
  const auto status_of = [](const std::vector<OpDef>& r) { return check_op_defs(r).message(); };
  CHECK_THAT(status_of(with_edit(rows, OpKind::kTanh, [](OpDef& d) { d.infer = nullptr; })),
             Contains("tanh has no inference rule"));
  CHECK_THAT(status_of(with_edit(rows, OpKind::kTanh, [](OpDef& d) { d.flops = nullptr; })),
             Contains("tanh has no FLOP rule"));
  CHECK_THAT(status_of(with_edit(rows, OpKind::kTanh, [](OpDef& d) { d.grad = nullptr; })),
             Contains("tanh has differentiable outputs but no gradient rule"));
  const GradFn tanh_grad = op_def(OpKind::kTanh).grad;
  CHECK_THAT(status_of(with_edit(rows, OpKind::kTanhGrad, [&](OpDef& d) { d.grad = tanh_grad; })),
             Contains("tanh_grad has no differentiable output but a gradient rule"));
}

TEST_CASE("shape inference still rejects the lowering-only kinds", "[graph]") {
  const Types x{{Shape{4, 3}, DType::kF32}};
  auto out = infer_output_types(OpKind::kBatchNormSums, OpAttrs{}, x);
  REQUIRE_FALSE(out.has_value());
  CHECK(out.status().message() ==
        "batch_norm_sums is a piece the runtime's lowering emits, not an op of a graph");
}

}  // namespace
}  // namespace meshpipe::graph::internal

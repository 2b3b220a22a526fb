// The op-definition table: the rows of every family (internal/op_def.h), checked once and indexed
// by kind. A missing, duplicate or incomplete row aborts the first lookup.
#include <array>
#include <vector>

#include "core/check.h"
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using Table = std::array<OpDef, kNumOpKinds>;

size_t index_of(OpKind kind) { return static_cast<size_t>(kind); }

// The rules a row of `info`'s kind must have, or the first that is missing or extra.
Status check_row(const OpDef& d, const OpKindInfo& info) {
  if (info.lowering_only) {
    return make_error(Errc::kInternal, "{} is lowering only and must have no graph rules",
                      info.name);
  }
  if (d.infer == nullptr) return make_error(Errc::kInternal, "{} has no inference rule", info.name);
  if (d.flops == nullptr) return make_error(Errc::kInternal, "{} has no FLOP rule", info.name);
  const bool differentiable = info.diff_outputs != 0;
  if (differentiable && d.grad == nullptr) {
    return make_error(Errc::kInternal, "{} has differentiable outputs but no gradient rule",
                      info.name);
  }
  if (!differentiable && d.grad != nullptr) {
    return make_error(Errc::kInternal, "{} has no differentiable output but a gradient rule",
                      info.name);
  }
  return Status::ok();
}

const Table& table() {
  static const Table t = [] {
    std::vector<OpDef> rows;
    for (const OpFamily family : kOpFamilies) {
      const std::span<const OpDef> r = family();
      rows.insert(rows.end(), r.begin(), r.end());
    }
    const Status s = check_op_defs(rows);
    MP_CHECK(s.is_ok()) << "graph op definitions: " << s.message();
    Table out;
    for (size_t i = 0; i < out.size(); ++i) out[i].kind = static_cast<OpKind>(i);
    for (const OpDef& d : rows) out[index_of(d.kind)] = d;
    return out;
  }();
  return t;
}

}  // namespace

Status check_op_defs(std::span<const OpDef> rows) {
  std::array<bool, kNumOpKinds> seen{};
  for (const OpDef& d : rows) {
    if (index_of(d.kind) >= seen.size()) {
      return make_error(Errc::kInternal, "a row has op kind {}, out of range", index_of(d.kind));
    }
    const OpKindInfo& info = op_kind_info(d.kind);
    if (seen[index_of(d.kind)]) return make_error(Errc::kInternal, "{} has two rows", info.name);
    seen[index_of(d.kind)] = true;
    MP_RETURN_IF_ERROR(check_row(d, info));
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    const OpKindInfo& info = op_kind_info(static_cast<OpKind>(i));
    if (!seen[i] && !info.lowering_only) {
      return make_error(Errc::kInternal, "{} has no row", info.name);
    }
  }
  return Status::ok();
}

const OpDef& op_def(OpKind kind) {
  MP_CHECK(index_of(kind) < static_cast<size_t>(kNumOpKinds)) << "op kind " << index_of(kind);
  return table()[index_of(kind)];
}

}  // namespace meshpipe::graph::internal

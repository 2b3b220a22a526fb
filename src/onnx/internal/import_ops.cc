// The ONNX importer's per-op methods (internal/importer_impl.h): elementwise with
// broadcasting, matrix products, gathers, layout ops, the causal mask, convolutions and pooling,
// normalisations, reductions and losses.
#include <algorithm>

#include "onnx/internal/importer_impl.h"

namespace meshpipe::onnx::internal {

Status Importer::import_binary(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 2, 2));
  const std::string& op = n.op_type;
  const std::string& a = n.inputs[0];
  const std::string& bn = n.inputs[1];
  // A scalar constant on one side: the affine scale op.
  const auto scalar_of = [&](const std::string& name) -> std::optional<double> {
    if (!is_foldable(name)) return std::nullopt;
    auto c = constant(name);
    if (!c.has_value() || c->numel() != 1) return std::nullopt;
    return c->at(0);
  };
  if (op == "Pow") {
    auto e = scalar_of(bn);
    if (!e || (*e != 1.0 && *e != 2.0 && *e != 3.0)) {
      return make_error(Errc::kInvalidArgument,
                        "only x^1, x^2 and x^3 of computed data are imported");
    }
    MP_ASSIGN_OR_RETURN(const ValueId x, value(a));
    ValueId y = x;
    for (int k = 1; k < static_cast<int>(*e); ++k) y = b_.mul(y, x);
    set_value(n.outputs[0], y);
    return Status::ok();
  }
  if (auto c = scalar_of(bn)) {
    MP_ASSIGN_OR_RETURN(const ValueId x, value(a));
    const auto v = static_cast<float>(*c);
    ValueId y;
    if (op == "Add") y = b_.scale(x, 1.0f, v);
    if (op == "Sub") y = b_.scale(x, 1.0f, -v);
    if (op == "Mul") y = b_.scale(x, v, 0.0f);
    if (op == "Div") y = b_.scale(x, static_cast<float>(1.0 / *c), 0.0f);
    set_value(n.outputs[0], y);
    return Status::ok();
  }
  if (auto c = scalar_of(a); c && op != "Div") {
    MP_ASSIGN_OR_RETURN(const ValueId x, value(bn));
    const auto v = static_cast<float>(*c);
    ValueId y;
    if (op == "Add") y = b_.scale(x, 1.0f, v);
    if (op == "Sub") y = b_.scale(x, -1.0f, v);
    if (op == "Mul") y = b_.scale(x, v, 0.0f);
    set_value(n.outputs[0], y);
    return Status::ok();
  }
  MP_ASSIGN_OR_RETURN(ValueId x, value(a));
  MP_ASSIGN_OR_RETURN(ValueId y, value(bn));
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> out,
                      internal::broadcast_shape(b_.shape(x).dims(), b_.shape(y).dims()));
  // x + b with b broadcast along some of x's dims: one bias add.
  if (op == "Add" && b_.shape(x).dims() != out) std::swap(x, y);
  if (op == "Add" && b_.shape(x).dims() == out && b_.shape(y).dims() != out) {
    std::vector<int64_t> map;
    y = squeeze_growing(y, out, map);
    set_value(n.outputs[0], map.empty() ? b_.add(x, broadcast_to(y, out)) : b_.bias_add(x, y, map));
    return Status::ok();
  }
  x = broadcast_to(x, out);
  y = broadcast_to(y, out);
  ValueId r;
  if (op == "Add") r = b_.add(x, y);
  if (op == "Sub") r = b_.sub(x, y);
  if (op == "Mul") r = b_.mul(x, y);
  if (op == "Div") r = b_.div(x, y);
  set_value(n.outputs[0], r);
  return Status::ok();
}

Status Importer::import_matmul(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 2, 2));
  MP_ASSIGN_OR_RETURN(const ValueId a, value(n.inputs[0]));
  // The second operand a transpose of x (find_matmul_transposes): b's dim k is x's perm[k].
  const auto t = transposed_.find(n.inputs[1]);
  ValueId b;
  std::vector<int64_t> perm;
  if (t != transposed_.end()) {
    b = t->second.source;
    perm = t->second.perm;
  } else {
    MP_ASSIGN_OR_RETURN(b, value(n.inputs[1]));
  }
  const Shape sa = b_.shape(a);
  Shape sb = b_.shape(b);
  if (!perm.empty()) {
    std::vector<int64_t> dims;
    for (int64_t p : perm) dims.push_back(sb[p]);
    sb = Shape(dims);
  }
  if (sa.rank() < 2 || sb.rank() < 2) {
    return make_error(Errc::kInvalidArgument,
                      "matrix product of {} and {}: vectors are not imported", sa.to_string(),
                      sb.to_string());
  }
  DotDims d;
  if (sb.rank() == 2) {
    d.lhs_contract = {sa.rank() - 1};
    d.rhs_contract = {0};
  } else {
    if (sa.rank() != sb.rank()) {
      return make_error(Errc::kInvalidArgument,
                        "matrix product of {} and {}: batch dims must match in number",
                        sa.to_string(), sb.to_string());
    }
    for (int64_t k = 0; k < sa.rank() - 2; ++k) {
      if (sa[k] != sb[k]) {
        return make_error(Errc::kInvalidArgument,
                          "matrix product of {} and {}: broadcast batch dims are not imported",
                          sa.to_string(), sb.to_string());
      }
      d.lhs_batch.push_back(k);
      d.rhs_batch.push_back(k);
    }
    d.lhs_contract = {sa.rank() - 1};
    d.rhs_contract = {sb.rank() - 2};
  }
  if (!perm.empty()) {
    // The product's last dim is b's free dim (the last); x's dims renumbered through perm.
    for (int64_t& k : d.rhs_batch) k = perm[static_cast<size_t>(k)];
    for (int64_t& k : d.rhs_contract) k = perm[static_cast<size_t>(k)];
  }
  set_value(n.outputs[0], b_.dot(a, b, d));
  return Status::ok();
}

Status Importer::import_gemm(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 2, 3));
  MP_ASSIGN_OR_RETURN(const ValueId a, value(n.inputs[0]));
  MP_ASSIGN_OR_RETURN(const ValueId b, value(n.inputs[1]));
  if (b_.shape(a).rank() != 2 || b_.shape(b).rank() != 2) {
    return make_error(Errc::kInvalidArgument, "Gemm of {} and {}: needs matrices",
                      b_.shape(a).to_string(), b_.shape(b).to_string());
  }
  const bool ta = attr_i(n, "transA", 0) != 0;
  const bool tb = attr_i(n, "transB", 0) != 0;
  const float alpha = attr_f(n, "alpha", 1.0f);
  const float beta = attr_f(n, "beta", 1.0f);
  ValueId y = b_.dot(a, b, DotDims{{}, {}, {ta ? 0 : 1}, {tb ? 1 : 0}});
  if (alpha != 1.0f) y = b_.scale(y, alpha);
  if (n.inputs.size() == 3 && !n.inputs[2].empty() && beta != 0.0f) {
    MP_ASSIGN_OR_RETURN(ValueId c, value(n.inputs[2]));
    if (beta != 1.0f) c = b_.scale(c, beta);
    const Shape sc = b_.shape(c);
    const Shape sy = b_.shape(y);
    if (sc.rank() == 1 && sc[0] == sy[1]) {
      y = b_.bias_add(y, c, {1});
    } else {
      MP_ASSIGN_OR_RETURN(const std::vector<int64_t> out,
                          internal::broadcast_shape(sy.dims(), sc.dims()));
      if (out != sy.dims()) {
        return make_error(Errc::kInvalidArgument, "Gemm's C of shape {} does not broadcast to {}",
                          sc.to_string(), sy.to_string());
      }
      y = b_.add(y, broadcast_to(c, out));
    }
  }
  set_value(n.outputs[0], y);
  return Status::ok();
}

Status Importer::import_gather(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 2, 2));
  const std::string& data = n.inputs[0];
  const std::string& idx = n.inputs[1];
  if (is_foldable(data) && is_foldable(idx)) return fold_node(n);
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> ddims, dims_of(data));
  const int64_t axis = norm_axis(attr_i(n, "axis", 0), static_cast<int64_t>(ddims.size()));
  if (is_foldable(idx)) {
    // Constant indices: a contiguous run is a slice (position embeddings read with arange).
    MP_ASSIGN_OR_RETURN(const Const c, constant(idx));
    if (c.numel() == 0) return make_error(Errc::kInvalidArgument, "gathers no indices");
    const int64_t len = ddims.at(size_t(axis));
    std::vector<int64_t> v;
    for (int64_t k = 0; k < c.numel(); ++k)
      v.push_back(c.int_at(k) < 0 ? c.int_at(k) + len : c.int_at(k));
    for (size_t k = 1; k < v.size(); ++k) {
      if (v[k] != v[k - 1] + 1) {
        return make_error(Errc::kInvalidArgument,
                          "gathers constant indices that are not a contiguous run");
      }
    }
    if (v.front() < 0 || v.back() >= len) {
      return make_error(Errc::kOutOfRange, "gathers indices {}..{} of a dim of {}", v.front(),
                        v.back(), len);
    }
    MP_ASSIGN_OR_RETURN(const ValueId x, value(data));
    ValueId y = b_.slice(x, axis, v.front(), v.back() + 1);
    std::vector<int64_t> out(ddims.begin(), ddims.begin() + axis);
    out.insert(out.end(), c.dims.begin(), c.dims.end());
    out.insert(out.end(), ddims.begin() + axis + 1, ddims.end());
    if (b_.shape(y).dims() != out) y = b_.reshape(y, Shape(out));
    set_value(n.outputs[0], y);
    return Status::ok();
  }
  if (axis != 0 || ddims.size() != 2) {
    return make_error(Errc::kInvalidArgument,
                      "gathers with computed indices only rows of a matrix (an embedding)");
  }
  MP_ASSIGN_OR_RETURN(const ValueId table, value(data));
  MP_ASSIGN_OR_RETURN(const ValueId ids, value(idx));
  set_value(n.outputs[0], b_.embedding(table, ids));
  return Status::ok();
}

Status Importer::import_reshape_like(const Node& n) {
  const std::string& op = n.op_type;
  MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs.at(0)));
  const std::vector<int64_t> in = b_.shape(x).dims();
  const auto rank = static_cast<int64_t>(in.size());
  std::vector<int64_t> out;
  if (op == "Transpose") {
    std::vector<int64_t> perm = attr_ints(n, "perm");
    if (perm.empty()) {
      for (int64_t d = rank; d-- > 0;) perm.push_back(d);
    }
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    bool is_perm = static_cast<int64_t>(sorted.size()) == rank;
    for (int64_t d = 0; is_perm && d < rank; ++d) is_perm = sorted[static_cast<size_t>(d)] == d;
    if (matmul_transposes_.count(n.outputs[0]) != 0 && is_perm) {
      transposed_[n.outputs[0]] = {x, perm};  // read through its MatMuls (import_matmul)
      return Status::ok();
    }
    set_value(n.outputs[0], b_.transpose(x, perm));
    return Status::ok();
  }
  if (op == "Expand") {
    MP_ASSIGN_OR_RETURN(const std::vector<int64_t> target, ints(n.inputs.at(1)));
    MP_ASSIGN_OR_RETURN(const std::vector<int64_t> dims, internal::broadcast_shape(in, target));
    set_value(n.outputs[0], broadcast_to(x, dims));
    return Status::ok();
  }
  if (op == "Reshape") {
    MP_ASSIGN_OR_RETURN(std::vector<int64_t> target, ints(n.inputs.at(1)));
    auto dims = internal::reshape_target(in, target, attr_i(n, "allowzero", 0) != 0);
    if (!dims.has_value() && !target.empty() && summary_.exported_batch > 0 &&
        target[0] == summary_.exported_batch && summary_.batch != summary_.exported_batch) {
      // The exported batch baked into a reshape: the imported batch instead.
      target[0] = summary_.batch;
      dims = internal::reshape_target(in, target, attr_i(n, "allowzero", 0) != 0);
    }
    if (!dims.has_value()) {
      return Status(dims.status().code(),
                    dims.status().message() +
                        (summary_.batch != summary_.exported_batch
                             ? " (a shape fixed at export: export with a dynamic batch dim)"
                             : ""));
    }
    out = *dims;
  } else if (op == "Flatten") {
    const int64_t axis = norm_axis(attr_i(n, "axis", 1), rank);
    int64_t lo = 1;
    int64_t hi = 1;
    for (int64_t d = 0; d < rank; ++d) (d < axis ? lo : hi) *= in[size_t(d)];
    out = {lo, hi};
  } else {
    MP_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axes_of(n, 1));
    out = in;
    if (op == "Unsqueeze") {
      const auto r = static_cast<int64_t>(in.size() + axes.size());
      for (int64_t& a : axes) a = norm_axis(a, r);
      std::sort(axes.begin(), axes.end());
      for (int64_t a : axes) {
        if (a < 0 || a > static_cast<int64_t>(out.size())) {
          return make_error(Errc::kInvalidArgument, "axis {} out of range", a);
        }
        out.insert(out.begin() + a, 1);
      }
    } else {
      for (int64_t& a : axes) a = norm_axis(a, rank);
      out.clear();
      for (int64_t d = 0; d < rank; ++d) {
        const bool drop = axes.empty() ? in[size_t(d)] == 1
                                       : std::find(axes.begin(), axes.end(), d) != axes.end();
        if (drop && in[size_t(d)] != 1) {
          return make_error(Errc::kInvalidArgument, "squeezes dim {} of size {}", d, in[size_t(d)]);
        }
        if (!drop) out.push_back(in[size_t(d)]);
      }
    }
  }
  set_value(n.outputs[0], out == in ? x : b_.reshape(x, Shape(out)));
  return Status::ok();
}

Status Importer::import_slice(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 3, 5));
  MP_ASSIGN_OR_RETURN(ValueId x, value(n.inputs[0]));
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> starts, ints(n.inputs[1]));
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> ends, ints(n.inputs[2]));
  std::vector<int64_t> axes;
  std::vector<int64_t> steps;
  if (n.inputs.size() > 3 && !n.inputs[3].empty()) {
    MP_ASSIGN_OR_RETURN(axes, ints(n.inputs[3]));
  }
  if (n.inputs.size() > 4 && !n.inputs[4].empty()) {
    MP_ASSIGN_OR_RETURN(steps, ints(n.inputs[4]));
  }
  const int64_t rank = b_.shape(x).rank();
  for (size_t k = 0; k < starts.size() && k < ends.size(); ++k) {
    const int64_t ax = norm_axis(axes.empty() ? static_cast<int64_t>(k) : axes.at(k), rank);
    if (ax < 0 || ax >= rank) return make_error(Errc::kInvalidArgument, "slice axis out of range");
    if (!steps.empty() && steps.at(k) != 1) {
      return make_error(Errc::kInvalidArgument,
                        "slices of computed data with step {} are not imported", steps[k]);
    }
    const int64_t len = b_.shape(x)[ax];
    const int64_t s = std::clamp<int64_t>(starts[k] < 0 ? starts[k] + len : starts[k], 0, len);
    const int64_t e = std::clamp<int64_t>(ends[k] < 0 ? ends[k] + len : ends[k], 0, len);
    if (e <= s)
      return make_error(Errc::kInvalidArgument, "slice [{}, {}) of dim {} is empty", s, e, ax);
    if (s != 0 || e != len) x = b_.slice(x, ax, s, e);
  }
  set_value(n.outputs[0], x);
  return Status::ok();
}

Status Importer::import_pad(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 1, 4));
  MP_ASSIGN_OR_RETURN(ValueId x, value(n.inputs[0]));
  const std::string mode = attr_s(n, "mode");
  if (!mode.empty() && mode != "constant") {
    return make_error(Errc::kInvalidArgument, "{} padding is not imported (only constant)", mode);
  }
  // Opset 11+: pads and the value are inputs; before, attributes.
  std::vector<int64_t> pads = attr_ints(n, "pads");
  if (n.inputs.size() > 1 && !n.inputs[1].empty()) {
    MP_ASSIGN_OR_RETURN(pads, ints(n.inputs[1]));
  }
  float fill = 0.0f;
  if (const Attribute* v = n.attribute("value"); v != nullptr) fill = v->f;
  if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
    MP_ASSIGN_OR_RETURN(const internal::Const c, constant(n.inputs[2]));
    if (c.numel() != 1) return make_error(Errc::kInvalidArgument, "the pad value is not a scalar");
    fill = static_cast<float>(c.at(0));
  }
  if (n.inputs.size() > 3 && !n.inputs[3].empty()) {
    return make_error(Errc::kInvalidArgument, "Pad with axes is not imported");
  }
  const Shape sx = b_.shape(x);
  const int64_t rank = sx.rank();
  if (static_cast<int64_t>(pads.size()) != 2 * rank) {
    return make_error(Errc::kInvalidArgument, "{} pads for a rank-{} input, expected {}",
                      pads.size(), rank, 2 * rank);
  }
  // The padded tensor stays within the elements an input may have (counted in double: the
  // product of padded dims can pass 2^63).
  double padded = 1.0;
  for (int64_t ax = 0; ax < rank; ++ax) {
    padded *= static_cast<double>(sx[ax]) + static_cast<double>(pads[static_cast<size_t>(ax)]) +
              static_cast<double>(pads[static_cast<size_t>(ax + rank)]);
  }
  if (padded > static_cast<double>(int64_t{1} << 40)) {
    return make_error(Errc::kInvalidArgument,
                      "the padded tensor has {:.3g} elements, more than 2^40", padded);
  }
  for (int64_t ax = 0; ax < rank; ++ax) {
    const int64_t before = pads[static_cast<size_t>(ax)];
    const int64_t after = pads[static_cast<size_t>(ax + rank)];
    if (before < 0 || after < 0 || before > (int64_t{1} << 20) || after > (int64_t{1} << 20)) {
      return make_error(Errc::kInvalidArgument,
                        "pads {} and {} of dim {}: negative (cropping) or larger than 2^20 pads "
                        "are not imported",
                        before, after, ax);
    }
    if (before == 0 && after == 0) continue;
    if (fill != 0.0f) {
      return make_error(Errc::kInvalidArgument, "padding with {} is not imported (only 0)", fill);
    }
    // Zeros before and after along the axis, concatenated with x.
    std::vector<ValueId> parts;
    for (const int64_t len : {before, int64_t{-1}, after}) {
      if (len == -1) {
        parts.push_back(x);
        continue;
      }
      if (len == 0) continue;
      graph::OpAttrs a;
      std::vector<int64_t> dims = b_.shape(x).dims();
      dims[static_cast<size_t>(ax)] = len;
      a.shape = Shape(dims);
      a.alpha = 0.0f;
      parts.push_back(
          b_.op(OpKind::kConstant, {}, a, fmt::format("{}_zeros{}_{}", n.outputs[0], ax, len))
              .at(0));
    }
    x = b_.concat(parts, ax);
  }
  set_value(n.outputs[0], x);
  return Status::ok();
}

Status Importer::import_split(const Node& n) {
  MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs.at(0)));
  const int64_t rank = b_.shape(x).rank();
  const int64_t axis = norm_axis(attr_i(n, "axis", 0), rank);
  const int64_t len = b_.shape(x)[axis];
  std::vector<int64_t> sizes = attr_ints(n, "split");
  if (sizes.empty() && n.inputs.size() > 1 && !n.inputs[1].empty()) {
    MP_ASSIGN_OR_RETURN(sizes, ints(n.inputs[1]));
  }
  const auto parts = static_cast<int64_t>(n.outputs.size());
  if (sizes.empty()) {
    if (len % parts != 0) {
      return make_error(Errc::kInvalidArgument, "splits a dim of {} into {} equal parts", len,
                        parts);
    }
    sizes.assign(size_t(parts), len / parts);
  }
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (static_cast<int64_t>(sizes.size()) != parts || total != len) {
    return make_error(Errc::kInvalidArgument,
                      "split sizes [{}] do not cover a dim of {} in {} parts",
                      fmt::join(sizes, ", "), len, parts);
  }
  int64_t at = 0;
  for (int64_t k = 0; k < parts; ++k) {
    set_value(n.outputs[size_t(k)], b_.slice(x, axis, at, at + sizes[size_t(k)]));
    at += sizes[size_t(k)];
  }
  return Status::ok();
}

// Where(cond, x, y) with a constant condition that is the causal mask: cond true above the
// diagonal selecting -inf (masked_fill), or true on and below it selecting the scores.
Status Importer::import_where(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 3, 3));
  if (!is_foldable(n.inputs[0])) {
    return make_error(Errc::kInvalidArgument, "selects with a condition computed from the data");
  }
  MP_ASSIGN_OR_RETURN(const Const cond, constant(n.inputs[0]));
  // Which side is the fill, which the scores.
  int fill_side = -1;
  double fill = 0;
  for (int k = 1; k <= 2; ++k) {
    if (is_foldable(n.inputs[size_t(k)])) {
      MP_ASSIGN_OR_RETURN(const Const c, constant(n.inputs[size_t(k)]));
      if (c.numel() == 1) {
        fill_side = k;
        fill = c.at(0);
      }
    }
  }
  if (fill_side < 0 || fill > -1e4) {  // -inf, or a large negative stand-in
    return make_error(Errc::kInvalidArgument,
                      "only the causal mask (Where(mask, -inf, scores)) is imported");
  }
  MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs[size_t(3 - fill_side)]));
  const Shape s = b_.shape(x);
  if (s.rank() < 2 || s[s.rank() - 1] != s[s.rank() - 2]) {
    return make_error(Errc::kInvalidArgument, "a mask over scores of shape {} (not square)",
                      s.to_string());
  }
  // cond broadcast to the scores' last two dims: masked (the fill) exactly where j > i.
  const int64_t t = s[s.rank() - 1];
  const auto cd = cond.dims;
  if (cd.size() < 2 || cd[cd.size() - 1] != t || cd[cd.size() - 2] != t) {
    return make_error(Errc::kInvalidArgument, "a mask of shape [{}] over {} scores",
                      fmt::join(cd, ", "), s.to_string());
  }
  const int64_t plane = t * t;
  for (int64_t k = 0; k < cond.numel(); ++k) {
    const int64_t i = (k % plane) / t;
    const int64_t j = k % t;
    const bool masked = (cond.at(k) != 0) == (fill_side == 1);
    if (masked != (j > i)) {
      return make_error(Errc::kInvalidArgument, "the mask is not causal (position ({}, {}) is {})",
                        i, j, masked ? "masked" : "kept");
    }
  }
  Slot r;
  r.id = x;
  r.causal = true;
  slots_[n.outputs[0]] = r;
  return Status::ok();
}

Status Importer::import_conv_pool(const Node& n) {
  const std::string& op = n.op_type;
  MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs.at(0)));
  const Shape sx = b_.shape(x);
  if (sx.rank() != 4) {
    return make_error(Errc::kInvalidArgument, "input of shape {}: only 2-D (NCHW) is imported",
                      sx.to_string());
  }
  if (op == "GlobalAveragePool") {
    const ValueId m = b_.reduce_mean(x, {2, 3});
    set_value(n.outputs[0], b_.reshape(m, Shape{sx[0], sx[1], 1, 1}));
    return Status::ok();
  }
  Window2d w;
  std::vector<int64_t> kernel = attr_ints(n, "kernel_shape");
  ValueId weight;
  if (op == "Conv") {
    MP_ASSIGN_OR_RETURN(weight, value(n.inputs.at(1)));
    const Shape sw = b_.shape(weight);
    if (kernel.empty() && sw.rank() == 4) kernel = {sw[2], sw[3]};
    if (attr_i(n, "group", 1) != 1)
      return make_error(Errc::kInvalidArgument, "grouped convolutions are not imported");
  }
  if (kernel.size() != 2) return make_error(Errc::kInvalidArgument, "needs a 2-D kernel_shape");
  w.kernel_h = kernel[0];
  w.kernel_w = kernel[1];
  const std::vector<int64_t> strides = attr_ints(n, "strides");
  if (!strides.empty()) {
    if (strides.size() != 2) return make_error(Errc::kInvalidArgument, "needs 2 strides");
    w.stride_h = strides[0];
    w.stride_w = strides[1];
  }
  const std::vector<int64_t> pads = attr_ints(n, "pads");
  if (!pads.empty()) {
    if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3]) {
      return make_error(Errc::kInvalidArgument, "pads [{}]: only symmetric padding is imported",
                        fmt::join(pads, ", "));
    }
    w.pad_h = pads[0];
    w.pad_w = pads[1];
  }
  const std::string auto_pad = attr_s(n, "auto_pad");
  if (!auto_pad.empty() && auto_pad != "NOTSET") {
    return make_error(Errc::kInvalidArgument,
                      "auto_pad {} is not imported (export with explicit pads)", auto_pad);
  }
  for (int64_t d : attr_ints(n, "dilations")) {
    if (d != 1) return make_error(Errc::kInvalidArgument, "dilated windows are not imported");
  }
  if (attr_i(n, "ceil_mode", 0) != 0)
    return make_error(Errc::kInvalidArgument, "ceil_mode is not imported");
  ValueId y;
  if (op == "Conv") {
    y = b_.conv2d(x, weight, w);
    if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
      MP_ASSIGN_OR_RETURN(const ValueId bias, value(n.inputs[2]));
      y = b_.bias_add(y, bias, {1});
    }
  } else if (op == "MaxPool") {
    if (n.outputs.size() > 1 && !n.outputs[1].empty()) {
      return make_error(Errc::kInvalidArgument, "MaxPool's indices output is not imported");
    }
    y = b_.max_pool2d(x, w);
  } else {
    if (attr_i(n, "count_include_pad", 0) == 0 && (w.pad_h != 0 || w.pad_w != 0)) {
      return make_error(Errc::kInvalidArgument,
                        "average pooling with padding that excludes the pad from the count is "
                        "not imported");
    }
    y = b_.avg_pool2d(x, w);
  }
  set_value(n.outputs[0], y);
  return Status::ok();
}

Status Importer::import_norm(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 2, 5));
  MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs[0]));
  MP_ASSIGN_OR_RETURN(const ValueId gamma, value(n.inputs[1]));
  ValueId beta;
  if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
    MP_ASSIGN_OR_RETURN(beta, value(n.inputs[2]));
  } else {
    graph::OpAttrs a;
    a.shape = b_.shape(gamma);
    a.alpha = 0.0f;
    beta = b_.op(OpKind::kConstant, {}, a, n.outputs[0] + "_zero_bias").at(0);
  }
  const Shape sx = b_.shape(x);
  if (n.op_type == "BatchNormalization") {
    if (sx.rank() != 4)
      return make_error(Errc::kInvalidArgument, "batch norm of {}: NCHW only", sx.to_string());
    const bool training = attr_i(n, "training_mode", n.outputs.size() > 1 ? 1 : 0) != 0;
    if (!training) {
      summary_.notes.push_back(fmt::format(
          "batch norm '{}' was exported in inference mode; it trains with batch statistics",
          n.name));
    }
    set_value(n.outputs[0], b_.batch_norm(x, gamma, beta, attr_f(n, "epsilon", 1e-5f)));
    return Status::ok();
  }
  const int64_t axis = norm_axis(attr_i(n, "axis", -1), sx.rank());
  if (axis != sx.rank() - 1) {
    return make_error(Errc::kInvalidArgument,
                      "layer norm over dims {}.. of {}: only the last dim is imported", axis,
                      sx.to_string());
  }
  if (n.outputs.size() > 1) {
    for (size_t k = 1; k < n.outputs.size(); ++k) {
      if (!n.outputs[k].empty())
        return make_error(Errc::kInvalidArgument,
                          "layer norm's mean and inverse deviation outputs are not imported");
    }
  }
  set_value(n.outputs[0], b_.layer_norm(x, gamma, beta, attr_f(n, "epsilon", 1e-5f)));
  return Status::ok();
}

Status Importer::import_reduce(const Node& n) {
  MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs.at(0)));
  MP_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axes_of(n, 1));
  const Shape s = b_.shape(x);
  if (axes.empty()) {
    if (attr_i(n, "noop_with_empty_axes", 0) != 0) {
      set_value(n.outputs[0], x);
      return Status::ok();
    }
    for (int64_t d = 0; d < s.rank(); ++d) axes.push_back(d);
  }
  for (int64_t& a : axes) a = norm_axis(a, s.rank());
  std::sort(axes.begin(), axes.end());
  ValueId y = n.op_type == "ReduceMean" ? b_.reduce_mean(x, axes) : b_.reduce_sum(x, axes);
  if (attr_i(n, "keepdims", 1) != 0) {
    std::vector<int64_t> out = s.dims();
    for (int64_t a : axes) out[size_t(a)] = 1;
    y = b_.reshape(y, Shape(out));
  }
  set_value(n.outputs[0], y);
  return Status::ok();
}

Status Importer::import_loss(const Node& n) {
  MP_RETURN_IF_ERROR(need_inputs(n, 2, 3));
  if (n.inputs.size() == 3 && !n.inputs[2].empty()) {
    return make_error(Errc::kInvalidArgument, "class weights are not imported");
  }
  if (const Attribute* a = n.attribute("ignore_index")) {
    if (a->i >= 0) {
      return make_error(Errc::kInvalidArgument, "ignore_index {} (a class) is not imported", a->i);
    }
    // PyTorch always writes -100: no class has it, and meshpipe's labels are checked to be
    // classes, so no label is ignored.
  }
  const std::string reduction = attr_s(n, "reduction");
  if (!reduction.empty() && reduction != "mean") {
    return make_error(Errc::kInvalidArgument, "reduction '{}' is not imported (only mean)",
                      reduction);
  }
  ValueId logits;
  if (n.op_type == "NegativeLogLikelihoodLoss") {
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(n.inputs[0]));
    if (s->kind != Slot::Kind::kValue || !s->log_softmax_of.is_valid()) {
      return make_error(Errc::kInvalidArgument,
                        "NegativeLogLikelihoodLoss is imported only on a LogSoftmax's output");
    }
    logits = s->log_softmax_of;
  } else {
    MP_ASSIGN_OR_RETURN(logits, value(n.inputs[0]));
  }
  MP_ASSIGN_OR_RETURN(const ValueId labels, value(n.inputs[1]));
  // ONNX puts the classes in dim 1: [N, C, d...] -> [N, d..., C].
  const Shape s = b_.shape(logits);
  if (s.rank() > 2) {
    std::vector<int64_t> perm{0};
    for (int64_t d = 2; d < s.rank(); ++d) perm.push_back(d);
    perm.push_back(1);
    logits = b_.transpose(logits, perm);
  }
  set_value(n.outputs[0], b_.cross_entropy(logits, labels));
  for (size_t k = 1; k < n.outputs.size(); ++k) {
    if (!n.outputs[k].empty())
      return make_error(Errc::kInvalidArgument, "the log-probabilities output is not imported");
  }
  return Status::ok();
}

}  // namespace meshpipe::onnx::internal

// Constant folding for the ONNX importer (internal/constant.h).
#include "onnx/internal/constant.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

namespace meshpipe::onnx::internal {
namespace {

Expected<int64_t> checked_numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0)
      return make_error(Errc::kInvalidArgument, "negative dimension in [{}]",
                        fmt::join(dims, ", "));
    if (d != 0 && n > kMaxFoldElements / d) {
      return make_error(Errc::kOutOfRange,
                        "a constant of shape [{}] is above the {} elements folded at import",
                        fmt::join(dims, ", "), kMaxFoldElements);
    }
    n *= d;
  }
  return n;
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (size_t k = dims.size(); k-- > 1;) s[k - 1] = s[k] * dims[k];
  return s;
}

// Index into `dims` (right-aligned against `out`) of the element at out-index `flat`.
int64_t source_index(int64_t flat, const std::vector<int64_t>& out,
                     const std::vector<int64_t>& out_strides, const std::vector<int64_t>& dims,
                     const std::vector<int64_t>& strides) {
  int64_t idx = 0;
  const size_t off = out.size() - dims.size();
  for (size_t d = 0; d < out.size(); ++d) {
    const int64_t coord = (flat / out_strides[d]) % out[d];
    if (d < off) continue;
    const size_t s = d - off;
    if (dims[s] != 1) idx += coord * strides[s];
  }
  return idx;
}

Const empty_like(const std::vector<int64_t>& dims, bool integer, int64_t n) {
  Const c;
  c.dims = dims;
  c.integer = integer;
  if (integer) {
    c.i.assign(static_cast<size_t>(n), 0);
  } else {
    c.f.assign(static_cast<size_t>(n), 0.0);
  }
  return c;
}

int64_t normalize(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

}  // namespace

int64_t Const::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

bool Const::uniform() const {
  if (integer) return std::adjacent_find(i.begin(), i.end(), std::not_equal_to<>()) == i.end();
  return std::adjacent_find(f.begin(), f.end(), std::not_equal_to<>()) == f.end();
}

Expected<Const> const_from_tensor(const Tensor& t) {
  Const c;
  c.dims = t.dims;
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(t.dims));
  (void)n;
  const auto type = static_cast<ElemType>(t.type);
  if (type == ElemType::kFloat || type == ElemType::kDouble || type == ElemType::kFloat16 ||
      type == ElemType::kBfloat16) {
    MP_ASSIGN_OR_RETURN(const std::vector<float> v, t.to_floats());
    c.f.assign(v.begin(), v.end());
    if (type == ElemType::kDouble && !t.raw.empty()) {
      // Keep doubles exact.
      c.f.resize(v.size());
      for (size_t k = 0; k < v.size(); ++k) {
        double d;
        std::memcpy(&d, t.raw.data() + 8 * k, 8);
        c.f[k] = d;
      }
    }
    return c;
  }
  MP_ASSIGN_OR_RETURN(c.i, t.to_ints());
  c.integer = true;
  return c;
}

Expected<std::vector<int64_t>> broadcast_shape(const std::vector<int64_t>& a,
                                               const std::vector<int64_t>& b) {
  const size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> out(r, 1);
  for (size_t k = 0; k < r; ++k) {
    const int64_t da = k < r - a.size() ? 1 : a[k - (r - a.size())];
    const int64_t db = k < r - b.size() ? 1 : b[k - (r - b.size())];
    if (da != db && da != 1 && db != 1) {
      return make_error(Errc::kInvalidArgument, "shapes [{}] and [{}] do not broadcast",
                        fmt::join(a, ", "), fmt::join(b, ", "));
    }
    out[k] = da == 1 ? db : da;
  }
  return out;
}

namespace {

// x op y for the arithmetic ops (Pow on floats only); none for another op.
template <class T>
std::optional<T> arith(const std::string& op, T x, T y) {
  if (op == "Add") return x + y;
  if (op == "Sub") return x - y;
  if (op == "Mul") return x * y;
  if (op == "Div") return x / y;  // integer y == 0 is refused by the caller
  if (op == "Max") return std::max(x, y);
  if (op == "Min") return std::min(x, y);
  if constexpr (std::is_floating_point_v<T>) {
    if (op == "Pow") return std::pow(x, y);
  }
  return std::nullopt;
}

std::optional<bool> compare(const std::string& op, double x, double y) {
  if (op == "Equal") return x == y;
  if (op == "Less") return x < y;
  if (op == "Greater") return x > y;
  if (op == "LessOrEqual") return x <= y;
  if (op == "GreaterOrEqual") return x >= y;
  if (op == "And") return x != 0 && y != 0;
  if (op == "Or") return x != 0 || y != 0;
  return std::nullopt;
}

}  // namespace

Expected<Const> fold_binary(const std::string& op, const Const& a, const Const& b) {
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> out, broadcast_shape(a.dims, b.dims));
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(out));
  const bool is_compare = compare(op, 0, 0).has_value();
  const bool integer = is_compare || (a.integer && b.integer);
  if (!is_compare &&
      !(integer ? arith<int64_t>(op, 1, 1).has_value() : arith<double>(op, 1, 1).has_value())) {
    return make_error(Errc::kInvalidArgument, "cannot fold {} of {} constants", op,
                      integer ? "integer" : "floating");
  }
  Const c = empty_like(out, integer, n);
  const auto os = strides_of(out);
  const auto as = strides_of(a.dims);
  const auto bs = strides_of(b.dims);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t ia = source_index(k, out, os, a.dims, as);
    const int64_t ib = source_index(k, out, os, b.dims, bs);
    if (is_compare) {
      c.i[size_t(k)] = *compare(op, a.at(ia), b.at(ib)) ? 1 : 0;
    } else if (integer) {
      const int64_t y = b.i[size_t(ib)];
      if (op == "Div" && y == 0) {
        return make_error(Errc::kInvalidArgument, "integer division by zero");
      }
      c.i[size_t(k)] = *arith<int64_t>(op, a.i[size_t(ia)], y);
    } else {
      c.f[size_t(k)] = *arith<double>(op, a.at(ia), b.at(ib));
    }
  }
  return c;
}

Expected<Const> fold_where(const Const& cond, const Const& x, const Const& y) {
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> xy, broadcast_shape(x.dims, y.dims));
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> out, broadcast_shape(cond.dims, xy));
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(out));
  const bool integer = x.integer && y.integer;
  Const c = empty_like(out, integer, n);
  const auto os = strides_of(out);
  const auto cs = strides_of(cond.dims);
  const auto xs = strides_of(x.dims);
  const auto ys = strides_of(y.dims);
  for (int64_t k = 0; k < n; ++k) {
    const bool pick = cond.at(source_index(k, out, os, cond.dims, cs)) != 0;
    const Const& src = pick ? x : y;
    const int64_t s = source_index(k, out, os, src.dims, pick ? xs : ys);
    if (integer) {
      c.i[size_t(k)] = src.i[size_t(s)];
    } else {
      c.f[size_t(k)] = src.at(s);
    }
  }
  return c;
}

Expected<Const> fold_unary(const std::string& op, const Const& a) {
  if (op == "Identity") return a;
  if (op == "Not") {
    if (!a.integer) return make_error(Errc::kInvalidArgument, "Not of a floating constant");
    Const c = a;
    for (int64_t& v : c.i) v = v == 0 ? 1 : 0;
    return c;
  }
  if (op == "Sqrt") {
    MP_ASSIGN_OR_RETURN(Const c, fold_cast(a, false));
    for (double& v : c.f) v = std::sqrt(v);
    return c;
  }
  if (op != "Neg" && op != "Abs") {
    return make_error(Errc::kInvalidArgument, "cannot fold {} of a constant", op);
  }
  Const c = a;
  const auto apply = [&](auto& values) {
    for (auto& v : values) v = op == "Neg" ? -v : std::abs(v);
  };
  apply(c.i);
  apply(c.f);
  return c;
}

Expected<Const> fold_cast(const Const& a, bool to_int) {
  if (a.integer == to_int) return a;
  Const c;
  c.dims = a.dims;
  c.integer = to_int;
  const int64_t n = a.numel();
  if (to_int) {
    c.i.resize(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) {
      const double v = a.f[size_t(k)];
      if (!std::isfinite(v) || std::abs(v) > 9.2e18) {
        return make_error(Errc::kInvalidArgument, "cannot cast {} to an integer", v);
      }
      c.i[size_t(k)] = static_cast<int64_t>(v);
    }
  } else {
    c.f.resize(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) c.f[size_t(k)] = static_cast<double>(a.i[size_t(k)]);
  }
  return c;
}

Expected<std::vector<int64_t>> reshape_target(const std::vector<int64_t>& in,
                                              const std::vector<int64_t>& target, bool allowzero) {
  int64_t in_n = 1;
  for (int64_t d : in) in_n *= d;
  std::vector<int64_t> out = target;
  int infer = -1;
  int64_t known = 1;
  for (size_t k = 0; k < out.size(); ++k) {
    if (out[k] == 0 && !allowzero) {
      if (k >= in.size()) {
        return make_error(Errc::kInvalidArgument, "reshape to [{}]: dim {} copies a dim [{}] lacks",
                          fmt::join(target, ", "), k, fmt::join(in, ", "));
      }
      out[k] = in[k];
    }
    if (out[k] == -1) {
      if (infer >= 0) {
        return make_error(Errc::kInvalidArgument, "reshape to [{}] has two -1 dims",
                          fmt::join(target, ", "));
      }
      infer = static_cast<int>(k);
      continue;
    }
    if (out[k] < 0) {
      return make_error(Errc::kInvalidArgument, "reshape to [{}]: negative dim",
                        fmt::join(target, ", "));
    }
    if (out[k] != 0 && known > std::numeric_limits<int64_t>::max() / out[k]) {
      return make_error(Errc::kInvalidArgument, "reshape to [{}]: too many elements",
                        fmt::join(target, ", "));
    }
    known *= out[k];
  }
  if (infer >= 0) {
    if (known == 0 || in_n % known != 0) {
      return make_error(Errc::kInvalidArgument, "cannot reshape [{}] to [{}]", fmt::join(in, ", "),
                        fmt::join(target, ", "));
    }
    out[size_t(infer)] = in_n / known;
    known *= out[size_t(infer)];
  }
  if (known != in_n) {
    return make_error(Errc::kInvalidArgument, "cannot reshape [{}] ({} elements) to [{}]",
                      fmt::join(in, ", "), in_n, fmt::join(target, ", "));
  }
  return out;
}

Expected<Const> fold_reshape(const Const& a, std::vector<int64_t> dims) {
  MP_ASSIGN_OR_RETURN(Const c, Expected<Const>(a));
  MP_ASSIGN_OR_RETURN(c.dims, reshape_target(a.dims, dims, false));
  return c;
}

Expected<Const> fold_transpose(const Const& a, const std::vector<int64_t>& perm) {
  const size_t r = a.dims.size();
  if (perm.size() != r) return make_error(Errc::kInvalidArgument, "transpose: perm rank differs");
  std::vector<int64_t> out(r);
  for (size_t k = 0; k < r; ++k) {
    if (perm[k] < 0 || perm[k] >= static_cast<int64_t>(r)) {
      return make_error(Errc::kInvalidArgument, "transpose: bad perm");
    }
    out[k] = a.dims[size_t(perm[k])];
  }
  const int64_t n = a.numel();
  Const c = empty_like(out, a.integer, n);
  const auto os = strides_of(out);
  const auto as = strides_of(a.dims);
  for (int64_t k = 0; k < n; ++k) {
    int64_t src = 0;
    for (size_t d = 0; d < r; ++d) src += ((k / os[d]) % out[d]) * as[size_t(perm[d])];
    if (a.integer) {
      c.i[size_t(k)] = a.i[size_t(src)];
    } else {
      c.f[size_t(k)] = a.f[size_t(src)];
    }
  }
  return c;
}

Expected<Const> fold_concat(const std::vector<const Const*>& parts, int64_t axis) {
  if (parts.empty()) return make_error(Errc::kInvalidArgument, "concat of nothing");
  const auto r = static_cast<int64_t>(parts[0]->dims.size());
  axis = normalize(axis, r);
  if (axis < 0 || axis >= r) return make_error(Errc::kInvalidArgument, "concat: axis out of range");
  std::vector<int64_t> out = parts[0]->dims;
  out[size_t(axis)] = 0;
  bool integer = true;
  for (const Const* p : parts) {
    if (static_cast<int64_t>(p->dims.size()) != r) {
      return make_error(Errc::kInvalidArgument, "concat: ranks differ");
    }
    for (int64_t d = 0; d < r; ++d) {
      if (d != axis && p->dims[size_t(d)] != parts[0]->dims[size_t(d)]) {
        return make_error(Errc::kInvalidArgument, "concat: shapes differ off the axis");
      }
    }
    out[size_t(axis)] += p->dims[size_t(axis)];
    integer = integer && p->integer;
  }
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(out));
  Const c = empty_like(out, integer, n);
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out[size_t(d)];
  int64_t at = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (const Const* p : parts) {
      int64_t inner = 1;
      for (int64_t d = axis; d < r; ++d) inner *= p->dims[size_t(d)];
      for (int64_t k = 0; k < inner; ++k, ++at) {
        if (integer) {
          c.i[size_t(at)] = p->i[size_t(o * inner + k)];
        } else {
          c.f[size_t(at)] = p->at(o * inner + k);
        }
      }
    }
  }
  return c;
}

Expected<Const> fold_gather(const Const& data, const Const& indices, int64_t axis) {
  const auto r = static_cast<int64_t>(data.dims.size());
  axis = normalize(axis, r);
  if (axis < 0 || axis >= r) return make_error(Errc::kInvalidArgument, "gather: axis out of range");
  if (!indices.integer) return make_error(Errc::kInvalidArgument, "gather: indices not integers");
  std::vector<int64_t> out(data.dims.begin(), data.dims.begin() + axis);
  out.insert(out.end(), indices.dims.begin(), indices.dims.end());
  out.insert(out.end(), data.dims.begin() + axis + 1, data.dims.end());
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(out));
  Const c = empty_like(out, data.integer, n);
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= data.dims[size_t(d)];
  int64_t inner = 1;
  for (int64_t d = axis + 1; d < r; ++d) inner *= data.dims[size_t(d)];
  const int64_t len = data.dims[size_t(axis)];
  const int64_t m = indices.numel();
  int64_t at = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < m; ++j) {
      int64_t idx = indices.i[size_t(j)];
      if (idx < 0) idx += len;
      if (idx < 0 || idx >= len) {
        return make_error(Errc::kOutOfRange, "gather: index {} out of range [0, {})",
                          indices.i[size_t(j)], len);
      }
      for (int64_t k = 0; k < inner; ++k, ++at) {
        const int64_t src = (o * len + idx) * inner + k;
        if (data.integer) {
          c.i[size_t(at)] = data.i[size_t(src)];
        } else {
          c.f[size_t(at)] = data.f[size_t(src)];
        }
      }
    }
  }
  return c;
}

Expected<Const> fold_slice(const Const& data, const std::vector<int64_t>& starts,
                           const std::vector<int64_t>& ends, const std::vector<int64_t>& axes,
                           const std::vector<int64_t>& steps) {
  const auto r = static_cast<int64_t>(data.dims.size());
  std::vector<int64_t> lo(size_t(r), 0);
  std::vector<int64_t> step(size_t(r), 1);
  std::vector<int64_t> out = data.dims;
  for (size_t k = 0; k < starts.size(); ++k) {
    const int64_t ax = normalize(axes.empty() ? static_cast<int64_t>(k) : axes[k], r);
    if (ax < 0 || ax >= r) return make_error(Errc::kInvalidArgument, "slice: axis out of range");
    const int64_t len = data.dims[size_t(ax)];
    const int64_t st = steps.empty() ? 1 : steps[k];
    if (st == 0) return make_error(Errc::kInvalidArgument, "slice: step 0");
    // Ends such as -2^63 (PyTorch's "to the start") stay clear of overflow when len is added.
    const auto wrap = [len](int64_t v) { return v < 0 ? std::max(v, -len - 1) + len : v; };
    int64_t s = wrap(starts[k]);
    int64_t e = wrap(ends[k]);
    if (st > 0) {
      s = std::clamp<int64_t>(s, 0, len);
      e = std::clamp<int64_t>(e, 0, len);
      out[size_t(ax)] = e > s ? (e - s + st - 1) / st : 0;
    } else {
      // ONNX: with a negative step the start is clamped to [0, len - 1], the end to [-1, len - 1]
      // (-1: through element 0), and the elements run s, s + step, ... while above e.
      s = std::clamp<int64_t>(s, 0, len - 1);
      e = std::clamp<int64_t>(ends[k] < -len ? -1 : e, -1, len - 1);
      out[size_t(ax)] = s > e ? (s - e - st - 1) / -st : 0;
    }
    lo[size_t(ax)] = s;
    step[size_t(ax)] = st;
  }
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(out));
  Const c = empty_like(out, data.integer, n);
  const auto os = strides_of(out);
  const auto ds = strides_of(data.dims);
  for (int64_t k = 0; k < n; ++k) {
    int64_t src = 0;
    for (int64_t d = 0; d < r; ++d) {
      src += (lo[size_t(d)] + ((k / os[size_t(d)]) % out[size_t(d)]) * step[size_t(d)]) *
             ds[size_t(d)];
    }
    if (data.integer) {
      c.i[size_t(k)] = data.i[size_t(src)];
    } else {
      c.f[size_t(k)] = data.f[size_t(src)];
    }
  }
  return c;
}

Expected<Const> fold_range(const Const& start, const Const& limit, const Const& delta) {
  const double s = start.at(0);
  const double l = limit.at(0);
  const double d = delta.at(0);
  if (d == 0) return make_error(Errc::kInvalidArgument, "range with delta 0");
  const double count = std::max(0.0, std::ceil((l - s) / d));
  if (count > static_cast<double>(kMaxFoldElements)) {
    return make_error(Errc::kOutOfRange, "range of {} elements", count);
  }
  const auto n = static_cast<int64_t>(count);
  const bool integer = start.integer && limit.integer && delta.integer;
  Const c = empty_like({n}, integer, n);
  for (int64_t k = 0; k < n; ++k) {
    if (integer) {
      c.i[size_t(k)] = start.i[0] + k * delta.i[0];
    } else {
      c.f[size_t(k)] = s + static_cast<double>(k) * d;
    }
  }
  return c;
}

Expected<Const> fold_fill(const std::vector<int64_t>& dims, const Const& value) {
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(dims));
  Const c = empty_like(dims, value.integer, n);
  if (value.numel() < 1) return make_error(Errc::kInvalidArgument, "fill with an empty value");
  if (value.integer) {
    std::fill(c.i.begin(), c.i.end(), value.i[0]);
  } else {
    std::fill(c.f.begin(), c.f.end(), value.f[0]);
  }
  return c;
}

Expected<Const> fold_expand(const Const& a, const std::vector<int64_t>& dims) {
  MP_ASSIGN_OR_RETURN(const std::vector<int64_t> out, broadcast_shape(a.dims, dims));
  Const ones = Const{out, a.integer, {}, {}};
  MP_ASSIGN_OR_RETURN(const int64_t n, checked_numel(out));
  if (a.integer) {
    ones.i.assign(static_cast<size_t>(n), 0);
    return fold_binary("Add", a, ones);
  }
  ones.f.assign(static_cast<size_t>(n), 0.0);
  return fold_binary("Add", a, ones);
}

}  // namespace meshpipe::onnx::internal

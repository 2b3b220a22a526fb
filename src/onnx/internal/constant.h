// Constant tensors the importer folds at import time: initializers used as constants, Constant
// nodes, and what shape arithmetic computes from them (Shape, Gather, Unsqueeze, Concat, Slice,
// Equal, Where, Cast, ...). Small by construction: a folded tensor above kMaxFoldElements is an
// error, so a hostile file cannot make the importer allocate without bound.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "onnx/model.h"

namespace meshpipe::onnx::internal {

/// The most elements a folded constant may have (a 2048 x 2048 mask is 4M).
inline constexpr int64_t kMaxFoldElements = int64_t{1} << 24;

/// A folded constant: integers (shapes, indices, booleans) or floats, row-major.
struct Const {
  std::vector<int64_t> dims;
  bool integer = false;
  std::vector<int64_t> i;  ///< when integer
  std::vector<double> f;   ///< when floating

  int64_t numel() const;
  double at(int64_t k) const { return integer ? static_cast<double>(i[size_t(k)]) : f[size_t(k)]; }
  int64_t int_at(int64_t k) const {
    return integer ? i[size_t(k)] : static_cast<int64_t>(f[size_t(k)]);
  }
  /// Every element equal (true for an empty tensor).
  bool uniform() const;

  static Const scalar_int(int64_t v) { return Const{{}, true, {v}, {}}; }
  static Const ints(std::vector<int64_t> v) {
    const auto n = static_cast<int64_t>(v.size());
    return Const{{n}, true, std::move(v), {}};
  }
};

/// A tensor proto as a constant (floats widened to double); errors name the tensor.
Expected<Const> const_from_tensor(const Tensor& t);

/// numpy broadcasting of two shapes; an error naming both when they do not broadcast.
Expected<std::vector<int64_t>> broadcast_shape(const std::vector<int64_t>& a,
                                               const std::vector<int64_t>& b);

/// Elementwise on constants with broadcasting: Add, Sub, Mul, Div, Pow, Equal, Less, Greater,
/// And, Or, Max, Min (integers stay integers except Div of floats); unknown ops are an error.
Expected<Const> fold_binary(const std::string& op, const Const& a, const Const& b);
/// Where(cond, x, y) on constants.
Expected<Const> fold_where(const Const& cond, const Const& x, const Const& y);
/// Unary: Neg, Sqrt, Not, Abs, Identity, Cast to integer (`to_int`) or float.
Expected<Const> fold_unary(const std::string& op, const Const& a);
Expected<Const> fold_cast(const Const& a, bool to_int);

/// Layout ops on constants.
Expected<Const> fold_reshape(const Const& a, std::vector<int64_t> dims);
Expected<Const> fold_transpose(const Const& a, const std::vector<int64_t>& perm);
Expected<Const> fold_concat(const std::vector<const Const*>& parts, int64_t axis);
/// Gather along `axis` with constant indices (negative ones wrap).
Expected<Const> fold_gather(const Const& data, const Const& indices, int64_t axis);
/// ONNX Slice with starts/ends/axes/steps already read (clamped as the spec says).
Expected<Const> fold_slice(const Const& data, const std::vector<int64_t>& starts,
                           const std::vector<int64_t>& ends, const std::vector<int64_t>& axes,
                           const std::vector<int64_t>& steps);
/// Range(start, limit, delta).
Expected<Const> fold_range(const Const& start, const Const& limit, const Const& delta);
/// A tensor of `dims` filled with `value`'s single element (ConstantOfShape, Expand of a scalar).
Expected<Const> fold_fill(const std::vector<int64_t>& dims, const Const& value);
/// Expand to a broadcast shape.
Expected<Const> fold_expand(const Const& a, const std::vector<int64_t>& dims);

/// The ONNX Reshape target for an input of `in` dims: 0 copies the input's dim (unless
/// allowzero), one -1 is inferred. An error names the shapes when the sizes do not match.
Expected<std::vector<int64_t>> reshape_target(const std::vector<int64_t>& in,
                                              const std::vector<int64_t>& target, bool allowzero);

}  // namespace meshpipe::onnx::internal

// Helpers shared by the kernel tests: random buffers, views over them, and tolerance checks
// of f32 kernel output against double-precision references.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/shape.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels::testing {

/// n standard-normal floats scaled by `scale`.
inline std::vector<float> random_floats(Rng& rng, int64_t n, double scale = 1.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(scale * rng.normal());
  return v;
}

/// A contiguous f32 view over a vector holding shape.numel() elements.
inline TensorView f32_view(std::vector<float>& v, const Shape& shape) {
  REQUIRE(static_cast<int64_t>(v.size()) == shape.numel());
  return TensorView(v.data(), shape, DType::kF32);
}

/// A contiguous i32 view over a vector holding shape.numel() elements.
inline TensorView i32_view(std::vector<int32_t>& v, const Shape& shape) {
  REQUIRE(static_cast<int64_t>(v.size()) == shape.numel());
  return TensorView(v.data(), shape, DType::kI32);
}

/// Widens a float buffer for double-precision references.
inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

/// Checks |got - want| <= rel * (|want| + max|want|) elementwise. The max term is there
/// because an f32 result built from many terms errs relative to the size of the terms, which
/// the largest output tracks, not relative to a result that happens to cancel to near zero.
inline void check_close(const std::vector<float>& got, const std::vector<double>& want,
                        double rel) {
  REQUIRE(got.size() == want.size());
  double scale = 0.0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  size_t bad = 0;
  size_t first_bad = got.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= rel * (std::abs(want[i]) + scale))) {
      if (bad == 0) first_bad = i;
      ++bad;
    }
  }
  if (bad > 0) {
    INFO("first mismatch at " << first_bad << ": got " << got[first_bad] << ", want "
                              << want[first_bad] << " (scale " << scale << ")");
    CHECK(bad == 0);
  } else {
    SUCCEED();
  }
}

/// Plain absolute comparison, for hand-computed values.
inline void check_near(const std::vector<float>& got, const std::vector<double>& want,
                       double abs_tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(std::abs(static_cast<double>(got[i]) - want[i]) <= abs_tol);
  }
}

/// Row-major multi-index of a flat index.
inline std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(static_cast<size_t>(shape.rank()));
  for (int64_t d = shape.rank() - 1; d >= 0; --d) {
    idx[static_cast<size_t>(d)] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

/// Flat index of a row-major multi-index.
inline int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape) {
  int64_t flat = 0;
  for (int64_t d = 0; d < shape.rank(); ++d) flat = flat * shape[d] + idx[static_cast<size_t>(d)];
  return flat;
}

}  // namespace meshpipe::kernels::testing

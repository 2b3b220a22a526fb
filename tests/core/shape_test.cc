// Tests of Shape, op geometry, units and the counter-based RNG.
#include "core/shape.h"

#include <catch2/catch.hpp>
#include <cmath>

#include "core/op_geometry.h"
#include "core/rng.h"
#include "core/units.h"

namespace meshpipe {
namespace {

TEST_CASE("a shape knows its element count and row-major strides", "[core]") {
  Shape s{2, 3, 4};
  CHECK(s.numel() == 24);
  CHECK(s.strides() == std::vector<int64_t>{12, 4, 1});
  CHECK(s.to_string() == "[2, 3, 4]");
  CHECK(Shape{}.numel() == 1);
  CHECK_FALSE(Shape{2, 0}.is_valid());
  CHECK(normalize_axis(-1, 3) == 2);
  CHECK(normalize_axis(3, 3) == -1);
}

TEST_CASE("dot output shape is batch, lhs free, rhs free", "[core]") {
  DotDims d{{0, 1}, {0, 1}, {3}, {3}};
  auto out = dot_output_shape(Shape{2, 4, 8, 16}, Shape{2, 4, 6, 16}, d);
  REQUIRE(out.has_value());
  CHECK(*out == Shape{2, 4, 8, 6});
  DotSizes sz = dot_sizes(Shape{2, 4, 8, 16}, Shape{2, 4, 6, 16}, d);
  CHECK(sz.batch == 8);
  CHECK(sz.m == 8);
  CHECK(sz.n == 6);
  CHECK(sz.k == 16);
}

TEST_CASE("a dot with mismatched contracting sizes names both dims", "[core]") {
  auto out = dot_output_shape(Shape{4, 8}, Shape{7, 3}, DotDims{{}, {}, {1}, {0}});
  REQUIRE_FALSE(out.has_value());
  CHECK(out.status().message().find("lhs dim 1 has 8, rhs dim 0 has 7") != std::string::npos);
}

TEST_CASE("window output size follows (in + 2 pad - k) / s + 1", "[core]") {
  CHECK(*window_output_size(224, 7, 2, 3) == 112);
  CHECK(*window_output_size(112, 3, 2, 1) == 56);
  CHECK_FALSE(window_output_size(2, 5, 1, 0).has_value());
}

TEST_CASE("units render in human terms", "[core]") {
  CHECK(format_bytes(Bytes(1536)) == "1.50 KiB");
  CHECK(format_count(1.3e9) == "1.3B");
  CHECK(format_seconds(Seconds(0.0021)) == "2.1 ms");
}

TEST_CASE("counter-based normals depend only on key and index and look standard", "[core]") {
  CHECK(normal_at(7, 123) == normal_at(7, 123));
  CHECK(normal_at(7, 123) != normal_at(8, 123));
  double sum = 0;
  double sum2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double x = normal_at(42, static_cast<uint64_t>(i));
    sum += x;
    sum2 += x * x;
  }
  CHECK(std::fabs(sum / n) < 0.03);
  CHECK(std::fabs(sum2 / n - 1.0) < 0.05);
}

}  // namespace
}  // namespace meshpipe

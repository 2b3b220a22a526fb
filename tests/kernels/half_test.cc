// float32 <-> bf16 / f16 conversions (kernels/half.h) against independent references: GCC's
// _Float16 (IEEE binary16 with round-to-nearest-even) for f16, and for bf16 the nearer of the two
// neighbouring bfloat16 values chosen in double arithmetic (ties to the even one); every 16-bit
// pattern round-trips, and a million float32 patterns spread over every exponent round alike.
#include "kernels/half.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

namespace meshpipe::kernels {
namespace {

uint16_t reference_f16(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof(bits));
  return bits;
}

float reference_f16_to_float(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, sizeof(bits));
  return static_cast<float>(h);
}

// The bfloat16 nearest to f (ties to even mantissa), found by comparing distances in double.
uint16_t reference_bf16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);  // toward zero
  const uint16_t hi = static_cast<uint16_t>(lo + 1);   // away from zero (may become inf)
  const double x = std::fabs(static_cast<double>(f));
  const double a = std::fabs(static_cast<double>(bf16_to_float(lo)));
  // Past the largest finite bfloat16 the next step up is 2^128 (infinity), as IEEE rounds.
  const double b = std::isinf(bf16_to_float(hi))
                       ? std::ldexp(1.0, 128)
                       : std::fabs(static_cast<double>(bf16_to_float(hi)));
  if (x - a < b - x) return lo;
  if (x - a > b - x) return hi;
  return (lo & 1u) ? hi : lo;
}

bool is_nan16(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

TEST_CASE("every f16 pattern widens exactly and rounds back to itself", "[kernels][half]") {
  int checked = 0;
  for (uint32_t h = 0; h <= 0xffffu; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = f16_to_float(bits);
    if (is_nan16(bits)) {
      CHECK(std::isnan(f));
      CHECK(is_nan16(float_to_f16(f)));
      continue;
    }
    const float ref = reference_f16_to_float(bits);
    if (float_bits(f) != float_bits(ref) || float_to_f16(f) != bits) {
      FAIL_CHECK("f16 pattern " << h << ": " << f << " vs " << ref);
    }
    ++checked;
  }
  CHECK(checked == 65536 - 2046);  // all but the NaNs
}

TEST_CASE("every bf16 pattern widens to its float and rounds back to itself", "[kernels][half]") {
  for (uint32_t h = 0; h <= 0xffffu; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = bf16_to_float(bits);
    CHECK(float_bits(f) == (h << 16));
    if (std::isnan(f)) {
      CHECK(std::isnan(bf16_to_float(float_to_bf16(f))));
    } else if (float_to_bf16(f) != bits) {
      FAIL_CHECK("bf16 pattern " << h);
    }
  }
}

TEST_CASE("float32 rounds to f16 and bf16 as the references do, on every exponent",
          "[kernels][half]") {
  int64_t f16_wrong = 0, bf16_wrong = 0, n = 0;
  // A stride prime to 2^32 visits patterns of every exponent, sign and mantissa low bits.
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) {
    const float f = bits_float(static_cast<uint32_t>(u));
    ++n;
    if (std::isnan(f)) {
      f16_wrong += !is_nan16(float_to_f16(f));
      bf16_wrong += !std::isnan(bf16_to_float(float_to_bf16(f)));
      continue;
    }
    f16_wrong += float_to_f16(f) != reference_f16(f);
    if (float_to_bf16(f) != reference_bf16(f)) {
      ++bf16_wrong;
      UNSCOPED_INFO("bf16 of float pattern " << u << " = " << f);
    }
  }
  // Ties and boundaries on purpose: halfway between f16 neighbours (normal and subnormal), the
  // overflow edge (65504, 65519.99, 65520), half the smallest subnormal, bf16 halfway points.
  const std::vector<float> edges = {
      65504.0f,      65519.99f,     65520.0f,      65536.0f,    5.9604645e-8f, 2.9802322e-8f,
      2.9802326e-8f, 6.1035156e-5f, 6.1031e-5f,    1.0009766f,  1.0004883f,    1.0014648f,
      -0.0f,         1e-45f,        3.3895314e38f, 1.00390625f, 1.01171875f,   -2.0f};
  for (float f : edges) {
    CAPTURE(f);
    CHECK(float_to_f16(f) == reference_f16(f));
    CHECK(float_to_bf16(f) == reference_bf16(f));
  }
  CHECK(n > 1000000);
  CHECK(f16_wrong == 0);
  CHECK(bf16_wrong == 0);
}

TEST_CASE("bulk conversions round and widen whole buffers", "[kernels][half]") {
  const std::vector<float> x = {0.1f, -2.5f, 70000.0f, 1e-6f, 3.14159f};
  for (DType t : {DType::kF16, DType::kBF16}) {
    std::vector<uint16_t> h(x.size());
    std::vector<float> back(x.size());
    round_to_half(x.data(), h.data(), static_cast<int64_t>(x.size()), t);
    widen_from_half(h.data(), back.data(), static_cast<int64_t>(x.size()), t);
    for (size_t i = 0; i < x.size(); ++i) {
      const uint16_t want = t == DType::kF16 ? float_to_f16(x[i]) : float_to_bf16(x[i]);
      CHECK(h[i] == want);
      CHECK(float_bits(back[i]) ==
            float_bits(t == DType::kF16 ? f16_to_float(want) : bf16_to_float(want)));
    }
  }
}

}  // namespace
}  // namespace meshpipe::kernels

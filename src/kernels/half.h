// Half-precision storage for the mixed-precision path (issue 15): float32 <-> bfloat16 and
// float32 <-> IEEE binary16 (f16), bit-exact and portable (no compiler half type needed), with
// round-to-nearest-even, subnormals, infinities and NaN (kept a quiet NaN). Kernels compute in
// float32; tensors stored in f16/bf16 are widened on load and rounded on store with these.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace meshpipe::kernels {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

/// bfloat16: the top 16 bits of a float32, rounded to nearest even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

/// IEEE binary16, rounded to nearest even (overflow to infinity, subnormals kept).
inline uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (abs < 0x38800000u) {  // below 2^-14: a subnormal (or zero) half
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // below half the least: 0
    const uint32_t exp = abs >> 23;                             // 102 .. 112
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;        // with the hidden bit
    const uint32_t shift = 126 - exp;                           // 14 .. 24
    uint32_t h = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  // Normal: rebias the exponent (127 -> 15), keep 10 mantissa bits, round to nearest even (a
  // carry into the exponent is right, up to infinity excluded above).
  const uint32_t rebased = abs - (112u << 23);
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf, NaN
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  // Subnormal: mant x 2^-24, exact in float32.
  const float v = static_cast<float>(mant) * bits_float(0x33800000u);  // 2^-24
  return (sign != 0) ? -v : v;
}

/// Element `k` of a floating buffer stored as `dtype` (kF32, kF16 or kBF16), as a float.
inline float element_as_float(const void* data, DType dtype, int64_t k) {
  if (dtype == DType::kF32) return static_cast<const float*>(data)[k];
  const uint16_t h = static_cast<const uint16_t*>(data)[k];
  return dtype == DType::kBF16 ? bf16_to_float(h) : f16_to_float(h);
}

/// Rounds `n` floats to `dtype` (kF16 or kBF16) into `out`; widens them back.
void round_to_half(const float* in, uint16_t* out, int64_t n, DType dtype);
void widen_from_half(const uint16_t* in, float* out, int64_t n, DType dtype);

}  // namespace meshpipe::kernels

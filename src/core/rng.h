// Counter-based random numbers: element i of a stream depends only on (seed, stream, i), so any
// device can generate its own slice of a parameter and get the same values as one device would.
#pragma once

#include <cstdint>
#include <string_view>

namespace meshpipe {

/// SplitMix64 finaliser: a bijective 64-bit mix.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// FNV-1a: the hash of no bytes, and one byte more.
inline constexpr uint64_t kFnvOffset = 0xCBF29CE484222325ull;
constexpr uint64_t fnv1a_byte(uint64_t h, uint8_t byte) { return (h ^ byte) * 0x100000001B3ull; }

/// FNV-1a continued with the 8 bytes of `v`, least significant first (the same on every
/// platform), for hashing records of integers field by field.
constexpr uint64_t fnv1a_u64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) h = fnv1a_byte(h, static_cast<uint8_t>(v >> (8 * i)));
  return h;
}

/// FNV-1a hash of a string (stable across platforms and runs), e.g. of a parameter name.
constexpr uint64_t hash_name(std::string_view s) {
  uint64_t h = kFnvOffset;
  for (char c : s) h = fnv1a_byte(h, static_cast<uint8_t>(c));
  return h;
}

/// Uniform double in [0, 1) for element `index` of stream `key`.
double uniform_at(uint64_t key, uint64_t index);
/// Standard normal for element `index` of stream `key` (Box-Muller on two uniforms).
double normal_at(uint64_t key, uint64_t index);

/// A sequential generator for data synthesis (deterministic, platform-independent).
class Rng {
 public:
  explicit Rng(uint64_t seed) : key_(mix64(seed)) {}
  /// Uniform in [0, 1).
  double uniform() { return uniform_at(key_, counter_++); }
  /// Standard normal.
  double normal() { return normal_at(key_, counter_++); }
  /// Uniform integer in [0, n).
  int64_t below(int64_t n);

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

}  // namespace meshpipe

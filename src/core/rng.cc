// Counter-based uniform and normal draws.
#include "core/rng.h"

#include <cmath>
#include <numbers>

namespace meshpipe {

double uniform_at(uint64_t key, uint64_t index) {
  const uint64_t bits = mix64(key ^ mix64(index));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

double normal_at(uint64_t key, uint64_t index) {
  const double u1 = uniform_at(key, 2 * index);
  const double u2 = uniform_at(key, 2 * index + 1);
  const double r = std::sqrt(-2.0 * std::log(1.0 - u1));  // 1 - u1 is in (0, 1]
  return r * std::cos(2.0 * std::numbers::pi * u2);
}

int64_t Rng::below(int64_t n) {
  return static_cast<int64_t>(uniform() * static_cast<double>(n)) % n;
}

}  // namespace meshpipe

// Human-readable rendering of units.
#include "core/units.h"

#include <fmt/format.h>

#include <cmath>

namespace meshpipe {

std::string format_bytes(Bytes b) {
  const double v = static_cast<double>(b.value());
  const double a = std::fabs(v);
  if (a >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", v / (1024.0 * 1024 * 1024));
  if (a >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", v / (1024.0 * 1024));
  if (a >= 1024.0) return fmt::format("{:.2f} KiB", v / 1024.0);
  return fmt::format("{} B", b.value());
}

std::string format_seconds(Seconds s) {
  const double v = s.value();
  const double a = std::fabs(v);
  if (a >= 1.0) return fmt::format("{:.3g} s", v);
  if (a >= 1e-3) return fmt::format("{:.3g} ms", v * 1e3);
  if (a >= 1e-6) return fmt::format("{:.3g} us", v * 1e6);
  return fmt::format("{:.3g} ns", v * 1e9);
}

std::string format_flops(Flops f) {
  const double v = f.value();
  const double a = std::fabs(v);
  if (a >= 1e15) return fmt::format("{:.3g} PFLOP", v / 1e15);
  if (a >= 1e12) return fmt::format("{:.3g} TFLOP", v / 1e12);
  if (a >= 1e9) return fmt::format("{:.3g} GFLOP", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.3g} MFLOP", v / 1e6);
  return fmt::format("{:.3g} FLOP", v);
}

std::string format_count(double n) {
  const double a = std::fabs(n);
  if (a >= 1e9) return fmt::format("{:.3g}B", n / 1e9);
  if (a >= 1e6) return fmt::format("{:.3g}M", n / 1e6);
  if (a >= 1e3) return fmt::format("{:.3g}K", n / 1e3);
  return fmt::format("{}", n);
}

}  // namespace meshpipe

// Units: Bytes, Seconds and Flops as distinct types, so a byte count is never added to a time.
#pragma once

#include <cstdint>
#include <string>

namespace meshpipe {

/// A quantity of T tagged with its unit; supports the arithmetic that keeps the unit.
template <class T, class Tag>
class Quantity {
 public:
  constexpr Quantity() = default;
  constexpr explicit Quantity(T v) : v_(v) {}
  constexpr T value() const { return v_; }

  constexpr Quantity operator+(Quantity o) const { return Quantity(v_ + o.v_); }
  constexpr Quantity operator-(Quantity o) const { return Quantity(v_ - o.v_); }
  constexpr Quantity& operator+=(Quantity o) {
    v_ += o.v_;
    return *this;
  }
  constexpr Quantity& operator-=(Quantity o) {
    v_ -= o.v_;
    return *this;
  }
  constexpr Quantity operator*(T k) const { return Quantity(v_ * k); }
  constexpr auto operator<=>(const Quantity&) const = default;

 private:
  T v_{};
};

struct BytesTag {};
struct SecondsTag {};
struct FlopsTag {};

/// A number of bytes.
using Bytes = Quantity<int64_t, BytesTag>;
/// A duration in seconds.
using Seconds = Quantity<double, SecondsTag>;
/// A number of floating-point operations.
using Flops = Quantity<double, FlopsTag>;

/// "1.50 GiB", "512 B".
std::string format_bytes(Bytes b);
/// "1.23 ms", "4.5 s".
std::string format_seconds(Seconds s);
/// "1.2 GFLOP", "35 TFLOP".
std::string format_flops(Flops f);
/// "1.3B", "125M", "4.2K" (parameter counts).
std::string format_count(double n);

}  // namespace meshpipe

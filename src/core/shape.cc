// Shape arithmetic.
#include "core/shape.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace meshpipe {

int64_t Shape::numel() const { return numel_range(0, rank()); }

int64_t Shape::numel_range(int64_t begin, int64_t end) const {
  int64_t n = 1;
  for (int64_t i = begin; i < end; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

std::vector<int64_t> Shape::strides() const {
  std::vector<int64_t> s(dims_.size(), 1);
  for (int64_t i = rank() - 2; i >= 0; --i) {
    s[static_cast<size_t>(i)] = s[static_cast<size_t>(i + 1)] * dims_[static_cast<size_t>(i + 1)];
  }
  return s;
}

std::string Shape::to_string() const { return fmt::format("[{}]", fmt::join(dims_, ", ")); }

bool Shape::is_valid() const {
  for (int64_t d : dims_) {
    if (d <= 0) return false;
  }
  return true;
}

int64_t normalize_axis(int64_t axis, int64_t rank) {
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return -1;
  return axis;
}

}  // namespace meshpipe

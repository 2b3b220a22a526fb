// Shape: the dimension sizes of a tensor, with the arithmetic every module needs.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace meshpipe {

/// Dimension sizes, outermost first (row-major). A rank-0 shape is a scalar with one element.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}

  int64_t rank() const { return static_cast<int64_t>(dims_.size()); }
  int64_t operator[](int64_t i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int64_t i) { return dims_[static_cast<size_t>(i)]; }
  const std::vector<int64_t>& dims() const { return dims_; }
  /// Product of all dims (1 for a scalar).
  int64_t numel() const;
  /// Product of dims [begin, end).
  int64_t numel_range(int64_t begin, int64_t end) const;
  /// Row-major strides in elements.
  std::vector<int64_t> strides() const;
  /// "[2, 3, 4]".
  std::string to_string() const;
  /// True when every dim is positive.
  bool is_valid() const;

  friend bool operator==(const Shape& a, const Shape& b) { return a.dims_ == b.dims_; }

 private:
  std::vector<int64_t> dims_;
};

/// Normalizes a possibly negative axis (-1 = last) against a rank; returns -1 when out of range.
int64_t normalize_axis(int64_t axis, int64_t rank);

}  // namespace meshpipe

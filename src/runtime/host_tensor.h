// HostTensor: an owning, 64-byte aligned tensor in host memory (inputs, fetched values).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "kernels/tensor_view.h"

namespace meshpipe::runtime {

/// Frees memory from aligned_alloc.
struct AlignedFree {
  void operator()(void* p) const;
};

/// Allocates `bytes` (rounded up to 64) aligned to 64 bytes; never returns null for bytes > 0.
std::unique_ptr<void, AlignedFree> aligned_bytes(int64_t bytes);

/// An owning tensor. Copyable (deep copy) and movable.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(Shape shape, DType dtype);
  HostTensor(const HostTensor& other);
  HostTensor& operator=(const HostTensor& other);
  HostTensor(HostTensor&&) = default;
  HostTensor& operator=(HostTensor&&) = default;

  /// An f32 tensor holding `values` (size must equal the shape's element count).
  static HostTensor from_f32(Shape shape, const std::vector<float>& values);
  /// An i32 tensor holding `values`.
  static HostTensor from_i32(Shape shape, const std::vector<int32_t>& values);

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_.numel(); }
  int64_t bytes() const { return numel() * dtype_size(dtype_); }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  float* f32();
  const float* f32() const;
  int32_t* i32();
  const int32_t* i32() const;
  /// Element i as a double (f32 or i32).
  double at(int64_t i) const;
  /// A contiguous kernel view of this tensor.
  kernels::TensorView view() const;
  /// All elements as floats (f32 or i32).
  std::vector<float> to_f32_vector() const;

 private:
  Shape shape_;
  DType dtype_ = DType::kF32;
  std::unique_ptr<void, AlignedFree> data_;
};

}  // namespace meshpipe::runtime

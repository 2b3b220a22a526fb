// HostTensor storage.
#include "runtime/host_tensor.h"

#include <cstdlib>

#include "core/check.h"

namespace meshpipe::runtime {

void AlignedFree::operator()(void* p) const { std::free(p); }

std::unique_ptr<void, AlignedFree> aligned_bytes(int64_t bytes) {
  const size_t rounded = static_cast<size_t>((std::max<int64_t>(bytes, 1) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded);
  MP_CHECK(p != nullptr) << "out of host memory allocating " << rounded << " bytes";
  return std::unique_ptr<void, AlignedFree>(p);
}

HostTensor::HostTensor(Shape shape, DType dtype) : shape_(std::move(shape)), dtype_(dtype) {
  data_ = aligned_bytes(bytes());
  std::memset(data_.get(), 0, static_cast<size_t>(bytes()));
}

HostTensor::HostTensor(const HostTensor& other) : shape_(other.shape_), dtype_(other.dtype_) {
  if (other.data_) {
    data_ = aligned_bytes(bytes());
    std::memcpy(data_.get(), other.data_.get(), static_cast<size_t>(bytes()));
  }
}

HostTensor& HostTensor::operator=(const HostTensor& other) {
  if (this != &other) *this = HostTensor(other);
  return *this;
}

HostTensor HostTensor::from_f32(Shape shape, const std::vector<float>& values) {
  HostTensor t(std::move(shape), DType::kF32);
  MP_CHECK(static_cast<int64_t>(values.size()) == t.numel())
      << values.size() << " values for shape " << t.shape().to_string();
  std::memcpy(t.data(), values.data(), static_cast<size_t>(t.bytes()));
  return t;
}

HostTensor HostTensor::from_i32(Shape shape, const std::vector<int32_t>& values) {
  HostTensor t(std::move(shape), DType::kI32);
  MP_CHECK(static_cast<int64_t>(values.size()) == t.numel())
      << values.size() << " values for shape " << t.shape().to_string();
  std::memcpy(t.data(), values.data(), static_cast<size_t>(t.bytes()));
  return t;
}

float* HostTensor::f32() {
  MP_CHECK(dtype_ == DType::kF32) << "tensor is " << dtype_name(dtype_);
  return static_cast<float*>(data_.get());
}
const float* HostTensor::f32() const {
  MP_CHECK(dtype_ == DType::kF32) << "tensor is " << dtype_name(dtype_);
  return static_cast<const float*>(data_.get());
}
int32_t* HostTensor::i32() {
  MP_CHECK(dtype_ == DType::kI32) << "tensor is " << dtype_name(dtype_);
  return static_cast<int32_t*>(data_.get());
}
const int32_t* HostTensor::i32() const {
  MP_CHECK(dtype_ == DType::kI32) << "tensor is " << dtype_name(dtype_);
  return static_cast<const int32_t*>(data_.get());
}

double HostTensor::at(int64_t i) const {
  return dtype_ == DType::kI32 ? static_cast<double>(i32()[i]) : static_cast<double>(f32()[i]);
}

kernels::TensorView HostTensor::view() const {
  return kernels::TensorView(const_cast<void*>(data_.get()), shape_, dtype_);
}

std::vector<float> HostTensor::to_f32_vector() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = static_cast<float>(at(i));
  return out;
}

}  // namespace meshpipe::runtime

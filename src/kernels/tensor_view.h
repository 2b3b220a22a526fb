// TensorView and KernelContext: what every kernel takes. A view does not own memory.
#pragma once

#include <cstdint>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace meshpipe::kernels {

/// Where a kernel runs: the device types of the backend table (kernels/backend.h).
enum class Device : uint8_t {
  kCpu = 0,   ///< the host (OpenBLAS and loops); runs every op kind
  kCuda = 1,  ///< an NVIDIA GPU: its column of the table is filled by the CUDA backend
};

namespace internal {
struct GpuState;  // kernels/internal/gpu_state.h: a GPU's stream, library handles, first error
}  // namespace internal

/// Per-call execution context: the device type and, for kCuda, the GPU's state (its compute
/// stream, cuBLASLt and cuDNN handles, library workspace, the first error of its launches),
/// owned by a kernels::GpuDevice (kernels/gpu.h).
struct KernelContext {
  Device device = Device::kCpu;
  internal::GpuState* gpu = nullptr;
};

/// A tensor in memory: base pointer (host memory for kCpu, the GPU's memory for kCuda), shape,
/// dtype and strides in elements. Kernels require row-major contiguous views unless their
/// comment says otherwise. Floating views may be f32, f16 or bf16 on either backend: kernels
/// compute in f32 and round on store (kernels/backend.h).
struct TensorView {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::kF32;
  std::vector<int64_t> strides;

  TensorView() = default;
  /// A contiguous row-major view.
  TensorView(void* d, Shape s, DType t) : data(d), shape(std::move(s)), dtype(t) {
    strides = shape.strides();
  }

  int64_t numel() const { return shape.numel(); }
  int64_t bytes() const { return numel() * dtype_size(dtype); }
  bool is_contiguous() const { return strides == shape.strides(); }

  float* f32() const {
    MP_CHECK(dtype == DType::kF32) << "expected an f32 view, got " << dtype_name(dtype);
    return static_cast<float*>(data);
  }
  int32_t* i32() const {
    MP_CHECK(dtype == DType::kI32) << "expected an i32 view, got " << dtype_name(dtype);
    return static_cast<int32_t*>(data);
  }
};

}  // namespace meshpipe::kernels

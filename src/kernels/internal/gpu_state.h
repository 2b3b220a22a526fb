// The state behind a KernelContext of a GPU (private to kernels/, CUDA builds only): the device
// ordinal, its compute stream, the cuBLASLt and cuDNN handles bound to that stream, one library
// workspace the GEMM and convolution kernels share (allocated when the device is opened, so no
// kernel allocates), and the first error any launch on it met. Owned by kernels::GpuDevice.
// Included by .cu files: no core/status.h (see kernels/op_kernel.h).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstdint>
#include <string>

namespace meshpipe::kernels::internal {

/// Bytes of the library workspace (cuBLASLt's recommended 32 MiB on Hopper, also enough for
/// the cuDNN convolution algorithms we allow).
inline constexpr int64_t kGpuLibraryWorkspaceBytes = int64_t{64} << 20;

struct GpuState {
  int ordinal = 0;
  cudaStream_t stream = nullptr;    ///< every kernel of this device runs on it, in order
  cublasLtHandle_t blas = nullptr;  ///< cuBLASLt (GEMMs and batched GEMMs)
  cudnnHandle_t dnn = nullptr;      ///< cuDNN (convolutions), bound to `stream`
  void* workspace = nullptr;        ///< kGpuLibraryWorkspaceBytes of device memory
  int64_t workspace_bytes = 0;
  int multiprocessors = 0;  ///< SM count (grid sizing)
  /// The first failure of a launch or library call since run_kernel last took it (empty:
  /// none); kernels record into it (they return void) and run_kernel turns it into the call's
  /// Status (kInternal). A string, not a Status: CUDA files cannot include core/status.h.
  std::string error;

  /// Records `message` unless an earlier error is pending.
  void fail(std::string message) {
    if (error.empty()) error = std::move(message);
  }

  /// Makes this GPU the calling thread's current device (kernel launches and library calls go
  /// to the current device; the runtime drives a GPU from threads other than the one that
  /// opened it). cudaGetDevice is a thread-local read. False, with the error recorded, when it
  /// cannot.
  bool make_current() {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current == ordinal) return true;
    if (const cudaError_t e = cudaSetDevice(ordinal); e != cudaSuccess) {
      fail(std::string("cudaSetDevice(") + std::to_string(ordinal) +
           ") failed: " + cudaGetErrorString(e));
      return false;
    }
    return true;
  }
};

}  // namespace meshpipe::kernels::internal

// Helpers shared by the CUDA kernel files (private to kernels/, compiled by nvcc only): typed
// loads and stores of f32/f16/bf16 storage with f32 compute, grid sizing, launch checks that
// record into the device's GpuState, fixed-size dimension arrays passed by value, and warp and
// block reductions. Every CUDA kernel file includes this and nothing CUDA-specific of its own
// beyond the libraries it calls (cuBLASLt, cuDNN). Note: fmt's compile-time format checks do
// not compile under nvcc, so .cu files never include core/status.h: they define rows with
// kernels/op_kernel.h and report failures as strings into GpuState::fail.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/internal/gpu_state.h"
#include "kernels/op_kernel.h"

namespace meshpipe::kernels::internal {

/// A floating-point operand on the device: its base pointer and storage type (f32, f16, bf16).
/// Kernels load each element to f32, compute in f32 and round to the output's type on store
/// (round to nearest even, as kernels/half.h does on the CPU).
struct DPtr {
  void* p = nullptr;
  DType t = DType::kF32;
};

/// The operand of a floating view; aborts on other dtypes or non-contiguous views.
inline DPtr dptr(const TensorView& v, const char* op) {
  MP_CHECK(v.dtype == DType::kF32 || v.dtype == DType::kF16 || v.dtype == DType::kBF16)
      << op << ": expected an f32, f16 or bf16 tensor, got " << dtype_name(v.dtype);
  MP_CHECK(v.is_contiguous()) << op << ": CUDA kernels take contiguous tensors";
  return DPtr{v.data, v.dtype};
}

/// The int32 data of an id or label view; aborts on other dtypes.
inline const int32_t* ids_ptr(const TensorView& v, const char* op) {
  MP_CHECK(v.dtype == DType::kI32)
      << op << ": ids and labels must be i32, got " << dtype_name(v.dtype);
  return static_cast<const int32_t*>(v.data);
}

__device__ __forceinline__ float ld(const DPtr& v, int64_t i) {
  switch (v.t) {
    case DType::kF16:
      return __half2float(static_cast<const __half*>(v.p)[i]);
    case DType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(v.p)[i]);
    default:
      return static_cast<const float*>(v.p)[i];
  }
}

__device__ __forceinline__ void st(const DPtr& v, int64_t i, float x) {
  switch (v.t) {
    case DType::kF16:
      static_cast<__half*>(v.p)[i] = __float2half_rn(x);
      break;
    case DType::kBF16:
      static_cast<__nv_bfloat16*>(v.p)[i] = __float2bfloat16_rn(x);
      break;
    default:
      static_cast<float*>(v.p)[i] = x;
  }
}

/// Largest rank the index arithmetic supports (as on the CPU).
inline constexpr int kCudaMaxRank = 8;

/// Sizes or strides of up to kCudaMaxRank dims, passed to kernels by value.
struct Dims8 {
  int64_t v[kCudaMaxRank] = {};
  int rank = 0;
};

inline Dims8 dims_of(std::span<const int64_t> values) {
  MP_CHECK(values.size() <= static_cast<size_t>(kCudaMaxRank))
      << "CUDA kernels support rank <= " << kCudaMaxRank << ", got " << values.size();
  Dims8 d;
  d.rank = static_cast<int>(values.size());
  for (size_t i = 0; i < values.size(); ++i) d.v[i] = values[i];
  return d;
}

/// Aborts unless `s` has a rank the index arithmetic supports.
inline void check_rank(const Shape& s, const char* op) {
  MP_CHECK(s.rank() <= kCudaMaxRank)
      << op << " supports rank <= " << kCudaMaxRank << ", got " << s.to_string();
}

// Offset of row-major flat index `idx` over dims (size, stride)[0, rank). IndexT is 32-bit when
// the caller knows idx fits (the divisions are most of the cost of a copy).
template <class IndexT>
__device__ __forceinline__ int64_t offset_of(IndexT idx, const Dims8& size, const Dims8& stride) {
  int64_t off = 0;
  // Unrolled with constant indices, so the dims stay in parameter space (a runtime index would
  // copy them to local memory).
#pragma unroll
  for (int d = kCudaMaxRank - 1; d > 0; --d) {
    if (d < size.rank) {
      const auto s = static_cast<IndexT>(size.v[d]);
      const IndexT q = idx / s;
      off += static_cast<int64_t>(idx - q * s) * stride.v[d];
      idx = q;
    }
  }
  return size.rank > 0 ? off + static_cast<int64_t>(idx) * stride.v[0] : off;
}

/// Blocks for `want` work items, capped at `per_sm` blocks per SM.
inline unsigned grid_cap(const GpuState& g, int64_t want, int64_t per_sm = 32) {
  const int64_t cap =
      static_cast<int64_t>(g.multiprocessors > 0 ? g.multiprocessors : 108) * per_sm;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
}

/// The device state of a call (aborts when the context is not a GPU's).
inline GpuState& gpu_of(const KernelArgs& a) {
  MP_CHECK(a.ctx != nullptr && a.ctx->device == Device::kCuda && a.ctx->gpu != nullptr)
      << "CUDA kernel called without a GPU context";
  return *a.ctx->gpu;
}

inline constexpr int kThreads = 256;  ///< threads per block of the elementwise-style kernels

/// Blocks for a grid-stride loop over n items (n > 0): enough to fill the GPU, no more.
inline unsigned blocks_for(const GpuState& g, int64_t n, int threads = kThreads) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(g.multiprocessors > 0 ? g.multiprocessors : 108) * 32;
  return static_cast<unsigned>(want < 1 ? 1 : (want < cap ? want : cap));
}

/// Records the launch error (if any) of the kernel just launched, naming it.
inline void check_launch(GpuState& g, const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    g.fail(std::string(what) + ": CUDA kernel launch failed: " + cudaGetErrorString(e));
  }
}

/// Records a failed CUDA runtime call.
inline bool check_cuda(GpuState& g, cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  g.fail(std::string(what) + ": " + cudaGetErrorString(e));
  return false;
}

/// Grid-stride loop over [0, n).
#define MP_CUDA_FOR(i, n)                                                                \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum of v over the block, returned to every thread. blockDim.x must be a multiple of 32 (at
/// most 1024); `scratch` is 32 floats of shared memory; every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float t = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(t);
}

/// Maximum of v over the block (as block_sum).
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float t = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(t);
}

}  // namespace meshpipe::kernels::internal

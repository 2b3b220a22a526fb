// Row-wise reductions for the CUDA softmax, normalisation and loss kernels (private to
// kernels/, compiled by nvcc only): a "row" is a run of elements reduced together (a softmax
// row along its axis, a layer-norm row, a cross-entropy position). Three mappings of rows to
// threads share one kernel body through a group type: one warp per row (short rows), one block
// per row (long rows) and one thread per row (strided rows whose neighbours are adjacent in
// memory). Sums use Kahan compensation per thread and a fixed tree across threads, so results
// are deterministic and close to the CPU's double accumulation.
#pragma once

#include <cstdint>

#include "kernels/internal/cuda_common.cuh"

namespace meshpipe::kernels::internal {

/// A compensated (Kahan) f32 sum. Once the running sum is not finite the compensation is
/// dropped, so an overflow or an infinite term gives inf (as the CPU's double sum would after
/// rounding to float), not NaN.
struct Kahan {
  float sum = 0.f;
  float carry = 0.f;  ///< the low-order part lost by the last additions (negated)

  __device__ __forceinline__ void add(float v) {
    const float y = v - carry;
    const float t = sum + y;
    carry = isfinite(t) ? (t - sum) - y : 0.f;
    sum = t;
  }
  __device__ __forceinline__ float value() const { return sum - carry; }
};

/// One warp per row; blockDim.x is a multiple of 32.
struct WarpRows {
  __device__ static int64_t first() {
    return static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  }
  __device__ static int64_t step() { return static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5); }
  __device__ static int lane() { return static_cast<int>(threadIdx.x & 31); }
  __device__ static int size() { return 32; }
  __device__ static bool leader() { return (threadIdx.x & 31) == 0; }
  __device__ static float sum(float v, float* /*scratch*/) { return warp_sum(v); }
  __device__ static float max(float v, float* /*scratch*/) { return warp_max(v); }
};

/// One block per row; blockDim.x is a multiple of 32 (at most 1024). Every thread of a block
/// walks the same rows, so the block reductions' barriers are reached uniformly.
struct BlockRows {
  __device__ static int64_t first() { return blockIdx.x; }
  __device__ static int64_t step() { return gridDim.x; }
  __device__ static int lane() { return static_cast<int>(threadIdx.x); }
  __device__ static int size() { return static_cast<int>(blockDim.x); }
  __device__ static bool leader() { return threadIdx.x == 0; }
  __device__ static float sum(float v, float* scratch) { return block_sum(v, scratch); }
  __device__ static float max(float v, float* scratch) { return block_max(v, scratch); }
};

/// One thread per row.
struct ThreadRows {
  __device__ static int64_t first() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  }
  __device__ static int64_t step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
  __device__ static int lane() { return 0; }
  __device__ static int size() { return 1; }
  __device__ static bool leader() { return true; }
  __device__ static float sum(float v, float* /*scratch*/) { return v; }
  __device__ static float max(float v, float* /*scratch*/) { return v; }
};

enum class RowMap : uint8_t { kThread, kWarp, kBlock };

/// Rows longer than this get a block each; shorter ones a warp.
inline constexpr int64_t kWarpRowMaxLen = 1024;
inline constexpr int kBlockRowThreads = 512;

/// How a row kernel is launched.
struct RowLaunch {
  RowMap map = RowMap::kWarp;
  unsigned blocks = 1;
  unsigned threads = kThreads;
};

/// The launch of `rows` rows of `len` elements (rows > 0) with the given mapping.
inline RowLaunch row_launch(const GpuState& g, int64_t rows, RowMap map) {
  RowLaunch l;
  l.map = map;
  const int64_t sms = g.multiprocessors > 0 ? g.multiprocessors : 108;
  switch (map) {
    case RowMap::kThread:
      l.threads = kThreads;
      l.blocks = blocks_for(g, rows, kThreads);
      break;
    case RowMap::kWarp:
      l.threads = kThreads;
      l.blocks = blocks_for(g, rows * 32, kThreads);
      break;
    case RowMap::kBlock: {
      l.threads = kBlockRowThreads;
      const int64_t cap = sms * 8;
      l.blocks = static_cast<unsigned>(rows < cap ? rows : cap);
      break;
    }
  }
  return l;
}

/// Warp per row for rows up to kWarpRowMaxLen elements, block per row above.
inline RowMap contiguous_row_map(int64_t len) {
  return len <= kWarpRowMaxLen ? RowMap::kWarp : RowMap::kBlock;
}

/// Calls launch(Group{}) with the group type of l.map; `launch` starts the kernel
/// instantiated for that group with <<<l.blocks, l.threads, 0, stream>>>.
template <class F>
void dispatch_rows(const RowLaunch& l, F&& launch) {
  switch (l.map) {
    case RowMap::kThread:
      launch(ThreadRows{});
      break;
    case RowMap::kWarp:
      launch(WarpRows{});
      break;
    case RowMap::kBlock:
      launch(BlockRows{});
      break;
  }
}

/// The f32 scratch of a call: args.workspace, checked to hold `floats` floats.
inline float* workspace_floats(const KernelArgs& a, int64_t floats, const char* op) {
  if (floats == 0) return nullptr;
  MP_CHECK(a.workspace.data != nullptr && a.workspace.bytes() >= floats * 4 &&
           reinterpret_cast<uintptr_t>(a.workspace.data) % alignof(float) == 0)
      << op << ": needs " << floats * 4 << " bytes of workspace, got " << a.workspace.bytes();
  return static_cast<float*>(a.workspace.data);
}

}  // namespace meshpipe::kernels::internal

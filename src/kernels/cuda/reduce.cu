// CUDA sum and mean reductions over any axis set (the GPU twins of kernels/layout_cpu.cc's
// reduce), deterministic (no atomics): each output is reduced by a warp, a block or a block
// column with Kahan-compensated f32 partial sums combined in a fixed tree order, split over
// several blocks through the workspace when there are few outputs to share out the GPU. They
// read and write f32, f16 or bf16 (independently) and accumulate in f32. Also the overflow check
// of loss scaling (cuda_all_finite) and the squared norm of gradient clipping
// (cuda_sum_of_squares).
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

using K = OpKind;
using Args = KernelArgs;

constexpr int kTileRows = 8;  // threadIdx.y extent of the column kernels (32 x 8 threads)
constexpr int kWarpsPerBlock = kThreads / 32;

// Kahan-compensated f32 sum. Once the running sum is not finite the compensation is dropped, so
// overflow and infinities give inf (as the CPU's double sum rounded to float would) and not NaN.
struct Kahan {
  float s = 0.0f;
  float c = 0.0f;
  __device__ __forceinline__ void add(float x) {
    const float y = x - c;
    const float t = s + y;
    c = isfinite(t) ? (t - s) - y : 0.0f;
    s = t;
  }
  __device__ __forceinline__ float value() const { return s - c; }
};

// Blocks the reductions aim for (a few per SM of an H100/H200; a function of shapes alone, so
// the workspace size does not depend on the device).
constexpr int64_t kReduceTargetBlocks = 1024;
constexpr int64_t kMaxSplits = 65535;       // gridDim.y limit
constexpr int64_t kWarpRowMax = 1024;       // rows up to this length: a warp per output
constexpr int64_t kRowSplitMin = 4096;      // elements per split of a block-per-output row
constexpr int64_t kColumnSplitMin = 256;    // reduced indices per split of a column reduction
constexpr int kColumnThreadsY = kTileRows;  // column reductions: 32 columns x 8 reduced slices

// How x is reduced. x's dims (size-1 dims dropped) are merged into alternating runs of kept and
// reduced dims. Row mode (the innermost run is reduced, stride 1): each output reduces a set of
// `count` elements whose innermost run is contiguous, by a warp (short) or a block per split.
// Column mode (the innermost run, `inner` elements, is kept): a block of 32 x 8 threads reduces
// 32 adjacent outputs, threads along the outputs (coalesced) and across the reduced indices.
// With splits > 1 each split writes partial sums to the workspace ([splits, num_out] f32) and a
// second kernel adds them in split order.
struct ReducePlan {
  Dims8 kept_size, kept_stride;  // row mode: all kept runs; column mode: all but the innermost
  Dims8 red_size, red_stride;
  int64_t num_out = 1;
  int64_t count = 1;
  bool identity = false;  // nothing reduced: out = x (converted)
  bool column = false;
  bool warp_rows = false;
  int64_t inner = 1;
  int64_t col_groups = 1;  // column mode: ceil(inner / 32)
  int64_t col_tiles = 0;   // column mode: outer * col_groups
  int64_t splits = 1;

  int64_t workspace_bytes() const {
    return splits > 1 ? splits * num_out * static_cast<int64_t>(sizeof(float)) : 0;
  }
};

int64_t clamp_splits(int64_t want, int64_t by_size) {
  return std::max<int64_t>(1, std::min({want, by_size, kMaxSplits}));
}

ReducePlan plan_reduce(const Shape& shape, const std::vector<int64_t>& axes) {
  check_rank(shape, "reduce");
  const int64_t rank = shape.rank();
  std::array<bool, kCudaMaxRank> reduced{};
  for (size_t i = 0; i < axes.size(); ++i) {
    MP_CHECK(axes[i] >= 0 && axes[i] < rank && (i == 0 || axes[i] > axes[i - 1]))
        << "reduce: axes must be ascending, distinct and below rank " << rank;
    reduced[static_cast<size_t>(axes[i])] = true;
  }
  const std::vector<int64_t> strides = shape.strides();
  // Runs: (size, stride of the innermost dim, reduced).
  std::array<int64_t, kCudaMaxRank> run_size{}, run_stride{};
  std::array<bool, kCudaMaxRank> run_red{};
  int runs = 0;
  ReducePlan p;
  for (int64_t d = 0; d < rank; ++d) {
    const auto u = static_cast<size_t>(d);
    if (reduced[u]) {
      p.count *= shape[d];
    } else {
      p.num_out *= shape[d];
    }
    if (shape[d] == 1) continue;
    if (runs > 0 && run_red[static_cast<size_t>(runs - 1)] == reduced[u]) {
      run_size[static_cast<size_t>(runs - 1)] *= shape[d];
      run_stride[static_cast<size_t>(runs - 1)] = strides[u];
      continue;
    }
    run_size[static_cast<size_t>(runs)] = shape[d];
    run_stride[static_cast<size_t>(runs)] = strides[u];
    run_red[static_cast<size_t>(runs)] = reduced[u];
    ++runs;
  }
  int num_red = 0;
  for (int r = 0; r < runs; ++r) num_red += run_red[static_cast<size_t>(r)] ? 1 : 0;
  if (num_red == 0 || p.num_out == 0) {
    p.identity = num_red == 0;
    return p;
  }
  p.column = !run_red[static_cast<size_t>(runs - 1)];
  const int kept_runs = p.column ? runs - 1 : runs;
  int nk = 0, nr = 0;
  for (int r = 0; r < kept_runs; ++r) {
    const auto u = static_cast<size_t>(r);
    if (run_red[u]) {
      p.red_size.v[nr] = run_size[u];
      p.red_stride.v[nr++] = run_stride[u];
    } else {
      p.kept_size.v[nk] = run_size[u];
      p.kept_stride.v[nk++] = run_stride[u];
    }
  }
  p.kept_size.rank = p.kept_stride.rank = nk;
  p.red_size.rank = p.red_stride.rank = nr;
  if (p.column) {
    p.inner = run_size[static_cast<size_t>(runs - 1)];
    p.col_groups = (p.inner + 31) / 32;
    p.col_tiles = p.num_out / p.inner * p.col_groups;
    if (p.col_tiles < kReduceTargetBlocks) {
      p.splits = clamp_splits((kReduceTargetBlocks + p.col_tiles - 1) / p.col_tiles,
                              p.count / kColumnSplitMin);
    }
  } else if (p.count <= kWarpRowMax) {
    p.warp_rows = true;
  } else if (p.num_out < kReduceTargetBlocks) {
    p.splits =
        clamp_splits((kReduceTargetBlocks + p.num_out - 1) / p.num_out, p.count / kRowSplitMin);
  }
  return p;
}

// The reduced indices [begin, end) of split `s` of `count`.
__device__ __forceinline__ void split_range(int64_t count, int64_t splits, int64_t s,
                                            int64_t* begin, int64_t* end) {
  const int64_t chunk = (count + splits - 1) / splits;
  *begin = s * chunk < count ? s * chunk : count;
  *end = *begin + chunk < count ? *begin + chunk : count;
}

__device__ __forceinline__ float finish(float sum, bool mean, int64_t count) {
  return mean ? sum / static_cast<float>(count) : sum;  // count 0: NaN, as on the CPU
}

// Stores the output or, with splits, split `s`'s partial sum of it.
__device__ __forceinline__ void put(DPtr y, float* partial, int64_t num_out, int64_t splits,
                                    int64_t s, int64_t o, float sum, bool mean, int64_t count) {
  if (splits == 1) {
    st(y, o, finish(sum, mean, count));
  } else {
    partial[s * num_out + o] = sum;
  }
}

// Row mode, a warp per output (short rows).
__global__ void reduce_rows_warp_kernel(DPtr x, DPtr y, ReducePlan p, bool mean) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
       o < p.num_out; o += warps) {
    const int64_t base = offset_of(o, p.kept_size, p.kept_stride);
    Kahan acc;
    for (int64_t r = lane; r < p.count; r += 32) {
      acc.add(ld(x, base + offset_of(r, p.red_size, p.red_stride)));
    }
    const float sum = warp_sum(acc.value());
    if (lane == 0) st(y, o, finish(sum, mean, p.count));
  }
}

// Row mode, a block per (output, split).
__global__ void reduce_rows_block_kernel(DPtr x, DPtr y, float* partial, ReducePlan p, bool mean) {
  __shared__ float scratch[32];
  int64_t begin, end;
  split_range(p.count, p.splits, blockIdx.y, &begin, &end);
  for (int64_t o = blockIdx.x; o < p.num_out; o += gridDim.x) {
    const int64_t base = offset_of(o, p.kept_size, p.kept_stride);
    Kahan acc;
    for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x) {
      acc.add(ld(x, base + offset_of(r, p.red_size, p.red_stride)));
    }
    const float sum = block_sum(acc.value(), scratch);
    if (threadIdx.x == 0) put(y, partial, p.num_out, p.splits, blockIdx.y, o, sum, mean, p.count);
  }
}

// Column mode: block (32, 8) per (32 adjacent outputs, split).
__global__ void reduce_columns_kernel(DPtr x, DPtr y, float* partial, ReducePlan p, bool mean) {
  __shared__ float part[kColumnThreadsY][33];
  int64_t begin, end;
  split_range(p.count, p.splits, blockIdx.y, &begin, &end);
  for (int64_t t = blockIdx.x; t < p.col_tiles; t += gridDim.x) {
    const int64_t ko = t / p.col_groups;
    const int64_t c = (t - ko * p.col_groups) * 32 + threadIdx.x;
    Kahan acc;
    if (c < p.inner) {
      const int64_t base = offset_of(ko, p.kept_size, p.kept_stride) + c;
      for (int64_t r = begin + threadIdx.y; r < end; r += kColumnThreadsY) {
        acc.add(ld(x, base + offset_of(r, p.red_size, p.red_stride)));
      }
    }
    part[threadIdx.y][threadIdx.x] = acc.value();
    __syncthreads();
    if (threadIdx.y == 0 && c < p.inner) {
      Kahan total;
      for (int k = 0; k < kColumnThreadsY; ++k) total.add(part[k][threadIdx.x]);
      put(y, partial, p.num_out, p.splits, blockIdx.y, ko * p.inner + c, total.value(), mean,
          p.count);
    }
    __syncthreads();
  }
}

// Adds the splits' partial sums of each output in split order.
__global__ void reduce_splits_kernel(const float* partial, DPtr y, int64_t num_out, int64_t splits,
                                     bool mean, int64_t count) {
  MP_CUDA_FOR(o, num_out) {
    Kahan acc;
    for (int64_t s = 0; s < splits; ++s) acc.add(partial[s * num_out + o]);
    st(y, o, finish(acc.value(), mean, count));
  }
}

__global__ void convert_kernel(DPtr x, DPtr y, int64_t n) { MP_CUDA_FOR(i, n) st(y, i, ld(x, i)); }

int64_t reduce_workspace_bytes(std::span<const Shape> in, const OpAttrs& attrs) {
  // Also asked by the planner's memory model for any shape a graph holds: what the kernel
  // would refuse (plan_reduce's checks) needs no workspace here, and fails when it runs.
  const int64_t rank = in[0].rank();
  if (rank > kCudaMaxRank) return 0;
  for (size_t i = 0; i < attrs.axes.size(); ++i) {
    if (attrs.axes[i] < 0 || attrs.axes[i] >= rank ||
        (i > 0 && attrs.axes[i] <= attrs.axes[i - 1])) {
      return 0;
    }
  }
  return plan_reduce(in[0], attrs.axes).workspace_bytes();
}

template <bool kMean>
void run_reduce(const Args& a) {
  const char* name = kMean ? "reduce_mean" : "reduce_sum";
  const TensorView& xv = a.in[0];
  const TensorView& yv = a.out[0];
  ReducePlan p = plan_reduce(xv.shape, a.attrs->axes);
  const DPtr x = dptr(xv, name);
  const DPtr y = dptr(yv, name);
  std::array<bool, kCudaMaxRank> reduced{};
  for (int64_t ax : a.attrs->axes) reduced[static_cast<size_t>(ax)] = true;
  int64_t kept = 0;
  for (int64_t d = 0; d < xv.shape.rank(); ++d) {
    if (reduced[static_cast<size_t>(d)]) continue;
    MP_CHECK(kept < yv.shape.rank() && yv.shape[kept] == xv.shape[d])
        << name << ": out " << yv.shape.to_string() << " is not x " << xv.shape.to_string()
        << " without the reduced axes";
    ++kept;
  }
  MP_CHECK(kept == yv.shape.rank())
      << name << ": out has rank " << yv.shape.rank() << ", expected " << kept;
  GpuState& g = gpu_of(a);
  if (p.num_out == 0) return;
  if (p.identity) {
    convert_kernel<<<blocks_for(g, p.num_out), kThreads, 0, g.stream>>>(x, y, p.num_out);
    check_launch(g, name);
    return;
  }
  // Without the declared workspace (it should not happen) fall back to one split: slower, same
  // result up to rounding.
  if (p.splits > 1 && (a.workspace.data == nullptr || a.workspace.bytes() < p.workspace_bytes())) {
    p.splits = 1;
  }
  auto* partial = static_cast<float*>(a.workspace.data);
  const unsigned splits = static_cast<unsigned>(p.splits);
  if (p.column) {
    const dim3 grid(grid_cap(g, p.col_tiles, p.splits > 1 ? 32 : 8), splits);
    reduce_columns_kernel<<<grid, dim3(32, kColumnThreadsY), 0, g.stream>>>(x, y, partial, p,
                                                                            kMean);
  } else if (p.warp_rows) {
    const int64_t blocks = (p.num_out + kWarpsPerBlock - 1) / kWarpsPerBlock;
    reduce_rows_warp_kernel<<<grid_cap(g, blocks), kThreads, 0, g.stream>>>(x, y, p, kMean);
  } else {
    const dim3 grid(grid_cap(g, p.num_out, p.splits > 1 ? 32 : 8), splits);
    reduce_rows_block_kernel<<<grid, kThreads, 0, g.stream>>>(x, y, partial, p, kMean);
  }
  check_launch(g, name);
  if (p.splits > 1) {
    reduce_splits_kernel<<<blocks_for(g, p.num_out), kThreads, 0, g.stream>>>(
        partial, y, p.num_out, p.splits, kMean, p.count);
    check_launch(g, name);
  }
}

// flag[0] = 0 where any element is NaN or Inf. Threads that find one all write the same value,
// so the result does not depend on their order (no atomics needed).
__global__ void nonfinite_kernel(DPtr x, int64_t n, int* flag) {
  MP_CUDA_FOR(i, n) {
    if (!isfinite(ld(x, i))) *flag = 0;
  }
}

// partial[blockIdx.x] += the block's sum of x[i]^2 in double over a grid-stride loop. Each block
// owns its slot and the launches of a stream run in order, so the slots, and the host's sum of
// them, do not depend on scheduling.
constexpr int kSquareBlocks = 128;
__global__ void sum_squares_kernel(DPtr x, int64_t n, double* partial) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double v = ld(x, i);
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] += s[0];
}

}  // namespace

int cuda_all_finite(GpuState& g, const TensorView* views, size_t n) {
  // The flag lives in the first bytes of the library workspace: stream order keeps it apart
  // from the GEMMs and convolutions that use the workspace on this stream.
  int* flag = static_cast<int*>(g.workspace);
  check_cuda(g, cudaMemsetAsync(flag, 1, sizeof(int), g.stream), "all_finite");  // non-zero
  for (size_t k = 0; k < n; ++k) {
    const TensorView& v = views[k];
    if (!is_floating(v.dtype) || v.data == nullptr || v.numel() == 0) continue;
    const int64_t count = v.numel();
    nonfinite_kernel<<<blocks_for(g, count), kThreads, 0, g.stream>>>(dptr(v, "all_finite"), count,
                                                                      flag);
    check_launch(g, "all_finite");
  }
  int result = 1;
  check_cuda(g, cudaMemcpyAsync(&result, flag, sizeof(int), cudaMemcpyDeviceToHost, g.stream),
             "all_finite");
  check_cuda(g, cudaStreamSynchronize(g.stream), "all_finite");
  return result != 0 ? 1 : 0;
}

double cuda_sum_of_squares(GpuState& g, const TensorView* views, size_t n) {
  // The slots live in the library workspace, apart by stream order from its other users.
  auto* partial = static_cast<double*>(g.workspace);
  constexpr size_t kBytes = sizeof(double) * kSquareBlocks;
  if (g.workspace == nullptr || g.workspace_bytes < static_cast<int64_t>(kBytes)) {
    g.fail("sum_of_squares: the GPU workspace is too small");
    return 0.0;
  }
  check_cuda(g, cudaMemsetAsync(partial, 0, kBytes, g.stream), "sum_of_squares");
  for (size_t k = 0; k < n; ++k) {
    const TensorView& v = views[k];
    if (!is_floating(v.dtype) || v.data == nullptr || v.numel() == 0) continue;
    sum_squares_kernel<<<kSquareBlocks, kThreads, 0, g.stream>>>(dptr(v, "sum_of_squares"),
                                                                 v.numel(), partial);
    check_launch(g, "sum_of_squares");
  }
  double host[kSquareBlocks] = {};
  check_cuda(g, cudaMemcpyAsync(host, partial, kBytes, cudaMemcpyDeviceToHost, g.stream),
             "sum_of_squares");
  check_cuda(g, cudaStreamSynchronize(g.stream), "sum_of_squares");
  double total = 0.0;
  for (double h : host) total += h;
  return total;
}

std::vector<CudaRow> cuda_reduce_rows() {
  return {
      {K::kReduceSum, {run_reduce<false>, reduce_workspace_bytes}},
      {K::kReduceMean, {run_reduce<true>, reduce_workspace_bytes}},
  };
}

}  // namespace meshpipe::kernels::internal

// CUDA data movement (the GPU twins of kernels/layout_cpu.cc's movement ops): reshape (a
// device-to-device copy when it runs at all), transpose and broadcast (one strided gather, with a
// shared-memory tiled kernel when a transpose moves the contiguous dim), slice, pad and concat
// (row copies in the widest aligned unit, one launch per concat input). Movement ops copy raw
// elements of 2, 4 or 8 bytes (any dtype, in and out equal). Reductions are in reduce.cu.
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "kernels/internal/box_runs.h"
#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

using K = OpKind;
using Args = KernelArgs;

constexpr int kTile = 32;     // transpose tile edge
constexpr int kTileRows = 8;  // threadIdx.y extent of the tiled kernels (32 x 8 threads)

// ---------------------------------------------------------------------------------------------
// Index helpers

bool fits_u32(int64_t n) { return n <= std::numeric_limits<int32_t>::max(); }

// Raw element types of each width (the kernels only move bits).
template <int kBytes>
struct Raw;
template <>
struct Raw<1> {
  using T = uint8_t;
};
template <>
struct Raw<2> {
  using T = uint16_t;
};
template <>
struct Raw<4> {
  using T = uint32_t;
};
template <>
struct Raw<8> {
  using T = unsigned long long;
};
template <>
struct Raw<16> {
  using T = uint4;
};

bool copy_bytes(GpuState& g, void* dst, const void* src, int64_t bytes, const char* what) {
  if (bytes <= 0 || dst == src) return true;
  return check_cuda(
      g, cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, g.stream),
      what);
}

// ---------------------------------------------------------------------------------------------
// Strided gather (transpose, broadcast): dst is contiguous with dims `size`; element i of dst is
// src[sum_d coord_d(i) * stride_d] (stride 0 broadcasts).

struct Gather {
  Dims8 size;
  Dims8 stride;
};

// Drops size-1 dims and merges dst-adjacent dims that are also adjacent in src (including runs of
// broadcast dims), so the index arithmetic runs over the fewest dims.
Gather simplify(std::span<const int64_t> size, std::span<const int64_t> stride) {
  Gather g;
  int r = 0;
  for (size_t d = 0; d < size.size(); ++d) {
    if (size[d] == 1) continue;
    if (r > 0 && g.stride.v[r - 1] == stride[d] * size[d]) {
      g.size.v[r - 1] *= size[d];
      g.stride.v[r - 1] = stride[d];
      continue;
    }
    g.size.v[r] = size[d];
    g.stride.v[r] = stride[d];
    ++r;
  }
  g.size.rank = g.stride.rank = r;
  return g;
}

template <class T, class IndexT>
__global__ void gather_kernel(const T* src, T* dst, Dims8 size, Dims8 stride, int64_t n) {
  MP_CUDA_FOR(i, n) dst[i] = src[offset_of(static_cast<IndexT>(i), size, stride)];
}

// Tiled transpose of the dst dims (r, c) = (rows, cols): src is contiguous along r (stride 1),
// dst along c (stride 1). A 32x32 tile is read with threads along r and written with threads
// along c through shared memory (padded against bank conflicts). The other dims are a batch with
// their src and dst strides.
struct TilePlan {
  int64_t rows = 0, cols = 0;
  int64_t src_col_stride = 0;  // src stride of c
  int64_t dst_row_stride = 0;  // dst stride of r
  Dims8 batch_size, batch_src, batch_dst;
  int64_t row_tiles = 0, col_tiles = 0, total = 0;
};

template <class T>
__global__ void transpose_tiled_kernel(const T* src, T* dst, TilePlan p) {
  __shared__ T tile[kTile][kTile + 1];
  const int64_t per_batch = p.row_tiles * p.col_tiles;
  for (int64_t t = blockIdx.x; t < p.total; t += gridDim.x) {
    const int64_t b = t / per_batch;
    const int64_t rem = t - b * per_batch;
    const int64_t tr = rem / p.col_tiles;
    const int64_t r0 = tr * kTile;
    const int64_t c0 = (rem - tr * p.col_tiles) * kTile;
    const int64_t so = offset_of(b, p.batch_size, p.batch_src);
    const int64_t dof = offset_of(b, p.batch_size, p.batch_dst);
    // tile[k][x] holds (row r0 + x, col c0 + k).
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int64_t r = r0 + threadIdx.x;
      const int64_t c = c0 + k;
      if (r < p.rows && c < p.cols) tile[k][threadIdx.x] = src[so + r + c * p.src_col_stride];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int64_t r = r0 + k;
      const int64_t c = c0 + threadIdx.x;
      if (r < p.rows && c < p.cols) dst[dof + r * p.dst_row_stride + c] = tile[threadIdx.x][k];
    }
    __syncthreads();
  }
}

template <class T>
void gather_typed(GpuState& g, const char* what, const void* src, void* dst, const Gather& gd,
                  int64_t n) {
  const auto* s = static_cast<const T*>(src);
  auto* d = static_cast<T*>(dst);
  const int rank = gd.size.rank;
  // A dst dim read contiguously that is not the last: tile it against the last dim when both
  // are long enough for whole tiles to pay.
  int q = -1;
  for (int i = 0; i + 1 < rank; ++i) {
    if (gd.stride.v[i] == 1) q = i;
  }
  const int last = rank - 1;
  if (q >= 0 && gd.stride.v[last] > 1 && gd.size.v[q] >= 16 && gd.size.v[last] >= 16) {
    TilePlan p;
    p.rows = gd.size.v[q];
    p.cols = gd.size.v[last];
    p.src_col_stride = gd.stride.v[last];
    int64_t dst_stride = 1;
    Dims8 dst_strides;
    for (int i = rank - 1; i >= 0; --i) {
      dst_strides.v[i] = dst_stride;
      dst_stride *= gd.size.v[i];
    }
    p.dst_row_stride = dst_strides.v[q];
    int nb = 0;
    for (int i = 0; i < rank; ++i) {
      if (i == q || i == last) continue;
      p.batch_size.v[nb] = gd.size.v[i];
      p.batch_src.v[nb] = gd.stride.v[i];
      p.batch_dst.v[nb] = dst_strides.v[i];
      ++nb;
    }
    p.batch_size.rank = p.batch_src.rank = p.batch_dst.rank = nb;
    p.row_tiles = (p.rows + kTile - 1) / kTile;
    p.col_tiles = (p.cols + kTile - 1) / kTile;
    p.total = p.row_tiles * p.col_tiles * (n / (p.rows * p.cols));
    transpose_tiled_kernel<T>
        <<<grid_cap(g, p.total), dim3(kTile, kTileRows), 0, g.stream>>>(s, d, p);
    check_launch(g, what);
    return;
  }
  if (fits_u32(n)) {
    gather_kernel<T, uint32_t>
        <<<blocks_for(g, n), kThreads, 0, g.stream>>>(s, d, gd.size, gd.stride, n);
  } else {
    gather_kernel<T, int64_t>
        <<<blocks_for(g, n), kThreads, 0, g.stream>>>(s, d, gd.size, gd.stride, n);
  }
  check_launch(g, what);
}

// dst (contiguous, dims `size`, n elements of `width` bytes) gathered from src with `stride`
// (elements) per dst dim.
void gather(GpuState& g, const char* what, const void* src, void* dst, int64_t width,
            std::span<const int64_t> size, std::span<const int64_t> stride, int64_t n) {
  if (n == 0) return;
  const Gather gd = simplify(size, stride);
  if (gd.size.rank == 0 || (gd.size.rank == 1 && gd.stride.v[0] == 1)) {
    copy_bytes(g, dst, src, n * width, what);  // the identity (or a single element)
    return;
  }
  switch (width) {
    case 2:
      gather_typed<Raw<2>::T>(g, what, src, dst, gd, n);
      break;
    case 4:
      gather_typed<Raw<4>::T>(g, what, src, dst, gd, n);
      break;
    case 8:
      gather_typed<Raw<8>::T>(g, what, src, dst, gd, n);
      break;
    default:
      MP_CHECK(false) << what << ": unsupported element width " << width;
  }
}

// ---------------------------------------------------------------------------------------------
// Row copies (slice, concat, pad): `rows` rows of `width` bytes, at pitches (bytes) in src and
// dst, moved in the widest unit that divides every size, pitch and address involved.

int unit_for(std::initializer_list<int64_t> bytes, std::initializer_list<const void*> ptrs) {
  for (int u : {16, 8, 4, 2}) {
    bool ok = true;
    for (int64_t b : bytes) ok = ok && b % u == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % u == 0;
    if (ok) return u;
  }
  return 1;
}

template <class U, class IndexT>
__global__ void copy_rows_kernel(const U* src, int64_t spitch, U* dst, int64_t dpitch,
                                 int64_t width, int64_t n) {
  MP_CUDA_FOR(i, n) {
    const auto j = static_cast<IndexT>(i);
    const auto w = static_cast<IndexT>(width);
    const IndexT r = j / w;
    const IndexT c = j - r * w;
    dst[static_cast<int64_t>(r) * dpitch + c] = src[static_cast<int64_t>(r) * spitch + c];
  }
}

template <int kUnit>
void copy_rows_unit(GpuState& g, const char* what, const void* src, int64_t spitch, void* dst,
                    int64_t dpitch, int64_t width, int64_t rows) {
  using U = typename Raw<kUnit>::T;
  const int64_t w = width / kUnit;
  const int64_t n = rows * w;
  const auto* s = static_cast<const U*>(src);
  auto* d = static_cast<U*>(dst);
  if (fits_u32(n)) {
    copy_rows_kernel<U, uint32_t>
        <<<blocks_for(g, n), kThreads, 0, g.stream>>>(s, spitch / kUnit, d, dpitch / kUnit, w, n);
  } else {
    copy_rows_kernel<U, int64_t>
        <<<blocks_for(g, n), kThreads, 0, g.stream>>>(s, spitch / kUnit, d, dpitch / kUnit, w, n);
  }
  check_launch(g, what);
}

void copy_rows(GpuState& g, const char* what, const void* src, int64_t spitch, void* dst,
               int64_t dpitch, int64_t width, int64_t rows) {
  if (rows == 0 || width == 0) return;
  if (rows == 1 || (spitch == width && dpitch == width)) {
    copy_bytes(g, dst, src, rows * width, what);
    return;
  }
  switch (unit_for({spitch, dpitch, width}, {src, dst})) {
    case 16:
      copy_rows_unit<16>(g, what, src, spitch, dst, dpitch, width, rows);
      break;
    case 8:
      copy_rows_unit<8>(g, what, src, spitch, dst, dpitch, width, rows);
      break;
    case 4:
      copy_rows_unit<4>(g, what, src, spitch, dst, dpitch, width, rows);
      break;
    case 2:
      copy_rows_unit<2>(g, what, src, spitch, dst, dpitch, width, rows);
      break;
    default:
      copy_rows_unit<1>(g, what, src, spitch, dst, dpitch, width, rows);
  }
}

// Pad in one pass over dst: each dst row of `out_w` units holds zeros except the src row of
// `in_w` units at unit `start`.
template <class U, class IndexT>
__global__ void pad_kernel(const U* src, int64_t in_w, U* dst, int64_t out_w, int64_t start,
                           int64_t n) {
  MP_CUDA_FOR(i, n) {
    const auto j = static_cast<IndexT>(i);
    const auto w = static_cast<IndexT>(out_w);
    const IndexT r = j / w;
    const int64_t k = static_cast<int64_t>(j - r * w) - start;
    dst[i] = (k >= 0 && k < in_w) ? src[static_cast<int64_t>(r) * in_w + k] : U{};
  }
}

template <int kUnit>
void pad_unit(GpuState& g, const void* src, int64_t in_w, void* dst, int64_t out_w, int64_t start,
              int64_t rows) {
  using U = typename Raw<kUnit>::T;
  const int64_t n = rows * (out_w / kUnit);
  const auto* s = static_cast<const U*>(src);
  auto* d = static_cast<U*>(dst);
  if (fits_u32(n)) {
    pad_kernel<U, uint32_t><<<blocks_for(g, n), kThreads, 0, g.stream>>>(
        s, in_w / kUnit, d, out_w / kUnit, start / kUnit, n);
  } else {
    pad_kernel<U, int64_t><<<blocks_for(g, n), kThreads, 0, g.stream>>>(
        s, in_w / kUnit, d, out_w / kUnit, start / kUnit, n);
  }
  check_launch(g, "pad");
}

// ---------------------------------------------------------------------------------------------
// Shape checks shared with the CPU kernels' contracts.

void check_contiguous(const TensorView& v, const char* op) {
  MP_CHECK(v.is_contiguous()) << op << ": CUDA kernels take contiguous tensors";
}

// Element width of a movement op's operands: equal dtypes, 2, 4 or 8 bytes.
int64_t movement_width(const TensorView& x, const TensorView& out, const char* op) {
  MP_CHECK(x.dtype == out.dtype) << op << ": dtypes differ, " << dtype_name(x.dtype) << " vs "
                                 << dtype_name(out.dtype);
  check_contiguous(x, op);
  check_contiguous(out, op);
  const int64_t w = dtype_size(x.dtype);
  MP_CHECK(w == 2 || w == 4 || w == 8) << op << ": unsupported dtype " << dtype_name(x.dtype);
  return w;
}

// Every dim of a and b but `axis` must agree, and so must dtype; both must be contiguous.
void check_same_except(const TensorView& a, const TensorView& b, int64_t axis, const char* op) {
  movement_width(a, b, op);
  MP_CHECK(axis >= 0 && axis < a.shape.rank() && a.shape.rank() == b.shape.rank())
      << op << ": axis " << axis << " invalid for " << a.shape.to_string() << " and "
      << b.shape.to_string();
  for (int64_t i = 0; i < a.shape.rank(); ++i) {
    MP_CHECK(i == axis || a.shape[i] == b.shape[i])
        << op << ": " << a.shape.to_string() << " and " << b.shape.to_string()
        << " differ outside axis " << axis;
  }
}

// ---------------------------------------------------------------------------------------------
// Movement rows.

// A reshape is a byte copy between contiguous views of equal size (nothing when they alias).
void run_reshape(const Args& a) {
  const TensorView& x = a.in[0];
  const TensorView& y = a.out[0];
  MP_CHECK(x.numel() == y.numel() && x.bytes() == y.bytes())
      << "reshape: " << x.shape.to_string() << " into " << y.shape.to_string();
  check_contiguous(x, "reshape");
  check_contiguous(y, "reshape");
  copy_bytes(gpu_of(a), y.data, x.data, x.bytes(), "reshape: cudaMemcpyAsync");
}

void run_transpose(const Args& a) {
  const TensorView& x = a.in[0];
  const TensorView& out = a.out[0];
  const std::vector<int64_t>& perm = a.attrs->axes;
  check_rank(x.shape, "transpose");
  const int64_t width = movement_width(x, out, "transpose");
  const int64_t rank = x.shape.rank();
  MP_CHECK(static_cast<int64_t>(perm.size()) == rank && out.shape.rank() == rank)
      << "transpose: perm of size " << perm.size() << " for rank " << rank;
  const std::vector<int64_t> x_strides = x.shape.strides();
  std::array<int64_t, kCudaMaxRank> src_strides{};
  std::array<bool, kCudaMaxRank> seen{};
  for (int64_t i = 0; i < rank; ++i) {
    const int64_t p = perm[static_cast<size_t>(i)];
    MP_CHECK(p >= 0 && p < rank && !seen[static_cast<size_t>(p)])
        << "transpose: perm is not a permutation";
    seen[static_cast<size_t>(p)] = true;
    MP_CHECK(out.shape[i] == x.shape[p]) << "transpose: out " << out.shape.to_string()
                                         << " does not match x " << x.shape.to_string();
    src_strides[static_cast<size_t>(i)] = x_strides[static_cast<size_t>(p)];
  }
  gather(gpu_of(a), "transpose", x.data, out.data, width, out.shape.dims(),
         std::span<const int64_t>(src_strides.data(), static_cast<size_t>(rank)), out.numel());
}

void run_broadcast(const Args& a) {
  const TensorView& x = a.in[0];
  const TensorView& out = a.out[0];
  const std::vector<int64_t>& dims = a.attrs->axes;
  check_rank(out.shape, "broadcast");
  const int64_t width = movement_width(x, out, "broadcast");
  MP_CHECK(static_cast<int64_t>(dims.size()) == x.shape.rank())
      << "broadcast: " << dims.size() << " dims for x of rank " << x.shape.rank();
  const std::vector<int64_t> x_strides = x.shape.strides();
  std::array<int64_t, kCudaMaxRank> src_strides{};
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = dims[i];
    MP_CHECK(d >= 0 && d < out.shape.rank() && (i == 0 || d > dims[i - 1]))
        << "broadcast: dims must be ascending and below rank " << out.shape.rank();
    MP_CHECK(out.shape[d] == x.shape[static_cast<int64_t>(i)])
        << "broadcast: x dim " << i << " has " << x.shape[static_cast<int64_t>(i)] << ", out dim "
        << d << " has " << out.shape[d];
    src_strides[static_cast<size_t>(d)] = x_strides[i];
  }
  gather(gpu_of(a), "broadcast", x.data, out.data, width, out.shape.dims(),
         std::span<const int64_t>(src_strides.data(), static_cast<size_t>(out.shape.rank())),
         out.numel());
}

// View as [outer, len, inner]: bytes of one `inner` block.
int64_t inner_bytes(const TensorView& v, int64_t axis) {
  return v.shape.numel_range(axis + 1, v.shape.rank()) * dtype_size(v.dtype);
}

void run_slice(const Args& a) {
  const TensorView& x = a.in[0];
  const TensorView& out = a.out[0];
  const int64_t axis = a.attrs->axis;
  const int64_t start = a.attrs->start;
  check_same_except(x, out, axis, "slice");
  MP_CHECK(start >= 0 && start + out.shape[axis] <= x.shape[axis])
      << "slice: [" << start << ", " << start + out.shape[axis] << ") exceeds dim "
      << x.shape[axis];
  const int64_t ib = inner_bytes(x, axis);
  const int64_t outer = x.shape.numel_range(0, axis);
  copy_rows(gpu_of(a), "slice", static_cast<const char*>(x.data) + start * ib, x.shape[axis] * ib,
            out.data, out.shape[axis] * ib, out.shape[axis] * ib, outer);
}

void run_concat(const Args& a) {
  const TensorView& out = a.out[0];
  const int64_t axis = a.attrs->axis;
  GpuState& g = gpu_of(a);
  int64_t offset = 0;
  for (const TensorView& in : a.in) {
    check_same_except(out, in, axis, "concat");
    MP_CHECK(offset + in.shape[axis] <= out.shape[axis])
        << "concat: inputs are longer than out along axis " << axis;
    offset += in.shape[axis];
  }
  MP_CHECK(offset == out.shape[axis])
      << "concat: inputs cover " << offset << " of " << out.shape[axis] << " along axis " << axis;
  const int64_t ib = inner_bytes(out, axis);
  const int64_t outer = out.shape.numel_range(0, axis);
  offset = 0;
  for (const TensorView& in : a.in) {
    const int64_t width = in.shape[axis] * ib;
    copy_rows(g, "concat", in.data, width, static_cast<char*>(out.data) + offset * ib,
              out.shape[axis] * ib, width, outer);
    offset += in.shape[axis];
  }
}

void run_pad(const Args& a) {
  const TensorView& x = a.in[0];
  const TensorView& out = a.out[0];
  const int64_t axis = a.attrs->axis;
  const int64_t start = a.attrs->start;
  check_same_except(out, x, axis, "pad");
  MP_CHECK(start >= 0 && start + x.shape[axis] <= out.shape[axis])
      << "pad: [" << start << ", " << start + x.shape[axis] << ") exceeds dim " << out.shape[axis];
  const int64_t n = out.numel();
  if (n == 0) return;
  const int64_t ib = inner_bytes(out, axis);
  const int64_t rows = out.shape.numel_range(0, axis);
  const int64_t in_w = x.shape[axis] * ib;
  const int64_t out_w = out.shape[axis] * ib;
  const int64_t st = start * ib;
  GpuState& g = gpu_of(a);
  switch (unit_for({in_w, out_w, st}, {x.data, out.data})) {
    case 16:
      pad_unit<16>(g, x.data, in_w, out.data, out_w, st, rows);
      break;
    case 8:
      pad_unit<8>(g, x.data, in_w, out.data, out_w, st, rows);
      break;
    case 4:
      pad_unit<4>(g, x.data, in_w, out.data, out_w, st, rows);
      break;
    case 2:
      pad_unit<2>(g, x.data, in_w, out.data, out_w, st, rows);
      break;
    default:
      pad_unit<1>(g, x.data, in_w, out.data, out_w, st, rows);
  }
}

// dst[dst_offset + i] = src[src_offset + i] for every index i of the box (element offsets
// folded into the base pointers; `extent` the box, the strides those of the two tensors).
template <class U>
__global__ void copy_box_kernel(const U* src, Dims8 src_stride, U* dst, Dims8 dst_stride,
                                Dims8 extent, int64_t n) {
  MP_CUDA_FOR(i, n) {
    dst[offset_of(i, extent, dst_stride)] = src[offset_of(i, extent, src_stride)];
  }
}

template <int kUnit>
void copy_box_unit(GpuState& g, const char* from, const Dims8& ss, char* to, const Dims8& ds,
                   const Dims8& extent, int64_t n) {
  using U = typename Raw<kUnit>::T;
  copy_box_kernel<U><<<blocks_for(g, n), kThreads, 0, g.stream>>>(
      reinterpret_cast<const U*>(from), ss, reinterpret_cast<U*>(to), ds, extent, n);
  check_launch(g, "copy_box");
}

}  // namespace

void cuda_copy_box(GpuState& g, const TensorView& src, std::span<const int64_t> src_offset,
                   const TensorView& dst, std::span<const int64_t> dst_offset,
                   std::span<const int64_t> extent) {
  const int64_t rank = src.shape.rank();
  const int64_t width = dtype_size(src.dtype);
  int64_t n = 1;
  for (int64_t e : extent) n *= e;
  if (n == 0) return;
  if (rank == 0) {
    copy_bytes(g, dst.data, src.data, width, "copy_box");
    return;
  }
  // Rows (kernels/internal/box_runs.h, as on the CPU); one row copy when a single dim is left
  // outside the run.
  const BoxRuns br = box_runs(src.shape, src_offset, dst.shape, dst_offset, extent);
  const std::vector<int64_t>& ss = br.src_strides;
  const std::vector<int64_t>& ds = br.dst_strides;
  const int64_t inner = br.inner;
  const int64_t run = br.run;
  const char* from = static_cast<const char*>(src.data) + br.src_first * width;
  char* to = static_cast<char*>(dst.data) + br.dst_first * width;
  int64_t outer = 1;
  int64_t outer_dims = 0;
  for (int64_t d = 0; d < inner; ++d) {
    outer *= extent[static_cast<size_t>(d)];
    outer_dims += extent[static_cast<size_t>(d)] > 1 ? 1 : 0;
  }
  if (outer_dims <= 1) {
    // The rows step by the stride of the one dim (of extent > 1) outside the run.
    int64_t sp = 0;
    int64_t dp = 0;
    for (int64_t d = 0; d < inner; ++d) {
      if (extent[static_cast<size_t>(d)] > 1) {
        sp = ss[static_cast<size_t>(d)];
        dp = ds[static_cast<size_t>(d)];
      }
    }
    copy_rows(g, "copy_box", from, sp * width, to, dp * width, run * width, outer);
    return;
  }
  const Dims8 box = dims_of(extent);
  const Dims8 sst = dims_of(ss);
  const Dims8 dst_st = dims_of(ds);
  switch (width) {
    case 1:
      copy_box_unit<1>(g, from, sst, to, dst_st, box, n);
      break;
    case 2:
      copy_box_unit<2>(g, from, sst, to, dst_st, box, n);
      break;
    case 4:
      copy_box_unit<4>(g, from, sst, to, dst_st, box, n);
      break;
    default:
      copy_box_unit<8>(g, from, sst, to, dst_st, box, n);
  }
}

std::vector<CudaRow> cuda_layout_rows() {
  return {
      {K::kReshape, {run_reshape, nullptr, {0, 0, 0}, /*is_view=*/true}},
      {K::kTranspose, {run_transpose}},
      {K::kSlice, {run_slice}},
      {K::kConcat, {run_concat}},
      {K::kPad, {run_pad}},
      {K::kBroadcast, {run_broadcast}},
  };
}

}  // namespace meshpipe::kernels::internal

// CUDA embedding gather and its scatter-add gradient, for tables that may hold only a shard
// [id_offset, id_offset + V) of the vocabulary (the CUDA twin of kernels/embedding_cpu.cc).
//
// The gradient is deterministic and sums in exactly the CPU's order: the CPU adds dy rows into
// a zeroed table in increasing position order, so dtable[r, c] = (((0 + dy[p0, c]) + dy[p1, c])
// + ...) over the positions p0 < p1 < ... whose id maps to r. We reproduce that without float
// atomics and without an O(V * N) scan:
//   1. key[p] = local row of ids[p] (or V when it falls outside the shard), value[p] = p;
//   2. a stable radix sort (CUB) of (key, value) groups positions by row, each row's positions
//      staying in increasing order;
//   3. start[r] = first sorted entry with key >= r (binary search, r = 0..V);
//   4. one warp per (row, 256-column tile) sums dy over the row's positions in sorted order, in
//      f32 from 0, and writes every row (rows without ids get zeros).
// Work O(N log N + V * H + N * H); the sum order equals the CPU's, so f32 results are bitwise
// equal to the CPU's. The sort's key/value double buffers and the row starts live in
// args.workspace; CUB's own temporary storage (small: histograms and look-back tiles) comes
// from GpuState::workspace, the device's library scratch.
#include <climits>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>
#include <span>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

struct EmbeddingDims {
  int64_t vocab = 0;
  int64_t hidden = 0;
  int64_t positions = 0;
};

// Shapes as the CPU checks them: table [V, H], rows [ids..., H].
EmbeddingDims check_embedding(const TensorView& table, const TensorView& ids,
                              const TensorView& rows, const char* op) {
  MP_CHECK(table.shape.rank() == 2)
      << op << ": table must be [V, H], got " << table.shape.to_string();
  MP_CHECK(ids.is_contiguous()) << op << ": ids must be contiguous";
  const EmbeddingDims d{table.shape[0], table.shape[1], ids.numel()};
  const int64_t rank = ids.shape.rank();
  bool matches = rows.shape.rank() == rank + 1 && rows.shape[rank] == d.hidden;
  for (int64_t i = 0; matches && i < rank; ++i) matches = rows.shape[i] == ids.shape[i];
  MP_CHECK(matches) << op << ": rows are " << rows.shape.to_string() << " for ids "
                    << ids.shape.to_string() << " and hidden size " << d.hidden;
  return d;
}

// ---- forward --------------------------------------------------------------------------------

__global__ void embedding_kernel(DPtr table, const int32_t* ids, int64_t id_offset, int64_t vocab,
                                 int64_t hidden, int64_t n, DPtr out) {
  MP_CUDA_FOR(i, n) {
    const int64_t p = i / hidden;
    const int64_t c = i - p * hidden;
    const int64_t row = static_cast<int64_t>(ids[p]) - id_offset;
    st(out, i, row >= 0 && row < vocab ? ld(table, row * hidden + c) : 0.0f);
  }
}

void run_embedding(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const TensorView& table = a.in[0];
  const TensorView& ids = a.in[1];
  const TensorView& out = a.out[0];
  const EmbeddingDims d = check_embedding(table, ids, out, "embedding");
  const DPtr tp = dptr(table, "embedding");
  const DPtr op = dptr(out, "embedding");
  const int32_t* ip = ids_ptr(ids, "embedding");
  const int64_t n = out.numel();
  if (n == 0) return;
  embedding_kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(tp, ip, a.id_offset, d.vocab,
                                                                d.hidden, n, op);
  check_launch(g, "embedding");
}

// ---- gradient -------------------------------------------------------------------------------

constexpr int64_t kAlign = 256;
constexpr int kColsPerLane = 8;                   // columns one lane accumulates at a time
constexpr int64_t kTileCols = 32 * kColsPerLane;  // columns one warp owns per work item

int64_t align_up(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// args.workspace: keys[2][N] (u32), values[2][N] (i32), start[V + 1] (i32), each 256-aligned.
struct GradWorkspace {
  int64_t keys0 = 0, keys1 = 0, vals0 = 0, vals1 = 0, start = 0, total = 0;
};

GradWorkspace grad_workspace(int64_t positions, int64_t vocab) {
  GradWorkspace w;
  if (positions == 0 || vocab == 0) return w;
  const int64_t list = align_up(positions * 4);
  w.keys0 = 0;
  w.keys1 = w.keys0 + list;
  w.vals0 = w.keys1 + list;
  w.vals1 = w.vals0 + list;
  w.start = w.vals1 + list;
  w.total = w.start + align_up((vocab + 1) * 4);
  return w;
}

// Inputs (ids, dy); the table gradient has shape attrs.shape = [V, H].
int64_t embedding_grad_workspace_bytes(std::span<const Shape> inputs, const OpAttrs& attrs) {
  const int64_t vocab = attrs.shape.rank() == 2 ? attrs.shape[0] : 0;
  return grad_workspace(inputs[0].numel(), vocab).total;
}

__global__ void grad_keys_kernel(const int32_t* ids, int64_t id_offset, int64_t vocab, int64_t n,
                                 uint32_t* keys, int32_t* values) {
  MP_CUDA_FOR(p, n) {
    const int64_t row = static_cast<int64_t>(ids[p]) - id_offset;
    keys[p] = static_cast<uint32_t>(row >= 0 && row < vocab ? row : vocab);
    values[p] = static_cast<int32_t>(p);
  }
}

// start[r] = first index i of the sorted keys with keys[i] >= r, for r in [0, V].
__global__ void grad_starts_kernel(const uint32_t* keys, int64_t n, int64_t vocab, int32_t* start) {
  MP_CUDA_FOR(r, vocab + 1) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<int64_t>(keys[mid]) < r) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    start[r] = static_cast<int32_t>(lo);
  }
}

// One warp per (row, column tile): lane l owns columns tile * 256 + l + 32 * u (u < 8) and adds
// dy over the row's positions in increasing order, as the CPU does.
__global__ void grad_gather_kernel(const int32_t* positions, const int32_t* start, DPtr dy,
                                   int64_t vocab, int64_t hidden, int64_t tiles, DPtr dtable) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  for (int64_t item = first; item < vocab * tiles; item += warps) {
    const int64_t row = item / tiles;
    const int64_t c0 = (item - row * tiles) * kTileCols + lane;
    const int32_t begin = start[row];
    const int32_t end = start[row + 1];
    float acc[kColsPerLane];
#pragma unroll
    for (int u = 0; u < kColsPerLane; ++u) acc[u] = 0.0f;
    for (int32_t i = begin; i < end; ++i) {
      const int64_t src = static_cast<int64_t>(positions[i]) * hidden;
#pragma unroll
      for (int u = 0; u < kColsPerLane; ++u) {
        const int64_t c = c0 + 32 * u;
        if (c < hidden) acc[u] += ld(dy, src + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kColsPerLane; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c < hidden) st(dtable, row * hidden + c, acc[u]);
    }
  }
}

void run_embedding_grad(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const TensorView& ids = a.in[0];
  const TensorView& dy = a.in[1];
  const TensorView& dtable = a.out[0];
  const EmbeddingDims d = check_embedding(dtable, ids, dy, "embedding_grad");
  const DPtr gp = dptr(dy, "embedding_grad");
  const DPtr tp = dptr(dtable, "embedding_grad");
  const int32_t* ip = ids_ptr(ids, "embedding_grad");
  if (dtable.numel() == 0) return;
  if (d.positions == 0) {  // nothing scatters: the gradient is all zeros
    check_cuda(g, cudaMemsetAsync(dtable.data, 0, static_cast<size_t>(dtable.bytes()), g.stream),
               "embedding_grad: cudaMemsetAsync");
    return;
  }
  MP_CHECK(d.positions <= INT32_MAX && d.vocab < INT32_MAX)
      << "embedding_grad: at most 2^31 - 1 positions and vocabulary rows";
  const GradWorkspace w = grad_workspace(d.positions, d.vocab);
  MP_CHECK(a.workspace.data != nullptr && a.workspace.bytes() >= w.total)
      << "embedding_grad: workspace of " << a.workspace.bytes() << " bytes, needs " << w.total;
  auto* base = static_cast<char*>(a.workspace.data);
  auto* keys0 = reinterpret_cast<uint32_t*>(base + w.keys0);
  auto* keys1 = reinterpret_cast<uint32_t*>(base + w.keys1);
  auto* vals0 = reinterpret_cast<int32_t*>(base + w.vals0);
  auto* vals1 = reinterpret_cast<int32_t*>(base + w.vals1);
  auto* start = reinterpret_cast<int32_t*>(base + w.start);

  grad_keys_kernel<<<blocks_for(g, d.positions), kThreads, 0, g.stream>>>(
      ip, a.id_offset, d.vocab, d.positions, keys0, vals0);
  check_launch(g, "embedding_grad");

  // Keys are in [0, V]: sort only the bits that can be set.
  int end_bit = 1;
  while (end_bit < 32 && (int64_t{1} << end_bit) <= d.vocab) ++end_bit;
  const int n = static_cast<int>(d.positions);
  size_t temp_bytes = 0;
  {
    cub::DoubleBuffer<uint32_t> keys(keys0, keys1);
    cub::DoubleBuffer<int32_t> vals(vals0, vals1);
    if (!check_cuda(g,
                    cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, vals, n, 0, end_bit,
                                                    g.stream),
                    "embedding_grad: cub::DeviceRadixSort::SortPairs (size query)")) {
      return;
    }
  }
  if (static_cast<int64_t>(temp_bytes) > g.workspace_bytes) {
    g.fail("embedding_grad: the radix sort needs " + std::to_string(temp_bytes) +
           " bytes of library workspace, the device has " + std::to_string(g.workspace_bytes));
    return;
  }
  cub::DoubleBuffer<uint32_t> keys(keys0, keys1);
  cub::DoubleBuffer<int32_t> vals(vals0, vals1);
  if (!check_cuda(g,
                  cub::DeviceRadixSort::SortPairs(g.workspace, temp_bytes, keys, vals, n, 0,
                                                  end_bit, g.stream),
                  "embedding_grad: cub::DeviceRadixSort::SortPairs")) {
    return;
  }
  check_launch(g, "embedding_grad");

  grad_starts_kernel<<<blocks_for(g, d.vocab + 1), kThreads, 0, g.stream>>>(
      keys.Current(), d.positions, d.vocab, start);
  check_launch(g, "embedding_grad");

  const int64_t tiles = (d.hidden + kTileCols - 1) / kTileCols;
  grad_gather_kernel<<<blocks_for(g, d.vocab * tiles * 32), kThreads, 0, g.stream>>>(
      vals.Current(), start, gp, d.vocab, d.hidden, tiles, tp);
  check_launch(g, "embedding_grad");
}

}  // namespace

std::vector<CudaRow> cuda_embedding_rows() {
  return {
      {OpKind::kEmbedding, OpKernel{run_embedding}},
      {OpKind::kEmbeddingGrad, OpKernel{run_embedding_grad, embedding_grad_workspace_bytes}},
  };
}

}  // namespace meshpipe::kernels::internal

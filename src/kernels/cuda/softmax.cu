// CUDA softmax and log-softmax over any axis, and their gradients: the CUDA twins of
// kernels/softmax_cpu.cc. A row is the run of elements along the axis (stride = product of the
// trailing dims). Rows along the last axis get a warp each (up to 1024 elements) or a block;
// rows along an inner axis whose neighbours sit side by side in memory get a thread each, so a
// warp's loads stay coalesced. Every row is stabilised by its max, sums are f32 with Kahan
// compensation and a fixed reduction tree (deterministic), storage may be f32, f16 or bf16.
#include <cstdint>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"
#include "kernels/internal/cuda_rowwise.cuh"

namespace meshpipe::kernels::internal {
namespace {

// x viewed as [outer, len, inner] around the axis: row r starts at
// (r / inner) * len * inner + r % inner and steps by inner (as on the CPU).
struct AxisRows {
  int64_t rows = 0;
  int64_t len = 0;
  int64_t inner = 1;

  __host__ __device__ int64_t base(int64_t r) const {
    return (r / inner) * len * inner + r % inner;
  }
};

AxisRows axis_rows(const Shape& shape, int64_t axis, const char* op) {
  const int64_t a = normalize_axis(axis, shape.rank());
  MP_CHECK(a >= 0) << op << ": axis " << axis << " out of range for " << shape.to_string();
  AxisRows g;
  g.len = shape[a];
  g.inner = shape.numel_range(a + 1, shape.rank());
  g.rows = shape.numel_range(0, a) * g.inner;
  return g;
}

// Strided rows (inner > 1) take a thread each when that keeps loads coalesced and there are
// enough rows (or the rows are too short) for a warp each to pay; otherwise a warp or block.
RowMap softmax_row_map(const AxisRows& g) {
  if (g.inner >= 8 && (g.len <= 64 || g.rows >= 4096)) return RowMap::kThread;
  return contiguous_row_map(g.len);
}

// ---- kernels (G: WarpRows, BlockRows or ThreadRows) ----

// valid: with causal masking, keys j >= valid of row r are masked (y = 0); else len.
template <class G>
__global__ void softmax_kernel(DPtr x, DPtr y, AxisRows a, bool causal, int64_t queries,
                               int64_t row_offset) {
  __shared__ float scratch[32];
  for (int64_t r = G::first(); r < a.rows; r += G::step()) {
    const int64_t b = a.base(r);
    int64_t valid = a.len;
    if (causal) {
      const int64_t limit = r % queries + row_offset + 1;
      valid = limit < 0 ? 0 : (limit < a.len ? limit : a.len);
    }
    float m = -INFINITY;
    for (int64_t j = G::lane(); j < valid; j += G::size()) m = fmaxf(m, ld(x, b + j * a.inner));
    m = G::max(m, scratch);
    Kahan s;
    for (int64_t j = G::lane(); j < valid; j += G::size()) s.add(expf(ld(x, b + j * a.inner) - m));
    const float sum = G::sum(s.value(), scratch);
    // As on the CPU: an empty (fully masked) row gives zeros; NaN propagates.
    const float scale = sum > 0.f ? 1.f / sum : 0.f;
    for (int64_t j = G::lane(); j < a.len; j += G::size()) {
      const int64_t i = b + j * a.inner;
      st(y, i, j < valid ? expf(ld(x, i) - m) * scale : 0.f);
    }
  }
}

template <class G>
__global__ void log_softmax_kernel(DPtr x, DPtr y, AxisRows a) {
  __shared__ float scratch[32];
  for (int64_t r = G::first(); r < a.rows; r += G::step()) {
    const int64_t b = a.base(r);
    float m = -INFINITY;
    for (int64_t j = G::lane(); j < a.len; j += G::size()) m = fmaxf(m, ld(x, b + j * a.inner));
    m = G::max(m, scratch);
    Kahan s;
    for (int64_t j = G::lane(); j < a.len; j += G::size()) s.add(expf(ld(x, b + j * a.inner) - m));
    const float lse = m + logf(G::sum(s.value(), scratch));
    for (int64_t j = G::lane(); j < a.len; j += G::size()) {
      const int64_t i = b + j * a.inner;
      st(y, i, ld(x, i) - lse);
    }
  }
}

// dx = y * (dy - sum(dy * y)).
template <class G>
__global__ void softmax_grad_kernel(DPtr y, DPtr dy, DPtr dx, AxisRows a) {
  __shared__ float scratch[32];
  for (int64_t r = G::first(); r < a.rows; r += G::step()) {
    const int64_t b = a.base(r);
    Kahan d;
    for (int64_t j = G::lane(); j < a.len; j += G::size()) {
      const int64_t i = b + j * a.inner;
      d.add(ld(y, i) * ld(dy, i));
    }
    const float s = G::sum(d.value(), scratch);
    for (int64_t j = G::lane(); j < a.len; j += G::size()) {
      const int64_t i = b + j * a.inner;
      st(dx, i, ld(y, i) * (ld(dy, i) - s));
    }
  }
}

// dx = dy - exp(y) * sum(dy).
template <class G>
__global__ void log_softmax_grad_kernel(DPtr y, DPtr dy, DPtr dx, AxisRows a) {
  __shared__ float scratch[32];
  for (int64_t r = G::first(); r < a.rows; r += G::step()) {
    const int64_t b = a.base(r);
    Kahan d;
    for (int64_t j = G::lane(); j < a.len; j += G::size()) d.add(ld(dy, b + j * a.inner));
    const float s = G::sum(d.value(), scratch);
    for (int64_t j = G::lane(); j < a.len; j += G::size()) {
      const int64_t i = b + j * a.inner;
      st(dx, i, ld(dy, i) - expf(ld(y, i)) * s);
    }
  }
}

// ---- host side ----

void check_same_shape(const TensorView& a, const TensorView& b, const char* op) {
  MP_CHECK(a.shape == b.shape) << op << ": shapes differ, " << a.shape.to_string() << " vs "
                               << b.shape.to_string();
}

void run_softmax(const KernelArgs& args) {
  constexpr const char* kOp = "softmax";
  GpuState& g = gpu_of(args);
  const TensorView& xv = args.in[0];
  const TensorView& yv = args.out[0];
  check_same_shape(xv, yv, kOp);
  const DPtr x = dptr(xv, kOp);
  const DPtr y = dptr(yv, kOp);
  const AxisRows a = axis_rows(xv.shape, args.attrs->axis, kOp);
  const bool causal = args.attrs->causal;
  const int64_t rank = xv.shape.rank();
  int64_t queries = 1;
  if (causal) {
    MP_CHECK(rank >= 2 && normalize_axis(args.attrs->axis, rank) == rank - 1)
        << "softmax: causal masking needs the last axis of a rank >= 2 tensor";
    queries = xv.shape[rank - 2];
  }
  if (xv.numel() == 0) return;
  const int64_t offset = args.row_offset;
  const RowLaunch l = row_launch(g, a.rows, softmax_row_map(a));
  dispatch_rows(l, [&](auto group) {
    softmax_kernel<decltype(group)>
        <<<l.blocks, l.threads, 0, g.stream>>>(x, y, a, causal, queries, offset);
  });
  check_launch(g, kOp);
}

void run_log_softmax(const KernelArgs& args) {
  constexpr const char* kOp = "log_softmax";
  GpuState& g = gpu_of(args);
  const TensorView& xv = args.in[0];
  const TensorView& yv = args.out[0];
  check_same_shape(xv, yv, kOp);
  const DPtr x = dptr(xv, kOp);
  const DPtr y = dptr(yv, kOp);
  const AxisRows a = axis_rows(xv.shape, args.attrs->axis, kOp);
  if (xv.numel() == 0) return;
  const RowLaunch l = row_launch(g, a.rows, softmax_row_map(a));
  dispatch_rows(l, [&](auto group) {
    log_softmax_kernel<decltype(group)><<<l.blocks, l.threads, 0, g.stream>>>(x, y, a);
  });
  check_launch(g, kOp);
}

template <bool kLog>
void run_softmax_grad(const KernelArgs& args) {
  const char* op = kLog ? "log_softmax_grad" : "softmax_grad";
  GpuState& g = gpu_of(args);
  const TensorView& yv = args.in[0];
  const TensorView& dyv = args.in[1];
  const TensorView& dxv = args.out[0];
  check_same_shape(yv, dyv, op);
  check_same_shape(yv, dxv, op);
  const DPtr y = dptr(yv, op);
  const DPtr dy = dptr(dyv, op);
  const DPtr dx = dptr(dxv, op);
  const AxisRows a = axis_rows(yv.shape, args.attrs->axis, op);
  if (yv.numel() == 0) return;
  const RowLaunch l = row_launch(g, a.rows, softmax_row_map(a));
  dispatch_rows(l, [&](auto group) {
    using G = decltype(group);
    if constexpr (kLog) {
      log_softmax_grad_kernel<G><<<l.blocks, l.threads, 0, g.stream>>>(y, dy, dx, a);
    } else {
      softmax_grad_kernel<G><<<l.blocks, l.threads, 0, g.stream>>>(y, dy, dx, a);
    }
  });
  check_launch(g, op);
}

}  // namespace

std::vector<CudaRow> cuda_softmax_rows() {
  using K = OpKind;
  return {
      {K::kSoftmax, {run_softmax}},
      {K::kLogSoftmax, {run_log_softmax}},
      {K::kSoftmaxGrad, {run_softmax_grad<false>}},
      {K::kLogSoftmaxGrad, {run_softmax_grad<true>}},
  };
}

}  // namespace meshpipe::kernels::internal

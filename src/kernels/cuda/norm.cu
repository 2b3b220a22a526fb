// CUDA layer norm (rows of the last dim) and training-mode batch norm (per channel of NCHW),
// with their gradients and the five pieces of a synchronised batch norm: the CUDA twins of
// kernels/norm_cpu.cc, with the same formulas (biased variance, eps inside the square root,
// mean and rstd = 1 / sqrt(var + eps) as outputs, y = x * scale + shift for batch norm).
//
// Statistics are f32 with Kahan compensation and two passes (mean, then centred squares), as
// the CPU does in double. Sums over many rows (layer-norm dgamma/dbeta, batch-norm channel
// sums) are deterministic without atomics: a first kernel writes per-block partial sums into
// args.workspace in a fixed partition, a second reduces each column's or channel's partials in
// a fixed order. Batch norm reads each (n, c) plane as a contiguous segment when planes are at
// least 32 elements, and otherwise reduces x as a [N, C * plane] matrix column by column.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"
#include "kernels/internal/cuda_rowwise.cuh"

namespace meshpipe::kernels::internal {
namespace {

// ---- column partial sums: a [rows, cols] matrix summed over rows, in chunks ----

constexpr int kColTile = 32;                    // columns per block (one per lane)
constexpr int kColWarps = kThreads / kColTile;  // rows walked in parallel by a block
constexpr int64_t kColRowsPerChunk = 64;
constexpr int64_t kColMaxChunks = 128;
constexpr int64_t kColMaxPartials = int64_t{1} << 22;  // floats per quantity, when cols allow

// Row chunks of the column partial sums: a function of the shapes only (the workspace size
// must not depend on the device).
int64_t column_chunks(int64_t rows, int64_t cols) {
  int64_t c = (rows + kColRowsPerChunk - 1) / kColRowsPerChunk;
  if (c > kColMaxChunks) c = kColMaxChunks;
  if (cols > 0 && c > kColMaxPartials / cols) c = kColMaxPartials / cols;
  return c < 1 ? 1 : c;
}

constexpr int64_t round_up64(int64_t n) { return (n + 63) / 64 * 64; }

// part[q * chunks * cols + chunk * cols + col] = sum over the chunk's rows r of f(r, col)[q].
// Lanes take adjacent columns, warps interleave rows; the 8 warps' sums meet in a fixed order.
template <int Q, class F>
__global__ void column_partials_kernel(F f, int64_t rows, int64_t cols, int64_t chunks,
                                       float* part) {
  __shared__ float sh[Q][kColWarps][kColTile];
  const int tx = static_cast<int>(threadIdx.x % kColTile);
  const int ty = static_cast<int>(threadIdx.x / kColTile);
  const int64_t tiles = (cols + kColTile - 1) / kColTile;
  for (int64_t w = blockIdx.x; w < tiles * chunks; w += gridDim.x) {
    const int64_t chunk = w / tiles;
    const int64_t col = (w % tiles) * kColTile + tx;
    const int64_t r0 = rows * chunk / chunks;
    const int64_t r1 = rows * (chunk + 1) / chunks;
    Kahan acc[Q];
    if (col < cols) {
      for (int64_t r = r0 + ty; r < r1; r += kColWarps) {
        float v[Q];
        f(r, col, v);
        for (int q = 0; q < Q; ++q) acc[q].add(v[q]);
      }
    }
    for (int q = 0; q < Q; ++q) sh[q][ty][tx] = acc[q].value();
    __syncthreads();
    if (ty == 0 && col < cols) {
      for (int q = 0; q < Q; ++q) {
        float t = 0.f;
        for (int k = 0; k < kColWarps; ++k) t += sh[q][k][tx];
        part[(q * chunks + chunk) * cols + col] = t;
      }
    }
    __syncthreads();
  }
}

template <int Q, class F>
void launch_column_partials(GpuState& g, const F& f, int64_t rows, int64_t cols, int64_t chunks,
                            float* part, const char* op) {
  if (cols == 0) return;
  const int64_t work = (cols + kColTile - 1) / kColTile * chunks;
  const int64_t cap = static_cast<int64_t>(g.multiprocessors > 0 ? g.multiprocessors : 108) * 16;
  const auto blocks = static_cast<unsigned>(work < cap ? work : cap);
  column_partials_kernel<Q, F><<<blocks, kThreads, 0, g.stream>>>(f, rows, cols, chunks, part);
  check_launch(g, op);
}

// ---- per-column / per-channel totals of the partials ----

constexpr int kFinalizeThreads = 128;

// For channel c (of `channels`), the `m` partials of quantity q sit at
// part[q * qstride + c * cs + (k / kp) * ks + k % kp], k in [0, m); their sum (Kahan per
// thread, then a fixed tree) goes to e(c, totals).
template <int Q, class E>
__global__ void finalize_kernel(const float* part, int64_t qstride, int64_t channels, int64_t m,
                                int64_t cs, int64_t kp, int64_t ks, E e) {
  __shared__ float scratch[32];
  for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
    float tot[Q];
    for (int q = 0; q < Q; ++q) {
      Kahan acc;
      const float* p = part + q * qstride + c * cs;
      for (int64_t k = threadIdx.x; k < m; k += blockDim.x) acc.add(p[(k / kp) * ks + k % kp]);
      tot[q] = block_sum(acc.value(), scratch);
    }
    if (threadIdx.x == 0) e(c, tot);
  }
}

// Where finalize finds the partials of one channel.
struct PartialLayout {
  int64_t qstride = 0;  // floats per quantity
  int64_t m = 0;        // partials per channel
  int64_t cs = 0;
  int64_t kp = 1;
  int64_t ks = 0;
};

template <int Q, class E>
void launch_finalize(GpuState& g, const float* part, const PartialLayout& p, int64_t channels,
                     const E& e, const char* op) {
  if (channels == 0) return;
  const int64_t cap = static_cast<int64_t>(g.multiprocessors > 0 ? g.multiprocessors : 108) * 16;
  const auto blocks = static_cast<unsigned>(channels < cap ? channels : cap);
  finalize_kernel<Q, E><<<blocks, kFinalizeThreads, 0, g.stream>>>(part, p.qstride, channels, p.m,
                                                                   p.cs, p.kp, p.ks, e);
  check_launch(g, op);
}

// ---- epilogues of finalize ----

struct StoreTotal {
  DPtr out;
  __device__ void operator()(int64_t c, const float* t) const { st(out, c, t[0]); }
};

// dgamma = sum dy * xhat, dbeta = sum dy; with `mg` set also the per-channel means the input
// gradient needs: mg = dbeta / count, mgx = dgamma / count (double division, as the CPU).
struct StoreGradSums {
  DPtr dgamma;
  DPtr dbeta;
  float* mg = nullptr;
  float* mgx = nullptr;
  double count = 0.0;
  __device__ void operator()(int64_t c, const float* t) const {
    st(dgamma, c, t[0]);
    st(dbeta, c, t[1]);
    if (mg != nullptr) {
      mg[c] = static_cast<float>(static_cast<double>(t[1]) / count);
      mgx[c] = static_cast<float>(static_cast<double>(t[0]) / count);
    }
  }
};

// mean = float(sum / count), kept in f32 for the next passes and stored to the output.
struct StoreMean {
  float* mean_f32;
  DPtr mean;
  double count;
  __device__ void operator()(int64_t c, const float* t) const {
    const auto m = static_cast<float>(static_cast<double>(t[0]) / count);
    mean_f32[c] = m;
    st(mean, c, m);
  }
};

__device__ __forceinline__ float rstd_from_sq(float sq, double count, float eps) {
  return static_cast<float>(1.0 / sqrt(static_cast<double>(sq) / count + static_cast<double>(eps)));
}

// rstd = 1 / sqrt(sq / count + eps), kept in f32 and stored to the output.
struct StoreRstd {
  float* rstd_f32;
  DPtr rstd;
  double count;
  float eps;
  __device__ void operator()(int64_t c, const float* t) const {
    const float rs = rstd_from_sq(t[0], count, eps);
    rstd_f32[c] = rs;
    st(rstd, c, rs);
  }
};

// ---- layer norm ----

// y = (x - mean) * rstd * gamma + beta per row of d; mean and rstd per row.
template <class G>
__global__ void layer_norm_kernel(DPtr x, DPtr gamma, DPtr beta, DPtr y, DPtr mean, DPtr rstd,
                                  int64_t rows, int64_t d, float eps) {
  __shared__ float scratch[32];
  const auto n = static_cast<float>(d);
  for (int64_t r = G::first(); r < rows; r += G::step()) {
    const int64_t b = r * d;
    Kahan s;
    for (int64_t j = G::lane(); j < d; j += G::size()) s.add(ld(x, b + j));
    const float m = G::sum(s.value(), scratch) / n;
    Kahan q;
    for (int64_t j = G::lane(); j < d; j += G::size()) {
      const float c = ld(x, b + j) - m;
      q.add(c * c);
    }
    const float rs = 1.f / sqrtf(G::sum(q.value(), scratch) / n + eps);
    if (G::leader()) {
      st(mean, r, m);
      st(rstd, r, rs);
    }
    for (int64_t j = G::lane(); j < d; j += G::size()) {
      st(y, b + j, (ld(x, b + j) - m) * rs * ld(gamma, j) + ld(beta, j));
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, per row.
template <class G>
__global__ void layer_norm_dx_kernel(DPtr dy, DPtr x, DPtr mean, DPtr rstd, DPtr gamma, DPtr dx,
                                     int64_t rows, int64_t d) {
  __shared__ float scratch[32];
  const auto n = static_cast<float>(d);
  for (int64_t r = G::first(); r < rows; r += G::step()) {
    const int64_t b = r * d;
    const float m = ld(mean, r);
    const float rs = ld(rstd, r);
    Kahan sg;
    Kahan sgx;
    for (int64_t j = G::lane(); j < d; j += G::size()) {
      const float gj = ld(dy, b + j) * ld(gamma, j);
      sg.add(gj);
      sgx.add(gj * ((ld(x, b + j) - m) * rs));
    }
    const float mean_g = G::sum(sg.value(), scratch) / n;
    const float mean_gx = G::sum(sgx.value(), scratch) / n;
    for (int64_t j = G::lane(); j < d; j += G::size()) {
      const float xhat = (ld(x, b + j) - m) * rs;
      st(dx, b + j, rs * (ld(dy, b + j) * ld(gamma, j) - mean_g - xhat * mean_gx));
    }
  }
}

// Per element (r, col) of the layer-norm gradient: (dy * xhat, dy).
struct LayerNormParamTerms {
  DPtr dy;
  DPtr x;
  DPtr mean;
  DPtr rstd;
  int64_t d;
  __device__ void operator()(int64_t r, int64_t col, float* v) const {
    const int64_t i = r * d + col;
    const float g = ld(dy, i);
    v[0] = g * ((ld(x, i) - ld(mean, r)) * ld(rstd, r));
    v[1] = g;
  }
};

struct LayerNormGeometry {
  int64_t rows = 0;
  int64_t d = 0;
};

LayerNormGeometry layer_norm_geometry(const Shape& s, const char* op) {
  MP_CHECK(s.rank() >= 1) << op << ": x must have rank >= 1";
  return LayerNormGeometry{s.numel_range(0, s.rank() - 1), s[s.rank() - 1]};
}

void check_numel(const TensorView& v, int64_t n, const char* op, const char* name) {
  MP_CHECK(v.numel() == n) << op << ": " << name << " has " << v.numel() << " elements, expected "
                           << n;
}

void check_like(const TensorView& v, const TensorView& x, const char* op, const char* name) {
  MP_CHECK(v.shape == x.shape) << op << ": " << name << " is " << v.shape.to_string()
                               << ", expected " << x.shape.to_string();
}

void run_layer_norm(const KernelArgs& a) {
  constexpr const char* kOp = "layer_norm";
  GpuState& g = gpu_of(a);
  const LayerNormGeometry geo = layer_norm_geometry(a.in[0].shape, kOp);
  check_like(a.out[0], a.in[0], kOp, "y");
  check_numel(a.in[1], geo.d, kOp, "gamma");
  check_numel(a.in[2], geo.d, kOp, "beta");
  check_numel(a.out[1], geo.rows, kOp, "mean");
  check_numel(a.out[2], geo.rows, kOp, "rstd");
  const DPtr x = dptr(a.in[0], kOp), gamma = dptr(a.in[1], kOp), beta = dptr(a.in[2], kOp);
  const DPtr y = dptr(a.out[0], kOp), mean = dptr(a.out[1], kOp), rstd = dptr(a.out[2], kOp);
  if (geo.rows == 0) return;
  const float eps = a.attrs->eps;
  const RowLaunch l = row_launch(g, geo.rows, contiguous_row_map(geo.d));
  dispatch_rows(l, [&](auto group) {
    layer_norm_kernel<decltype(group)>
        <<<l.blocks, l.threads, 0, g.stream>>>(x, gamma, beta, y, mean, rstd, geo.rows, geo.d, eps);
  });
  check_launch(g, kOp);
}

int64_t layer_norm_grad_workspace(std::span<const Shape> in, const OpAttrs& /*attrs*/) {
  const LayerNormGeometry geo = layer_norm_geometry(in[1], "layer_norm_grad");
  return 4 * 2 * column_chunks(geo.rows, geo.d) * geo.d;
}

void run_layer_norm_grad(const KernelArgs& a) {
  constexpr const char* kOp = "layer_norm_grad";
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[1];
  const LayerNormGeometry geo = layer_norm_geometry(xv.shape, kOp);
  check_like(a.in[0], xv, kOp, "dy");
  check_like(a.out[0], xv, kOp, "dx");
  check_numel(a.in[2], geo.rows, kOp, "mean");
  check_numel(a.in[3], geo.rows, kOp, "rstd");
  check_numel(a.in[4], geo.d, kOp, "gamma");
  check_numel(a.out[1], geo.d, kOp, "dgamma");
  check_numel(a.out[2], geo.d, kOp, "dbeta");
  const DPtr dy = dptr(a.in[0], kOp), x = dptr(xv, kOp), mean = dptr(a.in[2], kOp);
  const DPtr rstd = dptr(a.in[3], kOp), gamma = dptr(a.in[4], kOp);
  const DPtr dx = dptr(a.out[0], kOp), dgamma = dptr(a.out[1], kOp), dbeta = dptr(a.out[2], kOp);
  if (geo.d == 0) return;
  // Parameter gradients first (stream order), as the CPU does.
  const int64_t chunks = column_chunks(geo.rows, geo.d);
  float* part = workspace_floats(a, 2 * chunks * geo.d, kOp);
  launch_column_partials<2>(g, LayerNormParamTerms{dy, x, mean, rstd, geo.d}, geo.rows, geo.d,
                            chunks, part, kOp);
  const PartialLayout layout{chunks * geo.d, chunks, 1, 1, geo.d};
  launch_finalize<2>(g, part, layout, geo.d, StoreGradSums{dgamma, dbeta}, kOp);
  if (geo.rows == 0) return;
  const RowLaunch l = row_launch(g, geo.rows, contiguous_row_map(geo.d));
  dispatch_rows(l, [&](auto group) {
    layer_norm_dx_kernel<decltype(group)>
        <<<l.blocks, l.threads, 0, g.stream>>>(dy, x, mean, rstd, gamma, dx, geo.rows, geo.d);
  });
  check_launch(g, kOp);
}

// ---- batch norm: per-channel sums over n and the plane ----

// Planes at least this long are reduced as contiguous segments.
constexpr int64_t kSegmentMinPlane = 32;

// x as [n, c, plane]; the partial sums of each quantity are either per segment (n, c), stored
// [c][n], or per (row chunk, column) of the [n, c * plane] matrix, stored [chunk][c][plane].
struct BnPlan {
  int64_t n = 0;
  int64_t c = 0;
  int64_t plane = 0;
  bool segment = false;
  int64_t chunks = 1;

  int64_t count() const { return n * plane; }
  int64_t partials() const { return segment ? n * c : chunks * c * plane; }
  PartialLayout layout() const {
    if (segment) return PartialLayout{partials(), n, n, n > 0 ? n : 1, 0};
    return PartialLayout{partials(), chunks * plane, plane, plane > 0 ? plane : 1, c * plane};
  }
};

BnPlan bn_plan(const Shape& s, const char* op) {
  MP_CHECK(s.rank() >= 2) << op << ": x must be [N, C, ...], got " << s.to_string();
  BnPlan p;
  p.n = s[0];
  p.c = s[1];
  p.plane = s.numel_range(2, s.rank());
  p.segment = p.plane >= kSegmentMinPlane;
  p.chunks = p.segment ? 1 : column_chunks(p.n, p.c * p.plane);
  return p;
}

// Workspace floats: Q quantities of partials, then `vectors` per-channel f32 vectors.
int64_t bn_workspace_floats(const BnPlan& p, int q, int vectors) {
  return round_up64(q * p.partials()) + vectors * round_up64(p.c);
}

// Per element (flat index i, channel c) terms of the channel sums.
struct SumTerm {
  DPtr x;
  __device__ void operator()(int64_t i, int64_t /*c*/, float* v) const { v[0] = ld(x, i); }
};

struct CenteredSquareTerm {
  DPtr x;
  DPtr mean;
  __device__ void operator()(int64_t i, int64_t c, float* v) const {
    const float d = ld(x, i) - ld(mean, c);
    v[0] = d * d;
  }
};

// (dy * xhat, dy) with xhat = (x - mean) * rstd.
struct GradTerms {
  DPtr dy;
  DPtr x;
  DPtr mean;
  DPtr rstd;
  __device__ void operator()(int64_t i, int64_t c, float* v) const {
    const float g = ld(dy, i);
    v[0] = g * ((ld(x, i) - ld(mean, c)) * ld(rstd, c));
    v[1] = g;
  }
};

// A channel term seen by the column kernel: column col of [n, c * plane] is channel col / plane.
template <class F>
struct ChannelColumns {
  F f;
  int64_t cols;
  int64_t plane;
  __device__ void operator()(int64_t r, int64_t col, float* v) const {
    f(r * cols + col, col / plane, v);
  }
};

// part[q * n * c + ch * n + nn] = sum over segment (nn, ch) of f.
template <class G, int Q, class F>
__global__ void segment_partials_kernel(F f, int64_t n, int64_t c, int64_t plane, float* part) {
  __shared__ float scratch[32];
  for (int64_t s = G::first(); s < n * c; s += G::step()) {
    const int64_t nn = s / c;
    const int64_t ch = s % c;
    const int64_t b = s * plane;
    Kahan acc[Q];
    for (int64_t i = G::lane(); i < plane; i += G::size()) {
      float v[Q];
      f(b + i, ch, v);
      for (int q = 0; q < Q; ++q) acc[q].add(v[q]);
    }
    for (int q = 0; q < Q; ++q) {
      const float t = G::sum(acc[q].value(), scratch);
      if (G::leader()) part[q * n * c + ch * n + nn] = t;
    }
  }
}

template <int Q, class F>
void bn_partials(GpuState& g, const BnPlan& p, const F& f, float* part, const char* op) {
  if (p.segment) {
    if (p.n * p.c == 0) return;
    const RowLaunch l = row_launch(g, p.n * p.c, contiguous_row_map(p.plane));
    dispatch_rows(l, [&](auto group) {
      segment_partials_kernel<decltype(group), Q, F>
          <<<l.blocks, l.threads, 0, g.stream>>>(f, p.n, p.c, p.plane, part);
    });
    check_launch(g, op);
  } else {
    const int64_t cols = p.c * p.plane;
    launch_column_partials<Q>(g, ChannelColumns<F>{f, cols, p.plane}, p.n, cols, p.chunks, part,
                              op);
  }
}

// y = x * scale + shift, scale = rstd * gamma, shift = beta - mean * scale (per channel).
__global__ void bn_apply_kernel(DPtr x, DPtr mean, DPtr rstd, DPtr gamma, DPtr beta, DPtr y,
                                int64_t numel, int64_t c, int64_t plane) {
  MP_CUDA_FOR(i, numel) {
    const int64_t ch = (i / plane) % c;
    const float scale = ld(rstd, ch) * ld(gamma, ch);
    const float shift = ld(beta, ch) - ld(mean, ch) * scale;
    st(y, i, ld(x, i) * scale + shift);
  }
}

// dx = gamma * rstd * (dy - mg - xhat * mgx), mg = dbeta / count, mgx = dgamma / count.
__global__ void bn_grad_apply_kernel(DPtr dy, DPtr x, DPtr mean, DPtr rstd, DPtr gamma,
                                     const float* mg, const float* mgx, DPtr dx, int64_t numel,
                                     int64_t c, int64_t plane) {
  MP_CUDA_FOR(i, numel) {
    const int64_t ch = (i / plane) % c;
    const float rs = ld(rstd, ch);
    const float scale = ld(gamma, ch) * rs;
    const float xhat = (ld(x, i) - ld(mean, ch)) * rs;
    st(dx, i, scale * (ld(dy, i) - mg[ch] - xhat * mgx[ch]));
  }
}

// mean = sums / float(count) (a float division, as the CPU's batch_norm_mean_from_sums).
__global__ void bn_mean_from_sums_kernel(DPtr sums, float count, float* mean_f32, DPtr mean,
                                         int64_t c) {
  MP_CUDA_FOR(ch, c) {
    const float m = ld(sums, ch) / count;
    mean_f32[ch] = m;
    st(mean, ch, m);
  }
}

__global__ void bn_rstd_from_sq_kernel(DPtr sq, double count, float eps, float* rstd_f32, DPtr rstd,
                                       int64_t c) {
  MP_CUDA_FOR(ch, c) {
    const float rs = rstd_from_sq(ld(sq, ch), count, eps);
    rstd_f32[ch] = rs;
    st(rstd, ch, rs);
  }
}

__global__ void bn_grad_means_kernel(DPtr dgamma, DPtr dbeta, double count, float* mg, float* mgx,
                                     int64_t c) {
  MP_CUDA_FOR(ch, c) {
    mg[ch] = static_cast<float>(static_cast<double>(ld(dbeta, ch)) / count);
    mgx[ch] = static_cast<float>(static_cast<double>(ld(dgamma, ch)) / count);
  }
}

DPtr f32_ptr(float* p) { return DPtr{p, DType::kF32}; }

void launch_bn_apply(GpuState& g, const BnPlan& p, DPtr x, DPtr mean, DPtr rstd, DPtr gamma,
                     DPtr beta, DPtr y, const char* op) {
  const int64_t numel = p.n * p.c * p.plane;
  if (numel == 0) return;
  bn_apply_kernel<<<blocks_for(g, numel), kThreads, 0, g.stream>>>(x, mean, rstd, gamma, beta, y,
                                                                   numel, p.c, p.plane);
  check_launch(g, op);
}

void launch_bn_grad_apply(GpuState& g, const BnPlan& p, DPtr dy, DPtr x, DPtr mean, DPtr rstd,
                          DPtr gamma, const float* mg, const float* mgx, DPtr dx, const char* op) {
  const int64_t numel = p.n * p.c * p.plane;
  if (numel == 0) return;
  bn_grad_apply_kernel<<<blocks_for(g, numel), kThreads, 0, g.stream>>>(
      dy, x, mean, rstd, gamma, mg, mgx, dx, numel, p.c, p.plane);
  check_launch(g, op);
}

// Workspace of each batch-norm row; x is input `x_index`.
template <int kXIndex, int kQ, int kVectors>
int64_t bn_workspace(std::span<const Shape> in, const OpAttrs& /*attrs*/) {
  const BnPlan p = bn_plan(in[kXIndex], "batch_norm");
  return 4 * bn_workspace_floats(p, kQ, kVectors);
}

// The per-channel f32 vectors after the partials in the workspace.
float* ws_vector(float* ws, const BnPlan& p, int q, int k) {
  return ws + round_up64(q * p.partials()) + k * round_up64(p.c);
}

// (x, gamma, beta) -> (y, mean, rstd); eps.
void run_batch_norm(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm";
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[0];
  const BnPlan p = bn_plan(xv.shape, kOp);
  check_like(a.out[0], xv, kOp, "y");
  for (const TensorView* v : {&a.in[1], &a.in[2], &a.out[1], &a.out[2]}) {
    check_numel(*v, p.c, kOp, "a per-channel vector");
  }
  MP_CHECK(p.count() > 0) << "batch_norm: count must be positive";
  const DPtr x = dptr(xv, kOp), gamma = dptr(a.in[1], kOp), beta = dptr(a.in[2], kOp);
  const DPtr y = dptr(a.out[0], kOp), mean = dptr(a.out[1], kOp), rstd = dptr(a.out[2], kOp);
  if (p.c == 0) return;
  float* ws = workspace_floats(a, bn_workspace_floats(p, 1, 2), kOp);
  float* mean_f32 = ws_vector(ws, p, 1, 0);
  float* rstd_f32 = ws_vector(ws, p, 1, 1);
  const auto count = static_cast<double>(p.count());
  const PartialLayout layout = p.layout();
  bn_partials<1>(g, p, SumTerm{x}, ws, kOp);
  launch_finalize<1>(g, ws, layout, p.c, StoreMean{mean_f32, mean, count}, kOp);
  bn_partials<1>(g, p, CenteredSquareTerm{x, f32_ptr(mean_f32)}, ws, kOp);
  launch_finalize<1>(g, ws, layout, p.c, StoreRstd{rstd_f32, rstd, count, a.attrs->eps}, kOp);
  launch_bn_apply(g, p, x, f32_ptr(mean_f32), f32_ptr(rstd_f32), gamma, beta, y, kOp);
}

// (dy, x, mean, rstd, gamma) -> (dx, dgamma, dbeta).
void run_batch_norm_grad(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm_grad";
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[1];
  const BnPlan p = bn_plan(xv.shape, kOp);
  check_like(a.in[0], xv, kOp, "dy");
  check_like(a.out[0], xv, kOp, "dx");
  for (const TensorView* v : {&a.in[2], &a.in[3], &a.in[4], &a.out[1], &a.out[2]}) {
    check_numel(*v, p.c, kOp, "a per-channel vector");
  }
  MP_CHECK(p.count() > 0) << "batch_norm_grad: count must be positive";
  const DPtr dy = dptr(a.in[0], kOp), x = dptr(xv, kOp), mean = dptr(a.in[2], kOp);
  const DPtr rstd = dptr(a.in[3], kOp), gamma = dptr(a.in[4], kOp);
  const DPtr dx = dptr(a.out[0], kOp), dgamma = dptr(a.out[1], kOp), dbeta = dptr(a.out[2], kOp);
  if (p.c == 0) return;
  float* ws = workspace_floats(a, bn_workspace_floats(p, 2, 2), kOp);
  float* mg = ws_vector(ws, p, 2, 0);
  float* mgx = ws_vector(ws, p, 2, 1);
  const auto count = static_cast<double>(p.count());
  bn_partials<2>(g, p, GradTerms{dy, x, mean, rstd}, ws, kOp);
  launch_finalize<2>(g, ws, p.layout(), p.c, StoreGradSums{dgamma, dbeta, mg, mgx, count}, kOp);
  launch_bn_grad_apply(g, p, dy, x, mean, rstd, gamma, mg, mgx, dx, kOp);
}

// (x) -> per-channel sums.
void run_batch_norm_sums(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm_sums";
  GpuState& g = gpu_of(a);
  const BnPlan p = bn_plan(a.in[0].shape, kOp);
  check_numel(a.out[0], p.c, kOp, "sums");
  const DPtr x = dptr(a.in[0], kOp), sums = dptr(a.out[0], kOp);
  if (p.c == 0) return;
  float* ws = workspace_floats(a, bn_workspace_floats(p, 1, 0), kOp);
  bn_partials<1>(g, p, SumTerm{x}, ws, kOp);
  launch_finalize<1>(g, ws, p.layout(), p.c, StoreTotal{sums}, kOp);
}

// (x, sums) -> (mean = sums / count, centred square sums); attrs.count.
void run_batch_norm_stats(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm_stats";
  GpuState& g = gpu_of(a);
  const BnPlan p = bn_plan(a.in[0].shape, kOp);
  for (const TensorView* v : {&a.in[1], &a.out[0], &a.out[1]}) {
    check_numel(*v, p.c, kOp, "a per-channel vector");
  }
  const DPtr x = dptr(a.in[0], kOp), sums = dptr(a.in[1], kOp);
  const DPtr mean = dptr(a.out[0], kOp), sq = dptr(a.out[1], kOp);
  if (p.c == 0) return;
  float* ws = workspace_floats(a, bn_workspace_floats(p, 1, 1), kOp);
  float* mean_f32 = ws_vector(ws, p, 1, 0);
  bn_mean_from_sums_kernel<<<blocks_for(g, p.c), kThreads, 0, g.stream>>>(
      sums, static_cast<float>(a.attrs->count), mean_f32, mean, p.c);
  check_launch(g, kOp);
  bn_partials<1>(g, p, CenteredSquareTerm{x, f32_ptr(mean_f32)}, ws, kOp);
  launch_finalize<1>(g, ws, p.layout(), p.c, StoreTotal{sq}, kOp);
}

// (x, mean, sq, gamma, beta) -> (y, rstd); attrs.eps, count.
void run_batch_norm_apply(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm_apply";
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[0];
  const BnPlan p = bn_plan(xv.shape, kOp);
  check_like(a.out[0], xv, kOp, "y");
  for (const TensorView* v : {&a.in[1], &a.in[2], &a.in[3], &a.in[4], &a.out[1]}) {
    check_numel(*v, p.c, kOp, "a per-channel vector");
  }
  MP_CHECK(a.attrs->count > 0) << "batch_norm_apply: count must be positive";
  const DPtr x = dptr(xv, kOp), mean = dptr(a.in[1], kOp), sq = dptr(a.in[2], kOp);
  const DPtr gamma = dptr(a.in[3], kOp), beta = dptr(a.in[4], kOp);
  const DPtr y = dptr(a.out[0], kOp), rstd = dptr(a.out[1], kOp);
  if (p.c == 0) return;
  float* rstd_f32 = workspace_floats(a, bn_workspace_floats(p, 0, 1), kOp);
  bn_rstd_from_sq_kernel<<<blocks_for(g, p.c), kThreads, 0, g.stream>>>(
      sq, a.attrs->count, a.attrs->eps, rstd_f32, rstd, p.c);
  check_launch(g, kOp);
  launch_bn_apply(g, p, x, mean, f32_ptr(rstd_f32), gamma, beta, y, kOp);
}

// (dy, x, mean, rstd) -> (dgamma, dbeta) of this device's part of the batch.
void run_batch_norm_grad_sums(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm_grad_sums";
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[1];
  const BnPlan p = bn_plan(xv.shape, kOp);
  check_like(a.in[0], xv, kOp, "dy");
  for (const TensorView* v : {&a.in[2], &a.in[3], &a.out[0], &a.out[1]}) {
    check_numel(*v, p.c, kOp, "a per-channel vector");
  }
  const DPtr dy = dptr(a.in[0], kOp), x = dptr(xv, kOp), mean = dptr(a.in[2], kOp);
  const DPtr rstd = dptr(a.in[3], kOp);
  const DPtr dgamma = dptr(a.out[0], kOp), dbeta = dptr(a.out[1], kOp);
  if (p.c == 0) return;
  float* ws = workspace_floats(a, bn_workspace_floats(p, 2, 0), kOp);
  bn_partials<2>(g, p, GradTerms{dy, x, mean, rstd}, ws, kOp);
  launch_finalize<2>(g, ws, p.layout(), p.c, StoreGradSums{dgamma, dbeta}, kOp);
}

// (dy, x, mean, rstd, gamma, dgamma, dbeta) -> dx; attrs.count.
void run_batch_norm_grad_apply(const KernelArgs& a) {
  constexpr const char* kOp = "batch_norm_grad_apply";
  GpuState& g = gpu_of(a);
  const TensorView& xv = a.in[1];
  const BnPlan p = bn_plan(xv.shape, kOp);
  check_like(a.in[0], xv, kOp, "dy");
  check_like(a.out[0], xv, kOp, "dx");
  for (const TensorView* v : {&a.in[2], &a.in[3], &a.in[4], &a.in[5], &a.in[6]}) {
    check_numel(*v, p.c, kOp, "a per-channel vector");
  }
  MP_CHECK(a.attrs->count > 0) << "batch_norm_grad_apply: count must be positive";
  const DPtr dy = dptr(a.in[0], kOp), x = dptr(xv, kOp), mean = dptr(a.in[2], kOp);
  const DPtr rstd = dptr(a.in[3], kOp), gamma = dptr(a.in[4], kOp);
  const DPtr dgamma = dptr(a.in[5], kOp), dbeta = dptr(a.in[6], kOp);
  const DPtr dx = dptr(a.out[0], kOp);
  if (p.c == 0) return;
  float* ws = workspace_floats(a, bn_workspace_floats(p, 0, 2), kOp);
  float* mg = ws_vector(ws, p, 0, 0);
  float* mgx = ws_vector(ws, p, 0, 1);
  bn_grad_means_kernel<<<blocks_for(g, p.c), kThreads, 0, g.stream>>>(dgamma, dbeta, a.attrs->count,
                                                                      mg, mgx, p.c);
  check_launch(g, kOp);
  launch_bn_grad_apply(g, p, dy, x, mean, rstd, gamma, mg, mgx, dx, kOp);
}

}  // namespace

std::vector<CudaRow> cuda_norm_rows() {
  using K = OpKind;
  return {
      {K::kLayerNorm, {run_layer_norm}},
      {K::kLayerNormGrad, {run_layer_norm_grad, layer_norm_grad_workspace}},
      {K::kBatchNorm, {run_batch_norm, bn_workspace<0, 1, 2>}},
      {K::kBatchNormGrad, {run_batch_norm_grad, bn_workspace<1, 2, 2>}},
      {K::kBatchNormSums, {run_batch_norm_sums, bn_workspace<0, 1, 0>}},
      {K::kBatchNormStats, {run_batch_norm_stats, bn_workspace<0, 1, 1>}},
      {K::kBatchNormApply, {run_batch_norm_apply, bn_workspace<0, 0, 1>}},
      {K::kBatchNormGradSums, {run_batch_norm_grad_sums, bn_workspace<1, 2, 0>}},
      {K::kBatchNormGradApply, {run_batch_norm_grad_apply, bn_workspace<1, 0, 2>}},
  };
}

}  // namespace meshpipe::kernels::internal

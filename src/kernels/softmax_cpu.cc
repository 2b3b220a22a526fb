// CPU softmax and log-softmax over any axis. Each row along the axis is a strided walk; sums
// are kept in double so long rows (vocabularies, long sequences) lose no precision.
#include <cmath>
#include <limits>

#include "kernels/internal/cpu_common.h"
#include "kernels/softmax.h"

namespace meshpipe::kernels {
namespace {

using internal::kParallelElems;

// x viewed as [outer, len, inner] around the softmax axis: row r starts at
// (r / inner) * len * inner + r % inner and steps by inner.
struct AxisRows {
  int64_t rows = 1;
  int64_t len = 1;
  int64_t inner = 1;

  int64_t base(int64_t r) const { return (r / inner) * len * inner + r % inner; }
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

void check_pair(const KernelContext& ctx, const TensorView& a, const TensorView& b,
                const char* op) {
  MP_CHECK(ctx.device == Device::kCpu) << op << ": CPU kernel called for another device";
  MP_CHECK(a.dtype == DType::kF32 && b.dtype == DType::kF32) << op << ": needs f32";
  MP_CHECK(a.shape == b.shape) << op << ": shapes differ, " << a.shape.to_string() << " vs "
                               << b.shape.to_string();
  MP_CHECK(a.is_contiguous() && b.is_contiguous()) << op << ": needs contiguous views";
}

}  // namespace

void softmax(const KernelContext& ctx, const TensorView& x, int64_t axis, bool causal,
             int64_t row_offset, const TensorView& y) {
  check_pair(ctx, x, y, "softmax");
  const AxisRows g = axis_rows(x.shape, axis, "softmax");
  const int64_t rank = x.shape.rank();
  int64_t queries = 1;
  if (causal) {
    MP_CHECK(rank >= 2 && normalize_axis(axis, rank) == rank - 1)
        << "softmax: causal masking needs the last axis of a rank >= 2 tensor";
    queries = x.shape[rank - 2];
  }
  const float* in = x.f32();
  float* out = y.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t r = 0; r < g.rows; ++r) {
    const float* xr = in + g.base(r);
    float* yr = out + g.base(r);
    // Keys past `valid` are masked; they read as exp(-inf) = 0.
    int64_t valid = g.len;
    if (causal) {
      const int64_t limit = r % queries + row_offset + 1;
      valid = limit < 0 ? 0 : (limit < g.len ? limit : g.len);
    }
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < valid; ++j) max = std::fmax(max, xr[j * g.inner]);
    double sum = 0.0;
    for (int64_t j = 0; j < valid; ++j) {
      const float e = std::exp(xr[j * g.inner] - max);
      yr[j * g.inner] = e;
      sum += e;
    }
    const float scale = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;
    for (int64_t j = 0; j < valid; ++j) yr[j * g.inner] *= scale;
    for (int64_t j = valid; j < g.len; ++j) yr[j * g.inner] = 0.0f;
  }
}

void softmax_grad(const KernelContext& ctx, const TensorView& y, const TensorView& dy, int64_t axis,
                  const TensorView& dx) {
  check_pair(ctx, y, dy, "softmax_grad");
  check_pair(ctx, y, dx, "softmax_grad");
  const AxisRows g = axis_rows(y.shape, axis, "softmax_grad");
  const float* yp = y.f32();
  const float* gp = dy.f32();
  float* out = dx.f32();
#pragma omp parallel for if (y.numel() > kParallelElems)
  for (int64_t r = 0; r < g.rows; ++r) {
    const int64_t b = g.base(r);
    double dot = 0.0;
    for (int64_t j = 0; j < g.len; ++j) {
      dot += static_cast<double>(yp[b + j * g.inner]) * gp[b + j * g.inner];
    }
    const auto s = static_cast<float>(dot);
    for (int64_t j = 0; j < g.len; ++j) {
      const int64_t i = b + j * g.inner;
      out[i] = yp[i] * (gp[i] - s);
    }
  }
}

void log_softmax(const KernelContext& ctx, const TensorView& x, int64_t axis, const TensorView& y) {
  check_pair(ctx, x, y, "log_softmax");
  const AxisRows g = axis_rows(x.shape, axis, "log_softmax");
  const float* in = x.f32();
  float* out = y.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t r = 0; r < g.rows; ++r) {
    const int64_t b = g.base(r);
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < g.len; ++j) max = std::fmax(max, in[b + j * g.inner]);
    double sum = 0.0;
    for (int64_t j = 0; j < g.len; ++j) sum += std::exp(in[b + j * g.inner] - max);
    const float lse = max + static_cast<float>(std::log(sum));
    for (int64_t j = 0; j < g.len; ++j) {
      const int64_t i = b + j * g.inner;
      out[i] = in[i] - lse;
    }
  }
}

void log_softmax_grad(const KernelContext& ctx, const TensorView& y, const TensorView& dy,
                      int64_t axis, const TensorView& dx) {
  check_pair(ctx, y, dy, "log_softmax_grad");
  check_pair(ctx, y, dx, "log_softmax_grad");
  const AxisRows g = axis_rows(y.shape, axis, "log_softmax_grad");
  const float* yp = y.f32();
  const float* gp = dy.f32();
  float* out = dx.f32();
#pragma omp parallel for if (y.numel() > kParallelElems)
  for (int64_t r = 0; r < g.rows; ++r) {
    const int64_t b = g.base(r);
    double sum = 0.0;
    for (int64_t j = 0; j < g.len; ++j) sum += gp[b + j * g.inner];
    const auto s = static_cast<float>(sum);
    for (int64_t j = 0; j < g.len; ++j) {
      const int64_t i = b + j * g.inner;
      out[i] = gp[i] - std::exp(yp[i]) * s;
    }
  }
}

}  // namespace meshpipe::kernels

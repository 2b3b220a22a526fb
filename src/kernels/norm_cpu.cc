// CPU layer norm (rows of the last dim) and training-mode batch norm (per channel of NCHW).
// Statistics and gradient sums are accumulated in double: they sum thousands of terms.
#include <array>
#include <cmath>
#include <vector>

#include "kernels/internal/cpu_common.h"
#include "kernels/norm.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

// Columns summed together by the layer-norm parameter gradients: one block's accumulators
// live on the stack, and every row contributes one contiguous run of this many floats.
constexpr int64_t kColumnBlock = 64;

void check_f32(const TensorView& v, const char* op, const char* name) {
  MP_CHECK(v.dtype == DType::kF32 && v.is_contiguous())
      << op << ": " << name << " must be contiguous f32";
}

void check_numel(const TensorView& v, int64_t n, const char* op, const char* name) {
  check_f32(v, op, name);
  MP_CHECK(v.numel() == n) << op << ": " << name << " has " << v.numel() << " elements, expected "
                           << n;
}

void check_like(const TensorView& v, const TensorView& x, const char* op, const char* name) {
  check_f32(v, op, name);
  MP_CHECK(v.shape == x.shape) << op << ": " << name << " is " << v.shape.to_string()
                               << ", expected " << x.shape.to_string();
}

// Batch-norm geometry: x as [n, c, plane] with the statistics taken over n and plane.
struct ChannelGeometry {
  int64_t n = 1;
  int64_t c = 1;
  int64_t plane = 1;
};

ChannelGeometry channel_geometry(const Shape& s, const char* op) {
  MP_CHECK(s.rank() >= 2) << op << ": x must be [N, C, ...], got " << s.to_string();
  return ChannelGeometry{s[0], s[1], s.numel_range(2, s.rank())};
}

}  // namespace

void layer_norm(const KernelContext& ctx, const TensorView& x, const TensorView& gamma,
                const TensorView& beta, float eps, const TensorView& y, const TensorView& mean,
                const TensorView& rstd) {
  check_cpu(ctx, "layer_norm");
  MP_CHECK(x.shape.rank() >= 1) << "layer_norm: x must have rank >= 1";
  check_f32(x, "layer_norm", "x");
  check_like(y, x, "layer_norm", "y");
  const int64_t d = x.shape[x.shape.rank() - 1];
  const int64_t rows = x.numel() / d;
  check_numel(gamma, d, "layer_norm", "gamma");
  check_numel(beta, d, "layer_norm", "beta");
  check_numel(mean, rows, "layer_norm", "mean");
  check_numel(rstd, rows, "layer_norm", "rstd");
  const float* in = x.f32();
  const float* gp = gamma.f32();
  const float* bp = beta.f32();
  float* out = y.f32();
  float* mp = mean.f32();
  float* rp = rstd.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * d;
    double sum = 0.0;
    for (int64_t j = 0; j < d; ++j) sum += xr[j];
    const double mu = sum / static_cast<double>(d);
    // Two passes: the variance of centred values does not cancel catastrophically.
    double sq = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double c = xr[j] - mu;
      sq += c * c;
    }
    const auto m = static_cast<float>(mu);
    const auto rs = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(d) + eps));
    mp[r] = m;
    rp[r] = rs;
    float* yr = out + r * d;
    for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - m) * rs * gp[j] + bp[j];
  }
}

void layer_norm_grad(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                     const TensorView& mean, const TensorView& rstd, const TensorView& gamma,
                     const TensorView& dx, const TensorView& dgamma, const TensorView& dbeta) {
  check_cpu(ctx, "layer_norm_grad");
  MP_CHECK(x.shape.rank() >= 1) << "layer_norm_grad: x must have rank >= 1";
  check_f32(x, "layer_norm_grad", "x");
  check_like(dy, x, "layer_norm_grad", "dy");
  check_like(dx, x, "layer_norm_grad", "dx");
  const int64_t d = x.shape[x.shape.rank() - 1];
  const int64_t rows = x.numel() / d;
  check_numel(mean, rows, "layer_norm_grad", "mean");
  check_numel(rstd, rows, "layer_norm_grad", "rstd");
  check_numel(gamma, d, "layer_norm_grad", "gamma");
  check_numel(dgamma, d, "layer_norm_grad", "dgamma");
  check_numel(dbeta, d, "layer_norm_grad", "dbeta");
  const float* in = x.f32();
  const float* g = dy.f32();
  const float* mp = mean.f32();
  const float* rp = rstd.f32();
  const float* gp = gamma.f32();
  float* out = dx.f32();
  float* dg = dgamma.f32();
  float* db = dbeta.f32();

  // Parameter gradients first, in case dx aliases dy.
  const int64_t blocks = (d + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t width = (d - c0) < kColumnBlock ? (d - c0) : kColumnBlock;
    std::array<double, kColumnBlock> sum_g{};
    std::array<double, kColumnBlock> sum_gx{};
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = in + r * d + c0;
      const float* gr = g + r * d + c0;
      for (int64_t j = 0; j < width; ++j) {
        const auto u = static_cast<size_t>(j);
        const double xhat = static_cast<double>(xr[j] - mp[r]) * rp[r];
        sum_g[u] += gr[j];
        sum_gx[u] += gr[j] * xhat;
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      dg[c0 + j] = static_cast<float>(sum_gx[static_cast<size_t>(j)]);
      db[c0 + j] = static_cast<float>(sum_g[static_cast<size_t>(j)]);
    }
  }

  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = dy * gamma per row.
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * d;
    const float* gr = g + r * d;
    const float m = mp[r];
    const float rs = rp[r];
    double sum_g = 0.0;
    double sum_gx = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double gj = static_cast<double>(gr[j]) * gp[j];
      sum_g += gj;
      sum_gx += gj * ((xr[j] - m) * rs);
    }
    const auto mean_g = static_cast<float>(sum_g / static_cast<double>(d));
    const auto mean_gx = static_cast<float>(sum_gx / static_cast<double>(d));
    float* dr = out + r * d;
    for (int64_t j = 0; j < d; ++j) {
      const float xhat = (xr[j] - m) * rs;
      dr[j] = rs * (gr[j] * gp[j] - mean_g - xhat * mean_gx);
    }
  }
}

// Single-device batch norm is the synchronised one with nothing to synchronise.
void batch_norm(const KernelContext& ctx, const TensorView& x, const TensorView& gamma,
                const TensorView& beta, float eps, const TensorView& y, const TensorView& mean,
                const TensorView& rstd) {
  check_cpu(ctx, "batch_norm");
  check_f32(x, "batch_norm", "x");
  check_like(y, x, "batch_norm", "y");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm");
  check_numel(gamma, geo.c, "batch_norm", "gamma");
  check_numel(beta, geo.c, "batch_norm", "beta");
  check_numel(mean, geo.c, "batch_norm", "mean");
  check_numel(rstd, geo.c, "batch_norm", "rstd");
  const double count = static_cast<double>(geo.n * geo.plane);
  batch_norm_channel_sums(ctx, x, mean);
  for (int64_t c = 0; c < geo.c; ++c) {
    mean.f32()[c] = static_cast<float>(mean.f32()[c] / count);
  }
  std::vector<float> sq(static_cast<size_t>(geo.c));
  const TensorView sqv(sq.data(), Shape({geo.c}), DType::kF32);
  batch_norm_centered_square_sums(ctx, x, mean, sqv);
  batch_norm_from_sums(ctx, x, mean, sqv, count, gamma, beta, eps, y, rstd);
}

void batch_norm_grad(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                     const TensorView& mean, const TensorView& rstd, const TensorView& gamma,
                     const TensorView& dx, const TensorView& dgamma, const TensorView& dbeta) {
  check_cpu(ctx, "batch_norm_grad");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm_grad");
  batch_norm_grad_sums(ctx, dy, x, mean, rstd, dgamma, dbeta);
  batch_norm_grad_input(ctx, dy, x, mean, rstd, gamma, dgamma, dbeta,
                        static_cast<double>(geo.n * geo.plane), dx);
}

void batch_norm_channel_sums(const KernelContext& ctx, const TensorView& x, const TensorView& out) {
  check_cpu(ctx, "batch_norm_channel_sums");
  check_f32(x, "batch_norm_channel_sums", "x");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm_channel_sums");
  check_numel(out, geo.c, "batch_norm_channel_sums", "out");
  const float* in = x.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t c = 0; c < geo.c; ++c) {
    double sum = 0.0;
    for (int64_t n = 0; n < geo.n; ++n) {
      const float* p = in + (n * geo.c + c) * geo.plane;
      for (int64_t i = 0; i < geo.plane; ++i) sum += p[i];
    }
    out.f32()[c] = static_cast<float>(sum);
  }
}

void batch_norm_mean_from_sums(const KernelContext& ctx, const TensorView& sums, double count,
                               const TensorView& mean) {
  check_cpu(ctx, "batch_norm_mean_from_sums");
  check_f32(sums, "batch_norm_mean_from_sums", "sums");
  check_numel(mean, sums.numel(), "batch_norm_mean_from_sums", "mean");
  const float n = static_cast<float>(count);
  const int64_t channels = sums.numel();
  for (int64_t c = 0; c < channels; ++c) mean.f32()[c] = sums.f32()[c] / n;
}

void batch_norm_centered_square_sums(const KernelContext& ctx, const TensorView& x,
                                     const TensorView& mean, const TensorView& out) {
  check_cpu(ctx, "batch_norm_centered_square_sums");
  check_f32(x, "batch_norm_centered_square_sums", "x");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm_centered_square_sums");
  check_numel(mean, geo.c, "batch_norm_centered_square_sums", "mean");
  check_numel(out, geo.c, "batch_norm_centered_square_sums", "out");
  const float* in = x.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t c = 0; c < geo.c; ++c) {
    const double mu = mean.f32()[c];
    double sq = 0.0;
    for (int64_t n = 0; n < geo.n; ++n) {
      const float* p = in + (n * geo.c + c) * geo.plane;
      for (int64_t i = 0; i < geo.plane; ++i) {
        const double v = p[i] - mu;
        sq += v * v;
      }
    }
    out.f32()[c] = static_cast<float>(sq);
  }
}

void batch_norm_from_sums(const KernelContext& ctx, const TensorView& x, const TensorView& mean,
                          const TensorView& sq, double count, const TensorView& gamma,
                          const TensorView& beta, float eps, const TensorView& y,
                          const TensorView& rstd) {
  check_cpu(ctx, "batch_norm_from_sums");
  check_f32(x, "batch_norm_from_sums", "x");
  check_like(y, x, "batch_norm_from_sums", "y");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm_from_sums");
  for (const TensorView* v : {&mean, &sq, &gamma, &beta, &rstd}) {
    check_numel(*v, geo.c, "batch_norm_from_sums", "a per-channel vector");
  }
  MP_CHECK(count > 0) << "batch_norm_from_sums: count must be positive";
  const float* in = x.f32();
  float* out = y.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t c = 0; c < geo.c; ++c) {
    const float m = mean.f32()[c];
    const auto rs = static_cast<float>(1.0 / std::sqrt(sq.f32()[c] / count + eps));
    rstd.f32()[c] = rs;
    const float scale = rs * gamma.f32()[c];
    const float shift = beta.f32()[c] - m * scale;
    for (int64_t n = 0; n < geo.n; ++n) {
      const int64_t off = (n * geo.c + c) * geo.plane;
      for (int64_t i = 0; i < geo.plane; ++i) out[off + i] = in[off + i] * scale + shift;
    }
  }
}

void batch_norm_grad_sums(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                          const TensorView& mean, const TensorView& rstd, const TensorView& dgamma,
                          const TensorView& dbeta) {
  check_cpu(ctx, "batch_norm_grad_sums");
  check_f32(x, "batch_norm_grad_sums", "x");
  check_like(dy, x, "batch_norm_grad_sums", "dy");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm_grad_sums");
  for (const TensorView* v : {&mean, &rstd, &dgamma, &dbeta}) {
    check_numel(*v, geo.c, "batch_norm_grad_sums", "a per-channel vector");
  }
  const float* in = x.f32();
  const float* g = dy.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t c = 0; c < geo.c; ++c) {
    const float m = mean.f32()[c];
    const float rs = rstd.f32()[c];
    double sum_g = 0.0;
    double sum_gx = 0.0;
    for (int64_t n = 0; n < geo.n; ++n) {
      const int64_t off = (n * geo.c + c) * geo.plane;
      for (int64_t i = 0; i < geo.plane; ++i) {
        sum_g += g[off + i];
        sum_gx += static_cast<double>(g[off + i]) * ((in[off + i] - m) * rs);
      }
    }
    dgamma.f32()[c] = static_cast<float>(sum_gx);
    dbeta.f32()[c] = static_cast<float>(sum_g);
  }
}

void batch_norm_grad_input(const KernelContext& ctx, const TensorView& dy, const TensorView& x,
                           const TensorView& mean, const TensorView& rstd, const TensorView& gamma,
                           const TensorView& dgamma, const TensorView& dbeta, double count,
                           const TensorView& dx) {
  check_cpu(ctx, "batch_norm_grad_input");
  check_f32(x, "batch_norm_grad_input", "x");
  check_like(dy, x, "batch_norm_grad_input", "dy");
  check_like(dx, x, "batch_norm_grad_input", "dx");
  const ChannelGeometry geo = channel_geometry(x.shape, "batch_norm_grad_input");
  for (const TensorView* v : {&mean, &rstd, &gamma, &dgamma, &dbeta}) {
    check_numel(*v, geo.c, "batch_norm_grad_input", "a per-channel vector");
  }
  MP_CHECK(count > 0) << "batch_norm_grad_input: count must be positive";
  const float* in = x.f32();
  const float* g = dy.f32();
  float* out = dx.f32();
#pragma omp parallel for if (x.numel() > kParallelElems)
  for (int64_t c = 0; c < geo.c; ++c) {
    const float m = mean.f32()[c];
    const float rs = rstd.f32()[c];
    const float scale = gamma.f32()[c] * rs;
    const auto mean_g = static_cast<float>(dbeta.f32()[c] / count);
    const auto mean_gx = static_cast<float>(dgamma.f32()[c] / count);
    for (int64_t n = 0; n < geo.n; ++n) {
      const int64_t off = (n * geo.c + c) * geo.plane;
      for (int64_t i = 0; i < geo.plane; ++i) {
        const float xhat = (in[off + i] - m) * rs;
        out[off + i] = scale * (g[off + i] - mean_g - xhat * mean_gx);
      }
    }
  }
}

}  // namespace meshpipe::kernels

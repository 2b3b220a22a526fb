// CPU softmax cross-entropy with integer labels: the loss is a mean over positions, so both
// the per-row log-sum-exp and the total are accumulated in double.
#include <array>
#include <cmath>
#include <limits>

#include "kernels/internal/cpu_common.h"
#include "kernels/loss.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

// Position ranges the loss is split into for threads (partial sums live on the stack).
constexpr int64_t kLossChunks = 64;

struct LossGeometry {
  int64_t positions = 0;
  int64_t vocab = 0;
};

LossGeometry check_loss(const TensorView& logits, const TensorView& labels, const char* op) {
  MP_CHECK(logits.shape.rank() >= 1) << op << ": logits must be [..., V]";
  MP_CHECK(logits.dtype == DType::kF32 && labels.dtype == DType::kI32)
      << op << ": logits are f32, labels i32";
  MP_CHECK(logits.is_contiguous() && labels.is_contiguous()) << op << ": needs contiguous views";
  const int64_t rank = labels.shape.rank();
  bool matches = logits.shape.rank() == rank + 1;
  for (int64_t i = 0; matches && i < rank; ++i) matches = logits.shape[i] == labels.shape[i];
  MP_CHECK(matches) << op << ": logits " << logits.shape.to_string() << " do not match labels "
                    << labels.shape.to_string();
  return LossGeometry{labels.numel(), logits.shape[rank]};
}

// log(sum_j exp(row[j])), stabilised by the row max.
double log_sum_exp(const float* row, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) max = std::fmax(max, row[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(row[j] - max);
  return max + std::log(sum);
}

int64_t checked_label(const int32_t* labels, int64_t p, int64_t vocab) {
  const int64_t label = labels[p];
  MP_CHECK(label >= 0 && label < vocab) << "cross_entropy: label " << label << " at position " << p
                                        << " is outside [0, " << vocab << ")";
  return label;
}

}  // namespace

void cross_entropy(const KernelContext& ctx, const TensorView& logits, const TensorView& labels,
                   const TensorView& loss) {
  check_cpu(ctx, "cross_entropy");
  const LossGeometry g = check_loss(logits, labels, "cross_entropy");
  MP_CHECK(loss.dtype == DType::kF32 && loss.numel() == 1) << "cross_entropy: loss is a scalar";
  const float* lp = logits.f32();
  const int32_t* yp = labels.i32();
  // Fixed chunks summed in order keep the loss bit-identical for any thread count, which an
  // OpenMP reduction does not promise.
  std::array<double, kLossChunks> partial{};
#pragma omp parallel for if (logits.numel() > kParallelElems)
  for (int64_t c = 0; c < kLossChunks; ++c) {
    const int64_t begin = g.positions * c / kLossChunks;
    const int64_t end = g.positions * (c + 1) / kLossChunks;
    double sum = 0.0;
    for (int64_t p = begin; p < end; ++p) {
      const float* row = lp + p * g.vocab;
      sum += log_sum_exp(row, g.vocab) - row[checked_label(yp, p, g.vocab)];
    }
    partial[static_cast<size_t>(c)] = sum;
  }
  double total = 0.0;
  for (double v : partial) total += v;
  loss.f32()[0] =
      g.positions > 0 ? static_cast<float>(total / static_cast<double>(g.positions)) : 0.0f;
}

void cross_entropy_grad(const KernelContext& ctx, const TensorView& logits,
                        const TensorView& labels, const TensorView& dloss,
                        const TensorView& dlogits) {
  check_cpu(ctx, "cross_entropy_grad");
  const LossGeometry g = check_loss(logits, labels, "cross_entropy_grad");
  MP_CHECK(dloss.dtype == DType::kF32 && dloss.numel() == 1)
      << "cross_entropy_grad: dloss is a scalar";
  MP_CHECK(dlogits.dtype == DType::kF32 && dlogits.is_contiguous() && dlogits.shape == logits.shape)
      << "cross_entropy_grad: dlogits must be contiguous f32 shaped like logits";
  if (g.positions == 0) return;
  const float* lp = logits.f32();
  const int32_t* yp = labels.i32();
  float* dp = dlogits.f32();
  const double scale = static_cast<double>(dloss.f32()[0]) / static_cast<double>(g.positions);
#pragma omp parallel for if (logits.numel() > kParallelElems)
  for (int64_t p = 0; p < g.positions; ++p) {
    const float* row = lp + p * g.vocab;
    float* drow = dp + p * g.vocab;
    const auto lse = static_cast<float>(log_sum_exp(row, g.vocab));
    const auto s = static_cast<float>(scale);
    for (int64_t j = 0; j < g.vocab; ++j) drow[j] = s * std::exp(row[j] - lse);
    drow[checked_label(yp, p, g.vocab)] -= s;
  }
}

}  // namespace meshpipe::kernels

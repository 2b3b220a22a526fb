// CPU dot: groups each operand's dims into batch / free / contracting and hands every batch
// element to OpenBLAS sgemm, reading operands in place whenever their layout allows it.
#include <cblas.h>

#include <array>
#include <climits>

#include "kernels/internal/cpu_common.h"
#include "kernels/matmul.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kMaxRank;
using internal::kParallelElems;

// How one operand is presented to sgemm: as a row-major [batch, rows, cols] matrix stack whose
// dims, in memory order, are `order`. When `in_place` is false the operand is first gathered
// into the workspace in that order.
struct OperandLayout {
  int64_t rank = 0;
  std::array<int64_t, kMaxRank> order{};
  int64_t batch = 1;
  int64_t free = 1;
  int64_t contract = 1;
  // Memory order is [batch, contract, free] rather than [batch, free, contract].
  bool contract_first = false;
  bool in_place = false;
};

bool is_identity(const std::array<int64_t, kMaxRank>& order, int64_t rank) {
  for (int64_t i = 0; i < rank; ++i) {
    if (order[static_cast<size_t>(i)] != i) return false;
  }
  return true;
}

// Fills `order` with batch dims, then either free+contract or contract+free.
void fill_order(const std::vector<int64_t>& batch, const std::array<int64_t, kMaxRank>& free_dims,
                int64_t num_free, const std::vector<int64_t>& contract, bool contract_first,
                std::array<int64_t, kMaxRank>& order) {
  size_t at = 0;
  for (int64_t d : batch) order[at++] = d;
  auto put_free = [&] {
    for (int64_t i = 0; i < num_free; ++i) order[at++] = free_dims[static_cast<size_t>(i)];
  };
  auto put_contract = [&] {
    for (int64_t d : contract) order[at++] = d;
  };
  if (contract_first) {
    put_contract();
    put_free();
  } else {
    put_free();
    put_contract();
  }
}

// Decides how to read one operand. `copy_contract_first` is the layout used when the operand
// must be gathered: lhs becomes [b, m, k] and rhs [b, k, n], so neither copy needs a BLAS
// transpose.
OperandLayout plan_operand(const Shape& shape, const std::vector<int64_t>& batch,
                           const std::vector<int64_t>& contract, bool copy_contract_first) {
  OperandLayout p;
  p.rank = shape.rank();
  MP_CHECK(p.rank <= kMaxRank) << "dot supports rank <= " << kMaxRank << ", got "
                               << shape.to_string();
  std::array<bool, kMaxRank> used{};
  for (int64_t d : batch) {
    used[static_cast<size_t>(d)] = true;
    p.batch *= shape[d];
  }
  for (int64_t d : contract) {
    used[static_cast<size_t>(d)] = true;
    p.contract *= shape[d];
  }
  std::array<int64_t, kMaxRank> free_dims{};
  int64_t num_free = 0;
  for (int64_t d = 0; d < p.rank; ++d) {
    if (used[static_cast<size_t>(d)]) continue;
    free_dims[static_cast<size_t>(num_free++)] = d;
    p.free *= shape[d];
  }
  for (bool contract_first : {false, true}) {
    fill_order(batch, free_dims, num_free, contract, contract_first, p.order);
    if (is_identity(p.order, p.rank)) {
      p.contract_first = contract_first;
      p.in_place = true;
      return p;
    }
  }
  p.contract_first = copy_contract_first;
  fill_order(batch, free_dims, num_free, contract, copy_contract_first, p.order);
  return p;
}

// dst (contiguous, dims shape[order[i]]) = src permuted. Each destination row is one strided
// walk through src, so the index arithmetic is paid per row, not per element.
void gather_permuted(const float* src, const Shape& shape, const OperandLayout& p, float* dst) {
  const std::vector<int64_t> src_strides = shape.strides();
  std::array<int64_t, kMaxRank> dims{};
  std::array<int64_t, kMaxRank> strides{};
  for (int64_t i = 0; i < p.rank; ++i) {
    const auto d = static_cast<size_t>(p.order[static_cast<size_t>(i)]);
    dims[static_cast<size_t>(i)] = shape[static_cast<int64_t>(d)];
    strides[static_cast<size_t>(i)] = src_strides[d];
  }
  const int64_t rank = p.rank;
  const int64_t cols = rank > 0 ? dims[static_cast<size_t>(rank - 1)] : 1;
  const int64_t col_stride = rank > 0 ? strides[static_cast<size_t>(rank - 1)] : 1;
  if (shape.numel() == 0) return;
  const int64_t rows = shape.numel() / cols;
#pragma omp parallel for if (rows * cols > kParallelElems)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r;
    int64_t offset = 0;
    for (int64_t i = rank - 2; i >= 0; --i) {
      const auto u = static_cast<size_t>(i);
      offset += (rest % dims[u]) * strides[u];
      rest /= dims[u];
    }
    const float* s = src + offset;
    float* d = dst + r * cols;
    for (int64_t c = 0; c < cols; ++c) d[c] = s[c * col_stride];
  }
}

struct DotPlan {
  OperandLayout lhs;
  OperandLayout rhs;
};

DotPlan plan_dot(const Shape& lhs, const Shape& rhs, const DotDims& dims) {
  DotPlan plan;
  plan.lhs = plan_operand(lhs, dims.lhs_batch, dims.lhs_contract, /*copy_contract_first=*/false);
  plan.rhs = plan_operand(rhs, dims.rhs_batch, dims.rhs_contract, /*copy_contract_first=*/true);
  return plan;
}

int64_t copy_bytes(const Shape& shape, const OperandLayout& p) {
  return p.in_place ? 0 : shape.numel() * static_cast<int64_t>(sizeof(float));
}

// out[i] (m x n) = lhs[i] (m x k) * rhs[i] (k x n) for every batch element i, reading each
// operand with the transpose flag and leading dimension its layout implies.
void batched_sgemm(const DotPlan& plan, const float* a, const float* b, float* c, bool accumulate) {
  const int64_t batch = plan.lhs.batch;
  const int64_t m = plan.lhs.free;
  const int64_t k = plan.lhs.contract;
  const int64_t n = plan.rhs.free;
  MP_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX) << "dot: matrix too large for BLAS";
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {
    // An empty contraction is a sum of nothing; BLAS rejects a zero leading dimension.
    if (!accumulate) {
      for (int64_t i = 0; i < batch * m * n; ++i) c[i] = 0.0f;
    }
    return;
  }
  // lhs is [m, k] unless its contracting dims come first; rhs is [k, n] when they do.
  const CBLAS_TRANSPOSE trans_a = plan.lhs.contract_first ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE trans_b = plan.rhs.contract_first ? CblasNoTrans : CblasTrans;
  const auto lda = static_cast<int>(plan.lhs.contract_first ? m : k);
  const auto ldb = static_cast<int>(plan.rhs.contract_first ? n : k);
  const float beta = accumulate ? 1.0f : 0.0f;
  for (int64_t i = 0; i < batch; ++i) {
    cblas_sgemm(CblasRowMajor, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a + i * m * k, lda, b + i * k * n, ldb, beta,
                c + i * m * n, static_cast<int>(n));
  }
}

}  // namespace

int64_t dot_workspace_bytes(const Shape& lhs, const Shape& rhs, const DotDims& dims) {
  const Expected<Shape> out_shape = dot_output_shape(lhs, rhs, dims);
  MP_CHECK(out_shape.has_value()) << "dot_workspace_bytes: " << out_shape.status().to_string();
  const DotPlan plan = plan_dot(lhs, rhs, dims);
  return copy_bytes(lhs, plan.lhs) + copy_bytes(rhs, plan.rhs);
}

void dot(const KernelContext& ctx, const TensorView& lhs, const TensorView& rhs,
         const DotDims& dims, const TensorView& out, const TensorView& workspace, bool accumulate) {
  check_cpu(ctx, "dot");
  MP_CHECK(lhs.is_contiguous() && rhs.is_contiguous() && out.is_contiguous())
      << "dot needs contiguous views";
  const Expected<Shape> out_shape = dot_output_shape(lhs.shape, rhs.shape, dims);
  MP_CHECK(out_shape.has_value()) << "dot: " << out_shape.status().to_string();
  MP_CHECK(out.shape == *out_shape)
      << "dot: out is " << out.shape.to_string() << ", expected " << out_shape->to_string();

  const DotPlan plan = plan_dot(lhs.shape, rhs.shape, dims);
  const int64_t need = copy_bytes(lhs.shape, plan.lhs) + copy_bytes(rhs.shape, plan.rhs);
  if (need > 0) {
    MP_CHECK(workspace.data != nullptr && workspace.bytes() >= need)
        << "dot: workspace has " << workspace.bytes() << " bytes, needs " << need;
  }
  const float* a = lhs.f32();
  const float* b = rhs.f32();
  float* c = out.f32();
  if (need > 0) {
    float* scratch = static_cast<float*>(workspace.data);
    if (!plan.lhs.in_place) {
      gather_permuted(a, lhs.shape, plan.lhs, scratch);
      a = scratch;
      scratch += lhs.numel();
    }
    if (!plan.rhs.in_place) {
      gather_permuted(b, rhs.shape, plan.rhs, scratch);
      b = scratch;
    }
  }

  batched_sgemm(plan, a, b, c, accumulate);
}

}  // namespace meshpipe::kernels

// CUDA row of kDot: a general batched matrix product (any batch and contracting dims the CPU
// `dot` accepts) on cuBLASLt with f32 compute. Each operand is read in place whenever its batch,
// free and contracting dims each form one strided run with a unit-stride matrix dim (transposes
// through CUBLASLT_MATMUL_DESC_TRANSA/B, batch strides through strided-batch layouts); other
// layouts are gathered into the op's workspace as [batch, m, k] (lhs) / [batch, k, n] (rhs).
// Operands of different dtypes, and dtype combinations cuBLASLt lacks, run on an own tiled
// kernel with f32 accumulation. Descriptors and heuristic results are cached per shape.
#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {
namespace {

constexpr const char* kDot = "dot";

// ---------------------------------------------------------------------------------------------
// Planning (host, shapes only)

// One operand as a stack of matrices: element (b, f, c) -- batch, free and contracting index,
// each flattened row-major over its dims in DotDims order (free dims ascending) -- lives at
// b * batch_stride + f * free_stride + c * contract_stride (a stride of a group of size 1 is
// never used). `contract_unit` tells which matrix dim has unit stride; `ld` is the stride of
// the other one as cuBLASLt's leading dimension (column-major).
struct OperandPlan {
  int64_t batch = 1;
  int64_t free = 1;
  int64_t contract = 1;
  int64_t batch_stride = 0;
  int64_t free_stride = 0;
  int64_t contract_stride = 0;
  bool contract_unit = true;
  int64_t ld = 1;
  bool in_place = false;
  // When !in_place: the operand's dims in the order of its gathered copy.
  std::vector<int64_t> gather_order;
};

struct DotPlan {
  OperandPlan lhs;
  OperandPlan rhs;
  Shape out_shape;
  int64_t lhs_copy_bytes = 0;  // 256-byte aligned region at the start of the workspace
  int64_t rhs_copy_bytes = 0;  // follows it
};

// Gathered copies are written as f32 or in the operand's own dtype: 4 bytes an element bound
// both (the workspace size may depend on shapes only).
constexpr int64_t kCopyElemBytes = 4;

int64_t align_up(int64_t bytes, int64_t to) { return (bytes + to - 1) / to * to; }

// ld of a matrix stack given its strides (groups of size 1 take the smallest legal ld).
int64_t leading_dim(const OperandPlan& p) {
  if (p.contract_unit) return p.free == 1 ? p.contract : p.free_stride;
  return p.contract == 1 ? p.free : p.contract_stride;
}

// Decides how one operand is read. `copy_contract_first`: layout of a gathered copy (lhs is
// gathered as [batch, m, k], rhs as [batch, k, n]).
OperandPlan plan_operand(const Shape& s, const std::vector<int64_t>& batch,
                         const std::vector<int64_t>& contract, bool copy_contract_first) {
  const int64_t rank = s.rank();
  MP_CHECK(rank <= kCudaMaxRank) << "dot supports rank <= " << kCudaMaxRank << ", got "
                                 << s.to_string();
  enum Group : int { kBatch = 0, kFree = 1, kContract = 2 };
  std::vector<int> group(static_cast<size_t>(rank), kFree);
  OperandPlan p;
  auto mark = [&](const std::vector<int64_t>& dims, int g, int64_t& size) {
    for (int64_t d : dims) {
      MP_CHECK(d >= 0 && d < rank && group[static_cast<size_t>(d)] == kFree)
          << "dot: bad batch/contracting dim " << d << " for " << s.to_string();
      group[static_cast<size_t>(d)] = g;
      size *= s[d];
    }
  };
  mark(batch, kBatch, p.batch);
  mark(contract, kContract, p.contract);
  std::vector<int64_t> free;
  for (int64_t d = 0; d < rank; ++d) {
    if (group[static_cast<size_t>(d)] == kFree) {
      free.push_back(d);
      p.free *= s[d];
    }
  }

  // Dims of size 1 do not move the address: drop them, then every group must be a run of
  // consecutive remaining dims in its listed order, so that its flattened index has one
  // stride (that of its innermost dim).
  const std::vector<int64_t> strides = s.strides();
  std::vector<int64_t> pos(static_cast<size_t>(rank), -1);
  int64_t kept = 0;
  int64_t innermost = -1;
  for (int64_t d = 0; d < rank; ++d) {
    if (s[d] != 1) {
      pos[static_cast<size_t>(d)] = kept++;
      innermost = d;
    }
  }
  auto run_stride = [&](const std::vector<int64_t>& dims, int64_t& stride) {
    int64_t prev = -1;
    for (int64_t d : dims) {
      if (s[d] == 1) continue;
      if (prev >= 0 && pos[static_cast<size_t>(d)] != pos[static_cast<size_t>(prev)] + 1) {
        return false;
      }
      prev = d;
    }
    stride = prev >= 0 ? strides[static_cast<size_t>(prev)] : 0;
    return true;
  };
  int64_t bs = 0, fs = 0, cs = 0;
  const bool runs = run_stride(batch, bs) && run_stride(free, fs) && run_stride(contract, cs);
  const int inner = innermost >= 0 ? group[static_cast<size_t>(innermost)] : kBatch;
  if (runs && (inner != kBatch || (p.free == 1 && p.contract == 1))) {
    // The innermost run has stride 1; a run outside it has a stride of at least its size.
    p.in_place = true;
    p.batch_stride = bs;
    p.free_stride = fs;
    p.contract_stride = cs;
    p.contract_unit = inner != kFree;
  } else {
    p.in_place = false;
    p.batch_stride = p.free * p.contract;
    p.contract_unit = !copy_contract_first;
    p.free_stride = copy_contract_first ? 1 : p.contract;
    p.contract_stride = copy_contract_first ? p.free : 1;
    p.gather_order = batch;
    auto put = [&](const std::vector<int64_t>& dims) {
      p.gather_order.insert(p.gather_order.end(), dims.begin(), dims.end());
    };
    if (copy_contract_first) {
      put(contract);
      put(free);
    } else {
      put(free);
      put(contract);
    }
  }
  p.ld = leading_dim(p);
  return p;
}

DotPlan plan_dot(const Shape& lhs, const Shape& rhs, const DotDims& dims) {
  MP_CHECK(dims.lhs_batch.size() == dims.rhs_batch.size() &&
           dims.lhs_contract.size() == dims.rhs_contract.size())
      << "dot: lhs and rhs list different numbers of batch or contracting dims";
  DotPlan plan;
  plan.lhs = plan_operand(lhs, dims.lhs_batch, dims.lhs_contract, /*copy_contract_first=*/false);
  plan.rhs = plan_operand(rhs, dims.rhs_batch, dims.rhs_contract, /*copy_contract_first=*/true);
  std::vector<int64_t> out;
  for (size_t i = 0; i < dims.lhs_batch.size(); ++i) {
    MP_CHECK(lhs[dims.lhs_batch[i]] == rhs[dims.rhs_batch[i]])
        << "dot: batch dims differ: " << lhs.to_string() << " vs " << rhs.to_string();
    out.push_back(lhs[dims.lhs_batch[i]]);
  }
  for (size_t i = 0; i < dims.lhs_contract.size(); ++i) {
    MP_CHECK(lhs[dims.lhs_contract[i]] == rhs[dims.rhs_contract[i]])
        << "dot: contracting dims differ: " << lhs.to_string() << " vs " << rhs.to_string();
  }
  auto put_free = [&](const Shape& shape, const std::vector<int64_t>& b,
                      const std::vector<int64_t>& c) {
    for (int64_t d = 0; d < shape.rank(); ++d) {
      if (std::find(b.begin(), b.end(), d) == b.end() &&
          std::find(c.begin(), c.end(), d) == c.end()) {
        out.push_back(shape[d]);
      }
    }
  };
  put_free(lhs, dims.lhs_batch, dims.lhs_contract);
  put_free(rhs, dims.rhs_batch, dims.rhs_contract);
  plan.out_shape = Shape(std::move(out));
  if (!plan.lhs.in_place) plan.lhs_copy_bytes = align_up(lhs.numel() * kCopyElemBytes, 256);
  if (!plan.rhs.in_place) plan.rhs_copy_bytes = rhs.numel() * kCopyElemBytes;
  return plan;
}

int64_t dot_workspace(std::span<const Shape> in, const OpAttrs& attrs) {
  const DotPlan plan = plan_dot(in[0], in[1], attrs.dot);
  return plan.lhs_copy_bytes + plan.rhs_copy_bytes;
}

// The cuBLASLt problem: out^T (n x m, column-major, ld n) = op(A) op(B) with A = rhs (op(A)
// n x k) and B = lhs (op(B) k x m); each operand matrix as stored, column-major.
struct LtProblem {
  bool trans_a = false;
  int64_t rows_a = 0, cols_a = 0, ld_a = 0, stride_a = 0;
  bool trans_b = false;
  int64_t rows_b = 0, cols_b = 0, ld_b = 0, stride_b = 0;
  int64_t rows_d = 0, cols_d = 0, ld_d = 0, stride_d = 0;
  int64_t batch = 1;
};

LtProblem lt_problem(const OperandPlan& lhs, const OperandPlan& rhs) {
  const int64_t m = lhs.free, n = rhs.free, k = lhs.contract;
  LtProblem q;
  // rhs element (p, j) at p + j*ld (contract unit: stored k x n, transposed) or j + p*ld.
  q.trans_a = rhs.contract_unit;
  q.rows_a = rhs.contract_unit ? k : n;
  q.cols_a = rhs.contract_unit ? n : k;
  q.ld_a = rhs.ld;
  q.stride_a = rhs.batch_stride;
  // lhs element (i, p) at p + i*ld (contract unit: stored k x m) or i + p*ld (stored m x k,
  // transposed).
  q.trans_b = !lhs.contract_unit;
  q.rows_b = lhs.contract_unit ? k : m;
  q.cols_b = lhs.contract_unit ? m : k;
  q.ld_b = lhs.ld;
  q.stride_b = lhs.batch_stride;
  q.rows_d = n;
  q.cols_d = m;
  q.ld_d = n;
  q.stride_d = m * n;
  q.batch = lhs.batch;
  return q;
}

// ---------------------------------------------------------------------------------------------
// Kernels

// dst[e] = src at the strided position of e (dst contiguous with dims `dims`; `strides` are
// src's strides of those dims), converted to dst's dtype.
__global__ void gather_kernel(DPtr src, DPtr dst, Dims8 dims, Dims8 strides, int64_t n) {
  MP_CUDA_FOR(e, n) {
    int64_t rest = e;
    int64_t off = 0;
    for (int i = dims.rank - 1; i >= 0; --i) {
      off += (rest % dims.v[i]) * strides.v[i];
      rest /= dims.v[i];
    }
    st(dst, e, ld(src, off));
  }
}

// Operand addressing of the fallback GEMM: element (b, i, j) at b*sb + i*si + j*sj.
struct Strided3 {
  DPtr p;
  int64_t sb = 0;
  int64_t si = 0;
  int64_t sj = 0;
};

constexpr int kGemmTile = 64;   // output tile kGemmTile x kGemmTile per block
constexpr int kGemmTileK = 16;  // contracting slice staged in shared memory
constexpr int kGemmThreads = 256;

// out[b, i, j] = sum_p a[b, i, p] * c[b, p, j] in f32 (out contiguous [batch, m, n]). Each
// block walks output tiles (grid-stride); each thread owns a 4x4 micro-tile (rows ty + 16r,
// columns tx + 16c).
__global__ void __launch_bounds__(kGemmThreads)
    gemm_fallback_kernel(Strided3 a, Strided3 c, DPtr out, int64_t batch, int64_t m, int64_t n,
                         int64_t k, int64_t tiles_m, int64_t tiles_n) {
  __shared__ float as[kGemmTileK][kGemmTile + 1];  // as[p][i]
  __shared__ float cs[kGemmTileK][kGemmTile + 1];  // cs[p][j]
  const int tx = static_cast<int>(threadIdx.x) % 16;
  const int ty = static_cast<int>(threadIdx.x) / 16;
  const int64_t tiles = batch * tiles_m * tiles_n;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t b = t / (tiles_m * tiles_n);
    const int64_t rest = t % (tiles_m * tiles_n);
    const int64_t i0 = (rest / tiles_n) * kGemmTile;
    const int64_t j0 = (rest % tiles_n) * kGemmTile;
    float acc[4][4] = {};
    for (int64_t p0 = 0; p0 < k; p0 += kGemmTileK) {
      for (int l = static_cast<int>(threadIdx.x); l < kGemmTileK * kGemmTile; l += kGemmThreads) {
        const int pp = l / kGemmTile;
        const int q = l % kGemmTile;
        const int64_t p = p0 + pp;
        const int64_t i = i0 + q;
        const int64_t j = j0 + q;
        as[pp][q] = (p < k && i < m) ? ld(a.p, b * a.sb + i * a.si + p * a.sj) : 0.f;
        cs[pp][q] = (p < k && j < n) ? ld(c.p, b * c.sb + p * c.si + j * c.sj) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int pp = 0; pp < kGemmTileK; ++pp) {
        float av[4], cv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          av[r] = as[pp][ty + 16 * r];
          cv[r] = cs[pp][tx + 16 * r];
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[r][q] = fmaf(av[r], cv[q], acc[r][q]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t i = i0 + ty + 16 * r;
      if (i >= m) continue;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t j = j0 + tx + 16 * q;
        if (j < n) st(out, (b * m + i) * n + j, acc[r][q]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// cuBLASLt

// Largest power of two (at most 256) dividing the address.
uint32_t pointer_alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

// The (A/B, C/D) dtype pairs cuBLASLt computes with CUBLAS_COMPUTE_32F and f32 scaling.
bool lt_supports(DType ab, DType d) {
  if (ab == DType::kF32) return d == DType::kF32;
  return d == ab || d == DType::kF32;
}

struct LtKey {
  int ordinal = 0;
  int64_t workspace_bytes = 0;
  DType ab = DType::kF32;
  DType d = DType::kF32;
  bool trans_a = false, trans_b = false;
  int64_t rows_a = 0, cols_a = 0, ld_a = 0, stride_a = 0;
  int64_t rows_b = 0, cols_b = 0, ld_b = 0, stride_b = 0;
  int64_t rows_d = 0, cols_d = 0, batch = 0;
  uint32_t align_a = 0, align_b = 0, align_d = 0;

  auto tie() const {
    return std::tie(ordinal, workspace_bytes, ab, d, trans_a, trans_b, rows_a, cols_a, ld_a,
                    stride_a, rows_b, cols_b, ld_b, stride_b, rows_d, cols_d, batch, align_a,
                    align_b, align_d);
  }
  bool operator<(const LtKey& o) const { return tie() < o.tie(); }
};

// Descriptors and the chosen algorithm of one problem; `ok` is false when cuBLASLt offers no
// algorithm (the fallback kernel runs instead). Host objects only.
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr;
  cublasLtMatrixLayout_t b = nullptr;
  cublasLtMatrixLayout_t d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

cublasLtMatrixLayout_t make_layout(DType t, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  if (cublasLtMatrixLayoutCreate(&l, lt_type(t), static_cast<uint64_t>(rows),
                                 static_cast<uint64_t>(cols), ld) != CUBLAS_STATUS_SUCCESS) {
    return nullptr;
  }
  if (batch > 1) {
    const auto count = static_cast<int32_t>(batch);
    if (cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                         sizeof(count)) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                         sizeof(stride)) != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatrixLayoutDestroy(l);
      return nullptr;
    }
  }
  return l;
}

// Builds the descriptors and asks the heuristic for its first algorithm (host-only calls).
std::shared_ptr<const LtPlan> make_lt_plan(cublasLtHandle_t handle, const LtKey& key) {
  auto plan = std::make_shared<LtPlan>();
  if (cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) !=
      CUBLAS_STATUS_SUCCESS) {
    plan->op = nullptr;
    return plan;
  }
  const cublasOperation_t ta = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) !=
          CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) !=
          CUBLAS_STATUS_SUCCESS) {
    return plan;
  }
  plan->a = make_layout(key.ab, key.rows_a, key.cols_a, key.ld_a, key.batch, key.stride_a);
  plan->b = make_layout(key.ab, key.rows_b, key.cols_b, key.ld_b, key.batch, key.stride_b);
  plan->d =
      make_layout(key.d, key.rows_d, key.cols_d, key.rows_d, key.batch, key.rows_d * key.cols_d);
  if (plan->a == nullptr || plan->b == nullptr || plan->d == nullptr) return plan;

  cublasLtMatmulPreference_t pref = nullptr;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return plan;
  const auto ws = static_cast<uint64_t>(key.workspace_bytes);
  bool pref_ok =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                           sizeof(ws)) == CUBLAS_STATUS_SUCCESS;
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
  for (const auto& [attr, value] : aligns) {
    pref_ok = pref_ok && cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)) ==
                             CUBLAS_STATUS_SUCCESS;
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (pref_ok &&
      cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->a, plan->b, plan->d, plan->d, pref, 1,
                                     &result, &found) == CUBLAS_STATUS_SUCCESS &&
      found > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
      result.workspaceSize <= static_cast<size_t>(key.workspace_bytes)) {
    plan->algo = result.algo;
    plan->ok = true;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  return plan;
}

// The cached plan of `key` (built on first use). The cache lives for the process (never
// destroyed, so no cuBLASLt call runs after the library is unloaded) and is emptied when it
// grows past kMaxLtPlans; callers hold shared_ptrs, so an emptied entry stays valid for them.
std::shared_ptr<const LtPlan> lt_plan(cublasLtHandle_t handle, const LtKey& key) {
  constexpr size_t kMaxLtPlans = 4096;
  static std::mutex mu;
  static auto* cache = new std::map<LtKey, std::shared_ptr<const LtPlan>>();
  const std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  if (cache->size() >= kMaxLtPlans) cache->clear();
  std::shared_ptr<const LtPlan> plan = make_lt_plan(handle, key);
  cache->emplace(key, plan);
  return plan;
}

// Runs the product on cuBLASLt; false when cuBLASLt has no algorithm for it (nothing ran).
bool run_cublaslt(GpuState& g, const LtProblem& q, const DPtr& lhs, const DPtr& rhs,
                  const DPtr& out) {
  LtKey key;
  key.ordinal = g.ordinal;
  key.workspace_bytes = g.workspace != nullptr ? g.workspace_bytes : 0;
  key.ab = lhs.t;
  key.d = out.t;
  key.trans_a = q.trans_a;
  key.trans_b = q.trans_b;
  key.rows_a = q.rows_a;
  key.cols_a = q.cols_a;
  key.ld_a = q.ld_a;
  key.stride_a = q.stride_a;
  key.rows_b = q.rows_b;
  key.cols_b = q.cols_b;
  key.ld_b = q.ld_b;
  key.stride_b = q.stride_b;
  key.rows_d = q.rows_d;
  key.cols_d = q.cols_d;
  key.batch = q.batch;
  key.align_a = pointer_alignment(rhs.p);
  key.align_b = pointer_alignment(lhs.p);
  key.align_d = pointer_alignment(out.p);
  const std::shared_ptr<const LtPlan> plan = lt_plan(g.blas, key);
  if (!plan->ok) return false;
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t s = cublasLtMatmul(
      g.blas, plan->op, &alpha, rhs.p, plan->a, lhs.p, plan->b, &beta, out.p, plan->d, out.p,
      plan->d, &plan->algo, g.workspace, static_cast<size_t>(key.workspace_bytes), g.stream);
  if (s != CUBLAS_STATUS_SUCCESS) {
    g.fail(std::string(kDot) + ": cuBLASLt cublasLtMatmul failed: " + cublasLtGetStatusString(s));
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The row

void gather(GpuState& g, const DPtr& src, const Shape& shape, const std::vector<int64_t>& order,
            const DPtr& dst) {
  const int64_t n = shape.numel();
  const std::vector<int64_t> strides = shape.strides();
  Dims8 dims, src_strides;
  dims.rank = src_strides.rank = static_cast<int>(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    dims.v[i] = shape[order[i]];
    src_strides.v[i] = strides[static_cast<size_t>(order[i])];
  }
  gather_kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(src, dst, dims, src_strides, n);
  check_launch(g, kDot);
}

void run_fallback(GpuState& g, const OperandPlan& lp, const OperandPlan& rp, const DPtr& lhs,
                  const DPtr& rhs, const DPtr& out) {
  const int64_t batch = lp.batch, m = lp.free, n = rp.free, k = lp.contract;
  const Strided3 a{lhs, lp.batch_stride, lp.free_stride, lp.contract_stride};
  const Strided3 c{rhs, rp.batch_stride, rp.contract_stride, rp.free_stride};
  const int64_t tiles_m = (m + kGemmTile - 1) / kGemmTile;
  const int64_t tiles_n = (n + kGemmTile - 1) / kGemmTile;
  const int64_t tiles = batch * tiles_m * tiles_n;
  const int64_t cap = static_cast<int64_t>(g.multiprocessors > 0 ? g.multiprocessors : 108) * 8;
  const auto blocks = static_cast<unsigned>(tiles < cap ? tiles : cap);
  gemm_fallback_kernel<<<blocks, kGemmThreads, 0, g.stream>>>(a, c, out, batch, m, n, k, tiles_m,
                                                              tiles_n);
  check_launch(g, kDot);
}

void run_dot(const KernelArgs& args) {
  GpuState& g = gpu_of(args);
  const TensorView& lhs_view = args.in[0];
  const TensorView& rhs_view = args.in[1];
  const TensorView& out_view = args.out[0];
  DPtr lhs = dptr(lhs_view, kDot);
  DPtr rhs = dptr(rhs_view, kDot);
  const DPtr out = dptr(out_view, kDot);
  const DotPlan plan = plan_dot(lhs_view.shape, rhs_view.shape, args.attrs->dot);
  MP_CHECK(out_view.shape == plan.out_shape) << "dot: out is " << out_view.shape.to_string()
                                             << ", expected " << plan.out_shape.to_string();
  const int64_t batch = plan.lhs.batch, m = plan.lhs.free, n = plan.rhs.free;
  if (batch == 0 || m == 0 || n == 0) return;
  if (plan.lhs.contract == 0) {  // an empty sum
    check_cuda(g, cudaMemsetAsync(out.p, 0, static_cast<size_t>(out_view.bytes()), g.stream),
               "dot: cudaMemsetAsync");
    return;
  }

  // Gathered copies take the operands' common dtype (f32 when they differ), so a copy can
  // also remove a dtype mismatch.
  const DType common = lhs.t == rhs.t ? lhs.t : DType::kF32;
  const int64_t need = plan.lhs_copy_bytes + plan.rhs_copy_bytes;
  if (need > 0) {
    MP_CHECK(args.workspace.data != nullptr && args.workspace.bytes() >= need)
        << "dot: workspace has " << args.workspace.bytes() << " bytes, needs " << need;
  }
  char* ws = static_cast<char*>(args.workspace.data);
  if (!plan.lhs.in_place) {
    const DPtr copy{ws, common};
    gather(g, lhs, lhs_view.shape, plan.lhs.gather_order, copy);
    lhs = copy;
  }
  if (!plan.rhs.in_place) {
    const DPtr copy{ws + plan.lhs_copy_bytes, common};
    gather(g, rhs, rhs_view.shape, plan.rhs.gather_order, copy);
    rhs = copy;
  }

  if (lhs.t == rhs.t && lt_supports(lhs.t, out.t) && batch <= INT32_MAX) {
    if (run_cublaslt(g, lt_problem(plan.lhs, plan.rhs), lhs, rhs, out)) return;
  }
  run_fallback(g, plan.lhs, plan.rhs, lhs, rhs, out);
}

}  // namespace

std::vector<CudaRow> cuda_matmul_rows() {
  return {{OpKind::kDot, OpKernel{run_dot, dot_workspace}}};
}

}  // namespace meshpipe::kernels::internal

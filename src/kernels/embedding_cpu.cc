// CPU embedding gather and its scatter-add gradient, for tables that may hold only a shard
// [id_offset, id_offset + V) of the vocabulary.
#include <cstring>

#include "kernels/embedding.h"
#include "kernels/internal/cpu_common.h"

namespace meshpipe::kernels {
namespace {

using internal::check_cpu;
using internal::kParallelElems;

// Hidden columns one thread owns in the gradient: disjoint column ranges let threads
// scatter-add without atomics even when ids repeat.
constexpr int64_t kColumnBlock = 64;

struct EmbeddingGeometry {
  int64_t vocab = 0;
  int64_t hidden = 0;
  int64_t positions = 0;
};

EmbeddingGeometry check_embedding(const TensorView& table, const TensorView& ids,
                                  const TensorView& rows, const char* op) {
  MP_CHECK(table.shape.rank() == 2)
      << op << ": table must be [V, H], got " << table.shape.to_string();
  MP_CHECK(table.dtype == DType::kF32 && rows.dtype == DType::kF32 && ids.dtype == DType::kI32)
      << op << ": table and rows are f32, ids i32";
  MP_CHECK(table.is_contiguous() && ids.is_contiguous() && rows.is_contiguous())
      << op << ": needs contiguous views";
  EmbeddingGeometry g{table.shape[0], table.shape[1], ids.numel()};
  const int64_t rank = ids.shape.rank();
  bool matches = rows.shape.rank() == rank + 1 && rows.shape[rank] == g.hidden;
  for (int64_t i = 0; matches && i < rank; ++i) matches = rows.shape[i] == ids.shape[i];
  MP_CHECK(matches) << op << ": rows are " << rows.shape.to_string() << " for ids "
                    << ids.shape.to_string() << " and hidden size " << g.hidden;
  return g;
}

}  // namespace

void embedding(const KernelContext& ctx, const TensorView& table, const TensorView& ids,
               int64_t id_offset, const TensorView& out) {
  check_cpu(ctx, "embedding");
  const EmbeddingGeometry g = check_embedding(table, ids, out, "embedding");
  const float* tp = table.f32();
  const int32_t* ip = ids.i32();
  float* op = out.f32();
  const auto row_bytes = static_cast<size_t>(g.hidden) * sizeof(float);
#pragma omp parallel for if (out.numel() > kParallelElems)
  for (int64_t p = 0; p < g.positions; ++p) {
    const int64_t row = static_cast<int64_t>(ip[p]) - id_offset;
    float* dst = op + p * g.hidden;
    if (row >= 0 && row < g.vocab) {
      std::memcpy(dst, tp + row * g.hidden, row_bytes);
    } else {
      std::memset(dst, 0, row_bytes);
    }
  }
}

void embedding_grad(const KernelContext& ctx, const TensorView& ids, const TensorView& dy,
                    int64_t id_offset, const TensorView& dtable) {
  check_cpu(ctx, "embedding_grad");
  const EmbeddingGeometry g = check_embedding(dtable, ids, dy, "embedding_grad");
  const int32_t* ip = ids.i32();
  const float* gp = dy.f32();
  float* tp = dtable.f32();
  std::memset(tp, 0, static_cast<size_t>(dtable.bytes()));
  const int64_t blocks = (g.hidden + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for if (dy.numel() > kParallelElems)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t c1 = (c0 + kColumnBlock) < g.hidden ? (c0 + kColumnBlock) : g.hidden;
    for (int64_t p = 0; p < g.positions; ++p) {
      const int64_t row = static_cast<int64_t>(ip[p]) - id_offset;
      if (row < 0 || row >= g.vocab) continue;
      float* dst = tp + row * g.hidden;
      const float* src = gp + p * g.hidden;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace meshpipe::kernels

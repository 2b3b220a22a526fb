// The contiguous runs of a box copy (private to kernels/; kernels::copy_box on the CPU and on a
// GPU): the box's last dim, merged with the dims before it while the box covers the dims after
// them whole in both tensors (a weight's tile of whole rows is one run, not one per row), and
// the box's first elements in the two tensors. No core/status.h: CUDA files include it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/shape.h"

namespace meshpipe::kernels::internal {

struct BoxRuns {
  int64_t inner = 0;      ///< the runs are dims inner .. rank-1; dims 0 .. inner-1 step them
  int64_t run = 0;        ///< elements per run
  int64_t src_first = 0;  ///< flat index of the box's first element in the source
  int64_t dst_first = 0;  ///< and in the destination
  std::vector<int64_t> src_strides;
  std::vector<int64_t> dst_strides;
};

/// The runs of the box `extent` at `src_offset` of `src` and `dst_offset` of `dst` (rank >= 1).
inline BoxRuns box_runs(const Shape& src, std::span<const int64_t> src_offset, const Shape& dst,
                        std::span<const int64_t> dst_offset, std::span<const int64_t> extent) {
  BoxRuns r;
  const int64_t rank = src.rank();
  r.src_strides = src.strides();
  r.dst_strides = dst.strides();
  r.inner = rank - 1;
  r.run = extent[static_cast<size_t>(r.inner)];
  while (r.inner > 0 && extent[static_cast<size_t>(r.inner)] == src[r.inner] &&
         extent[static_cast<size_t>(r.inner)] == dst[r.inner]) {
    --r.inner;
    r.run *= extent[static_cast<size_t>(r.inner)];
  }
  for (int64_t d = 0; d < rank; ++d) {
    const auto u = static_cast<size_t>(d);
    r.src_first += src_offset[u] * r.src_strides[u];
    r.dst_first += dst_offset[u] * r.dst_strides[u];
  }
  return r;
}

}  // namespace meshpipe::kernels::internal

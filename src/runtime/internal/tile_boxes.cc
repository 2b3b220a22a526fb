// contiguous_offset (runtime/internal/tile_boxes.h).
#include "runtime/internal/tile_boxes.h"

namespace meshpipe::runtime::internal {

// The element offset of a box in a row-major tensor of `shape` when the box is one contiguous
// run of it (the dims before the innermost one it does not cover whole have extent 1), else -1.
int64_t contiguous_offset(const Shape& shape, const std::vector<int64_t>& offset,
                          const std::vector<int64_t>& extent) {
  const int64_t rank = shape.rank();
  if (static_cast<int64_t>(offset.size()) != rank || static_cast<int64_t>(extent.size()) != rank) {
    return -1;
  }
  for (int64_t d = 0; d < rank; ++d) {  // a box outside the tile is never taken in place
    const auto u = static_cast<size_t>(d);
    if (offset[u] < 0 || extent[u] < 0 || offset[u] + extent[u] > shape[d]) return -1;
  }
  int64_t inner = rank - 1;
  while (inner > 0 && extent[static_cast<size_t>(inner)] == shape[inner]) --inner;
  for (int64_t d = 0; d < inner; ++d) {
    if (extent[static_cast<size_t>(d)] != 1) return -1;
  }
  const std::vector<int64_t> strides = shape.strides();
  int64_t at = 0;
  for (int64_t d = 0; d < rank; ++d) at += offset[static_cast<size_t>(d)] * strides[size_t(d)];
  return at;
}

}  // namespace meshpipe::runtime::internal

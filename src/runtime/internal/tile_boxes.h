// Box arithmetic on tiles (private to runtime/): a box is one range per dim in full-tensor
// coordinates (mesh::DimRange); the interpreter's collectives and copies place pieces of tiles
// with these.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/shape.h"
#include "mesh/sharding.h"

namespace meshpipe::runtime::internal {

using Ranges = std::vector<mesh::DimRange>;

inline std::vector<int64_t> offset_in(const Ranges& box, const Ranges& base) {
  std::vector<int64_t> o;
  for (size_t d = 0; d < box.size(); ++d) o.push_back(box[d].begin - base[d].begin);
  return o;
}

inline std::vector<int64_t> extent_of(const Ranges& box) {
  std::vector<int64_t> e;
  for (const mesh::DimRange& r : box) e.push_back(r.end - r.begin);
  return e;
}

inline Ranges intersect(const Ranges& a, const Ranges& b) {
  Ranges r(a.size());
  for (size_t d = 0; d < a.size(); ++d) {
    r[d].begin = std::max(a[d].begin, b[d].begin);
    r[d].end = std::max(r[d].begin, std::min(a[d].end, b[d].end));
  }
  return r;
}

inline int64_t numel_of(const std::vector<int64_t>& e) {
  int64_t n = 1;
  for (int64_t x : e) n *= x;
  return n;
}

// The element offset of a box in a row-major tensor of `shape` when the box is one contiguous
// run of it (the dims before the innermost one it does not cover whole have extent 1), else -1.
int64_t contiguous_offset(const Shape& shape, const std::vector<int64_t>& offset,
                          const std::vector<int64_t>& extent);

}  // namespace meshpipe::runtime::internal

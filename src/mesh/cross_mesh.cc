// plan_cross_mesh: destination tiles, intersecting source tiles, load-balanced senders.
#include "mesh/cross_mesh.h"

#include <algorithm>
#include <map>

namespace meshpipe::mesh {
namespace {

// The spec `to` with every replicated mesh axis (size > 1) moved onto a replicated dim it
// divides, so that each destination device receives a distinct share.
ShardingSpec split_replicas(const Shape& shape, ShardingSpec to, const LogicalMesh& dst) {
  for (int a = 0; a < 2; ++a) {
    if (dst.size(a) <= 1 || (to.used_axes() & (1u << a)) != 0) continue;
    for (size_t d = 0; d < to.dims.size(); ++d) {
      if (to.dims[d] == DimSharding::kR && shape[static_cast<int64_t>(d)] % dst.size(a) == 0) {
        to.dims[d] = a == 0 ? DimSharding::kS0 : DimSharding::kS1;
        break;
      }
    }
  }
  return to;
}

bool intersect(const std::vector<DimRange>& a, const std::vector<DimRange>& b,
               std::vector<DimRange>* out) {
  out->clear();
  for (size_t d = 0; d < a.size(); ++d) {
    const int64_t lo = std::max(a[d].begin, b[d].begin);
    const int64_t hi = std::min(a[d].end, b[d].end);
    if (lo >= hi) return false;
    out->push_back({lo, hi});
  }
  return true;
}

int64_t region_elements(const std::vector<DimRange>& r) {
  int64_t n = 1;
  for (const DimRange& d : r) n *= d.end - d.begin;
  return n;
}

}  // namespace

Expected<CrossMeshPlan> plan_cross_mesh(const Shape& shape, DType dtype, const ShardingSpec& from,
                                        const LogicalMesh& src, const ShardingSpec& to,
                                        const LogicalMesh& dst, std::vector<int64_t>* load,
                                        const CrossMeshOptions& options) {
  MP_RETURN_IF_ERROR(validate_sharding(shape, from, src).with_context("source spec"));
  MP_RETURN_IF_ERROR(validate_sharding(shape, to, dst).with_context("destination spec"));
  if (from.partial != 0 || to.partial != 0) {
    return make_error(Errc::kInvalidArgument,
                      "cross-mesh resharding moves complete values; '{}' -> '{}' has partial sums",
                      from.to_string(), to.to_string());
  }
  if (load == nullptr || static_cast<int64_t>(load->size()) != src.num_devices()) {
    return make_error(Errc::kInvalidArgument, "sender load must have one entry per source device");
  }
  CrossMeshPlan plan;
  plan.received = options.local_allgather ? split_replicas(shape, to, dst) : to;
  MP_ASSIGN_OR_RETURN(plan.local, plan_resharding(shape, dtype, plan.received, to, dst));

  // Source devices grouped by the tile they hold (replicas hold the same one), in first-holder
  // order so that the plan is deterministic.
  std::map<std::vector<std::pair<int64_t, int64_t>>, size_t> tile_index;
  std::vector<std::vector<DimRange>> tiles;
  std::vector<std::vector<int32_t>> holders;
  for (int64_t i = 0; i < src.num_devices(); ++i) {
    const std::vector<DimRange> r = tile_ranges(shape, from, src, i / src.size(1), i % src.size(1));
    std::vector<std::pair<int64_t, int64_t>> key;
    for (const DimRange& d : r) key.emplace_back(d.begin, d.end);
    auto [it, inserted] = tile_index.emplace(key, tiles.size());
    if (inserted) {
      tiles.push_back(r);
      holders.emplace_back();
    }
    holders[it->second].push_back(static_cast<int32_t>(i));
  }

  std::vector<int64_t> sent(static_cast<size_t>(src.num_devices()), 0);
  const int64_t width = dtype_size(dtype);
  std::vector<DimRange> piece;
  for (int64_t j = 0; j < dst.num_devices(); ++j) {
    const std::vector<DimRange> want =
        tile_ranges(shape, plan.received, dst, j / dst.size(1), j % dst.size(1));
    for (size_t t = 0; t < tiles.size(); ++t) {
      if (!intersect(want, tiles[t], &piece)) continue;
      int32_t best = holders[t].front();
      for (int32_t h : holders[t]) {
        if ((*load)[static_cast<size_t>(h)] < (*load)[static_cast<size_t>(best)]) best = h;
      }
      const int64_t bytes = region_elements(piece) * width;
      (*load)[static_cast<size_t>(best)] += bytes;
      sent[static_cast<size_t>(best)] += bytes;
      plan.pieces.push_back({best, static_cast<int32_t>(j), piece, bytes});
    }
  }
  plan.max_sender_bytes = *std::max_element(sent.begin(), sent.end());
  return plan;
}

}  // namespace meshpipe::mesh

// Analytic and profiled cost models.
#include "planner/cost_model.h"

#include <algorithm>

namespace meshpipe::planner {

Expected<Seconds> CostModel::resharding(const Shape& shape, DType dtype,
                                        const mesh::ShardingSpec& from,
                                        const mesh::ShardingSpec& to,
                                        const mesh::LogicalMesh& mesh) const {
  if (from == to) return Seconds(0.0);
  MP_ASSIGN_OR_RETURN(mesh::ReshardingPlan plan,
                      mesh::plan_resharding(shape, dtype, from, to, mesh));
  Seconds total(0.0);
  for (const mesh::CollectiveStep& s : plan.steps) {
    total += collective(s.kind, s.bytes, mesh, s.axis);
  }
  return total;
}

Seconds AnalyticCostModel::collective(mesh::CollectiveKind kind, int64_t bytes,
                                      const mesh::LogicalMesh& mesh, int axis) const {
  return mesh::collective_cost(kind, bytes, mesh, axis);
}

Seconds AnalyticCostModel::compute(const ComputeWork& work) const {
  const bool half = work.dtype == DType::kF16 || work.dtype == DType::kBF16;
  const double peak = half && work.is_matmul ? device_.peak_flops_f16 : device_.peak_flops_f32;
  const double t_flops = peak > 0 ? work.flops.value() / peak : 0.0;
  const double t_bytes = device_.memory_bandwidth > 0
                             ? static_cast<double>(work.bytes.value()) / device_.memory_bandwidth
                             : 0.0;
  return Seconds(std::max(t_flops, t_bytes));
}

double interpolate(const std::vector<std::pair<double, double>>& points, double x) {
  if (points.empty()) return 0.0;
  if (points.size() == 1) {
    return points[0].first > 0 ? points[0].second * x / points[0].first : points[0].second;
  }
  size_t hi = 1;
  while (hi + 1 < points.size() && points[hi].first < x) ++hi;
  const auto& [x0, y0] = points[hi - 1];
  const auto& [x1, y1] = points[hi];
  if (x1 == x0) return y1;
  return std::max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0));
}

ProfiledCostModel::ProfiledCostModel(mesh::ClusterSpec cluster)
    : cluster_(std::move(cluster)), profile_(*cluster_.profile), analytic_(cluster_.device) {
  if (!profile_.concurrency.empty()) {
    const double sharing = cluster_.device.kind == "cpu" ? cluster_.num_devices() : 1.0;
    concurrency_ = std::max(1e-3, interpolate(profile_.concurrency, sharing));
  }
}

Seconds ProfiledCostModel::collective(mesh::CollectiveKind kind, int64_t bytes,
                                      const mesh::LogicalMesh& mesh, int axis) const {
  const int64_t n = mesh.size(axis);
  if (n <= 1 || kind == mesh::CollectiveKind::kSlice) return Seconds(0.0);
  const bool inter =
      cluster_.inter_host.bandwidth > 0 && mesh.beta[axis] == 1.0 / cluster_.inter_host.bandwidth;
  auto it = profile_.collectives.find({kind, n, inter});
  if (it != profile_.collectives.end()) {
    return Seconds(interpolate(it->second, static_cast<double>(bytes)));
  }
  if (kind == mesh::CollectiveKind::kAllGather || kind == mesh::CollectiveKind::kReduceScatter) {
    auto ar = profile_.collectives.find({mesh::CollectiveKind::kAllReduce, n, inter});
    if (ar != profile_.collectives.end()) {
      return Seconds(interpolate(ar->second, static_cast<double>(bytes)) / 2.0);
    }
  }
  return analytic_.collective(kind, bytes, mesh, axis);
}

Seconds ProfiledCostModel::compute(const ComputeWork& work) const {
  double t = 0.0;
  const auto& tables = work.is_matmul ? profile_.gemm : profile_.memory_bound;
  auto it = tables.find(work.dtype);
  if (it != tables.end()) {
    t = interpolate(it->second,
                    work.is_matmul ? work.flops.value() : static_cast<double>(work.bytes.value()));
  } else {
    t = analytic_.compute(work).value();
  }
  return Seconds(t * concurrency_ + profile_.op_overhead_seconds);
}

Seconds ProfiledCostModel::transfer(int64_t bytes, const mesh::LinkSpec& link,
                                    bool inter_host) const {
  auto it = profile_.transfers.find(inter_host);
  if (it != profile_.transfers.end()) {
    return Seconds(interpolate(it->second, static_cast<double>(bytes)));
  }
  return CostModel::transfer(bytes, link, inter_host);
}

}  // namespace meshpipe::planner

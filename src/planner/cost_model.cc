// Analytic and profiled cost models.
#include "planner/cost_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

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

namespace {

// Position of x among ascending sizes in log2: the lower index and the weight of the next one,
// clamped to the ends.
std::pair<size_t, double> locate(const std::vector<double>& v, double x) {
  if (v.size() == 1 || x <= v.front()) return {0, 0.0};
  if (x >= v.back()) return {v.size() - 1, 0.0};
  size_t i = 0;
  while (i + 2 < v.size() && v[i + 1] <= x) ++i;
  const double w = (std::log2(x) - std::log2(v[i])) / (std::log2(v[i + 1]) - std::log2(v[i]));
  return {i, std::clamp(w, 0.0, 1.0)};
}

}  // namespace

double ProfiledCostModel::GemmGrid::seconds(const shard::GemmDims& d) const {
  const auto [im, wm] = locate(m, static_cast<double>(d.m));
  const auto [in, wn] = locate(n, static_cast<double>(d.n));
  const auto [ik, wk] = locate(k, static_cast<double>(d.k));
  double r = 0.0;
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      for (int c = 0; c < 2; ++c) {
        const double w = (a ? wm : 1 - wm) * (b ? wn : 1 - wn) * (c ? wk : 1 - wk);
        if (w == 0.0) continue;
        const size_t x = std::min(im + a, m.size() - 1);
        const size_t y = std::min(in + b, n.size() - 1);
        const size_t z = std::min(ik + c, k.size() - 1);
        r += w * rate[(x * n.size() + y) * k.size() + z];
      }
    }
  }
  const double flops = 2.0 * static_cast<double>(d.batch) * static_cast<double>(d.m) *
                       static_cast<double>(d.n) * static_cast<double>(d.k);
  return r > 0 ? flops / r : 0.0;
}

ProfiledCostModel::ProfiledCostModel(mesh::ClusterSpec cluster)
    : cluster_(std::move(cluster)), profile_(*cluster_.profile), analytic_(cluster_.device) {
  if (!profile_.concurrency.empty()) {
    const double sharing = cluster_.device.kind == "cpu" ? cluster_.num_devices() : 1.0;
    concurrency_ = std::max(1e-3, interpolate(profile_.concurrency, sharing));
  }
  // A grid is used only when it is complete: every (m, n, k) of its sizes measured.
  for (const auto& [dt, points] : profile_.gemm_grid) {
    GemmGrid g;
    std::map<std::array<double, 3>, double> at;
    for (const auto& p : points) {
      g.m.push_back(p[0]);
      g.n.push_back(p[1]);
      g.k.push_back(p[2]);
      at[{p[0], p[1], p[2]}] = p[3];
    }
    for (auto* v : {&g.m, &g.n, &g.k}) {
      std::sort(v->begin(), v->end());
      v->erase(std::unique(v->begin(), v->end()), v->end());
    }
    bool complete = true;
    for (double a : g.m) {
      for (double b : g.n) {
        for (double c : g.k) {
          auto it = at.find({a, b, c});
          complete = complete && it != at.end() && it->second > 0;
          g.rate.push_back(complete ? 2.0 * a * b * c / it->second : 0.0);
        }
      }
    }
    if (complete) grids_.emplace(dt, std::move(g));
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
  auto grid = grids_.find(work.dtype);
  if (work.is_matmul && work.gemm.known() && grid != grids_.end()) {
    t = grid->second.seconds(work.gemm);
  } else if (it != tables.end()) {
    t = interpolate(it->second,
                    work.is_matmul ? work.flops.value() : static_cast<double>(work.bytes.value()));
  } else {
    t = analytic_.compute(work).value();
  }
  if (work.kind) {
    auto f = profile_.kind_factors.find(*work.kind);
    if (f != profile_.kind_factors.end()) t *= f->second;
  }
  return Seconds(t * concurrency_ + profile_.op_overhead_seconds);
}

double ProfiledCostModel::sharing(double busy) const {
  if (profile_.concurrency.empty() || cluster_.device.kind != "cpu" || concurrency_ <= 0) {
    return 1.0;
  }
  const double at = std::max(1e-3, interpolate(profile_.concurrency, std::max(1.0, busy)));
  return std::clamp(at / concurrency_, 1e-3, 1.0);
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

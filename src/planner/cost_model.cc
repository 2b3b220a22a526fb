// Analytic and profiled cost models.
#include "planner/cost_model.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

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

using nlohmann::json;

Expected<std::vector<std::pair<double, double>>> parse_points(const json& j,
                                                              const std::string& field) {
  if (!j.is_array() || j.empty()) {
    return make_error(Errc::kInvalidArgument,
                      "profile field '{}' must be a non-empty list of [x, seconds]", field);
  }
  std::vector<std::pair<double, double>> out;
  for (const json& p : j) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number() ||
        p[0].get<double>() < 0 || p[1].get<double>() < 0) {
      return make_error(Errc::kInvalidArgument,
                        "profile field '{}' has an entry that is not [x >= 0, seconds >= 0]",
                        field);
    }
    out.emplace_back(p[0].get<double>(), p[1].get<double>());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Expected<mesh::CollectiveKind> parse_kind(const std::string& s) {
  for (auto k : {mesh::CollectiveKind::kAllGather, mesh::CollectiveKind::kReduceScatter,
                 mesh::CollectiveKind::kAllReduce, mesh::CollectiveKind::kAllToAll}) {
    if (mesh::collective_name(k) == s) return k;
  }
  return make_error(Errc::kInvalidArgument,
                    "unknown collective kind '{}' (all-gather, reduce-scatter, all-reduce, "
                    "all-to-all)",
                    s);
}

}  // namespace

Expected<ProfileDatabase> parse_profile_database(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return make_error(Errc::kInvalidArgument, "profile database is not valid JSON: {}", e.what());
  }
  ProfileDatabase db;
  if (!j.is_object())
    return make_error(Errc::kInvalidArgument, "profile database must be an object");
  if (j.contains("gemm")) {
    if (!j["gemm"].is_object()) {
      return make_error(Errc::kInvalidArgument, "profile field 'gemm' must be an object");
    }
    for (const auto& [name, pts] : j["gemm"].items()) {
      auto dt = parse_dtype(name);
      if (!dt)
        return make_error(Errc::kInvalidArgument, "profile field 'gemm.{}': unknown dtype", name);
      MP_ASSIGN_OR_RETURN(auto points, parse_points(pts, "gemm." + name));
      db.gemm[*dt] = std::move(points);
    }
  }
  if (j.contains("collectives")) {
    if (!j["collectives"].is_array()) {
      return make_error(Errc::kInvalidArgument, "profile field 'collectives' must be a list");
    }
    size_t i = 0;
    for (const json& c : j["collectives"]) {
      const std::string where = "collectives[" + std::to_string(i++) + "]";
      if (!c.is_object() || !c.contains("kind") || !c["kind"].is_string() || !c.contains("group") ||
          !c["group"].is_number_integer() || !c.contains("link") || !c["link"].is_string() ||
          !c.contains("points")) {
        return make_error(Errc::kInvalidArgument,
                          "profile field '{}' needs kind, group (integer), link and points", where);
      }
      MP_ASSIGN_OR_RETURN(mesh::CollectiveKind kind, parse_kind(c["kind"].get<std::string>()));
      const std::string link = c["link"].get<std::string>();
      if (link != "intra" && link != "inter") {
        return make_error(Errc::kInvalidArgument, "profile field '{}.link' must be intra or inter",
                          where);
      }
      MP_ASSIGN_OR_RETURN(auto points, parse_points(c["points"], where + ".points"));
      db.collectives[{kind, c["group"].get<int64_t>(), link == "inter"}] = std::move(points);
    }
  }
  return db;
}

Expected<ProfileDatabase> load_profile_database(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(Errc::kIo, "cannot read profile database '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto db = parse_profile_database(ss.str());
  if (!db.has_value()) return db.status().with_context(path);
  return db;
}

ProfiledCostModel::ProfiledCostModel(mesh::ClusterSpec cluster, ProfileDatabase db)
    : cluster_(std::move(cluster)), db_(std::move(db)), analytic_(cluster_.device) {}

Seconds ProfiledCostModel::collective(mesh::CollectiveKind kind, int64_t bytes,
                                      const mesh::LogicalMesh& mesh, int axis) const {
  const int64_t n = mesh.size(axis);
  if (n <= 1 || kind == mesh::CollectiveKind::kSlice) return Seconds(0.0);
  const bool inter =
      cluster_.inter_host.bandwidth > 0 && mesh.beta[axis] == 1.0 / cluster_.inter_host.bandwidth;
  auto it = db_.collectives.find({kind, n, inter});
  if (it != db_.collectives.end()) {
    return Seconds(interpolate(it->second, static_cast<double>(bytes)));
  }
  if (kind == mesh::CollectiveKind::kAllGather || kind == mesh::CollectiveKind::kReduceScatter) {
    auto ar = db_.collectives.find({mesh::CollectiveKind::kAllReduce, n, inter});
    if (ar != db_.collectives.end()) {
      return Seconds(interpolate(ar->second, static_cast<double>(bytes)) / 2.0);
    }
  }
  return analytic_.collective(kind, bytes, mesh, axis);
}

Seconds ProfiledCostModel::compute(const ComputeWork& work) const {
  if (work.is_matmul) {
    auto it = db_.gemm.find(work.dtype);
    if (it != db_.gemm.end()) return Seconds(interpolate(it->second, work.flops.value()));
  }
  return analytic_.compute(work);
}

}  // namespace meshpipe::planner

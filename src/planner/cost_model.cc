// Analytic and profiled cost models.
#include "planner/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/files.h"
#include "core/json.h"

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

constexpr const char* kSubject = "profile field";

// A table of measured points: a non-empty array of [x >= 0, seconds >= 0], sorted by x.
Status read_points(const Json& j, const std::string& path,
                   std::vector<std::pair<double, double>>* out) {
  if (!j.is_array() || j.empty()) {
    return json_field_error(kSubject, path, "must be a non-empty list of [x, seconds]");
  }
  out->clear();
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& p = j[i];
    if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number() ||
        p[0].get<double>() < 0 || p[1].get<double>() < 0) {
      return json_field_error(kSubject, fmt::format("{}[{}]", path, i),
                              "is not [x >= 0, seconds >= 0]");
    }
    out->emplace_back(p[0].get<double>(), p[1].get<double>());
  }
  std::sort(out->begin(), out->end());
  return Status::ok();
}

Status read_kind(JsonReader& r, mesh::CollectiveKind* out) {
  std::string name;
  MP_RETURN_IF_ERROR(r.read("kind", &name));
  for (auto k : {mesh::CollectiveKind::kAllGather, mesh::CollectiveKind::kReduceScatter,
                 mesh::CollectiveKind::kAllReduce, mesh::CollectiveKind::kAllToAll}) {
    if (mesh::collective_name(k) == name) {
      *out = k;
      return Status::ok();
    }
  }
  return r.error("kind", fmt::format("is an unknown collective kind '{}' (all-gather, "
                                     "reduce-scatter, all-reduce, all-to-all)",
                                     name));
}

// One entry of "collectives": {"kind", "group", "link", "points"}.
Status read_collective(const Json& c, const std::string& path, ProfileDatabase* db) {
  if (!c.is_object()) return json_field_error(kSubject, path, "must be an object");
  JsonReader r(c, path, kSubject);
  mesh::CollectiveKind kind = mesh::CollectiveKind::kAllReduce;
  MP_RETURN_IF_ERROR(read_kind(r, &kind));
  int64_t group = 0;
  MP_RETURN_IF_ERROR(r.read("group", &group));
  if (group < 1) return r.error("group", "must be a positive integer");
  std::string link;
  MP_RETURN_IF_ERROR(r.read("link", &link));
  if (link != "intra" && link != "inter") return r.error("link", "must be intra or inter");
  const Json* points = nullptr;
  MP_RETURN_IF_ERROR(r.find("points", &points));
  std::vector<std::pair<double, double>> table;
  MP_RETURN_IF_ERROR(read_points(*points, r.path_of("points"), &table));
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  db->collectives[{kind, group, link == "inter"}] = std::move(table);
  return Status::ok();
}

}  // namespace

Expected<ProfileDatabase> parse_profile_database(const std::string& json_text) {
  Expected<Json> parsed = parse_json(json_text, "its text");
  if (!parsed) return parsed.status().with_context("profile database is not valid JSON");
  const Json& j = *parsed;
  if (!j.is_object()) {
    return make_error(Errc::kInvalidArgument, "profile database must be an object");
  }
  JsonReader r(j, "", kSubject);
  ProfileDatabase db;
  if (const Json* gemm = r.find_optional("gemm")) {
    if (!gemm->is_object()) return r.error("gemm", "must be an object");
    for (const auto& [name, pts] : gemm->items()) {
      const std::string path = r.path_of("gemm") + "." + name;
      const std::optional<DType> dt = parse_dtype(name);
      if (!dt) return json_field_error(kSubject, path, "is not a dtype");
      MP_RETURN_IF_ERROR(read_points(pts, path, &db.gemm[*dt]));
    }
  }
  if (const Json* collectives = r.find_optional("collectives")) {
    if (!collectives->is_array()) return r.error("collectives", "must be an array");
    for (size_t i = 0; i < collectives->size(); ++i) {
      MP_RETURN_IF_ERROR(read_collective((*collectives)[i],
                                         fmt::format("{}[{}]", r.path_of("collectives"), i), &db));
    }
  }
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  return db;
}

Expected<ProfileDatabase> load_profile_database(const std::string& path) {
  MP_ASSIGN_OR_RETURN(const std::string text, read_text_file(path, "profile database"));
  auto db = parse_profile_database(text);
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

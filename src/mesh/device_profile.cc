// DeviceProfile: the JSON form (field-named errors, exact round trip).
#include "mesh/device_profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/files.h"
#include "core/json.h"

namespace meshpipe::mesh {
namespace {

constexpr const char* kSubject = "profile field";
// More points than any measurement writes; a bound on what a file can make the planner hold.
constexpr size_t kMaxPoints = 4096;

// A table: a non-empty array of [x >= 0, seconds >= 0] (finite), sorted by x on reading.
Status read_points(const Json& j, const std::string& path, ProfileTable* out) {
  if (!j.is_array() || j.empty()) {
    return json_field_error(kSubject, path, "must be a non-empty list of [x, seconds]");
  }
  if (j.size() > kMaxPoints) {
    return json_field_error(kSubject, path, fmt::format("has more than {} points", kMaxPoints));
  }
  out->clear();
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& p = j[i];
    const bool ok = p.is_array() && p.size() == 2 && p[0].is_number() && p[1].is_number() &&
                    std::isfinite(p[0].get<double>()) && std::isfinite(p[1].get<double>()) &&
                    p[0].get<double>() >= 0 && p[1].get<double>() >= 0;
    if (!ok) {
      return json_field_error(kSubject, fmt::format("{}[{}]", path, i),
                              "is not [x >= 0, seconds >= 0]");
    }
    out->emplace_back(p[0].get<double>(), p[1].get<double>());
  }
  std::sort(out->begin(), out->end());
  return Status::ok();
}

Json points_json(const ProfileTable& t) {
  Json a = Json::array();
  for (const auto& [x, y] : t) a.push_back(Json::array({x, y}));
  return a;
}

Status read_kind(JsonReader& r, CollectiveKind* out) {
  std::string name;
  MP_RETURN_IF_ERROR(r.read("kind", &name));
  for (auto k : {CollectiveKind::kAllGather, CollectiveKind::kReduceScatter,
                 CollectiveKind::kAllReduce, CollectiveKind::kAllToAll}) {
    if (collective_name(k) == name) {
      *out = k;
      return Status::ok();
    }
  }
  return r.error("kind", fmt::format("is an unknown collective kind '{}' (all-gather, "
                                     "reduce-scatter, all-reduce, all-to-all)",
                                     name));
}

Status read_link(JsonReader& r, bool* inter) {
  std::string link;
  MP_RETURN_IF_ERROR(r.read("link", &link));
  if (link != "intra" && link != "inter") return r.error("link", "must be intra or inter");
  *inter = link == "inter";
  return Status::ok();
}

// The "link" and "points" of an entry, and no other field left unread.
Status read_link_and_points(JsonReader& r, bool* inter, ProfileTable* table) {
  MP_RETURN_IF_ERROR(read_link(r, inter));
  const Json* points = nullptr;
  MP_RETURN_IF_ERROR(r.find("points", &points));
  MP_RETURN_IF_ERROR(read_points(*points, r.path_of("points"), table));
  return r.check_no_unknown_fields();
}

// One entry of "collectives": {"kind", "group", "link", "points"}.
Status read_collective(const Json& c, const std::string& path, DeviceProfile* p) {
  if (!c.is_object()) return json_field_error(kSubject, path, "must be an object");
  JsonReader r(c, path, kSubject);
  CollectiveKind kind = CollectiveKind::kAllReduce;
  MP_RETURN_IF_ERROR(read_kind(r, &kind));
  int64_t group = 0;
  MP_RETURN_IF_ERROR(r.read("group", &group));
  if (group < 1 || group > (int64_t{1} << 20)) {
    return r.error("group", "must be a positive integer (at most 2^20)");
  }
  bool inter = false;
  ProfileTable table;
  MP_RETURN_IF_ERROR(read_link_and_points(r, &inter, &table));
  p->collectives[{kind, group, inter}] = std::move(table);
  return Status::ok();
}

// One entry of "transfers": {"link", "points"}.
Status read_transfer(const Json& c, const std::string& path, DeviceProfile* p) {
  if (!c.is_object()) return json_field_error(kSubject, path, "must be an object");
  JsonReader r(c, path, kSubject);
  bool inter = false;
  ProfileTable table;
  MP_RETURN_IF_ERROR(read_link_and_points(r, &inter, &table));
  p->transfers[inter] = std::move(table);
  return Status::ok();
}

// "gemm" or "memory_bound": {dtype: points}.
Status read_dtype_tables(JsonReader& r, std::string_view key, std::map<DType, ProfileTable>* out) {
  const Json* tables = r.find_optional(key);
  if (tables == nullptr) return Status::ok();
  if (!tables->is_object()) return r.error(key, "must be an object of dtype: points");
  for (const auto& [name, pts] : tables->items()) {
    const std::string path = r.path_of(key) + "." + name;
    const std::optional<DType> dt = parse_dtype(name);
    if (!dt) return json_field_error(kSubject, path, "is not a dtype");
    MP_RETURN_IF_ERROR(read_points(pts, path, &(*out)[*dt]));
  }
  return Status::ok();
}

// "gemm_grid": {dtype: [[m, n, k, seconds], ...]} with positive sizes and times.
Status read_gemm_grid(JsonReader& r, DeviceProfile* p) {
  const Json* grid = r.find_optional("gemm_grid");
  if (grid == nullptr) return Status::ok();
  if (!grid->is_object()) return r.error("gemm_grid", "must be an object of dtype: points");
  for (const auto& [name, pts] : grid->items()) {
    const std::string path = r.path_of("gemm_grid") + "." + name;
    const std::optional<DType> dt = parse_dtype(name);
    if (!dt) return json_field_error(kSubject, path, "is not a dtype");
    if (!pts.is_array() || pts.empty() || pts.size() > kMaxPoints) {
      return json_field_error(
          kSubject, path, fmt::format("must be a list of 1 to {} [m, n, k, seconds]", kMaxPoints));
    }
    auto& out = p->gemm_grid[*dt];
    for (size_t i = 0; i < pts.size(); ++i) {
      const Json& q = pts[i];
      bool ok = q.is_array() && q.size() == 4;
      std::array<double, 4> v{};
      for (size_t k = 0; ok && k < 4; ++k) {
        ok = q[k].is_number() && std::isfinite(q[k].get<double>()) && q[k].get<double>() > 0 &&
             q[k].get<double>() <= 1e9;
        if (ok) v[k] = q[k].get<double>();
      }
      if (!ok) {
        return json_field_error(kSubject, fmt::format("{}[{}]", path, i),
                                "is not [m, n, k, seconds] of positive numbers");
      }
      out.push_back(v);
    }
    std::sort(out.begin(), out.end());
  }
  return Status::ok();
}

}  // namespace

Expected<DeviceProfile> parse_device_profile(const std::string& json_text) {
  Expected<Json> parsed = parse_json(json_text, "its text");
  if (!parsed) return parsed.status().with_context("device profile is not valid JSON");
  const Json& j = *parsed;
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "device profile must be an object");
  JsonReader r(j, "", kSubject);
  DeviceProfile p;
  MP_RETURN_IF_ERROR(r.read_optional("source", &p.source));
  MP_RETURN_IF_ERROR(r.read_optional("op_overhead_seconds", &p.op_overhead_seconds));
  if (!std::isfinite(p.op_overhead_seconds) || p.op_overhead_seconds < 0 ||
      p.op_overhead_seconds > 1.0) {
    return r.error("op_overhead_seconds", "must be a number of seconds in [0, 1]");
  }
  if (const Json* c = r.find_optional("concurrency")) {
    MP_RETURN_IF_ERROR(read_points(*c, r.path_of("concurrency"), &p.concurrency));
    for (const auto& [k, factor] : p.concurrency) {
      if (k < 1 || factor <= 0) {
        return r.error("concurrency", "must list [devices >= 1, slowdown > 0]");
      }
    }
  }
  MP_RETURN_IF_ERROR(read_dtype_tables(r, "gemm", &p.gemm));
  MP_RETURN_IF_ERROR(read_gemm_grid(r, &p));
  if (const Json* k = r.find_optional("kind_factors")) {
    if (!k->is_object()) return r.error("kind_factors", "must be an object of op kind: factor");
    for (const auto& [name, v] : k->items()) {
      const std::string path = r.path_of("kind_factors") + "." + name;
      const std::optional<OpKind> kind = parse_op_kind(name);
      if (!kind) return json_field_error(kSubject, path, "is not an op kind");
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0 ||
          v.get<double>() > 1e4) {
        return json_field_error(kSubject, path, "must be a factor in (0, 10000]");
      }
      p.kind_factors[*kind] = v.get<double>();
    }
  }
  MP_RETURN_IF_ERROR(read_dtype_tables(r, "memory_bound", &p.memory_bound));
  if (const Json* collectives = r.find_optional("collectives")) {
    if (!collectives->is_array()) return r.error("collectives", "must be an array");
    for (size_t i = 0; i < collectives->size(); ++i) {
      MP_RETURN_IF_ERROR(read_collective((*collectives)[i],
                                         fmt::format("{}[{}]", r.path_of("collectives"), i), &p));
    }
  }
  if (const Json* transfers = r.find_optional("transfers")) {
    if (!transfers->is_array()) return r.error("transfers", "must be an array");
    for (size_t i = 0; i < transfers->size(); ++i) {
      MP_RETURN_IF_ERROR(
          read_transfer((*transfers)[i], fmt::format("{}[{}]", r.path_of("transfers"), i), &p));
    }
  }
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  return p;
}

Expected<DeviceProfile> load_device_profile(const std::string& path) {
  MP_ASSIGN_OR_RETURN(const std::string text, read_text_file(path, "device profile"));
  auto p = parse_device_profile(text);
  if (!p.has_value()) return p.status().with_context(fmt::format("device profile '{}'", path));
  return p;
}

std::string device_profile_to_json(const DeviceProfile& p) {
  Json j = Json::object();
  j["source"] = p.source;
  j["op_overhead_seconds"] = p.op_overhead_seconds;
  if (!p.concurrency.empty()) j["concurrency"] = points_json(p.concurrency);
  const auto dtype_tables = [](const std::map<DType, ProfileTable>& m) {
    Json o = Json::object();
    for (const auto& [dt, t] : m) o[std::string(dtype_name(dt))] = points_json(t);
    return o;
  };
  if (!p.gemm.empty()) j["gemm"] = dtype_tables(p.gemm);
  if (!p.kind_factors.empty()) {
    Json o = Json::object();
    for (const auto& [kind, f] : p.kind_factors) o[std::string(op_kind_name(kind))] = f;
    j["kind_factors"] = std::move(o);
  }
  if (!p.gemm_grid.empty()) {
    Json o = Json::object();
    for (const auto& [dt, pts] : p.gemm_grid) {
      Json a = Json::array();
      for (const auto& v : pts) a.push_back(Json::array({v[0], v[1], v[2], v[3]}));
      o[std::string(dtype_name(dt))] = std::move(a);
    }
    j["gemm_grid"] = std::move(o);
  }
  if (!p.memory_bound.empty()) j["memory_bound"] = dtype_tables(p.memory_bound);
  if (!p.collectives.empty()) {
    Json a = Json::array();
    for (const auto& [key, t] : p.collectives) {
      const auto& [kind, group, inter] = key;
      Json c = Json::object();
      c["kind"] = collective_name(kind);
      c["group"] = group;
      c["link"] = inter ? "inter" : "intra";
      c["points"] = points_json(t);
      a.push_back(std::move(c));
    }
    j["collectives"] = std::move(a);
  }
  if (!p.transfers.empty()) {
    Json a = Json::array();
    for (const auto& [inter, t] : p.transfers) {
      Json c = Json::object();
      c["link"] = inter ? "inter" : "intra";
      c["points"] = points_json(t);
      a.push_back(std::move(c));
    }
    j["transfers"] = std::move(a);
  }
  return j.dump(1);
}

}  // namespace meshpipe::mesh

// Plan: semantic validation and the versioned JSON form (field-named errors, exact round trip).
#include "planner/plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>

#include "core/files.h"
#include "core/json.h"

namespace meshpipe::planner {

const char* schedule_name(Schedule schedule) {
  switch (schedule) {
    case Schedule::k1F1B:
      return "1f1b";
    case Schedule::kGPipe:
      return "gpipe";
  }
  return "unknown";
}

Expected<Schedule> parse_schedule(std::string_view text) {
  if (text == "1f1b") return Schedule::k1F1B;
  if (text == "gpipe") return Schedule::kGPipe;
  return make_error(Errc::kInvalidArgument, "schedule '{}' is neither 1f1b nor gpipe", text);
}

namespace {

// Fields come out in the order they are written (ordered_json), so the text follows the header.
constexpr std::string_view kSubject = "plan field";

// ---------------------------------------------------------------------------------------------
// Validation helpers. Messages are "<path>: <what>".

Status invalid(std::string_view path, std::string_view what) {
  return make_error(Errc::kInvalidArgument, "{}: {}", path, what);
}

// True when `s` is valid UTF-8, i.e. when JSON can carry it unchanged.
bool is_utf8(const std::string& s) {
  try {
    (void)Json(s).dump();
    return true;
  } catch (const Json::exception&) {
    return false;
  }
}

Status check_utf8(const std::string& s, std::string_view path) {
  if (!is_utf8(s)) return invalid(path, "is not valid UTF-8");
  // Names are printed: no terminal control sequences.
  if (printable(s) != s || s.find_first_of("\n\t") != std::string::npos) {
    return invalid(path, fmt::format("holds control characters: '{}'", printable(s)));
  }
  return Status::ok();
}

Status check_utf8(const std::map<std::string, std::string>& m, std::string_view path) {
  for (const auto& [key, value] : m) {
    if (!is_utf8(key)) return invalid(path, "has a key that is not valid UTF-8");
    MP_RETURN_IF_ERROR(check_utf8(value, fmt::format("{}.{}", path, key)));
  }
  return Status::ok();
}

// The keys of a map of typed values (the values are written from their own text).
template <class V>
Status check_utf8_keys(const std::map<std::string, V>& m, std::string_view path) {
  for (const auto& [key, value] : m) {
    if (!is_utf8(key)) return invalid(path, "has a key that is not valid UTF-8");
  }
  return Status::ok();
}

Status check_non_negative(double v, std::string_view path) {
  if (!(v >= 0.0) || !std::isfinite(v)) {
    return invalid(path, fmt::format("must be a finite non-negative number, not {}", v));
  }
  return Status::ok();
}

Status check_non_negative(int64_t v, std::string_view path) {
  if (v < 0) return invalid(path, fmt::format("must be non-negative, not {}", v));
  return Status::ok();
}

Status check_positive(int64_t v, std::string_view path) {
  if (v < 1) return invalid(path, fmt::format("must be positive, not {}", v));
  return Status::ok();
}

Status check_memory(const StageMemory& m, const std::string& path) {
  MP_RETURN_IF_ERROR(check_non_negative(m.persistent, path + ".persistent"));
  MP_RETURN_IF_ERROR(check_non_negative(m.gradients, path + ".gradients"));
  MP_RETURN_IF_ERROR(check_non_negative(m.stash, path + ".stash"));
  MP_RETURN_IF_ERROR(check_non_negative(m.working, path + ".working"));
  MP_RETURN_IF_ERROR(check_non_negative(m.estimated, path + ".estimated"));
  return check_non_negative(m.peak, path + ".peak");
}

Status check_logical_mesh(const mesh::LogicalMesh& m, size_t devices, const std::string& path) {
  for (int a = 0; a < 2; ++a) {
    // Bounding each axis by the device count keeps the product below 2^63.
    if (m.shape[a] < 1 || m.shape[a] > static_cast<int64_t>(devices)) {
      return invalid(
          fmt::format("{}.shape[{}]", path, a),
          fmt::format("must be between 1 and the stage's {} devices, not {}", devices, m.shape[a]));
    }
    MP_RETURN_IF_ERROR(check_non_negative(m.alpha[a], fmt::format("{}.alpha[{}]", path, a)));
    MP_RETURN_IF_ERROR(check_non_negative(m.beta[a], fmt::format("{}.beta[{}]", path, a)));
  }
  if (m.num_devices() != static_cast<int64_t>(devices)) {
    return invalid(path + ".shape", fmt::format("the logical mesh {} has {} devices but the "
                                                "stage has {}",
                                                m.to_string(), m.num_devices(), devices));
  }
  return Status::ok();
}

// The checks of one stage that do not involve its neighbours. `owner` maps every device seen
// so far to the stage that uses it.
Status check_stage(const StagePlan& s, size_t i, const mesh::ClusterSpec& c,
                   std::map<int32_t, size_t>* owner) {
  const std::string path = fmt::format("stages[{}]", i);
  if (s.submesh.hosts < 1 || s.submesh.hosts > c.hosts) {
    return invalid(
        path + ".submesh.hosts",
        fmt::format("must be between 1 and the cluster's {}, not {}", c.hosts, s.submesh.hosts));
  }
  if (s.submesh.devices_per_host < 1 || s.submesh.devices_per_host > c.devices_per_host) {
    return invalid(path + ".submesh.devices_per_host",
                   fmt::format("must be between 1 and the cluster's {}, not {}", c.devices_per_host,
                               s.submesh.devices_per_host));
  }
  if (static_cast<int64_t>(s.devices.size()) != s.submesh.num_devices()) {
    return invalid(path + ".devices",
                   fmt::format("{} devices but the submesh {} has {}", s.devices.size(),
                               s.submesh.to_string(), s.submesh.num_devices()));
  }
  for (const int32_t d : s.devices) {
    if (d < 0 || d >= c.num_devices()) {
      return invalid(path + ".devices",
                     fmt::format("device {} is outside the cluster's {}", d, c.num_devices()));
    }
    const auto [it, inserted] = owner->emplace(d, i);
    if (!inserted) {
      return invalid(path + ".devices",
                     fmt::format("device {} is also used by stages[{}]", d, it->second));
    }
  }
  MP_RETURN_IF_ERROR(check_logical_mesh(s.mesh, s.devices.size(), path + ".mesh"));
  MP_RETURN_IF_ERROR(check_non_negative(s.time, path + ".time"));
  MP_RETURN_IF_ERROR(check_positive(s.in_flight, path + ".in_flight"));
  MP_RETURN_IF_ERROR(check_memory(s.memory, path + ".memory"));
  MP_RETURN_IF_ERROR(check_utf8_keys(s.value_specs, path + ".value_specs"));
  MP_RETURN_IF_ERROR(check_utf8(s.op_strategies, path + ".op_strategies"));
  MP_RETURN_IF_ERROR(check_utf8_keys(s.op_layouts, path + ".op_layouts"));
  return Status::ok();
}

// Stage ranges: stage 0 starts at layer 0, each next stage starts right after the previous
// one, the last ends at num_layers - 1.
Status check_stage_ranges(const Plan& p) {
  if (p.stages.empty()) return invalid("stages", "a plan needs at least one stage");
  int64_t next = 0;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    if (p.stages[i].first_layer != next) {
      return invalid(fmt::format("stages[{}].first_layer", i),
                     fmt::format("is {} but must be {} (stage ranges cover the layers in order, "
                                 "without gaps or overlaps)",
                                 p.stages[i].first_layer, next));
    }
    if (p.stages[i].last_layer < p.stages[i].first_layer) {
      return invalid(fmt::format("stages[{}].last_layer", i),
                     fmt::format("is {}, before first_layer {}", p.stages[i].last_layer,
                                 p.stages[i].first_layer));
    }
    next = static_cast<int64_t>(p.stages[i].last_layer) + 1;
  }
  if (next != p.num_layers) {
    return invalid(fmt::format("stages[{}].last_layer", p.stages.size() - 1),
                   fmt::format("is {} but the last stage must end at layer {} (num_layers {})",
                               next - 1, p.num_layers - 1, p.num_layers));
  }
  return Status::ok();
}

Status check_transfer(const CrossStageTransfer& t, size_t i, size_t num_stages) {
  const std::string path = fmt::format("transfers[{}]", i);
  const auto check_stage_ref = [&](int32_t s, const char* field) {
    if (s < 0 || static_cast<size_t>(s) >= num_stages) {
      return invalid(
          fmt::format("{}.{}", path, field),
          fmt::format("stage {} does not exist (the plan has {} stages)", s, num_stages));
    }
    return Status::ok();
  };
  MP_RETURN_IF_ERROR(check_stage_ref(t.from_stage, "from_stage"));
  MP_RETURN_IF_ERROR(check_stage_ref(t.to_stage, "to_stage"));
  if (t.from_stage == t.to_stage) {
    return invalid(
        path + ".to_stage",
        fmt::format("a transfer must leave its stage, but both ends are stage {}", t.to_stage));
  }
  MP_RETURN_IF_ERROR(check_non_negative(t.bytes, path + ".bytes"));
  MP_RETURN_IF_ERROR(check_non_negative(t.seconds, path + ".seconds"));
  return check_utf8(t.value, path + ".value");
}

Status check_batches(const Plan& p) {
  MP_RETURN_IF_ERROR(check_positive(p.global_batch, "global_batch"));
  MP_RETURN_IF_ERROR(check_positive(p.micro_batch, "micro_batch"));
  MP_RETURN_IF_ERROR(check_positive(p.micro_batches, "micro_batches"));
  if (p.global_batch > kMaxGlobalBatch) {
    return invalid("global_batch", fmt::format("is {}, more than the {} a plan may have",
                                               p.global_batch, kMaxGlobalBatch));
  }
  if (p.micro_batches > kMaxMicroBatches) {
    return invalid("micro_batches",
                   fmt::format("is {}, more than the {} a plan may have (a step's schedule, "
                               "its data and a flat lowering grow with the micro-batch count)",
                               p.micro_batches, kMaxMicroBatches));
  }
  int64_t product = 0;
  if (__builtin_mul_overflow(p.micro_batches, p.micro_batch, &product) ||
      product != p.global_batch) {
    return invalid("micro_batches",
                   fmt::format("{} micro-batches of {} do not make the global batch of {}",
                               p.micro_batches, p.micro_batch, p.global_batch));
  }
  return Status::ok();
}

Status check_times(const PlanningTimes& t) {
  MP_RETURN_IF_ERROR(check_non_negative(t.clustering, "times.clustering"));
  MP_RETURN_IF_ERROR(check_non_negative(t.stage_costs, "times.stage_costs"));
  MP_RETURN_IF_ERROR(check_non_negative(t.stage_dp, "times.stage_dp"));
  MP_RETURN_IF_ERROR(check_non_negative(t.total, "times.total"));
  MP_RETURN_IF_ERROR(check_non_negative(t.intra_op_solves, "times.intra_op_solves"));
  MP_RETURN_IF_ERROR(check_non_negative(t.dp_step_time, "times.dp_step_time"));
  MP_RETURN_IF_ERROR(check_non_negative(t.recipe_step_time, "times.recipe_step_time"));
  return check_non_negative(t.intra_op_reused, "times.intra_op_reused");
}

// ---------------------------------------------------------------------------------------------
// Writing.

Json submesh_json(const mesh::SubmeshShape& s) {
  Json j = Json::object();
  j["hosts"] = s.hosts;
  j["devices_per_host"] = s.devices_per_host;
  return j;
}

Json logical_mesh_json(const mesh::LogicalMesh& m) {
  Json j = Json::object();
  j["shape"] = Json::array({m.shape[0], m.shape[1]});
  j["alpha"] = Json::array({m.alpha[0], m.alpha[1]});
  j["beta"] = Json::array({m.beta[0], m.beta[1]});
  return j;
}

Json memory_json(const StageMemory& m) {
  Json j = Json::object();
  j["persistent"] = m.persistent;
  j["gradients"] = m.gradients;
  j["stash"] = m.stash;
  j["working"] = m.working;
  j["peak"] = m.peak;
  if (m.estimated > 0) j["estimated"] = m.estimated;
  return j;
}

Json string_map_json(const std::map<std::string, std::string>& m) {
  Json j = Json::object();
  for (const auto& [key, value] : m) j[key] = value;
  return j;
}

Json stage_json(const StagePlan& s) {
  Json j = Json::object();
  j["first_layer"] = s.first_layer;
  j["last_layer"] = s.last_layer;
  j["submesh"] = submesh_json(s.submesh);
  j["devices"] = s.devices;
  j["mesh"] = logical_mesh_json(s.mesh);
  j["time"] = s.time;
  j["in_flight"] = s.in_flight;
  if (s.recompute) j["recompute"] = true;
  j["memory"] = memory_json(s.memory);
  Json specs = Json::object();
  for (const auto& [name, spec] : s.value_specs) specs[name] = spec.to_string();
  j["value_specs"] = std::move(specs);
  j["op_strategies"] = string_map_json(s.op_strategies);
  Json layouts = Json::object();
  for (const auto& [name, layout] : s.op_layouts) layouts[name] = shard::layout_to_string(layout);
  j["op_layouts"] = std::move(layouts);
  return j;
}

Json transfer_json(const CrossStageTransfer& t) {
  Json j = Json::object();
  j["value"] = t.value;
  j["from_stage"] = t.from_stage;
  j["to_stage"] = t.to_stage;
  j["from_spec"] = t.from_spec.to_string();
  j["to_spec"] = t.to_spec.to_string();
  j["bytes"] = t.bytes;
  j["seconds"] = t.seconds;
  return j;
}

Json times_json(const PlanningTimes& t) {
  Json j = Json::object();
  j["clustering"] = t.clustering;
  j["stage_costs"] = t.stage_costs;
  j["stage_dp"] = t.stage_dp;
  j["total"] = t.total;
  j["intra_op_solves"] = t.intra_op_solves;
  j["intra_op_reused"] = t.intra_op_reused;
  if (t.dp_step_time > 0) j["dp_step_time"] = t.dp_step_time;
  if (t.recipe_step_time > 0) j["recipe_step_time"] = t.recipe_step_time;
  return j;
}

// The cluster as a nested object in cluster_to_json's form; null (which fails to load) when
// the cluster cannot be written, e.g. a name that is not UTF-8.
Json cluster_json(const mesh::ClusterSpec& c) {
  try {
    return Json::parse(mesh::cluster_to_json(c));
  } catch (const std::exception&) {
    return nullptr;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading. Every reader names the field by its path ("stages[1].mesh.shape[0]").

Status field_error(std::string_view path, std::string_view what) {
  return json_field_error(kSubject, path, what);
}

using ObjectReader = JsonReader;

// A map of texts parsed into typed values; an error names the entry ("stages[0].op_layouts
// ['layer0/dot']") and quotes the text.
template <class V, class Parse>
Status read_typed_map(ObjectReader& r, const char* key, std::map<std::string, V>* out,
                      Parse parse) {
  std::map<std::string, std::string> texts;
  MP_RETURN_IF_ERROR(r.read(key, &texts));
  out->clear();
  for (const auto& [name, text] : texts) {
    auto value = parse(text);
    if (!value.has_value()) {
      return field_error(fmt::format("{}['{}']", r.path_of(key), name), value.status().message());
    }
    out->emplace(name, std::move(*value));
  }
  return Status::ok();
}

Status read_spec(ObjectReader& r, const char* key, mesh::ShardingSpec* out) {
  std::string text;
  MP_RETURN_IF_ERROR(r.read(key, &text));
  auto spec = mesh::parse_sharding(text);
  if (!spec.has_value()) return r.error(key, spec.status().message());
  *out = std::move(*spec);
  return Status::ok();
}

Status read_submesh(ObjectReader& parent, mesh::SubmeshShape* s) {
  const Json* j = nullptr;
  MP_RETURN_IF_ERROR(parent.object("submesh", &j));
  ObjectReader r(*j, parent.path_of("submesh"), std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read("hosts", &s->hosts));
  MP_RETURN_IF_ERROR(r.read("devices_per_host", &s->devices_per_host));
  return r.check_no_unknown_fields();
}

Status read_logical_mesh(ObjectReader& parent, mesh::LogicalMesh* m) {
  const Json* j = nullptr;
  MP_RETURN_IF_ERROR(parent.object("mesh", &j));
  ObjectReader r(*j, parent.path_of("mesh"), std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read_pair("shape", m->shape));
  MP_RETURN_IF_ERROR(r.read_pair("alpha", m->alpha));
  MP_RETURN_IF_ERROR(r.read_pair("beta", m->beta));
  return r.check_no_unknown_fields();
}

Status read_memory(ObjectReader& parent, StageMemory* m) {
  const Json* j = nullptr;
  MP_RETURN_IF_ERROR(parent.object("memory", &j));
  ObjectReader r(*j, parent.path_of("memory"), std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read("persistent", &m->persistent));
  MP_RETURN_IF_ERROR(r.read_optional("gradients", &m->gradients));  // absent before 2026-12
  MP_RETURN_IF_ERROR(r.read("stash", &m->stash));
  MP_RETURN_IF_ERROR(r.read("working", &m->working));
  MP_RETURN_IF_ERROR(r.read("peak", &m->peak));
  MP_RETURN_IF_ERROR(r.read_optional("estimated", &m->estimated));
  return r.check_no_unknown_fields();
}

Status read_stage(const Json& j, const std::string& path, StagePlan* s) {
  if (!j.is_object()) return field_error(path, "must be an object");
  ObjectReader r(j, path, std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read("first_layer", &s->first_layer));
  MP_RETURN_IF_ERROR(r.read("last_layer", &s->last_layer));
  MP_RETURN_IF_ERROR(read_submesh(r, &s->submesh));
  MP_RETURN_IF_ERROR(r.read("devices", &s->devices));
  MP_RETURN_IF_ERROR(read_logical_mesh(r, &s->mesh));
  MP_RETURN_IF_ERROR(r.read("time", &s->time));
  MP_RETURN_IF_ERROR(r.read("in_flight", &s->in_flight));
  MP_RETURN_IF_ERROR(r.read_optional("recompute", &s->recompute));
  MP_RETURN_IF_ERROR(read_memory(r, &s->memory));
  MP_RETURN_IF_ERROR(read_typed_map(r, "value_specs", &s->value_specs, mesh::parse_sharding));
  MP_RETURN_IF_ERROR(r.read("op_strategies", &s->op_strategies));
  MP_RETURN_IF_ERROR(read_typed_map(r, "op_layouts", &s->op_layouts, shard::parse_layout));
  return r.check_no_unknown_fields();
}

Status read_transfer(const Json& j, const std::string& path, CrossStageTransfer* t) {
  if (!j.is_object()) return field_error(path, "must be an object");
  ObjectReader r(j, path, std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read("value", &t->value));
  MP_RETURN_IF_ERROR(r.read("from_stage", &t->from_stage));
  MP_RETURN_IF_ERROR(r.read("to_stage", &t->to_stage));
  MP_RETURN_IF_ERROR(read_spec(r, "from_spec", &t->from_spec));
  MP_RETURN_IF_ERROR(read_spec(r, "to_spec", &t->to_spec));
  MP_RETURN_IF_ERROR(r.read("bytes", &t->bytes));
  MP_RETURN_IF_ERROR(r.read("seconds", &t->seconds));
  return r.check_no_unknown_fields();
}

Status read_times(ObjectReader& parent, PlanningTimes* t) {
  const Json* j = nullptr;
  MP_RETURN_IF_ERROR(parent.object("times", &j));
  ObjectReader r(*j, "times", std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read("clustering", &t->clustering));
  MP_RETURN_IF_ERROR(r.read("stage_costs", &t->stage_costs));
  MP_RETURN_IF_ERROR(r.read("stage_dp", &t->stage_dp));
  MP_RETURN_IF_ERROR(r.read("total", &t->total));
  MP_RETURN_IF_ERROR(r.read("intra_op_solves", &t->intra_op_solves));
  MP_RETURN_IF_ERROR(r.read("intra_op_reused", &t->intra_op_reused));
  MP_RETURN_IF_ERROR(r.read_optional("dp_step_time", &t->dp_step_time));
  MP_RETURN_IF_ERROR(r.read_optional("recipe_step_time", &t->recipe_step_time));
  return r.check_no_unknown_fields();
}

Status read_cluster(ObjectReader& parent, mesh::ClusterSpec* c) {
  const Json* j = nullptr;
  MP_RETURN_IF_ERROR(parent.object("cluster", &j));
  Expected<mesh::ClusterSpec> cluster = mesh::parse_cluster_json(j->dump());
  if (!cluster) return cluster.status().with_context("plan field 'cluster'");
  *c = std::move(cluster).value();
  return Status::ok();
}

// The version is read before anything else, so that a plan of another version is reported as
// such rather than by the first field whose form changed.
Status read_plan(const Json& root, Plan* p) {
  if (!root.is_object()) return make_error(Errc::kInvalidArgument, "plan JSON must be an object");
  ObjectReader r(root, "", std::string(kSubject));
  MP_RETURN_IF_ERROR(r.read("version", &p->version));
  if (p->version != Plan::kVersion) {
    return make_error(Errc::kInvalidArgument,
                      "plan field 'version': version {} is not supported (this build reads "
                      "version {})",
                      p->version, Plan::kVersion);
  }
  MP_RETURN_IF_ERROR(r.read("model", &p->model));
  MP_RETURN_IF_ERROR(r.read("graph_fingerprint", &p->graph_fingerprint));
  std::string dtype;
  MP_RETURN_IF_ERROR(r.read("dtype", &dtype));
  const std::optional<DType> parsed_dtype = parse_dtype(dtype);
  if (!parsed_dtype) return r.error("dtype", fmt::format("'{}' is not a dtype", dtype));
  p->dtype = *parsed_dtype;
  MP_RETURN_IF_ERROR(r.read("global_batch", &p->global_batch));
  MP_RETURN_IF_ERROR(r.read("micro_batch", &p->micro_batch));
  MP_RETURN_IF_ERROR(r.read("micro_batches", &p->micro_batches));
  std::string schedule;
  MP_RETURN_IF_ERROR(r.read("schedule", &schedule));
  auto parsed_schedule = parse_schedule(schedule);
  if (!parsed_schedule) {
    return r.error("schedule", fmt::format("must be \"1f1b\" or \"gpipe\", not \"{}\"", schedule));
  }
  p->schedule = *parsed_schedule;
  MP_RETURN_IF_ERROR(read_cluster(r, &p->cluster));
  MP_RETURN_IF_ERROR(r.read("num_layers", &p->num_layers));
  MP_RETURN_IF_ERROR(r.read("op_layers", &p->op_layers));
  const Json* stages = nullptr;
  MP_RETURN_IF_ERROR(r.array("stages", &stages));
  p->stages.assign(stages->size(), StagePlan{});
  for (size_t i = 0; i < stages->size(); ++i) {
    MP_RETURN_IF_ERROR(read_stage((*stages)[i], fmt::format("stages[{}]", i), &p->stages[i]));
  }
  const Json* transfers = nullptr;
  MP_RETURN_IF_ERROR(r.array("transfers", &transfers));
  p->transfers.assign(transfers->size(), CrossStageTransfer{});
  for (size_t i = 0; i < transfers->size(); ++i) {
    MP_RETURN_IF_ERROR(
        read_transfer((*transfers)[i], fmt::format("transfers[{}]", i), &p->transfers[i]));
  }
  MP_RETURN_IF_ERROR(r.read("step_time", &p->step_time));
  MP_RETURN_IF_ERROR(r.read("tflops_per_device", &p->tflops_per_device));
  MP_RETURN_IF_ERROR(r.read("max_memory_per_device", &p->max_memory_per_device));
  MP_RETURN_IF_ERROR(read_times(r, &p->times));
  return r.check_no_unknown_fields();
}

}  // namespace

Status Plan::validate() const {
  if (version != kVersion) {
    return invalid("version", fmt::format("version {} is not supported (this build reads "
                                          "version {})",
                                          version, kVersion));
  }
  MP_RETURN_IF_ERROR(check_utf8(model, "model"));
  MP_RETURN_IF_ERROR(check_utf8(graph_fingerprint, "graph_fingerprint"));
  MP_RETURN_IF_ERROR(check_batches(*this));
  if (schedule != Schedule::k1F1B && schedule != Schedule::kGPipe) {
    return invalid("schedule", "must be \"1f1b\" or \"gpipe\"");
  }
  MP_RETURN_IF_ERROR(cluster.validate().with_context("cluster"));
  MP_RETURN_IF_ERROR(check_positive(num_layers, "num_layers"));
  for (size_t i = 0; i < op_layers.size(); ++i) {
    if (op_layers[i] < 0 || op_layers[i] >= num_layers) {
      return invalid(fmt::format("op_layers[{}]", i),
                     fmt::format("layer {} is outside 0..{}", op_layers[i], num_layers - 1));
    }
  }
  MP_RETURN_IF_ERROR(check_stage_ranges(*this));
  std::map<int32_t, size_t> owner;
  for (size_t i = 0; i < stages.size(); ++i) {
    MP_RETURN_IF_ERROR(check_stage(stages[i], i, cluster, &owner));
  }
  for (size_t i = 0; i < transfers.size(); ++i) {
    MP_RETURN_IF_ERROR(check_transfer(transfers[i], i, stages.size()));
  }
  MP_RETURN_IF_ERROR(check_non_negative(step_time, "step_time"));
  MP_RETURN_IF_ERROR(check_non_negative(tflops_per_device, "tflops_per_device"));
  MP_RETURN_IF_ERROR(check_non_negative(max_memory_per_device, "max_memory_per_device"));
  return check_times(times);
}

std::string plan_to_json(const Plan& plan) {
  Json j = Json::object();
  j["version"] = plan.version;
  j["model"] = plan.model;
  j["graph_fingerprint"] = plan.graph_fingerprint;
  j["dtype"] = std::string(dtype_name(plan.dtype));
  j["global_batch"] = plan.global_batch;
  j["micro_batch"] = plan.micro_batch;
  j["micro_batches"] = plan.micro_batches;
  j["schedule"] = schedule_name(plan.schedule);
  j["cluster"] = cluster_json(plan.cluster);
  j["num_layers"] = plan.num_layers;
  j["op_layers"] = plan.op_layers;
  j["stages"] = Json::array();
  for (const StagePlan& s : plan.stages) j["stages"].push_back(stage_json(s));
  j["transfers"] = Json::array();
  for (const CrossStageTransfer& t : plan.transfers) j["transfers"].push_back(transfer_json(t));
  j["step_time"] = plan.step_time;
  j["tflops_per_device"] = plan.tflops_per_device;
  j["max_memory_per_device"] = plan.max_memory_per_device;
  j["times"] = times_json(plan.times);
  // Doubles are written in the shortest form that reads back to the same bits. Strings that
  // are not UTF-8 (which validate() rejects) are written with U+FFFD instead of throwing.
  return j.dump(/*indent=*/2, /*indent_char=*/' ', /*ensure_ascii=*/false,
                Json::error_handler_t::replace);
}

Expected<Plan> plan_from_json(const std::string& text) {
  Plan plan;
  MP_ASSIGN_OR_RETURN(const Json root, parse_json(text, "plan JSON"));
  MP_RETURN_IF_ERROR(read_plan(root, &plan));
  MP_RETURN_IF_ERROR(plan.validate().with_context("invalid plan"));
  return plan;
}

Status save_plan(const Plan& plan, const std::string& path) {
  return write_text_file(path, plan_to_json(plan) + "\n", "plan file");
}

Expected<Plan> load_plan(const std::string& path) {
  MP_ASSIGN_OR_RETURN(const std::string text, read_text_file(path, "plan file"));
  Expected<Plan> plan = plan_from_json(text);
  if (!plan) return plan.status().with_context(fmt::format("plan file '{}'", path));
  return plan;
}

}  // namespace meshpipe::planner

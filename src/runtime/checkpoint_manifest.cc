// The checkpoint manifest and the tile list that crosses the control plane: JSON in and out.
#include "runtime/checkpoint_manifest.h"

#include <optional>
#include <set>

#include "core/json.h"

namespace meshpipe::runtime {

namespace {

constexpr const char* kFormat = "meshpipe-checkpoint";

using Region = std::vector<mesh::DimRange>;

// The first index of each dimension of `r`.
std::vector<int64_t> begins(const Region& r) {
  std::vector<int64_t> b;
  for (const auto& x : r) b.push_back(x.begin);
  return b;
}

// The extent of each dimension of `r`.
std::vector<int64_t> extents(const Region& r) {
  std::vector<int64_t> e;
  for (const auto& x : r) e.push_back(x.end - x.begin);
  return e;
}

// Every error names the field by its path: "checkpoint DIR: field 'values[w].shape[1]' must be
// a non-negative integer", "tile list field '[0].begin' must be an array".

// The path of element `i` of the array field `key`: "values[3]".
std::string element_path(const JsonReader& r, std::string_view key, size_t i) {
  return fmt::format("{}[{}]", r.path_of(key), i);
}

// A shape: an array of non-negative integers.
Status read_shape(JsonReader& r, std::string_view key, Shape* out) {
  std::vector<int64_t> dims;
  MP_RETURN_IF_ERROR(r.read(key, &dims));
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] < 0) {
      return json_field_error(r.subject(), element_path(r, key, d),
                              "must be a non-negative integer");
    }
  }
  *out = Shape(std::move(dims));
  return Status::ok();
}

// A dtype by its name ("f32").
Status read_dtype(JsonReader& r, std::string_view key, DType* out) {
  std::string name;
  MP_RETURN_IF_ERROR(r.read(key, &name));
  const std::optional<DType> dtype = parse_dtype(name);
  if (!dtype) return r.error(key, fmt::format("'{}' is not a dtype", name));
  *out = *dtype;
  return Status::ok();
}

// A tile file: a plain name inside the checkpoint directory.
Status read_file_name(JsonReader& r, std::string_view key, std::string* out) {
  MP_RETURN_IF_ERROR(r.read(key, out));
  if (out->empty() || *out == "." || *out == ".." ||
      out->find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
    return r.error(key, "must be a file name in the checkpoint directory");
  }
  return Status::ok();
}

// A tile's checksum: crc32c_text's 8 lowercase hexadecimal digits.
Status read_crc(JsonReader& r, std::string_view key, uint32_t* out) {
  std::string text;
  MP_RETURN_IF_ERROR(r.read(key, &text));
  uint32_t crc = 0;
  for (const char c : text) {
    const bool digit = c >= '0' && c <= '9';
    const bool hex = c >= 'a' && c <= 'f';
    if (!digit && !hex) break;
    crc = crc << 4 | static_cast<uint32_t>(digit ? c - '0' : c - 'a' + 10);
  }
  if (text.size() != 8 || crc32c_text(crc) != text) {
    return r.error(key, "must be a CRC-32C of 8 lowercase hexadecimal digits");
  }
  *out = crc;
  return Status::ok();
}

// A tile's region from its begin and extent: non-negative integers, one per dimension of
// `shape`, the box inside it.
Status read_region(JsonReader& r, const Shape& shape, Region* out) {
  std::vector<int64_t> b;
  std::vector<int64_t> e;
  MP_RETURN_IF_ERROR(r.read("begin", &b));
  MP_RETURN_IF_ERROR(r.read("extent", &e));
  const auto whole = [&](std::string_view what) {
    return json_field_error(r.subject(), r.path(), what);
  };
  if (b.size() != e.size() || static_cast<int64_t>(b.size()) != shape.rank()) {
    return whole("has a region of the wrong rank");
  }
  out->clear();
  for (size_t d = 0; d < b.size(); ++d) {
    if (b[d] < 0) {
      return json_field_error(r.subject(), element_path(r, "begin", d),
                              "must be a non-negative integer");
    }
    if (e[d] < 0) {
      return json_field_error(r.subject(), element_path(r, "extent", d),
                              "must be a non-negative integer");
    }
    const int64_t dim = shape[static_cast<int64_t>(d)];
    if (b[d] > dim || e[d] > dim - b[d]) return whole("has a region outside the tensor");
    out->push_back({b[d], b[d] + e[d]});
  }
  return Status::ok();
}

// The format and version, named when they are not ones `scope` accepts.
Status read_format(JsonReader& r, const std::string& subject, ManifestScope scope,
                   int64_t* version) {
  const Json* format = r.find_optional("format");
  if (format == nullptr || !format->is_string() ||
      format->get_ref<const std::string&>() != kFormat) {
    return make_error(Errc::kInvalidArgument, "{}: field 'format' is not {}", subject, kFormat);
  }
  const Json* v = r.find_optional("version");
  const bool known = v != nullptr && v->is_number_integer() &&
                     (*v == kCheckpointVersion || (*v == 1 && scope == ManifestScope::kOwnedFiles));
  if (v != nullptr && v->is_number_integer() && *v == 1 && !known) {
    return make_error(Errc::kInvalidArgument,
                      "{}: field 'version' is 1, a checkpoint without tile checksums, which this "
                      "build does not load (it reads version {})",
                      subject, kCheckpointVersion);
  }
  if (!known) {
    return make_error(Errc::kInvalidArgument, "{}: field 'version' is {}, this build reads {}",
                      subject, v == nullptr ? "missing" : v->dump(), kCheckpointVersion);
  }
  *version = v->get<int64_t>();
  return Status::ok();
}

// The header fields: the model (not empty), the step (not negative), the seed.
Status read_header(JsonReader& r, CheckpointInfo* info) {
  MP_RETURN_IF_ERROR(r.read("model", &info->model));
  if (info->model.empty()) return r.error("model", "must not be empty");
  MP_RETURN_IF_ERROR(r.read("step", &info->step));
  if (info->step < 0) return r.error("step", "must be a non-negative integer");
  // Far beyond any run, and far from overflowing the step arithmetic of a resumed session.
  if (info->step > kMaxCheckpointStep) {
    return r.error("step", fmt::format("must be at most {}", kMaxCheckpointStep));
  }
  MP_RETURN_IF_ERROR(r.read("seed", &info->seed));
  if (const Json* d = r.find_optional("data"); d != nullptr) {
    if (!d->is_object()) return r.error("data", "must be an object");
    JsonReader rd(*d, "data", "checkpoint field");
    MP_RETURN_IF_ERROR(rd.read("source", &info->data));
    MP_RETURN_IF_ERROR(rd.read("samples", &info->data_samples));
    MP_RETURN_IF_ERROR(rd.check_no_unknown_fields());
    if (info->data.size() > 4096) return rd.error("source", "is longer than 4096 bytes");
    if (info->data_samples < 0) return rd.error("samples", "must not be negative");
  }
  const Json* ls = r.find_optional("loss_scale");
  if (ls == nullptr) return Status::ok();
  if (!ls->is_object()) return r.error("loss_scale", "must be an object");
  JsonReader rl(*ls, "loss_scale", "checkpoint field");
  double scale = 0.0;
  MP_RETURN_IF_ERROR(rl.read("scale", &scale));
  if (!std::isfinite(scale) || scale <= 0.0 || scale > 3.0e38) {
    return rl.error("scale", "must be a positive finite f32 number");
  }
  info->loss_scale = static_cast<float>(scale);
  MP_RETURN_IF_ERROR(rl.read("good_steps", &info->loss_scale_good_steps));
  if (info->loss_scale_good_steps < 0) return rl.error("good_steps", "must not be negative");
  return Status::ok();
}

// The tiles of the value `name` from its array field "tiles" (`version` 1 has no checksums).
Status read_value_tiles(JsonReader& rv, const std::string& name, int64_t version, SavedValue* sv) {
  const Json* tiles = nullptr;
  MP_RETURN_IF_ERROR(rv.array("tiles", &tiles));
  if (tiles->size() > kMaxTilesPerValue) {
    return rv.error("tiles", fmt::format("has {} tiles, more than the {} a value may have",
                                         tiles->size(), kMaxTilesPerValue));
  }
  for (size_t k = 0; k < tiles->size(); ++k) {
    const Json& jt = (*tiles)[k];
    const std::string tile_at = element_path(rv, "tiles", k);
    if (!jt.is_object()) return json_field_error(rv.subject(), tile_at, "must be an object");
    JsonReader rt(jt, tile_at, rv.subject());
    SavedTile t{name, sv->shape, sv->dtype, "", {}, 0};
    MP_RETURN_IF_ERROR(read_file_name(rt, "file", &t.file));
    MP_RETURN_IF_ERROR(read_region(rt, sv->shape, &t.region));
    if (version >= 2) MP_RETURN_IF_ERROR(read_crc(rt, "crc32c", &t.crc32c));
    MP_RETURN_IF_ERROR(rt.check_no_unknown_fields());
    // The saved tiles of a value are disjoint (each element saved once): an overlap would let
    // a manifest claim coverage it does not have.
    for (const SavedTile& other : sv->tiles) {
      bool overlap = true;
      for (size_t d = 0; d < t.region.size(); ++d) {
        overlap = overlap && std::max(t.region[d].begin, other.region[d].begin) <
                                 std::min(t.region[d].end, other.region[d].end);
      }
      if (overlap) {
        return json_field_error(rv.subject(), tile_at,
                                fmt::format("overlaps the tile in '{}'", other.file));
      }
    }
    sv->tiles.push_back(std::move(t));
  }
  return Status::ok();
}

}  // namespace

std::string crc32c_text(uint32_t crc) { return fmt::format("{:08x}", crc); }

Expected<Manifest> parse_manifest(std::string_view text, const std::string& subject,
                                  ManifestScope scope) {
  Expected<Json> parsed = parse_json(text, "manifest");
  if (!parsed) return parsed.status().with_context(subject);
  const Json& j = *parsed;
  if (!j.is_object()) {
    return make_error(Errc::kInvalidArgument, "{}: the manifest must be a JSON object", subject);
  }
  const std::string field = subject + ": field";
  JsonReader r(j, "", field);
  Manifest m;
  MP_RETURN_IF_ERROR(read_format(r, subject, scope, &m.version));
  MP_RETURN_IF_ERROR(read_header(r, &m.info));
  if (scope == ManifestScope::kHeader) {
    r.find_optional("values");
    MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
    return m;
  }
  const Json* list = nullptr;
  MP_RETURN_IF_ERROR(r.array("values", &list));
  std::set<std::string> files;
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& jv = (*list)[i];
    const std::string at = element_path(r, "values", i);
    if (!jv.is_object()) return json_field_error(field, at, "must be an object");
    std::string name;
    MP_RETURN_IF_ERROR(JsonReader(jv, at, field).read("name", &name));
    // Past its name, a value is named by it: "values[w].tiles".
    JsonReader rv(jv, fmt::format("values[{}]", name), field);
    rv.find_optional("name");
    if (m.values.contains(name)) return json_field_error(field, rv.path(), "is listed twice");
    SavedValue sv;
    MP_RETURN_IF_ERROR(read_shape(rv, "shape", &sv.shape));
    MP_RETURN_IF_ERROR(read_dtype(rv, "dtype", &sv.dtype));
    MP_RETURN_IF_ERROR(read_value_tiles(rv, name, m.version, &sv));
    MP_RETURN_IF_ERROR(rv.check_no_unknown_fields());
    // One file holds one tile: the same file behind two regions would be read as a size (and
    // a checksum) it was never checked for.
    for (size_t k = 0; k < sv.tiles.size(); ++k) {
      if (!files.insert(sv.tiles[k].file).second) {
        return json_field_error(
            field, element_path(rv, "tiles", k),
            fmt::format("names file '{}', which another tile names too", sv.tiles[k].file));
      }
    }
    m.values.emplace(name, std::move(sv));
  }
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  return m;
}

std::string manifest_text(const CheckpointInfo& info, const std::vector<SavedTile>& tiles) {
  std::map<std::string, SavedValue> values;
  for (const SavedTile& t : tiles) {
    SavedValue& sv = values[t.value];
    sv.shape = t.shape;
    sv.dtype = t.dtype;
    sv.tiles.push_back(t);
  }
  Json j;
  j["format"] = kFormat;
  j["version"] = kCheckpointVersion;
  j["model"] = info.model;
  j["step"] = info.step;
  j["seed"] = info.seed;
  if (!info.data.empty()) j["data"] = {{"source", info.data}, {"samples", info.data_samples}};
  if (info.loss_scale > 0.0f) {
    j["loss_scale"] = {{"scale", info.loss_scale}, {"good_steps", info.loss_scale_good_steps}};
  }
  Json vals = Json::array();
  for (const auto& [name, sv] : values) {
    Json jv;
    jv["name"] = name;
    jv["shape"] = sv.shape.dims();
    jv["dtype"] = std::string(dtype_name(sv.dtype));
    Json jt = Json::array();
    for (const SavedTile& t : sv.tiles) {
      jt.push_back({{"file", t.file},
                    {"begin", begins(t.region)},
                    {"extent", extents(t.region)},
                    {"crc32c", crc32c_text(t.crc32c)}});
    }
    jv["tiles"] = std::move(jt);
    vals.push_back(std::move(jv));
  }
  j["values"] = std::move(vals);
  return j.dump(1);
}

std::string saved_tiles_to_json(const std::vector<SavedTile>& tiles) {
  Json j = Json::array();
  for (const SavedTile& t : tiles) {
    j.push_back({{"value", t.value},
                 {"shape", t.shape.dims()},
                 {"dtype", std::string(dtype_name(t.dtype))},
                 {"file", t.file},
                 {"begin", begins(t.region)},
                 {"extent", extents(t.region)},
                 {"crc32c", crc32c_text(t.crc32c)}});
  }
  return j.dump();
}

Expected<std::vector<SavedTile>> saved_tiles_from_json(const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json j, parse_json(text, "tile list"));
  if (!j.is_array()) return make_error(Errc::kInvalidArgument, "tile list must be a JSON array");
  const std::string subject = "tile list field";
  std::vector<SavedTile> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string at = fmt::format("[{}]", i);
    if (!j[i].is_object()) return json_field_error(subject, at, "must be an object");
    JsonReader r(j[i], at, subject);
    SavedTile t;
    MP_RETURN_IF_ERROR(r.read("value", &t.value));
    MP_RETURN_IF_ERROR(read_shape(r, "shape", &t.shape));
    MP_RETURN_IF_ERROR(read_dtype(r, "dtype", &t.dtype));
    MP_RETURN_IF_ERROR(read_file_name(r, "file", &t.file));
    MP_RETURN_IF_ERROR(read_region(r, t.shape, &t.region));
    MP_RETURN_IF_ERROR(read_crc(r, "crc32c", &t.crc32c));
    MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace meshpipe::runtime

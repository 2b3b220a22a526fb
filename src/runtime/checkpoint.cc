// Sharded checkpoints: save the distinct tiles, load by copying overlaps into any tiling.
#include "runtime/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "core/json.h"
#include "kernels/layout.h"

namespace meshpipe::runtime {

namespace {

namespace fs = std::filesystem;
constexpr const char* kFormat = "meshpipe-checkpoint";
constexpr int kVersion = 1;

using Region = std::vector<mesh::DimRange>;

// A value's tiles as the manifest lists them (for loading).
struct SavedValue {
  Shape shape;
  DType dtype = DType::kF32;
  std::vector<SavedTile> tiles;
};

std::vector<int64_t> begins(const Region& r) {
  std::vector<int64_t> b;
  for (const auto& x : r) b.push_back(x.begin);
  return b;
}

std::vector<int64_t> extents(const Region& r) {
  std::vector<int64_t> e;
  for (const auto& x : r) e.push_back(x.end - x.begin);
  return e;
}

int64_t numel(const Region& r) {
  int64_t n = 1;
  for (const auto& x : r) n *= x.end - x.begin;
  return n;
}

const graph::Value* find_value(const graph::Graph& g, const std::string& name) {
  for (const graph::Value& v : g.values()) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

Status write_file(const fs::path& path, const void* data, int64_t bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  f.close();
  if (!f) return make_error(Errc::kIo, "cannot write {}", path.string());
  return Status::ok();
}

Expected<std::vector<char>> read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(Errc::kIo, "cannot read {}", path.string());
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------------------------------------
// Reading. Every error names the field by its path: "checkpoint DIR: field 'values[w].shape[1]'
// must be a non-negative integer", "tile list field '[0].begin' must be an array".

// The path of element `i` of the array field `key`: "values[3]".
std::string element_path(const JsonReader& r, std::string_view key, size_t i) {
  return fmt::format("{}[{}]", r.path_of(key), i);
}

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
      out->find_first_of("/\\") != std::string::npos) {
    return r.error(key, "must be a file name in the checkpoint directory");
  }
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

// The manifest of the checkpoint in `dir`: its header into `info`, and each value's tiles into
// `values` unless that is null (the header alone). Fields the format does not know are errors
// (a new field comes with a new version).
Status read_manifest(const std::vector<char>& text, const std::string& dir, CheckpointInfo* info,
                     std::map<std::string, SavedValue>* values) {
  Expected<Json> parsed = parse_json(std::string_view(text.data(), text.size()), "manifest");
  if (!parsed) return parsed.status().with_context(fmt::format("checkpoint {}", dir));
  const Json& j = *parsed;
  if (!j.is_object()) {
    return make_error(Errc::kInvalidArgument, "checkpoint {}: the manifest must be a JSON object",
                      dir);
  }
  const std::string subject = fmt::format("checkpoint {}: field", dir);
  JsonReader r(j, "", subject);
  // The format and version first, named when they are not this build's.
  const Json* format = r.find_optional("format");
  if (format == nullptr || !format->is_string() ||
      format->get_ref<const std::string&>() != kFormat) {
    return make_error(Errc::kInvalidArgument, "checkpoint {}: field 'format' is not {}", dir,
                      kFormat);
  }
  const Json* version = r.find_optional("version");
  if (version == nullptr || !version->is_number_integer() || *version != kVersion) {
    return make_error(Errc::kInvalidArgument,
                      "checkpoint {}: field 'version' is {}, this build reads {}", dir,
                      version == nullptr ? "missing" : version->dump(), kVersion);
  }
  MP_RETURN_IF_ERROR(r.read("model", &info->model));
  MP_RETURN_IF_ERROR(r.read("step", &info->step));
  MP_RETURN_IF_ERROR(r.read("seed", &info->seed));
  if (values == nullptr) {
    r.find_optional("values");
    return r.check_no_unknown_fields();
  }
  const Json* list = nullptr;
  MP_RETURN_IF_ERROR(r.array("values", &list));
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& jv = (*list)[i];
    const std::string at = element_path(r, "values", i);
    if (!jv.is_object()) return json_field_error(subject, at, "must be an object");
    std::string name;
    MP_RETURN_IF_ERROR(JsonReader(jv, at, subject).read("name", &name));
    // Past its name, a value is named by it: "values[w].tiles".
    JsonReader rv(jv, fmt::format("values[{}]", name), subject);
    rv.find_optional("name");
    if (values->contains(name)) return json_field_error(subject, rv.path(), "is listed twice");
    SavedValue sv;
    MP_RETURN_IF_ERROR(read_shape(rv, "shape", &sv.shape));
    MP_RETURN_IF_ERROR(read_dtype(rv, "dtype", &sv.dtype));
    const Json* tiles = nullptr;
    MP_RETURN_IF_ERROR(rv.array("tiles", &tiles));
    for (size_t k = 0; k < tiles->size(); ++k) {
      const Json& jt = (*tiles)[k];
      const std::string tile_at = element_path(rv, "tiles", k);
      if (!jt.is_object()) return json_field_error(subject, tile_at, "must be an object");
      JsonReader rt(jt, tile_at, subject);
      SavedTile t{name, sv.shape, sv.dtype, "", {}};
      MP_RETURN_IF_ERROR(read_file_name(rt, "file", &t.file));
      MP_RETURN_IF_ERROR(read_region(rt, sv.shape, &t.region));
      MP_RETURN_IF_ERROR(rt.check_no_unknown_fields());
      sv.tiles.push_back(std::move(t));
    }
    MP_RETURN_IF_ERROR(rv.check_no_unknown_fields());
    values->emplace(name, std::move(sv));
  }
  return r.check_no_unknown_fields();
}

// Writes the manifest of `tiles` into `partial` and renames it to `dir`, replacing an older
// checkpoint there only then.
Status commit_checkpoint(const std::string& partial, const std::string& dir,
                         const CheckpointInfo& info, const std::vector<SavedTile>& tiles) {
  std::map<std::string, SavedValue> values;
  for (const SavedTile& t : tiles) {
    SavedValue& sv = values[t.value];
    sv.shape = t.shape;
    sv.dtype = t.dtype;
    sv.tiles.push_back(t);
  }
  Json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["model"] = info.model;
  j["step"] = info.step;
  j["seed"] = info.seed;
  Json vals = Json::array();
  for (const auto& [name, sv] : values) {
    Json jv;
    jv["name"] = name;
    jv["shape"] = sv.shape.dims();
    jv["dtype"] = std::string(dtype_name(sv.dtype));
    Json jt = Json::array();
    for (const SavedTile& t : sv.tiles) {
      jt.push_back({{"file", t.file}, {"begin", begins(t.region)}, {"extent", extents(t.region)}});
    }
    jv["tiles"] = std::move(jt);
    vals.push_back(std::move(jv));
  }
  j["values"] = std::move(vals);
  const std::string text = j.dump(1);
  const fs::path target(dir);
  MP_RETURN_IF_ERROR(write_file(fs::path(partial) / "manifest.json", text.data(),
                                static_cast<int64_t>(text.size())));
  // Replace the old checkpoint only now that the new one is complete.
  std::error_code ec;
  const fs::path old = target.string() + ".old-" + std::to_string(::getpid());
  if (fs::exists(target, ec)) fs::rename(target, old, ec);
  if (ec) return make_error(Errc::kIo, "cannot move the old checkpoint {}: {}", dir, ec.message());
  fs::rename(partial, target, ec);
  if (ec) return make_error(Errc::kIo, "cannot rename {} to {}: {}", partial, dir, ec.message());
  fs::remove_all(old, ec);
  return Status::ok();
}

}  // namespace

Expected<std::vector<SavedTile>> write_checkpoint_tiles(const InProcessRun& run,
                                                        const graph::Graph& g,
                                                        const std::string& partial) {
  std::error_code ec;
  if (!fs::is_directory(partial, ec)) {
    return make_error(Errc::kNotFound, "checkpoint directory {} is not there", partial);
  }
  // The writer of each distinct tile: the lowest device of the whole program holding it.
  const auto key = [](const std::string& value, const Region& r) {
    std::string k = value;
    for (const mesh::DimRange& x : r) k += fmt::format("|{}:{}", x.begin, x.end);
    return k;
  };
  std::map<std::string, int32_t> writer;
  for (const DeviceProgram& dp : run.program().devices) {
    for (const PersistentTile& t : dp.persistent) {
      auto [it, fresh] = writer.emplace(key(t.value, t.region), dp.device);
      if (!fresh) it->second = std::min(it->second, dp.device);
    }
  }
  std::vector<TileRef> mine;
  for (const InProcessRun::TileView& t : run.persistent_tiles()) {
    if (writer.at(key(t.tile->value, t.tile->region)) != t.device) continue;  // a replica
    mine.push_back({t.device, t.tile->value, t.tile->region, t.view});
  }
  return write_tiles(mine, g, partial);
}

Expected<std::vector<SavedTile>> write_tiles(const std::vector<TileRef>& tiles,
                                             const graph::Graph& g, const std::string& partial) {
  std::error_code ec;
  if (!fs::is_directory(partial, ec)) {
    return make_error(Errc::kNotFound, "checkpoint directory {} is not there", partial);
  }
  std::vector<SavedTile> out;
  std::map<int32_t, int64_t> files;  // per device
  for (const TileRef& t : tiles) {
    const graph::Value* v = find_value(g, t.value);
    if (v == nullptr) {
      return make_error(Errc::kInvalidArgument, "the graph has no value '{}'", t.value);
    }
    const std::string file = fmt::format("tile-d{}-{}.bin", t.device, files[t.device]++);
    MP_RETURN_IF_ERROR(write_file(fs::path(partial) / file, t.view.data, t.view.bytes()));
    out.push_back({t.value, v->shape, v->dtype, file, t.region});
  }
  return out;
}

std::string saved_tiles_to_json(const std::vector<SavedTile>& tiles) {
  Json j = Json::array();
  for (const SavedTile& t : tiles) {
    j.push_back({{"value", t.value},
                 {"shape", t.shape.dims()},
                 {"dtype", std::string(dtype_name(t.dtype))},
                 {"file", t.file},
                 {"begin", begins(t.region)},
                 {"extent", extents(t.region)}});
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
    MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
    out.push_back(std::move(t));
  }
  return out;
}

Status save_checkpoint_with(const std::string& dir, const CheckpointInfo& info,
                            const TileWriter& write_tiles) {
  const std::string partial = dir + ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(partial, ec);
  if (!fs::create_directories(partial, ec) || ec) {
    return make_error(Errc::kIo, "cannot create checkpoint directory {}: {}", partial,
                      ec.message());
  }
  auto tiles = write_tiles(partial);
  const Status s =
      tiles.has_value() ? commit_checkpoint(partial, dir, info, *tiles) : tiles.status();
  if (!s.is_ok()) fs::remove_all(partial, ec);  // the previous checkpoint stays as it was
  return s;
}

Status save_checkpoint(const InProcessRun& run, const graph::Graph& g, const std::string& dir,
                       const CheckpointInfo& info) {
  return save_checkpoint_with(dir, info, [&](const std::string& partial) {
    return write_checkpoint_tiles(run, g, partial);
  });
}

Expected<CheckpointInfo> read_checkpoint_info(const std::string& dir) {
  MP_ASSIGN_OR_RETURN(std::vector<char> text, read_file(fs::path(dir) / "manifest.json"));
  CheckpointInfo info;
  MP_RETURN_IF_ERROR(read_manifest(text, dir, &info, nullptr));
  return info;
}

Expected<CheckpointInfo> load_checkpoint(InProcessRun& run, const graph::Graph& g,
                                         const std::string& dir) {
  std::vector<TileRef> tiles;
  for (const InProcessRun::TileView& t : run.persistent_tiles()) {
    tiles.push_back({t.device, t.tile->value, t.tile->region, t.view});
  }
  return load_tiles(tiles, g, dir);
}

Expected<CheckpointInfo> load_tiles(const std::vector<TileRef>& tiles, const graph::Graph& g,
                                    const std::string& dir) {
  const fs::path root(dir);
  MP_ASSIGN_OR_RETURN(std::vector<char> text, read_file(root / "manifest.json"));
  CheckpointInfo info;
  std::map<std::string, SavedValue> values;
  MP_RETURN_IF_ERROR(read_manifest(text, dir, &info, &values));

  const kernels::KernelContext ctx;
  std::map<std::string, std::vector<char>> cache;  // tile file -> bytes
  for (const TileRef& t : tiles) {
    const graph::Value* v = find_value(g, t.value);
    auto it = values.find(t.value);
    if (v == nullptr || it == values.end()) {
      return make_error(Errc::kNotFound, "checkpoint {} has no value '{}'", dir, t.value);
    }
    const SavedValue& sv = it->second;
    if (sv.shape != v->shape || sv.dtype != v->dtype) {
      return make_error(Errc::kInvalidArgument, "checkpoint {}: '{}' is {} {}, the model has {} {}",
                        dir, t.value, dtype_name(sv.dtype), sv.shape.to_string(),
                        dtype_name(v->dtype), v->shape.to_string());
    }
    int64_t covered = 0;
    for (const SavedTile& st : sv.tiles) {
      Region box(st.region.size());
      bool empty = false;
      for (size_t d = 0; d < box.size(); ++d) {
        box[d].begin = std::max(st.region[d].begin, t.region[d].begin);
        box[d].end = std::min(st.region[d].end, t.region[d].end);
        empty = empty || box[d].end <= box[d].begin;
      }
      if (empty) continue;
      auto c = cache.find(st.file);
      if (c == cache.end()) {
        MP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(root / st.file));
        if (static_cast<int64_t>(bytes.size()) != numel(st.region) * dtype_size(sv.dtype)) {
          return make_error(Errc::kInvalidArgument,
                            "checkpoint {}: {} holds {} bytes, its region needs {}", dir, st.file,
                            bytes.size(), numel(st.region) * dtype_size(sv.dtype));
        }
        c = cache.emplace(st.file, std::move(bytes)).first;
      }
      const kernels::TensorView src(c->second.data(), Shape(extents(st.region)), sv.dtype);
      std::vector<int64_t> from;
      std::vector<int64_t> to;
      for (size_t d = 0; d < box.size(); ++d) {
        from.push_back(box[d].begin - st.region[d].begin);
        to.push_back(box[d].begin - t.region[d].begin);
      }
      kernels::copy_box(ctx, src, from, t.view, to, extents(box));
      covered += numel(box);
    }
    if (covered != numel(t.region)) {
      return make_error(Errc::kInvalidArgument,
                        "checkpoint {}: the saved tiles of '{}' cover {} of the {} elements of "
                        "device {}'s tile",
                        dir, t.value, covered, numel(t.region), t.device);
    }
  }
  return info;
}

}  // namespace meshpipe::runtime

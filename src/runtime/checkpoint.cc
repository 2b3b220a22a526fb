// Sharded checkpoints: save the distinct tiles, load by copying overlaps into any tiling.
#include "runtime/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "kernels/layout.h"

namespace meshpipe::runtime {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
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

// The format and version fields, named when they are not this build's.
Status check_header(const Json& j, const std::string& dir) {
  if (j.value("format", "") != kFormat) {
    return make_error(Errc::kInvalidArgument, "checkpoint {}: field 'format' is not {}", dir,
                      kFormat);
  }
  if (j.value("version", 0) != kVersion) {
    return make_error(Errc::kInvalidArgument,
                      "checkpoint {}: field 'version' is {}, this build reads {}", dir,
                      j.value("version", Json()).dump(), kVersion);
  }
  return Status::ok();
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
  std::vector<SavedTile> out;
  try {
    for (const Json& j : Json::parse(text)) {
      SavedTile t;
      t.value = j.at("value").get<std::string>();
      t.shape = Shape(j.at("shape").get<std::vector<int64_t>>());
      const std::string dt = j.at("dtype").get<std::string>();
      const std::optional<DType> dtype = parse_dtype(dt);
      if (!dtype) return make_error(Errc::kInvalidArgument, "'{}' is not a dtype", dt);
      t.dtype = *dtype;
      t.file = j.at("file").get<std::string>();
      const auto b = j.at("begin").get<std::vector<int64_t>>();
      const auto e = j.at("extent").get<std::vector<int64_t>>();
      if (b.size() != e.size()) return make_error(Errc::kInvalidArgument, "bad tile region");
      for (size_t d = 0; d < b.size(); ++d) t.region.push_back({b[d], b[d] + e[d]});
      out.push_back(std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    return make_error(Errc::kInvalidArgument, "malformed tile list: {}", e.what());
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
  try {
    const Json j = Json::parse(text.begin(), text.end());
    MP_RETURN_IF_ERROR(check_header(j, dir));
    return CheckpointInfo{j.at("model").get<std::string>(), j.at("step").get<int64_t>(),
                          j.at("seed").get<uint64_t>()};
  } catch (const nlohmann::json::exception& e) {
    return make_error(Errc::kInvalidArgument, "checkpoint {}: malformed manifest: {}", dir,
                      e.what());
  }
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
  const auto bad = [&](const std::string& field, const std::string& why) {
    return make_error(Errc::kInvalidArgument, "checkpoint {}: field '{}' {}", dir, field, why);
  };
  try {
    const Json j = Json::parse(text.begin(), text.end());
    MP_RETURN_IF_ERROR(check_header(j, dir));
    info.model = j.at("model").get<std::string>();
    info.step = j.at("step").get<int64_t>();
    info.seed = j.at("seed").get<uint64_t>();
    for (const Json& jv : j.at("values")) {
      SavedValue sv;
      const std::string name = jv.at("name").get<std::string>();
      sv.shape = Shape(jv.at("shape").get<std::vector<int64_t>>());
      const std::string dt = jv.at("dtype").get<std::string>();
      const std::optional<DType> dtype = parse_dtype(dt);
      if (!dtype) return bad("values[" + name + "].dtype", "'" + dt + "' is not a dtype");
      sv.dtype = *dtype;
      for (const Json& jt : jv.at("tiles")) {
        SavedTile t;
        t.file = jt.at("file").get<std::string>();
        const auto b = jt.at("begin").get<std::vector<int64_t>>();
        const auto e = jt.at("extent").get<std::vector<int64_t>>();
        if (b.size() != e.size() || static_cast<int64_t>(b.size()) != sv.shape.rank()) {
          return bad("values[" + name + "].tiles", "has a region of the wrong rank");
        }
        for (size_t d = 0; d < b.size(); ++d) {
          if (b[d] < 0 || e[d] < 0 || b[d] + e[d] > sv.shape[static_cast<int64_t>(d)]) {
            return bad("values[" + name + "].tiles", "has a region outside the tensor");
          }
          t.region.push_back({b[d], b[d] + e[d]});
        }
        sv.tiles.push_back(std::move(t));
      }
      values[name] = std::move(sv);
    }
  } catch (const nlohmann::json::exception& e) {
    return make_error(Errc::kInvalidArgument, "checkpoint {}: malformed manifest: {}", dir,
                      e.what());
  }

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

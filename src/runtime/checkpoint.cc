// Sharded checkpoints: save the distinct tiles, load by copying overlaps into any tiling; what a
// save may replace, and what a load may read.
#include "runtime/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "kernels/layout.h"
#include "runtime/checkpoint_files.h"
#include "runtime/checkpoint_manifest.h"
#include "runtime/crc32c.h"

namespace meshpipe::runtime {

namespace {

using Region = std::vector<mesh::DimRange>;

// The extent of each dimension of `r`.
std::vector<int64_t> extents(const Region& r) {
  std::vector<int64_t> e;
  for (const auto& x : r) e.push_back(x.end - x.begin);
  return e;
}

// The number of elements of `r`.
int64_t numel(const Region& r) {
  int64_t n = 1;
  for (const auto& x : r) n *= x.end - x.begin;
  return n;
}

// The value of `g` named `name`, or null.
const graph::Value* find_value(const graph::Graph& g, const std::string& name) {
  for (const graph::Value& v : g.values()) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Loading: the checkpoint directory opened once, every file read relative to it.

// The checkpoint directory `dir`, opened; errors start "checkpoint DIR: ".
Expected<OpenDir> open_checkpoint(const std::string& dir) {
  Expected<OpenDir> d = OpenDir::open(dir);
  if (!d.has_value()) return d.status().with_context(fmt::format("checkpoint {}", dir));
  return d;
}

// The manifest of the open checkpoint `d` (at most kMaxManifestBytes), parsed as `scope` asks.
// Errors start with `subject`.
Expected<Manifest> read_manifest(const OpenDir& d, const std::string& subject,
                                 ManifestScope scope) {
  const auto cap = [](int64_t bytes) -> Status {
    if (bytes <= kMaxManifestBytes) return Status::ok();
    return make_error(Errc::kInvalidArgument,
                      "{} has {} bytes, more than the {} MiB a manifest may have", kManifestFile,
                      bytes, kMaxManifestBytes >> 20);
  };
  Expected<std::vector<char>> text = read_regular_file(d, kManifestFile, cap);
  if (!text.has_value()) return text.status().with_context(subject);
  return parse_manifest(std::string_view(text->data(), text->size()), subject, scope);
}

// The bytes of the saved tile `st` of checkpoint `d`: exactly the size its region needs (checked
// before reading) and the checksum its manifest records.
Expected<std::vector<char>> read_tile(const OpenDir& d, const SavedTile& st) {
  const int64_t need = numel(st.region) * dtype_size(st.dtype);
  const auto exact = [&](int64_t bytes) -> Status {
    if (bytes == need) return Status::ok();
    return make_error(Errc::kInvalidArgument, "{} has {} bytes, its region needs {}", st.file,
                      bytes, need);
  };
  MP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_regular_file(d, st.file, exact));
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  if (crc != st.crc32c) {
    return make_error(Errc::kInvalidArgument,
                      "{} (a tile of '{}'): checksum mismatch: the tile is corrupted (its CRC-32C "
                      "is {}, the manifest says {})",
                      st.file, st.value, crc32c_text(crc), crc32c_text(st.crc32c));
  }
  return bytes;
}

// Fills the tile `t` from the saved tiles of `sv` it overlaps, reading each file once into
// `cache`. The number of elements of `t` filled.
Expected<int64_t> fill_tile(const TileRef& t, const SavedValue& sv, const OpenDir& d,
                            std::map<std::string, std::vector<char>>* cache) {
  const kernels::KernelContext ctx;
  int64_t covered = 0;
  for (const SavedTile& st : sv.tiles) {
    Region box(st.region.size());
    bool empty = false;
    for (size_t k = 0; k < box.size(); ++k) {
      box[k].begin = std::max(st.region[k].begin, t.region[k].begin);
      box[k].end = std::min(st.region[k].end, t.region[k].end);
      empty = empty || box[k].end <= box[k].begin;
    }
    if (empty) continue;
    auto c = cache->find(st.file);
    if (c == cache->end()) {
      MP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_tile(d, st));
      c = cache->emplace(st.file, std::move(bytes)).first;
    }
    const kernels::TensorView src(c->second.data(), Shape(extents(st.region)), sv.dtype);
    std::vector<int64_t> from;
    std::vector<int64_t> to;
    for (size_t k = 0; k < box.size(); ++k) {
      from.push_back(box[k].begin - st.region[k].begin);
      to.push_back(box[k].begin - t.region[k].begin);
    }
    kernels::copy_box(ctx, src, from, t.view, to, extents(box));
    covered += numel(box);
  }
  return covered;
}

// ---------------------------------------------------------------------------------------------
// Saving: what may be replaced, the partial directory, the manifest.

// What a save finds at its target: nothing or an empty directory (a rename puts the new
// checkpoint there), or an older meshpipe checkpoint whose own entries are `files`.
struct SaveTarget {
  bool replace_old = false;
  std::vector<std::string> files;
};

// `dir` without trailing slashes ("ck/" names the directory ck, whose partial is ck.partial-N).
// The save target without trailing slashes; its last component must name a directory of its
// own: "." or ".." (DIR/. , ..) would put the partial directory inside the target or beside
// its parent.
Expected<std::string> strip_slashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) {
    return make_error(Errc::kInvalidArgument, "the checkpoint directory's name is empty");
  }
  const std::string last = std::filesystem::path(dir).filename().string();
  if (last == "." || last == ".." || dir == "/") {
    return make_error(Errc::kInvalidArgument,
                      "cannot save to '{}': name the checkpoint directory itself (not '.', '..' "
                      "or '/')",
                      dir);
  }
  return dir;
}

// Where a save of this process to `dir` writes before it is complete: DIR.partial-<pid>.
std::string partial_path(const std::string& dir) {
  return dir + ".partial-" + std::to_string(::getpid());
}

// A missing target: its parent must be a directory.
Status check_parent(const std::string& dir) {
  const std::filesystem::path parent = std::filesystem::path(dir).parent_path();
  const std::string p = parent.empty() ? std::string(".") : parent.string();
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return make_error(Errc::kNotFound,
                        "cannot save to {}: its parent directory {} does not exist", dir, p);
    }
    return make_error(Errc::kIo, "cannot save to {}: {}: {}", dir, p, std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "cannot save to {}: {} is not a directory", dir, p);
  }
  return Status::ok();
}

// The entries of the non-empty directory `d` (at `dir`, holding `names`) when it is a meshpipe
// checkpoint: a manifest of version 1 or 2 listing every other entry, each a regular file.
Expected<SaveTarget> owned_checkpoint(const OpenDir& d, const std::string& dir,
                                      const std::vector<std::string>& names) {
  const auto refuse = [&](const std::string& why) {
    return make_error(Errc::kInvalidArgument,
                      "{} is not empty and not a meshpipe checkpoint ({}); not overwritten", dir,
                      why);
  };
  MP_ASSIGN_OR_RETURN(const FileKind manifest_kind, d.kind_of(kManifestFile));
  if (manifest_kind == FileKind::kMissing) {
    return refuse(fmt::format("it has no {} and holds {}", kManifestFile, names.front()));
  }
  Expected<Manifest> m = read_manifest(d, "the manifest", ManifestScope::kOwnedFiles);
  if (!m.has_value()) return refuse(m.status().message());
  std::set<std::string> owned = {kManifestFile};
  for (const auto& [name, sv] : m->values) {
    for (const SavedTile& t : sv.tiles) owned.insert(t.file);
  }
  for (const std::string& name : names) {
    if (!owned.contains(name)) {
      return make_error(Errc::kInvalidArgument,
                        "{} holds {}, which its checkpoint manifest does not list; not "
                        "overwritten",
                        dir, name);
    }
    MP_ASSIGN_OR_RETURN(const FileKind kind, d.kind_of(name));
    if (kind != FileKind::kRegular) {
      return make_error(Errc::kInvalidArgument,
                        "{} holds {}, which is {}, not a file a checkpoint writes; not "
                        "overwritten",
                        dir, name, file_kind_name(kind));
    }
  }
  if (::faccessat(d.fd(), ".", W_OK, 0) != 0) {
    return make_error(Errc::kIo, "cannot replace the checkpoint in {}: {}", dir,
                      std::strerror(errno));
  }
  return SaveTarget{true, names};
}

// What is at `dir`, refusing whatever a save must not replace.
Expected<SaveTarget> inspect_save_target(const std::string& dir) {
  if (dir.empty()) {
    return make_error(Errc::kInvalidArgument, "the checkpoint directory's name is empty");
  }
  MP_ASSIGN_OR_RETURN(const FileKind kind, file_kind(dir));
  switch (kind) {
    case FileKind::kMissing:
      MP_RETURN_IF_ERROR(check_parent(dir));
      return SaveTarget{};
    case FileKind::kDirectory:
      break;
    case FileKind::kRegular:
      return make_error(Errc::kInvalidArgument,
                        "{} is a file, not a checkpoint directory; not overwritten", dir);
    case FileKind::kSymlink:
      return make_error(Errc::kInvalidArgument,
                        "{} is a symbolic link, not a checkpoint directory; not replaced (give "
                        "the directory it names)",
                        dir);
    default:
      return make_error(Errc::kInvalidArgument,
                        "{} is {}, not a checkpoint directory; not overwritten", dir,
                        file_kind_name(kind));
  }
  Expected<OpenDir> d = OpenDir::open(dir);
  if (!d.has_value()) return d.status().with_context(fmt::format("cannot save to {}", dir));
  MP_ASSIGN_OR_RETURN(const std::vector<std::string> names, d->list());
  if (names.empty()) return SaveTarget{};
  return owned_checkpoint(*d, dir, names);
}

// Creates the partial directory of a save to `dir` (it must not exist).
Status make_partial(const std::string& dir, const std::string& partial) {
  if (::mkdir(partial.c_str(), 0755) == 0) return Status::ok();
  if (errno == EEXIST) {
    return make_error(Errc::kIo,
                      "cannot save to {}: {} exists (left by an interrupted save?); remove it "
                      "first",
                      dir, partial);
  }
  return make_error(Errc::kIo, "cannot save to {}: cannot create {}: {}", dir, partial,
                    std::strerror(errno));
}

// Writes the manifest of `tiles` into `partial` and syncs the directory.
Status write_manifest(const std::string& partial, const CheckpointInfo& info,
                      const std::vector<SavedTile>& tiles) {
  Expected<OpenDir> d = OpenDir::open(partial);
  if (!d.has_value()) return d.status().with_context(partial);
  const std::string text = manifest_text(info, tiles);
  MP_RETURN_IF_ERROR(
      write_new_file(*d, kManifestFile, text.data(), static_cast<int64_t>(text.size())));
  return d->sync();
}

// Fills `partial` and puts it at `dir` (which it checks again: it may have changed meanwhile).
Status fill_and_install(const std::string& dir, const std::string& partial,
                        const CheckpointInfo& info, const TileWriter& write_tiles) {
  MP_ASSIGN_OR_RETURN(const std::vector<SavedTile> tiles, write_tiles(partial));
  MP_RETURN_IF_ERROR(write_manifest(partial, info, tiles));
  MP_ASSIGN_OR_RETURN(const SaveTarget target, inspect_save_target(dir));
  return install_directory(partial, dir, target.replace_old, target.files);
}

}  // namespace

Expected<std::vector<SavedTile>> write_checkpoint_tiles(const InProcessRun& run,
                                                        const graph::Graph& g,
                                                        const std::string& partial) {
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
  MP_RETURN_IF_ERROR(run.pull_persistent());  // on GPUs: their host copies
  std::vector<TileRef> mine;
  for (const InProcessRun::TileView& t : run.persistent_tiles()) {
    if (writer.at(key(t.tile->value, t.tile->region)) != t.device) continue;  // a replica
    mine.push_back({t.device, t.tile->value, t.tile->region, t.view});
  }
  return write_tiles(mine, g, partial);
}

Expected<std::vector<SavedTile>> write_tiles(const std::vector<TileRef>& tiles,
                                             const graph::Graph& g, const std::string& partial) {
  Expected<OpenDir> d = OpenDir::open(partial);
  if (!d.has_value()) {
    return d.status().with_context(fmt::format("checkpoint directory {}", partial));
  }
  std::vector<SavedTile> out;
  std::map<int32_t, int64_t> files;  // per device
  for (const TileRef& t : tiles) {
    const graph::Value* v = find_value(g, t.value);
    if (v == nullptr) {
      return make_error(Errc::kInvalidArgument, "the graph has no value '{}'", t.value);
    }
    const std::string file = fmt::format("tile-d{}-{}.bin", t.device, files[t.device]++);
    const int64_t bytes = t.view.bytes();
    MP_RETURN_IF_ERROR(write_new_file(*d, file, t.view.data, bytes));
    const uint32_t crc = crc32c(t.view.data, static_cast<size_t>(bytes));
    out.push_back({t.value, v->shape, v->dtype, file, t.region, crc});
  }
  return out;
}

Status check_save_target(const std::string& dir_in) {
  MP_ASSIGN_OR_RETURN(const std::string dir, strip_slashes(dir_in));
  MP_RETURN_IF_ERROR(inspect_save_target(dir).status());
  const std::string partial = partial_path(dir);
  MP_RETURN_IF_ERROR(make_partial(dir, partial));
  if (::rmdir(partial.c_str()) != 0) {
    return make_error(Errc::kIo, "cannot save to {}: cannot remove {}: {}", dir, partial,
                      std::strerror(errno));
  }
  return Status::ok();
}

Status save_checkpoint_with(const std::string& dir_in, const CheckpointInfo& info,
                            const TileWriter& write_tiles) {
  MP_ASSIGN_OR_RETURN(const std::string dir, strip_slashes(dir_in));
  MP_RETURN_IF_ERROR(inspect_save_target(dir).status());  // before anything is written
  const std::string partial = partial_path(dir);
  MP_RETURN_IF_ERROR(make_partial(dir, partial));
  const Status s = fill_and_install(dir, partial, info, write_tiles);
  if (!s.is_ok()) {  // the partial directory is this save's alone: created by it just now
    std::error_code ec;
    std::filesystem::remove_all(partial, ec);
  }
  return s;
}

Status save_checkpoint(const InProcessRun& run, const graph::Graph& g, const std::string& dir,
                       const CheckpointInfo& info) {
  return save_checkpoint_with(dir, info, [&](const std::string& partial) {
    return write_checkpoint_tiles(run, g, partial);
  });
}

Expected<CheckpointInfo> read_checkpoint_info(const std::string& dir) {
  MP_ASSIGN_OR_RETURN(const OpenDir d, open_checkpoint(dir));
  MP_ASSIGN_OR_RETURN(const Manifest m,
                      read_manifest(d, fmt::format("checkpoint {}", dir), ManifestScope::kHeader));
  return m.info;
}

Expected<CheckpointInfo> load_checkpoint(InProcessRun& run, const graph::Graph& g,
                                         const std::string& dir) {
  MP_RETURN_IF_ERROR(run.pull_persistent());  // on GPUs: the host copies to fill
  std::vector<TileRef> tiles;
  for (const InProcessRun::TileView& t : run.persistent_tiles()) {
    tiles.push_back({t.device, t.tile->value, t.tile->region, t.view});
  }
  MP_ASSIGN_OR_RETURN(CheckpointInfo info, load_tiles(tiles, g, dir));
  MP_RETURN_IF_ERROR(run.push_persistent());
  return info;
}

Expected<CheckpointInfo> load_tiles(const std::vector<TileRef>& tiles, const graph::Graph& g,
                                    const std::string& dir) {
  const std::string subject = fmt::format("checkpoint {}", dir);
  MP_ASSIGN_OR_RETURN(const OpenDir d, open_checkpoint(dir));
  MP_ASSIGN_OR_RETURN(const Manifest m, read_manifest(d, subject, ManifestScope::kLoad));
  std::map<std::string, std::vector<char>> cache;  // tile file -> bytes
  for (const TileRef& t : tiles) {
    const graph::Value* v = find_value(g, t.value);
    auto it = m.values.find(t.value);
    if (v == nullptr || it == m.values.end()) {
      return make_error(Errc::kNotFound, "checkpoint {} has no value '{}'", dir, t.value);
    }
    const SavedValue& sv = it->second;
    if (sv.shape != v->shape || sv.dtype != v->dtype) {
      return make_error(Errc::kInvalidArgument, "checkpoint {}: '{}' is {} {}, the model has {} {}",
                        dir, t.value, dtype_name(sv.dtype), sv.shape.to_string(),
                        dtype_name(v->dtype), v->shape.to_string());
    }
    Expected<int64_t> covered = fill_tile(t, sv, d, &cache);
    if (!covered.has_value()) return covered.status().with_context(subject);
    if (*covered != numel(t.region)) {
      return make_error(Errc::kInvalidArgument,
                        "checkpoint {}: the saved tiles of '{}' cover {} of the {} elements of "
                        "device {}'s tile",
                        dir, t.value, *covered, numel(t.region), t.device);
    }
  }
  return m.info;
}

}  // namespace meshpipe::runtime

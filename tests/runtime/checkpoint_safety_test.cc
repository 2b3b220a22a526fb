// Checkpoints against hostile or careless files (issue 11): a load reads only the regular files
// of its own directory, of the size their regions need and the checksum their manifest records;
// a save never removes or overwrites what it did not write, and an unwritable place is found
// before anything is written.
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "runtime/checkpoint.h"
#include "runtime/checkpoint_files.h"
#include "runtime/crc32c.h"
#include "runtime/hand_checkpoint.h"

namespace meshpipe::runtime {
namespace {

namespace fs = std::filesystem;
using testing::file_text;
using testing::hand_manifest;
using testing::hand_tile_crc;
using testing::write_hand_checkpoint;

// A fresh, empty scratch directory of this test binary.
fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("meshpipe_ckpt_safety_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// The graph of the hand-written checkpoint: one parameter w [4, 6] f32.
graph::Graph w_graph() {
  graph::Graph g;
  g.add_source("w", Shape({4, 6}), DType::kF32, graph::ValueRole::kParameter);
  return g;
}

// Loads the whole of w from `dir` into `out` (24 floats).
Expected<CheckpointInfo> load_w(const fs::path& dir, std::vector<float>* out) {
  out->assign(24, -1.0f);
  const std::vector<TileRef> tiles = {
      {0, "w", {{0, 4}, {0, 6}}, kernels::TensorView(out->data(), Shape({4, 6}), DType::kF32)}};
  return load_tiles(tiles, w_graph(), dir.string());
}

// Writes `text` into `path`, replacing it.
void put(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

TEST_CASE("a load reads only the regular files of its own checkpoint, never through links",
          "[checkpoint]") {
  const fs::path root = scratch("load");
  const fs::path dir = root / "ck";
  // A file outside of exactly the size tile-d0-0.bin needs: loaded, it would be weights.
  const fs::path outside = root / "outside.bin";
  put(outside, std::string(48, '\x42'));
  const fs::path tile = dir / "tile-d0-0.bin";
  struct Case {
    const char* name;
    std::function<void()> spoil;
    Errc code;
    std::string want;  // after "checkpoint DIR: "
  };
  const std::string not_regular =
      ", not a regular file; a checkpoint reads only the regular files in its own directory";
  const std::string link =
      "tile-d0-0.bin is a symbolic link; a checkpoint reads only the regular files in its own "
      "directory, never through links";
  const std::vector<Case> cases = {
      {"a link to a file outside of the right size",
       [&] {
         fs::remove(tile);
         fs::create_symlink(outside, tile);
       },
       Errc::kInvalidArgument, link},
      {"a link to /dev/zero",
       [&] {
         fs::remove(tile);
         fs::create_symlink("/dev/zero", tile);
       },
       Errc::kInvalidArgument, link},
      {"a link to /proc/self/mem",
       [&] {
         fs::remove(tile);
         fs::create_symlink("/proc/self/mem", tile);
       },
       Errc::kInvalidArgument, link},
      {"a FIFO (no writer: opening it for reading would block)",
       [&] {
         fs::remove(tile);
         REQUIRE(::mkfifo(tile.c_str(), 0644) == 0);
       },
       Errc::kInvalidArgument, "tile-d0-0.bin is a FIFO" + not_regular},
      {"a directory",
       [&] {
         fs::remove(tile);
         fs::create_directory(tile);
       },
       Errc::kInvalidArgument, "tile-d0-0.bin is a directory" + not_regular},
      {"missing", [&] { fs::remove(tile); }, Errc::kNotFound, "tile-d0-0.bin is missing"},
      {"a byte short", [&] { fs::resize_file(tile, 47); }, Errc::kInvalidArgument,
       "tile-d0-0.bin has 47 bytes, its region needs 48"},
      {"a byte too many", [&] { fs::resize_file(tile, 49); }, Errc::kInvalidArgument,
       "tile-d0-0.bin has 49 bytes, its region needs 48"},
      {"a sparse gigabyte (refused before a byte is read)",
       [&] { fs::resize_file(tile, int64_t{1} << 30); }, Errc::kInvalidArgument,
       "tile-d0-0.bin has 1073741824 bytes, its region needs 48"},
      {"a bit flipped",
       [&] {
         std::string bytes = file_text(tile);
         bytes[9] = static_cast<char>(bytes[9] ^ 0x04);
         put(tile, bytes);
       },
       Errc::kInvalidArgument, ""},
      {"two tiles of the same size swapped",
       [&] {
         fs::rename(tile, dir / "t");
         fs::rename(dir / "tile-d1-0.bin", tile);
         fs::rename(dir / "t", dir / "tile-d1-0.bin");
       },
       Errc::kInvalidArgument,
       fmt::format("tile-d0-0.bin (a tile of 'w'): checksum mismatch: the tile is corrupted (its "
                   "CRC-32C is {}, the manifest says {})",
                   hand_tile_crc(1), hand_tile_crc(0))},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    write_hand_checkpoint(dir, hand_manifest().dump(1));
    c.spoil();
    std::vector<float> w;
    Expected<CheckpointInfo> r = load_w(dir, &w);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == c.code);
    const std::string prefix = "checkpoint " + dir.string() + ": ";
    if (c.want.empty()) {  // the bit flip: the checksum of what is there now
      const std::string bytes = file_text(tile);
      CHECK(r.status().message() ==
            prefix + fmt::format("tile-d0-0.bin (a tile of 'w'): checksum mismatch: the tile is "
                                 "corrupted (its CRC-32C is {:08x}, the manifest says {})",
                                 crc32c(bytes.data(), bytes.size()), hand_tile_crc(0)));
    } else {
      CHECK(r.status().message() == prefix + c.want);
    }
    CHECK(w == std::vector<float>(24, -1.0f));  // nothing was loaded
  }
  // Unspoilt, it loads.
  write_hand_checkpoint(dir, hand_manifest().dump(1));
  std::vector<float> w;
  REQUIRE(load_w(dir, &w).has_value());
  CHECK(w[23] == 23.0f);
  fs::remove_all(root);
}

TEST_CASE("a manifest is read only as the checkpoint's own regular file of at most 64 MiB",
          "[checkpoint]") {
  const fs::path root = scratch("manifest");
  const fs::path dir = root / "ck";
  const fs::path manifest = dir / "manifest.json";
  const std::string text = hand_manifest().dump(1);
  const std::string not_regular =
      ", not a regular file; a checkpoint reads only the regular files in its own directory";
  struct Case {
    const char* name;
    std::function<void()> spoil;
    Errc code;
    std::string want;  // after "checkpoint DIR"
  };
  const std::vector<Case> cases = {
      {"a link to a valid manifest outside",
       [&] {
         put(root / "m.json", text);
         fs::remove(manifest);
         fs::create_symlink(root / "m.json", manifest);
       },
       Errc::kInvalidArgument,
       ": manifest.json is a symbolic link; a checkpoint reads only the regular files in its own "
       "directory, never through links"},
      {"a FIFO",
       [&] {
         fs::remove(manifest);
         REQUIRE(::mkfifo(manifest.c_str(), 0644) == 0);
       },
       Errc::kInvalidArgument, ": manifest.json is a FIFO" + not_regular},
      {"a directory",
       [&] {
         fs::remove(manifest);
         fs::create_directory(manifest);
       },
       Errc::kInvalidArgument, ": manifest.json is a directory" + not_regular},
      {"a sparse 100 MB file", [&] { fs::resize_file(manifest, 100'000'000); },
       Errc::kInvalidArgument,
       ": manifest.json has 100000000 bytes, more than the 64 MiB a manifest may have"},
      {"missing", [&] { fs::remove(manifest); }, Errc::kNotFound, ": manifest.json is missing"},
      {"the checkpoint a regular file",
       [&] {
         fs::remove_all(dir);
         put(dir, text);
       },
       Errc::kInvalidArgument, ": not a directory but a regular file"},
      {"no checkpoint", [&] { fs::remove_all(dir); }, Errc::kNotFound, ": no such directory"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    write_hand_checkpoint(dir, text);
    c.spoil();
    std::vector<float> w;
    Expected<CheckpointInfo> r = load_w(dir, &w);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == c.code);
    CHECK(r.status().message() == "checkpoint " + dir.string() + c.want);
    Expected<CheckpointInfo> header = read_checkpoint_info(dir.string());
    REQUIRE_FALSE(header.has_value());
    CHECK(header.status().message() == "checkpoint " + dir.string() + c.want);
  }
  fs::remove_all(root);
}

// Saves a checkpoint of w (one whole tile, elements 100 + i) at step `step` into `dir`.
Status save_w(const fs::path& dir, int64_t step) {
  std::vector<float> data(24);
  for (int i = 0; i < 24; ++i) data[static_cast<size_t>(i)] = 100.0f + static_cast<float>(i);
  const graph::Graph g = w_graph();
  const std::vector<TileRef> tiles = {
      {0, "w", {{0, 4}, {0, 6}}, kernels::TensorView(data.data(), Shape({4, 6}), DType::kF32)}};
  return save_checkpoint_with(dir.string(), {"m", step, 7}, [&](const std::string& partial) {
    return write_tiles(tiles, g, partial);
  });
}

// The names in `dir` that start with `stem` + "." (partial and old directories of a save).
std::vector<std::string> leftovers(const fs::path& dir, const std::string& stem) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(stem + ".", 0) == 0) out.push_back(name);
  }
  return out;
}

// A digest of everything under `dir`: names, kinds and contents, sorted.
std::string contents(const fs::path& dir) {
  std::vector<std::string> rows;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string row = fs::relative(e.path(), dir).string() + " ";
    if (e.is_symlink()) {
      row += "-> " + fs::read_symlink(e.path()).string();
    } else if (e.is_regular_file()) {
      row += file_text(e.path());
    } else {
      row += e.is_directory() ? "dir" : "other";
    }
    rows.push_back(row);
  }
  std::sort(rows.begin(), rows.end());
  std::string out;
  for (const std::string& r : rows) out += r + "\n";
  return out;
}

TEST_CASE("a save refuses a place that is not a meshpipe checkpoint and leaves it as it was",
          "[checkpoint]") {
  const fs::path root = scratch("refuse");
  const fs::path ck = root / "ck";
  const std::string d = ck.string();
  struct Case {
    const char* name;
    std::function<void()> make;
    Errc code;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"a regular file", [&] { put(ck, "notes that must survive"); }, Errc::kInvalidArgument,
       d + " is a file, not a checkpoint directory; not overwritten"},
      {"a directory of other files",
       [&] {
         fs::create_directory(ck);
         put(ck / "mine.txt", "mine");
         put(ck / "z.txt", "mine too");
       },
       Errc::kInvalidArgument,
       d + " is not empty and not a meshpipe checkpoint (it has no manifest.json and holds "
           "mine.txt); not overwritten"},
      {"a directory whose manifest.json is another program's",
       [&] {
         fs::create_directory(ck);
         put(ck / "manifest.json", R"({"name": "my web app"})");
       },
       Errc::kInvalidArgument,
       d + " is not empty and not a meshpipe checkpoint (the manifest: field 'format' is not "
           "meshpipe-checkpoint); not overwritten"},
      {"a checkpoint holding a file its manifest does not list",
       [&] {
         write_hand_checkpoint(ck, hand_manifest().dump(1));
         put(ck / "notes.txt", "notes");
       },
       Errc::kInvalidArgument,
       d + " holds notes.txt, which its checkpoint manifest does not list; not overwritten"},
      {"a checkpoint whose listed tile is a directory",
       [&] {
         write_hand_checkpoint(ck, hand_manifest().dump(1));
         fs::remove(ck / "tile-d1-0.bin");
         fs::create_directory(ck / "tile-d1-0.bin");
         put(ck / "tile-d1-0.bin" / "photo.jpg", "a photo");
       },
       Errc::kInvalidArgument,
       d + " holds tile-d1-0.bin, which is a directory, not a file a checkpoint writes; not "
           "overwritten"},
      {"a link to a directory",
       [&] {
         fs::create_directory(root / "elsewhere");
         fs::create_directory_symlink(root / "elsewhere", ck);
       },
       Errc::kInvalidArgument,
       d + " is a symbolic link, not a checkpoint directory; not replaced (give the directory "
           "it names)"},
      {"a FIFO", [&] { REQUIRE(::mkfifo(ck.c_str(), 0644) == 0); }, Errc::kInvalidArgument,
       d + " is a FIFO, not a checkpoint directory; not overwritten"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    fs::remove_all(root);
    fs::create_directories(root);
    c.make();
    const std::string before = contents(root);
    const Status checked = check_save_target(d);
    CHECK(checked.code() == c.code);
    CHECK(checked.message() == c.want);
    const Status saved = save_w(ck, 5);
    CHECK(saved.code() == c.code);
    CHECK(saved.message() == c.want);
    CHECK(contents(root) == before);  // nothing changed, nothing left behind
  }
  // Where the parent is missing or not a directory.
  fs::remove_all(root);
  fs::create_directories(root);
  put(root / "notes.txt", "notes");
  const Status no_parent = check_save_target((root / "no" / "ck").string());
  CHECK(no_parent.code() == Errc::kNotFound);
  CHECK(no_parent.message() == fmt::format("cannot save to {}: its parent directory {} does not "
                                           "exist",
                                           (root / "no" / "ck").string(), (root / "no").string()));
  const Status file_parent = save_w(root / "notes.txt" / "ck", 5);
  CHECK(file_parent.code() == Errc::kInvalidArgument);
  CHECK(file_parent.message() == fmt::format("cannot save to {}: {} is not a directory",
                                             (root / "notes.txt" / "ck").string(),
                                             (root / "notes.txt").string()));
  CHECK(file_text(root / "notes.txt") == "notes");
  CHECK(check_save_target("").message() == "the checkpoint directory's name is empty");
  fs::remove_all(root);
}

TEST_CASE("an unwritable place is found before anything is written", "[checkpoint]") {
  // /sys refuses new directories even to root (EPERM, or EROFS where it is mounted read-only).
  const Status sys = check_save_target("/sys/meshpipe_ckpt");
  CHECK(sys.code() == Errc::kIo);
  CHECK_THAT(sys.message(),
             Catch::StartsWith(fmt::format("cannot save to /sys/meshpipe_ckpt: cannot create "
                                           "/sys/meshpipe_ckpt.partial-{}: ",
                                           ::getpid())));
  if (::geteuid() == 0) {
    WARN("running as root: a directory of mode 555 does not stop writes; only /sys was tried");
    return;
  }
  const fs::path root = scratch("readonly");
  fs::permissions(root, fs::perms::owner_read | fs::perms::owner_exec);
  const Status ro = check_save_target((root / "ck").string());
  CHECK(ro.code() == Errc::kIo);
  CHECK_THAT(ro.message(), Catch::EndsWith("Permission denied"));
  fs::permissions(root, fs::perms::owner_all);
  fs::remove_all(root);
}

TEST_CASE("a save replaces an older checkpoint, removing only that checkpoint's files",
          "[checkpoint]") {
  const fs::path root = scratch("replace");
  const fs::path ck = root / "ck";
  std::vector<float> w;
  // Into nothing, into an empty directory, over itself.
  REQUIRE(save_w(ck, 1).is_ok());
  REQUIRE(load_w(ck, &w).has_value());
  CHECK(w[5] == 105.0f);
  fs::remove_all(ck);
  fs::create_directory(ck);
  REQUIRE(check_save_target(ck.string()).is_ok());
  REQUIRE(save_w(ck, 2).is_ok());
  REQUIRE(save_w(ck.string() + "/", 3).is_ok());  // a trailing slash names the same directory
  Expected<CheckpointInfo> info = load_w(ck, &w);
  REQUIRE(info.has_value());
  CHECK(info->step == 3);
  // Over a checkpoint of two tiles (tile-d1-0.bin is not written again), and over version 1.
  for (const int version : {2, 1}) {
    INFO("version " << version);
    auto j = hand_manifest();
    j["version"] = version;
    if (version == 1) {
      for (auto& t : j["values"][0]["tiles"]) t.erase("crc32c");
    }
    write_hand_checkpoint(ck, j.dump(1));
    REQUIRE(check_save_target(ck.string()).is_ok());
    REQUIRE(save_w(ck, 4).is_ok());
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(ck)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"manifest.json", "tile-d0-0.bin"});
    info = load_w(ck, &w);
    REQUIRE(info.has_value());
    CHECK(info->step == 4);
    CHECK(w[23] == 123.0f);
  }
  CHECK(leftovers(root, "ck").empty());
  fs::remove_all(root);
}

TEST_CASE("a failed save leaves what was there and no partial directory", "[checkpoint]") {
  const fs::path root = scratch("failed");
  const fs::path ck = root / "ck";
  REQUIRE(save_w(ck, 1).is_ok());
  const std::string before = contents(root);
  // A writer that writes one file and fails (a node that could not write its tiles).
  const Status s = save_checkpoint_with(ck.string(), {"m", 2, 7}, [](const std::string& partial) {
    std::ofstream(fs::path(partial) / "tile-d0-0.bin") << "half";
    return Expected<std::vector<SavedTile>>(make_error(Errc::kIo, "node 1: disk full"));
  });
  CHECK(s.code() == Errc::kIo);
  CHECK(s.message() == "node 1: disk full");
  CHECK(contents(root) == before);
  // A partial directory already there (a save killed earlier) is not removed, and not used.
  const fs::path stale = root / fmt::format("ck.partial-{}", ::getpid());
  fs::create_directory(stale);
  put(stale / "x", "x");
  const Status blocked = save_w(ck, 3);
  CHECK(blocked.code() == Errc::kIo);
  CHECK(blocked.message() ==
        fmt::format("cannot save to {}: {} exists (left by an interrupted save?); remove it first",
                    ck.string(), stale.string()));
  CHECK(file_text(stale / "x") == "x");
  fs::remove_all(stale);
  CHECK(contents(root) == before);
  fs::remove_all(root);
}

TEST_CASE("installing a directory by two renames when the file system cannot exchange",
          "[checkpoint]") {
  const fs::path root = scratch("install");
  const fs::path ck = root / "ck";
  write_hand_checkpoint(ck, hand_manifest().dump(1));
  const fs::path fresh = root / "fresh";
  fs::create_directory(fresh);
  put(fresh / "manifest.json", "new");
  REQUIRE(install_directory(fresh.string(), ck.string(), /*replace_old=*/true,
                            {"manifest.json", "tile-d0-0.bin", "tile-d1-0.bin"},
                            ReplaceMode::kTwoRenames)
              .is_ok());
  CHECK(contents(root) == "ck dir\nck/manifest.json new\n");
  // Removing an old checkpoint leaves what it does not own, and says so.
  const fs::path old = root / "old";
  fs::create_directory(old);
  put(old / "tile-d0-0.bin", "t");
  put(old / "mine.txt", "mine");
  const Status s = remove_owned_files(old.string(), {"tile-d0-0.bin", "manifest.json"});
  CHECK(s.code() == Errc::kIo);
  CHECK(s.message() ==
        old.string() + " still holds mine.txt, which is not a file of its checkpoint; left");
  CHECK(contents(old) == "mine.txt mine\n");
  fs::remove_all(root);
}

TEST_CASE("a manifest that reuses a file or overlaps tiles is refused before any read",
          "[checkpoint]") {
  const fs::path dir = scratch("reuse");
  std::vector<float> w;
  // One file behind two regions (the second larger than the file): never read out of bounds.
  auto reuse = hand_manifest();
  reuse["values"][0]["tiles"][1]["file"] = "tile-d0-0.bin";
  reuse["values"][0]["tiles"][1]["crc32c"] = hand_tile_crc(0);
  write_hand_checkpoint(dir, reuse.dump());
  auto r = load_w(dir, &w);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message().find("names file 'tile-d0-0.bin', which another tile names too") !=
        std::string::npos);
  // The same tile listed twice to fake coverage of the whole tensor.
  auto twice = hand_manifest();
  twice["values"][0]["tiles"][1] = twice["values"][0]["tiles"][0];
  twice["values"][0]["tiles"][1]["file"] = "tile-d1-0.bin";
  write_hand_checkpoint(dir, twice.dump());
  r = load_w(dir, &w);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message().find("overlaps the tile in 'tile-d0-0.bin'") != std::string::npos);
  // A step that would overflow a resumed run's step arithmetic.
  auto far = hand_manifest();
  far["step"] = int64_t{1} << 62;
  write_hand_checkpoint(dir, far.dump());
  r = load_w(dir, &w);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message().find("field 'step' must be at most") != std::string::npos);
  // The hand checkpoint itself still loads, every element from its own tile.
  write_hand_checkpoint(dir, hand_manifest().dump());
  REQUIRE(load_w(dir, &w).has_value());
  for (int i = 0; i < 24; ++i) CHECK(w[static_cast<size_t>(i)] == static_cast<float>(i));
}

TEST_CASE("a save to '.', '..' or '/' is refused before anything is written", "[checkpoint]") {
  const fs::path dir = scratch("dot");
  for (const std::string& target : {(dir / ".").string(), (dir / ".").string() + "/",
                                    (dir / "..").string(), std::string("/")}) {
    const Status s = check_save_target(target);
    INFO(target << ": " << s.to_string());
    CHECK(s.code() == Errc::kInvalidArgument);
    CHECK(s.message().find("name the checkpoint directory itself") != std::string::npos);
  }
  CHECK(fs::is_empty(dir));
}

}  // namespace
}  // namespace meshpipe::runtime

// The manifest of a checkpoint (runtime/checkpoint.h), DIR/manifest.json, format version 2:
//
//   {"format": "meshpipe-checkpoint", "version": 2, "model": "gpt-tiny", "step": 2, "seed": 1234,
//    "values": [{"name": "w", "shape": [4, 6], "dtype": "f32", "tiles": [
//       {"file": "tile-d0-0.bin", "begin": [0, 0], "extent": [2, 6], "crc32c": "e3069283"}]}]}
//
// Reading checks every field and names the one that is wrong; a field the format does not know
// is an error (a new field comes with a new version). Version 1 had no "crc32c": loading refuses
// it, but a save may still replace a version-1 checkpoint, whose files its manifest names.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "runtime/checkpoint.h"

namespace meshpipe::runtime {

/// The manifest's file name in a checkpoint directory.
inline constexpr const char* kManifestFile = "manifest.json";
/// The format version this build writes and loads.
inline constexpr int64_t kCheckpointVersion = 2;
/// The largest manifest read: about 300,000 tiles at some 200 bytes each (gpt-tiny has 113).
inline constexpr int64_t kMaxManifestBytes = int64_t{64} << 20;
/// The largest step a manifest may record (far beyond any run; a resumed session adds to it).
inline constexpr int64_t kMaxCheckpointStep = int64_t{1} << 50;
/// The most tiles one value may have (one per device at most, and clusters have at most 4096).
inline constexpr size_t kMaxTilesPerValue = 4096;

/// A value's tiles as the manifest lists them.
struct SavedValue {
  Shape shape;
  DType dtype = DType::kF32;
  std::vector<SavedTile> tiles;
};

/// What a manifest says.
struct Manifest {
  int64_t version = kCheckpointVersion;
  CheckpointInfo info;
  std::map<std::string, SavedValue> values;  ///< by value name
};

/// How much of a manifest parse_manifest reads, and which versions it accepts.
enum class ManifestScope {
  kHeader,      ///< format, version, model, step, seed (version 2); values not read
  kLoad,        ///< everything (version 2), to load the tiles
  kOwnedFiles,  ///< everything of version 1 or 2, to learn which files a checkpoint owns
};

/// Parses the manifest `text`. Errors are kInvalidArgument and start with `subject` ("checkpoint
/// DIR: field 'step' must be a non-negative integer"); a version this build does not load says
/// which one it reads.
Expected<Manifest> parse_manifest(std::string_view text, const std::string& subject,
                                  ManifestScope scope);

/// The manifest of a checkpoint of `tiles` (version 2), as text.
std::string manifest_text(const CheckpointInfo& info, const std::vector<SavedTile>& tiles);

/// A CRC-32C as the manifest writes it: 8 lowercase hexadecimal digits.
std::string crc32c_text(uint32_t crc);

}  // namespace meshpipe::runtime

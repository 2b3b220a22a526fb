// Test helpers: a checkpoint written by hand, one value "w" [4, 6] f32 in two tiles of rows 0-1
// (tile-d0-0.bin) and 2-3 (tile-d1-0.bin), element i of the whole tensor holding the value i.
#pragma once

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/checkpoint.h"
#include "runtime/crc32c.h"

namespace meshpipe::runtime::testing {

/// The elements of device d's tile: 12 floats, d * 12 .. d * 12 + 11.
inline std::vector<float> hand_tile(int d) {
  std::vector<float> rows(12);
  for (int i = 0; i < 12; ++i) rows[static_cast<size_t>(i)] = static_cast<float>(d * 12 + i);
  return rows;
}

/// The CRC-32C of hand_tile(d) as the manifest writes it.
inline std::string hand_tile_crc(int d) {
  const std::vector<float> rows = hand_tile(d);
  return fmt::format("{:08x}", crc32c(rows.data(), rows.size() * sizeof(float)));
}

/// The manifest of the hand-written checkpoint (version 2).
inline nlohmann::ordered_json hand_manifest() {
  auto j = nlohmann::ordered_json::parse(R"({
    "format": "meshpipe-checkpoint", "version": 2, "model": "m", "step": 3, "seed": 7,
    "values": [{"name": "w", "shape": [4, 6], "dtype": "f32", "tiles": [
      {"file": "tile-d0-0.bin", "begin": [0, 0], "extent": [2, 6]},
      {"file": "tile-d1-0.bin", "begin": [2, 0], "extent": [2, 6]}]}]})");
  for (int d = 0; d < 2; ++d) j["values"][0]["tiles"][d]["crc32c"] = hand_tile_crc(d);
  return j;
}

/// Writes `manifest` and the two tile files into `dir`, which is emptied first.
inline void write_hand_checkpoint(const std::filesystem::path& dir, const std::string& manifest) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "manifest.json") << manifest;
  for (int d = 0; d < 2; ++d) {
    const std::vector<float> rows = hand_tile(d);
    std::ofstream f(dir / fmt::format("tile-d{}-0.bin", d), std::ios::binary);
    f.write(reinterpret_cast<const char*>(rows.data()),
            static_cast<std::streamsize>(sizeof(float) * rows.size()));
  }
}

/// The whole contents of the file `path` ("" when it cannot be read).
inline std::string file_text(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace meshpipe::runtime::testing

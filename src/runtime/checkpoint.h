// Sharded checkpoints: the parameters and optimizer states of a run, written as the tiles the
// devices hold, and read back into the tiles of any other run of the same model — another plan,
// another device count — by copying from every saved tile that overlaps (resharding on load).
//
//   DIR/manifest.json   format, version, model, step, seed, and per value its shape, dtype
//                       and tiles (file name, region in the whole tensor)
//   DIR/tile-<k>.bin    one tile's elements, row-major, native byte order
//
// A save writes into DIR.partial-<pid> and renames it over DIR only when complete, so an
// interrupted save never leaves a half-written checkpoint behind.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "graph/graph.h"
#include "runtime/in_process_run.h"

namespace meshpipe::runtime {

/// What a checkpoint records besides the tiles.
struct CheckpointInfo {
  std::string model;  ///< zoo name or label
  int64_t step = 0;   ///< training steps done when it was written
  uint64_t seed = 0;  ///< seed of the run (data stream and initialisation)
};

/// Writes every persistent value of `run` (each distinct tile once) to `dir`.
Status save_checkpoint(const InProcessRun& run, const graph::Graph& g, const std::string& dir,
                       const CheckpointInfo& info);

/// Reads only the manifest's header (format, version, model, step, seed): checks a checkpoint
/// before a run is planned and built.
Expected<CheckpointInfo> read_checkpoint_info(const std::string& dir);

/// Fills every persistent tile of `run` from the checkpoint in `dir`. Errors: a missing or
/// malformed manifest (the field named), a value the run has and the checkpoint lacks, a shape
/// or dtype that differs, a tile file of the wrong size, regions that leave part of a tile
/// uncovered.
Expected<CheckpointInfo> load_checkpoint(InProcessRun& run, const graph::Graph& g,
                                         const std::string& dir);

}  // namespace meshpipe::runtime

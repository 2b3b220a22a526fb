// Sharded checkpoints: the parameters and optimizer states of a run, written as the tiles the
// devices hold, and read back into the tiles of any other run of the same model — another plan,
// another device count — by copying from every saved tile that overlaps (resharding on load).
//
//   DIR/manifest.json        format, version, model, step, seed, and per value its shape,
//                            dtype and tiles (file name, region in the whole tensor)
//   DIR/tile-d<D>-<k>.bin    one tile's elements (written by device D), row-major, native
//                            byte order
//
// A save writes into DIR.partial-<pid> and renames it over DIR only when complete, so an
// interrupted save never leaves a half-written checkpoint behind. In a job of several processes
// each writes the tiles of its own devices (write_checkpoint_tiles) into that directory — one
// every process sees — and the driver writes the manifest and renames (save_checkpoint_with).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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

/// One tile of a checkpoint, as its manifest lists it.
struct SavedTile {
  std::string value;  ///< graph value name
  Shape shape;        ///< the whole value's shape
  DType dtype = DType::kF32;
  std::string file;                    ///< in the checkpoint directory
  std::vector<mesh::DimRange> region;  ///< the tile in whole-tensor coordinates
};

/// A tile of a persistent value held in memory: what a checkpoint is written from and read into.
struct TileRef {
  int32_t device = 0;                  ///< global device id (names the tile's file)
  std::string value;                   ///< graph value name
  std::vector<mesh::DimRange> region;  ///< the tile in whole-tensor coordinates
  kernels::TensorView view;            ///< its elements
};

/// Writes each of `tiles` into its own file in the existing directory `partial` and lists them
/// (the caller chooses which tiles: each distinct one once).
Expected<std::vector<SavedTile>> write_tiles(const std::vector<TileRef>& tiles,
                                             const graph::Graph& g, const std::string& partial);

/// Fills every one of `tiles` from the checkpoint in `dir`: each from the saved tiles it
/// overlaps, whatever tiling they were saved in. Errors as load_checkpoint's.
Expected<CheckpointInfo> load_tiles(const std::vector<TileRef>& tiles, const graph::Graph& g,
                                    const std::string& dir);

/// Writes into the existing directory `partial` the tiles this process writes: of every
/// distinct (value, region) of the whole program, the copy of the lowest global device that
/// holds it, when that device is one of `run`'s. So every tile is written once however many
/// processes share the job, each by the process that holds it.
Expected<std::vector<SavedTile>> write_checkpoint_tiles(const InProcessRun& run,
                                                        const graph::Graph& g,
                                                        const std::string& partial);

/// Saves a checkpoint to `dir`: creates its partial directory (DIR.partial-<pid>), has
/// `write_tiles` fill it (this process's tiles, or every process's in a job of several), writes
/// the manifest of the tiles it returns and renames the directory to `dir`, replacing an older
/// checkpoint there only then. On any failure the partial directory is removed and the previous
/// checkpoint stays as it was.
using TileWriter = std::function<Expected<std::vector<SavedTile>>(const std::string& partial)>;
Status save_checkpoint_with(const std::string& dir, const CheckpointInfo& info,
                            const TileWriter& write_tiles);

/// Tile lists as JSON text (they cross the cluster's control plane; no tensor data).
std::string saved_tiles_to_json(const std::vector<SavedTile>& tiles);
Expected<std::vector<SavedTile>> saved_tiles_from_json(const std::string& text);

/// Writes every persistent value of `run` (each distinct tile once) to `dir`:
/// save_checkpoint_with(write_checkpoint_tiles) in one process.
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

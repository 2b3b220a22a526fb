// Sharded checkpoints: the parameters and optimizer states of a run, written as the tiles the
// devices hold, and read back into the tiles of any other run of the same model — another plan,
// another device count — by copying from every saved tile that overlaps (resharding on load).
//
//   DIR/manifest.json        format, version (2), model, step, seed, and per value its shape,
//                            dtype and tiles (file name, region in the whole tensor, CRC-32C);
//                            runtime/checkpoint_manifest.h
//   DIR/tile-d<D>-<k>.bin    one tile's elements (written by device D), row-major, native
//                            byte order
//
// Loading reads only what the checkpoint owns: regular files named in its own directory (no
// link followed, no FIFO or device opened), each of exactly the size its region needs, each
// checked against its checksum before a byte of it is used.
//
// A save never removes or overwrites what it did not write. It refuses a target that is a file
// or a non-empty directory other than a meshpipe checkpoint (one holding anything its manifest
// does not list), writes into DIR.partial-<pid> (files fsync'ed, then the directory), and puts
// that in place of DIR only when complete: a rename when DIR is absent or empty, else an atomic
// exchange (renameat2), after which the old checkpoint's own files are removed. In a job of
// several processes each writes the tiles of its own devices (write_checkpoint_tiles) into that
// directory — one every process sees — and the driver writes the manifest and renames
// (save_checkpoint_with).
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
  /// f16 loss scaling's state after `step` (runtime/loss_scale.h): the next step's scale and
  /// the finite steps since it last changed; 0: not recorded (loss scaling off).
  float loss_scale = 0.0f;
  int64_t loss_scale_good_steps = 0;
  /// The training data (train::data_identity: its name, size and a checksum of its start; ""
  /// for synthetic data) and the samples read from it so far (step x global batch).
  std::string data = {};
  int64_t data_samples = 0;
};

/// One tile of a checkpoint, as its manifest lists it.
struct SavedTile {
  std::string value;  ///< graph value name
  Shape shape;        ///< the whole value's shape
  DType dtype = DType::kF32;
  std::string file;                    ///< in the checkpoint directory
  std::vector<mesh::DimRange> region;  ///< the tile in whole-tensor coordinates
  uint32_t crc32c = 0;                 ///< of the file's bytes (runtime/crc32c.h)
};

/// A tile of a persistent value held in memory: what a checkpoint is written from and read into.
struct TileRef {
  int32_t device = 0;                  ///< global device id (names the tile's file)
  std::string value;                   ///< graph value name
  std::vector<mesh::DimRange> region;  ///< the tile in whole-tensor coordinates
  kernels::TensorView view;            ///< its elements
};

/// Writes each of `tiles` into its own new file in the existing directory `partial` (fsync'ed)
/// and lists them with their checksums (the caller chooses which tiles: each distinct one once).
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

/// Saves a checkpoint to `dir`: refuses what check_save_target refuses (before writing
/// anything), creates its partial directory (DIR.partial-<pid>), has `write_tiles` fill it (this
/// process's tiles, or every process's in a job of several), writes the manifest of the tiles it
/// returns and puts the directory at `dir`, replacing an older checkpoint there only then (its
/// own files removed, nothing else). On any failure the partial directory is removed and what
/// was at `dir` stays as it was.
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

/// Whether a checkpoint can be saved to `dir`, checked before training so that a run does not
/// find out after its last step. Refused (kInvalidArgument unless said): an empty name; a `dir`
/// that is a file ("DIR is a file, not a checkpoint directory; not overwritten"), a link or
/// anything but a directory; a non-empty directory that is not a meshpipe checkpoint (no valid
/// manifest of version 1 or 2, or an entry its manifest does not list, the first one named); a
/// missing parent directory (kNotFound); a place where the partial directory cannot be created
/// (kIo: not writable, a read-only file system), which is tried by creating and removing it.
Status check_save_target(const std::string& dir);

/// Reads only the manifest's header (format, version, model, step, seed): checks a checkpoint
/// before a run is planned and built.
Expected<CheckpointInfo> read_checkpoint_info(const std::string& dir);

/// Fills every persistent tile of `run` from the checkpoint in `dir`. Errors: `dir` missing or
/// not a directory; a missing, oversized (over 64 MiB) or malformed manifest (the field named),
/// one of version 1 (no checksums); a value the run has and the checkpoint lacks, a shape or
/// dtype that differs; a tile file that is missing, not a regular file (a link, a directory, a
/// FIFO, a device), of another size than its region needs ("has N bytes, its region needs M")
/// or whose checksum differs ("checksum mismatch: the tile is corrupted"); a failed read;
/// regions that leave part of a tile uncovered.
Expected<CheckpointInfo> load_checkpoint(InProcessRun& run, const graph::Graph& g,
                                         const std::string& dir);

}  // namespace meshpipe::runtime

// Per-device instruction programs: what lowering (runtime/lower.h) produces from a Plan, what
// the interpreter (runtime/interpreter.h) executes on a device and what the simulator
// (runtime/simulator.h) times. One program describes one training step of one device: buffers
// (tiles, with their local shapes) and a static list of instructions in execution order, as
// Alpa's runtime emits per mesh worker (docs/algorithms.md §3.3).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "mesh/device_mesh.h"
#include "mesh/resharding.h"
#include "mesh/sharding.h"
#include "planner/plan.h"
#include "runtime/local_op.h"

namespace meshpipe::runtime {

/// Lifetime of a buffer.
enum class BufferKind : uint8_t {
  kPersistent,  ///< parameters and optimizer states: allocated once, live across steps
  kStep,        ///< allocated when first written in a step, released by kFree
};

/// One buffer of a device program.
struct BufferDesc {
  std::string name;  ///< "layer0/w", "layer0/h #3" (micro-batch 3), "send layer0/h #3 -> 5"
  Shape shape;       ///< local (tile) shape
  DType dtype = DType::kF32;
  BufferKind kind = BufferKind::kStep;
  int64_t bytes() const { return shape.numel() * dtype_size(dtype); }
};

/// Instruction opcodes (docs/algorithms.md §3.3: RUN, SEND, RECV, FREE, plus what gradient
/// accumulation and tile movement need).
enum class Opcode : uint8_t {
  kRun,         ///< local op `op`: inputs `in`, outputs `out`
  kCollective,  ///< `collective` along mesh `axis` on buffer in[0] -> out[0] (may be the same)
  kSend,        ///< send buffer in[0] to device `peer` under `tag` (completes asynchronously)
  kRecv,        ///< post a receive of out[0] from `peer` under `tag`; its first reader waits
  kCopyBox,     ///< copy the box `extent` at `src_offset` of in[0] to `dst_offset` of out[0]
  kLoadInput,   ///< out[0] = the tile at `src_offset` of data input `input`, micro-batch
  kAccumulate,  ///< out[0] = in[0] (`first`) or out[0] += in[0]
  kScale,       ///< out[0] *= factor
  kReportLoss,  ///< in[0] (a scalar) is the loss of `micro_batch`
  kFree,        ///< release in[0] (after pending sends from it complete)
};

/// "run", "collective", ...
const char* opcode_name(Opcode code);

/// Which part of the step an instruction belongs to (for traces and the schedule).
enum class Phase : uint8_t { kPrologue, kForward, kBackward, kGradSync, kUpdate };

/// "prologue", "forward", "backward", "grad-sync", "update".
const char* phase_name(Phase phase);

/// Transport tags of the step-wide overflow agreement of f16 loss scaling (the interpreter's,
/// runtime/interpreter.h): every device sends its verdict to the lowest device id under the
/// first and receives the outcome under the second. They carry crossing number
/// kReservedCrossing (bits 32-46), which lowering never gives a crossing, and collectives over
/// the transport set bit 47, so no other message has them.
inline constexpr uint64_t kReservedCrossing = (uint64_t{1} << 15) - 1;
inline constexpr uint64_t kOverflowUpTag = (kReservedCrossing << 32) | 1;
inline constexpr uint64_t kOverflowDownTag = (kReservedCrossing << 32) | 2;

/// One instruction. Fields beyond `code`, `in` and `out` are read only by the opcodes that
/// name them.
struct Instruction {
  Opcode code = Opcode::kRun;
  Phase phase = Phase::kForward;
  int32_t micro_batch = -1;         ///< -1: once per step
  std::vector<int32_t> in;          ///< buffer ids read
  std::vector<int32_t> out;         ///< buffer ids written
  int32_t op = -1;                  ///< kRun: index into DeviceProgram::ops
  mesh::CollectiveStep collective;  ///< kCollective (kind, axis, dim, split_dim, spec after)
  mesh::ShardingSpec spec;          ///< kCollective: the spec of in[0] (before the step)
  Shape shape;                      ///< kCollective: the full tensor's shape
  int32_t peer = -1;                ///< kSend/kRecv: global device id of the other side
  uint64_t tag = 0;                 ///< kSend/kRecv: message tag (unique per message within a step)
  int32_t input = -1;               ///< kLoadInput: index into Program::inputs
  std::vector<int64_t> src_offset;  ///< kCopyBox; kLoadInput: the tile's offset in the input
  std::vector<int64_t> dst_offset;  ///< kCopyBox
  std::vector<int64_t> extent;      ///< kCopyBox
  float factor = 1.0f;              ///< kScale
  bool first = false;               ///< kAccumulate: the step's first micro-batch (overwrite)
  std::string what;                 ///< what it is for, in words ("layer0/attn/q forward #2")
};

/// A persistent value's tile on a device (for initialisation, reading back and checkpoints).
struct PersistentTile {
  int32_t buffer = -1;
  std::string value;                   ///< graph value name
  std::vector<mesh::DimRange> region;  ///< the tile in full-tensor coordinates
};

/// The program of one device for one training step.
struct DeviceProgram {
  int32_t device = 0;  ///< global device id
  int32_t stage = 0;
  int64_t coord[2] = {0, 0};  ///< position (i0, i1) in the stage's logical mesh
  std::vector<BufferDesc> buffers;
  std::vector<LocalOp> ops;
  std::vector<Instruction> instructions;
  std::vector<PersistentTile> persistent;
};

/// One stage's devices and logical mesh, as the runtime sees them.
struct StageLayout {
  std::vector<int32_t> devices;  ///< global ids, row-major over the logical mesh
  mesh::LogicalMesh mesh;
};

/// The lowered training step of a whole plan.
struct Program {
  std::string model;
  int64_t micro_batches = 1;
  planner::Schedule schedule = planner::Schedule::k1F1B;
  std::vector<std::string> inputs;  ///< data input names (kLoadInput refers to these)
  std::vector<Shape> input_shapes;  ///< full micro-batch shapes
  std::vector<DType> input_dtypes;
  std::vector<StageLayout> stages;
  std::vector<DeviceProgram> devices;  ///< indexed by global device id; unused devices absent
  int32_t loss_device = -1;            ///< the device whose kReportLoss instructions count

  /// The program of global device `device`, or null.
  const DeviceProgram* device(int32_t device) const;
};

/// Checks that every buffer id is in range, every buffer is written before it is read in step
/// order (persistent ones excepted), every send has one matching receive (peer, tag, bytes) and
/// every collective group member runs the same collectives in the same order.
Status validate_program(const Program& program);

/// A 64-bit fingerprint (FNV-1a) of everything that decides what the devices do and exchange:
/// per device its mesh position, buffers (shape, dtype, kind), instructions (opcode, phase,
/// micro-batch, buffers, op, collective kind/axis/dims and its specs before and after, peer,
/// tag, offsets, extents, factor) and persistent tiles. The processes of one job each lower the
/// plan themselves; equal fingerprints show they built the same program (a different meshpipe build
/// could pair sends and receives wrongly).
uint64_t program_fingerprint(const Program& program);
/// The same hash over instructions alone, continuing `h` (compact programs hash their templates).
uint64_t instructions_fingerprint(const std::vector<Instruction>& code, uint64_t h);

/// Merges each run of consecutive kCollective fp32 all-reduces along the same mesh axis (of
/// more than one device, each on one buffer, none touching another's buffers) into one
/// instruction whose `in`/`out` list every buffer: the interpreter packs them, all-reduces once
/// and unpacks, so a gradient synchronisation of many small tensors pays one collective's
/// latency instead of one per tensor. A run is cut where its buffers would pass `max_bytes`
/// (0: no fusion); the cost is the sum of the parts. Runs before insert_frees. Members of a
/// group must fuse alike: a stage whose devices would not (an instruction between two
/// all-reduces on some devices only) keeps its all-reduces separate.
void fuse_all_reduces(Program& program, int64_t max_bytes);

/// Inserts a kFree after the last instruction that references each step buffer.
void insert_frees(DeviceProgram& program);

/// A listing of one device's program (for `meshpipe lower` and debugging).
std::string describe_device_program(const DeviceProgram& program);

}  // namespace meshpipe::runtime

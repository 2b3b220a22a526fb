// A lowered program held in a size independent of the micro-batch count: each device's
// forward and backward tasks share instruction templates, instantiated per micro-batch (buffers
// of the micro-batch, message tags, names), so a 1024-micro-batch step of a 64-device plan is a
// few templates and a list of (template, micro-batch) per device instead of tens of millions of
// instructions. lower_compact() lowers the plan at a small micro-batch count that has every kind
// of task the schedule makes (the first ones, the steady state, the last ones), checks that the
// templates extended by one micro-batch give exactly what lower() gives there, and extends them
// to the plan's count. The simulator runs compact programs; expand() gives the flat program back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/graph.h"
#include "planner/plan.h"
#include "runtime/lower.h"
#include "runtime/program.h"

namespace meshpipe::runtime {

/// A run of one device's instructions: template `code` instantiated for `micro_batch`. In a
/// template a buffer id b < 0 is class -(b + 1) of the segment's micro-batch (a buffer only that
/// micro-batch's tasks touch), a kSend/kRecv tag has its micro-batch field zero, `micro_batch`
/// is 0 and `what` says "#@" for the micro-batch. A segment with micro_batch -1 (the prologue,
/// the gradient synchronisation and the update) is taken as written.
struct Segment {
  int32_t code = 0;
  int32_t micro_batch = -1;
};

/// A template's name or description ("layer0/h #@") for `micro_batch` ("layer0/h #3"); as it
/// is for micro_batch -1 or text without "#@".
std::string micro_batch_text(const std::string& text, int32_t micro_batch);

/// Binds template instruction `ins` to `micro_batch` (>= 0): each class id b < 0 becomes
/// buffer(-(b + 1)), the micro-batch goes into a kSend/kRecv tag, `micro_batch` and `what`.
/// expand_device and the interpreter instantiate templates through it.
template <typename ClassBuffer>
void bind_micro_batch(Instruction& ins, int32_t micro_batch, ClassBuffer&& buffer) {
  for (std::vector<int32_t>* ids : {&ins.in, &ins.out}) {
    for (int32_t& b : *ids) {
      if (b < 0) b = buffer(-(b + 1));
    }
  }
  if (ins.code == Opcode::kSend || ins.code == Opcode::kRecv) {
    ins.tag |= static_cast<uint64_t>(micro_batch + 1) << 16;
  }
  ins.micro_batch = micro_batch;
  ins.what = micro_batch_text(ins.what, micro_batch);
}

/// One device's instructions as templates and segments; its buffers (ids >= 0), ops and
/// persistent tiles are those of the matching device in CompactProgram::base.
struct CompactCode {
  std::vector<BufferDesc> classes;  ///< per-micro-batch buffers; names say "#@"
  std::vector<std::vector<Instruction>> templates;
  std::vector<Segment> segments;
  int64_t instructions() const;  ///< the expanded count
};

struct CompactProgram {
  Program base;                   ///< every device's instructions empty; see `code`
  std::vector<CompactCode> code;  ///< indexed like base.devices
  int64_t instructions() const;   ///< the expanded count, all devices
};

/// The compact form of a lowered program (one template per distinct task). Errors: a program
/// whose tasks are not contiguous runs of one (phase, micro-batch).
Expected<CompactProgram> compact(Program program);

/// The same program with `micro_batches` micro-batches: the task list of the schedule at that
/// count, each task taking the template of its counterpart (the first and last tasks their own,
/// the steady state one template). Valid when the program was lowered at
/// compact_lowering_count(stages) or more micro-batches (lower_compact checks it).
Expected<CompactProgram> with_micro_batches(const CompactProgram& program, int64_t micro_batches);

/// The micro-batch count lower_compact lowers at for `stages` pipeline stages.
int64_t compact_lowering_count(int64_t stages);

/// One device's flat program (buffers of each micro-batch numbered after the shared ones).
DeviceProgram expand_device(const CompactProgram& program, size_t device);

/// The flat program.
Program expand(const CompactProgram& program);

/// program_fingerprint for the compact form: the base (every device's places, buffers and
/// persistent tiles), then each device's classes, templates and segments. The processes of a job
/// compare it as they compare program_fingerprint.
uint64_t compact_fingerprint(const CompactProgram& program);

/// Whether `code` can run as device `dp`'s code without reading outside its tables: segments
/// name existing templates and micro-batches of the step; a template run once per step
/// (micro-batch -1) names only the device's own buffers, one run per micro-batch those or
/// classes of the code. The interpreter checks it before running a compact program.
Status check_compact_code(const CompactCode& code, const DeviceProgram& dp, int64_t micro_batches);

/// Whether two device programs are the same up to the numbering of their buffers and the
/// instructions' descriptions; the first difference when not.
Status same_device_program(const DeviceProgram& a, const DeviceProgram& b);

/// About how many bytes lower_compact (and a simulation of its program) holds for `plan`:
/// ~4 KiB per op of each device per micro-batch lowered (measured: GPT-76B under ZeRO-3 on 128
/// devices, 5061 ops each, lowered at 6 micro-batches, peaked at 11.6 GB).
int64_t lowering_bytes_estimate(const planner::Plan& plan);

/// The most lowering_bytes_estimate may be: 3/4 of this machine's physical memory.
int64_t lowering_bytes_limit();

/// lower() in compact form. Plans with few micro-batches are lowered as they are; others at
/// compact_lowering_count micro-batches, checked against lower() at one more (same_device_program
/// on every device), then extended. Errors: those of lower(), and a program whose extension does
/// not match (an internal error that names the device and instruction), and (out of range) a
/// plan whose lowering_bytes_estimate exceeds lowering_bytes_limit.
Expected<CompactProgram> lower_compact(const planner::Plan& plan, const graph::Graph& g,
                                       const LowerOptions& options = {});

}  // namespace meshpipe::runtime

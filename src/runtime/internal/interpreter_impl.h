// The device interpreter's state and its small helpers (private to runtime/): shared by
// interpreter.cc (instructions, steps, creation) and interpreter_collectives.cc (collectives on
// tiles). Buffers live in a DeviceMemory: host memory, or one GPU's, where kernels, copies and
// NCCL collectives queue on the GPU's stream and the transport's messages are staged through
// host memory.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/compact_program.h"
#include "runtime/internal/device_memory.h"
#include "runtime/internal/tile_boxes.h"
#include "runtime/internal/update_agreement.h"
#include "runtime/internal/wide_collectives.h"
#include "runtime/interpreter.h"

namespace meshpipe::runtime {

namespace internal {

// What a device's time outside its kernels is charged to (time_kernels), as a fixed index so
// the instruction loop adds to an array; the names are made once per step (activity_name).
// [0, kOpcodes): an instruction's own time by opcode (for kCollective: its copies, per kind
// below); then per collective kind its copies and its communicator call; then the waits.
inline constexpr int kOpcodes = static_cast<int>(Opcode::kFree) + 1;
inline constexpr int kCollectiveKinds = static_cast<int>(mesh::CollectiveKind::kSlice) + 1;
inline constexpr int kCopiesOf = kOpcodes;
inline constexpr int kCommunicatorOf = kCopiesOf + kCollectiveKinds;
inline constexpr int kWaitReceives = kCommunicatorOf + kCollectiveKinds;
inline constexpr int kWaitSends = kWaitReceives + 1;
inline constexpr int kWaitSide = kWaitSends + 1;  // for collectives on the side queue
inline constexpr int kActivities = kWaitSide + 1;

// Scratch areas of the DeviceMemory (slots).
inline constexpr int kScratchPacked = 0;  // fused all-reduces
inline constexpr int kScratchIn = 1;      // collectives whose pieces are not contiguous
inline constexpr int kScratchOut = 2;
inline constexpr int kScratchWideIn = 3;  // half tensors widened to f32 (on a GPU)
inline constexpr int kScratchWideOut = 4;

}  // namespace internal

// Buffers: the device program's own (ids below `shared`: persistent ones and those of the
// whole step) and, for each micro-batch mb, one per class of the compact code, numbered
// shared + mb * classes + class. Those live only while their micro-batch's tasks run, so they are
// held in a map: what the interpreter keeps does not grow with the micro-batch count.
struct DeviceInterpreter::Impl {
  bool evaluating = false;  // set_evaluating: the loss only, every state kept
  float lr_scale = 1.0f;    // set_lr_scale: the optimizers' lr is multiplied by it
  const Program* program = nullptr;
  const DeviceProgram* dp = nullptr;
  const CompactCode* code = nullptr;
  int32_t shared = 0;  // dp->buffers.size()
  int32_t classes = 0;
  InterpreterOptions options;
  std::unique_ptr<internal::DeviceMemory> mem;
  kernels::KernelContext ctx;                                  // mem's
  std::vector<Block> blocks;                                   // ids < shared
  std::unordered_map<int32_t, Block> mb_blocks;                // ids >= shared, while allocated
  std::vector<Instruction> scratch;                            // the segment being run
  std::map<int32_t, comm::Request> pending_recv;               // buffer -> receive
  std::map<int32_t, std::vector<comm::Request>> pending_send;  // buffer -> sends from it
  // On a GPU the transport moves host memory: a buffer sent is downloaded into its staging
  // first (kept until its sends complete), a buffer received lands in staging and is uploaded
  // when first read.
  // (Host blocks from DeviceMemory::host_buffer: page-locked on a GPU.)
  struct HostBlock {
    void* data = nullptr;
    int64_t bytes = 0;
  };
  std::map<int32_t, HostBlock> send_staging;
  std::map<int32_t, HostBlock> recv_staging;
  // On a GPU: host copies of the persistent tiles (pull_persistent / push_persistent).
  mutable std::vector<std::vector<uint8_t>> mirrors;
  const DeviceLinks* links = nullptr;
  DeviceStepResult* timing = nullptr;  // the step running (kernel timings)
  double charged = 0.0;  // seconds of the running instruction already charged (time_kernels)
  std::array<double, internal::kActivities> activity_seconds{};  // the step's, by activity
  internal::WideScratch wide;  // half-precision sums on the host: f32 copies
  // Loss scaling or clipping on (InterpreterOptions::loss_scale, clip_grad_norm).
  std::optional<internal::UpdateAgreement> agreement;
  // Scratch bytes of each op's kernel on this memory's device (the lowering sized the CPU's;
  // a GPU's rows declare their own), by index into dp->ops.
  std::vector<int64_t> workspace_bytes;

  // Collectives on the side queue (InterpreterOptions::overlap_collectives). A pending one
  // holds the buffers it writes (their first toucher settles it: the compute queue waits for
  // its ticket, then `finish` runs there, e.g. unpacking a fused all-reduce) and temporary
  // blocks, released once the compute queue waits (so the stream-unaware allocator hands them
  // out again only to work ordered after the collective).
  struct Pending {
    int64_t ticket = 0;
    std::vector<int32_t> buffers;
    std::vector<Block> temps;
    std::function<Status()> finish;
    std::string what;
    bool settled = false;
  };
  std::unordered_map<int32_t, std::shared_ptr<Pending>> busy;  // buffer -> its pending collective
  std::vector<std::shared_ptr<Pending>> launched;              // this step's, in launch order
  std::set<comm::Communicator*> side_used;
  // Early launches, planned once (plan_early_launches) over the step's instruction indices:
  // after instruction q, launch those listed (their own index p > q + 1 is then skipped).
  bool early_planned = false;
  bool early_active = false;  // this step launches early (overlap() held when it began)
  std::unordered_map<int64_t, std::vector<int64_t>> launch_after;
  std::unordered_map<int64_t, Instruction> early;  // p -> its instruction
  DeviceStepResult* result_now = nullptr;          // the step running (counts)

  bool overlap() const {
    return options.overlap_collectives && mem->has_side_queue() && links != nullptr &&
           (links->side[0] != nullptr || links->side[1] != nullptr);
  }
  // Whether `ins` runs on the side queue: an all-reduce of the backward pass or of the
  // gradient synchronisation (fused ones of f32, single ones of f32, f16 or bf16) over an axis
  // with a side communicator.
  bool side_eligible(const Instruction& ins) const;
  void plan_early_launches();
  Status collective_on_side(const Instruction& ins);
  // Settles the pending collective that writes buffer b, if any.
  Status settle(int32_t b) {
    if (busy.empty()) return Status::ok();
    auto it = busy.find(b);
    if (it == busy.end()) return Status::ok();
    const std::shared_ptr<Pending> p = it->second;
    return settle(*p);
  }
  Status settle(Pending& p);
  // Settles every launched collective, then waits for the side queue (end of the step).
  Status finish_side();
  // After a failed step: waits for the side queue, ignoring failures, and forgets its work.
  void abandon_side();

  // Takes the options, opens the memory (host or GPU) and allocates the persistent tiles.
  Status prepare(InterpreterOptions opts);
  // Runs instruction i (its index in the step) with the context errors need.
  Status step(const Instruction& ins, int64_t i, const std::vector<std::vector<HostTensor>>& inputs,
              DeviceStepResult& result);
  Status execute(const Instruction& ins, const std::vector<std::vector<HostTensor>>& inputs,
                 DeviceStepResult& result);
  Status run(const Instruction& ins);
  Status load_input(const Instruction& ins, const std::vector<std::vector<HostTensor>>& inputs);
  Status send(const Instruction& ins);
  Status recv(const Instruction& ins);
  // In place: v *= factor (a half tensor scaled in f32 and rounded again).
  Status scale(const kernels::TensorView& v, float factor);
  // The first NaN or Inf among the floating outputs of an op, as an error naming it.
  Status check_finite(const LocalOp& l, const std::vector<kernels::TensorView>& out);
  Status collective(const Instruction& ins);
  Status fused_all_reduce(const Instruction& ins);
  // In place over the group: sums of f32, f16 or bf16 tensors (half ones summed in f32).
  Status all_reduce_view(comm::Communicator& c, const kernels::TensorView& v);
  Status reduce_scatter_view(comm::Communicator& c, const void* in, const kernels::TensorView& out,
                             int64_t count);
  // One kernel of the table on the memory's device (accumulation, scaling, conversions).
  Status run_table(OpKind kind, const OpAttrs& attrs, std::span<const kernels::TensorView> in,
                   std::span<const kernels::TensorView> out);
  // A tensor stored as another floating type (the kConvert kernel of the memory's device).
  Status convert(const kernels::TensorView& from, const kernels::TensorView& to);
  // The segment's template with its micro-batch's buffers, tags and names, into `scratch`.
  void instantiate(const Segment& seg);
  // Loss scaling's verdict on the gradients this device holds and its share of clipping's
  // squared norm, agreed with every device before the first update changes state.
  Status agree_before_update(DeviceStepResult& result);
  std::string agreement_subject() const;  // what is agreed on, for errors

  // Hands every staging block back (the step is over; no transfer uses them any more).
  void drop_staging() {
    for (auto* m : {&send_staging, &recv_staging}) {
      for (const auto& [b, blk] : *m) mem->release_host(blk.data, blk.bytes);
      m->clear();
    }
  }

  const mesh::LogicalMesh& mesh() const {
    return program->stages[static_cast<size_t>(dp->stage)].mesh;
  }

  const BufferDesc& desc(int32_t b) const {
    if (b < shared) return dp->buffers[static_cast<size_t>(b)];
    return code->classes[static_cast<size_t>((b - shared) % classes)];
  }
  std::string buffer_name(int32_t b) const {
    if (b < shared) return desc(b).name;
    return micro_batch_text(desc(b).name, (b - shared) / classes);
  }
  // The buffer's block (unallocated: data == nullptr).
  Block& block(int32_t b) {
    if (b < shared) return blocks[static_cast<size_t>(b)];
    return mb_blocks[b];
  }
  const Block* find_block(int32_t b) const {
    if (b < shared) return &blocks[static_cast<size_t>(b)];
    auto it = mb_blocks.find(b);
    return it == mb_blocks.end() ? nullptr : &it->second;
  }

  bool timed() const { return options.time_kernels && timing != nullptr; }
  static std::chrono::steady_clock::time_point now() { return std::chrono::steady_clock::now(); }
  // Charges the seconds since t0 to activity `a` (time_kernels); the running instruction's own
  // charge is what is left of its time.
  void charge(int a, std::chrono::steady_clock::time_point t0) {
    const double s = std::chrono::duration<double>(now() - t0).count();
    activity_seconds[static_cast<size_t>(a)] += s;
    charged += s;
  }
  // Runs a communicator call, charging its time to "collective KIND: communicator".
  template <typename F>
  Status communicate(mesh::CollectiveKind kind, F&& call) {
    if (!timed()) return call();
    const auto t0 = now();
    Status s = call();
    charge(internal::kCommunicatorOf + static_cast<int>(kind), t0);
    return s;
  }

  kernels::TensorView view(int32_t b) const {
    const BufferDesc& d = desc(b);
    const Block* blk = find_block(b);
    return kernels::TensorView(blk != nullptr ? blk->data : nullptr, d.shape, d.dtype);
  }

  // The buffer, allocated when first written.
  Expected<kernels::TensorView> writable(int32_t b) {
    MP_RETURN_IF_ERROR(settle(b));
    Block& blk = block(b);
    if (blk.data == nullptr) {
      MP_ASSIGN_OR_RETURN(blk, mem->allocate(std::max<int64_t>(desc(b).bytes(), 1)));
    }
    return view(b);
  }

  // The buffer for reading: its receive completed (and, on a GPU, uploaded).
  Expected<kernels::TensorView> readable(int32_t b) {
    MP_RETURN_IF_ERROR(settle(b));
    auto it = pending_recv.find(b);
    if (it != pending_recv.end()) {
      const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
      MP_RETURN_IF_ERROR(links->transport->wait(it->second, options.timeout));
      if (timed()) charge(internal::kWaitReceives, t0);
      pending_recv.erase(it);
      if (auto st = recv_staging.find(b); st != recv_staging.end()) {
        const Block* blk = find_block(b);
        const HostBlock staged = st->second;
        recv_staging.erase(st);
        const Status up = mem->upload(blk->data, staged.data, staged.bytes);
        mem->release_host(staged.data, staged.bytes);
        MP_RETURN_IF_ERROR(up);
      }
    }
    const Block* blk = find_block(b);
    if (blk == nullptr || blk->data == nullptr) {
      return make_error(Errc::kInternal, "buffer '{}' is read before it is written",
                        buffer_name(b));
    }
    return view(b);
  }

  Status release(int32_t b) {
    MP_RETURN_IF_ERROR(settle(b));
    auto it = pending_send.find(b);
    if (it != pending_send.end()) {
      const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
      for (comm::Request& r : it->second) {
        MP_RETURN_IF_ERROR(links->transport->wait(r, options.timeout));
      }
      if (timed()) charge(internal::kWaitSends, t0);
      pending_send.erase(it);
    }
    if (auto st = send_staging.find(b); st != send_staging.end()) {
      mem->release_host(st->second.data, st->second.bytes);
      send_staging.erase(st);
    }
    if (b < shared) {
      Block& blk = blocks[static_cast<size_t>(b)];
      if (blk.data != nullptr) mem->release(blk);
      blk = {};
    } else if (auto mb = mb_blocks.find(b); mb != mb_blocks.end()) {
      if (mb->second.data != nullptr) mem->release(mb->second);
      mb_blocks.erase(mb);
    }
    return Status::ok();
  }

  comm::Communicator* group(int axis) const { return links->axis[axis]; }

  // Tests every outstanding send (which progresses the transport) and forgets completed ones.
  void progress_sends() {
    for (auto it = pending_send.begin(); it != pending_send.end();) {
      auto& reqs = it->second;
      reqs.erase(
          std::remove_if(reqs.begin(), reqs.end(),
                         [&](comm::Request& r) {
                           return links->transport->test(r) &&
                                  links->transport->wait(r, std::chrono::milliseconds(0)).is_ok();
                         }),
          reqs.end());
      it = reqs.empty() ? pending_send.erase(it) : std::next(it);
    }
  }

  internal::Ranges ranges(const Instruction& ins, const mesh::ShardingSpec& spec, int axis,
                          int64_t rank) const {
    int64_t c[2] = {dp->coord[0], dp->coord[1]};
    if (axis >= 0) c[axis] = rank;
    return mesh::tile_ranges(ins.shape, spec, mesh(), c[0], c[1]);
  }
};

}  // namespace meshpipe::runtime

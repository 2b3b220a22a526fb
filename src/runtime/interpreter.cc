// DeviceInterpreter: one device's program through the CPU kernels and comm/.
#include "runtime/interpreter.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <unordered_map>

#include "kernels/backend.h"
#include "kernels/half.h"
#include "kernels/layout.h"
#include "runtime/compact_program.h"
#include "runtime/internal/loss_scaling.h"
#include "runtime/internal/tile_boxes.h"
#include "runtime/internal/wide_collectives.h"

namespace meshpipe::runtime {

namespace {

using internal::contiguous_offset;
using internal::extent_of;
using internal::intersect;
using internal::numel_of;
using internal::offset_in;
using internal::Ranges;

// What a device's time outside its kernels is charged to (time_kernels), as a fixed index so
// the instruction loop adds to an array; the names are made once per step (activity_name).
// [0, kOpcodes): an instruction's own time by opcode (for kCollective: its copies, per kind
// below); then per collective kind its copies and its communicator call; then the waits.
constexpr int kOpcodes = static_cast<int>(Opcode::kFree) + 1;
constexpr int kCollectiveKinds = static_cast<int>(mesh::CollectiveKind::kSlice) + 1;
constexpr int kCopiesOf = kOpcodes;
constexpr int kCommunicatorOf = kCopiesOf + kCollectiveKinds;
constexpr int kWaitReceives = kCommunicatorOf + kCollectiveKinds;
constexpr int kWaitSends = kWaitReceives + 1;
constexpr int kActivities = kWaitSends + 1;

int instruction_activity(const Instruction& ins) {
  return ins.code == Opcode::kCollective ? kCopiesOf + static_cast<int>(ins.collective.kind)
                                         : static_cast<int>(ins.code);
}

std::string activity_name(int a) {
  if (a == static_cast<int>(Opcode::kRun)) return "run: outside the kernel";
  if (a < kOpcodes) return opcode_name(static_cast<Opcode>(a));
  if (a < kCommunicatorOf) {
    return fmt::format("collective {}: copies",
                       mesh::collective_name(static_cast<mesh::CollectiveKind>(a - kCopiesOf)));
  }
  if (a < kWaitReceives) {
    return fmt::format(
        "collective {}: communicator",
        mesh::collective_name(static_cast<mesh::CollectiveKind>(a - kCommunicatorOf)));
  }
  return a == kWaitReceives ? "wait for receives" : "wait for sends";
}

}  // namespace

// Buffers: the device program's own (ids below `shared`: persistent ones and those of the
// whole step) and, for each micro-batch mb, one per class of the compact code, numbered
// shared + mb * classes + class. Those live only while their micro-batch's tasks run, so they are
// held in a map: what the interpreter keeps does not grow with the micro-batch count.
struct DeviceInterpreter::Impl {
  const Program* program = nullptr;
  const DeviceProgram* dp = nullptr;
  const CompactCode* code = nullptr;
  int32_t shared = 0;  // dp->buffers.size()
  int32_t classes = 0;
  InterpreterOptions options;
  BufferPool pool;
  std::vector<Block> blocks;                                   // ids < shared
  std::unordered_map<int32_t, Block> mb_blocks;                // ids >= shared, while allocated
  std::vector<Instruction> scratch;                            // the segment being run
  std::map<int32_t, comm::Request> pending_recv;               // buffer -> receive
  std::map<int32_t, std::vector<comm::Request>> pending_send;  // buffer -> sends from it
  const kernels::KernelContext ctx;
  const DeviceLinks* links = nullptr;
  DeviceStepResult* timing = nullptr;  // the step running (kernel timings)
  double charged = 0.0;  // seconds of the running instruction already charged (time_kernels)
  std::array<double, kActivities> activity_seconds{};  // the step's, by activity index
  std::vector<float> packed;  // fused all-reduces: kept across steps, not allocated per step
  // Collectives whose pieces are not contiguous in their tiles: staging kept across steps.
  std::vector<uint8_t> stage_in;
  std::vector<uint8_t> stage_out;
  internal::WideScratch wide;                    // half-precision sums: operands widened to f32
  std::optional<internal::LossScaling> scaling;  // InterpreterOptions::loss_scale enabled

  // Runs instruction i (its index in the step) with the context errors need.
  Status step(const Instruction& ins, int64_t i, const std::vector<std::vector<HostTensor>>& inputs,
              DeviceStepResult& result);
  // The segment's template with its micro-batch's buffers, tags and names, into `scratch`.
  void instantiate(const Segment& seg);
  // Loss scaling: this device's verdict on the gradients it holds, agreed with every device.
  Status agree_on_overflow(DeviceStepResult& result);

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
    charge(kCommunicatorOf + static_cast<int>(kind), t0);
    return s;
  }

  kernels::TensorView view(int32_t b) const {
    const BufferDesc& d = desc(b);
    const Block* blk = find_block(b);
    return kernels::TensorView(blk != nullptr ? blk->data : nullptr, d.shape, d.dtype);
  }

  // The buffer, allocated when first written.
  kernels::TensorView writable(int32_t b) {
    Block& blk = block(b);
    if (blk.data == nullptr) blk = pool.allocate(std::max<int64_t>(desc(b).bytes(), 1));
    return view(b);
  }

  // The buffer for reading: its receive completed.
  Expected<kernels::TensorView> readable(int32_t b) {
    auto it = pending_recv.find(b);
    if (it != pending_recv.end()) {
      const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
      MP_RETURN_IF_ERROR(links->transport->wait(it->second, options.timeout));
      if (timed()) charge(kWaitReceives, t0);
      pending_recv.erase(it);
    }
    const Block* blk = find_block(b);
    if (blk == nullptr || blk->data == nullptr) {
      return make_error(Errc::kInternal, "buffer '{}' is read before it is written",
                        buffer_name(b));
    }
    return view(b);
  }

  Status release(int32_t b) {
    auto it = pending_send.find(b);
    if (it != pending_send.end()) {
      const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
      for (comm::Request& r : it->second) {
        MP_RETURN_IF_ERROR(links->transport->wait(r, options.timeout));
      }
      if (timed()) charge(kWaitSends, t0);
      pending_send.erase(it);
    }
    if (b < shared) {
      Block& blk = blocks[static_cast<size_t>(b)];
      if (blk.data != nullptr) pool.release(blk);
      blk = {};
    } else if (auto mb = mb_blocks.find(b); mb != mb_blocks.end()) {
      if (mb->second.data != nullptr) pool.release(mb->second);
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

  Ranges ranges(const Instruction& ins, const mesh::ShardingSpec& spec, int axis,
                int64_t rank) const {
    int64_t c[2] = {dp->coord[0], dp->coord[1]};
    if (axis >= 0) c[axis] = rank;
    return mesh::tile_ranges(ins.shape, spec, mesh(), c[0], c[1]);
  }

  // Several all-reduces fused into one (fuse_all_reduces): pack, all-reduce once, unpack.
  Status fused_all_reduce(const Instruction& ins) {
    comm::Communicator* c = group(ins.collective.axis);
    if (c == nullptr || c->size() != mesh().size(ins.collective.axis)) {
      return make_error(Errc::kInternal, "no communicator for mesh axis {}", ins.collective.axis);
    }
    int64_t total = 0;
    for (int32_t b : ins.in) total += desc(b).shape.numel();
    packed.resize(static_cast<size_t>(total));
    int64_t at = 0;
    for (int32_t b : ins.in) {
      MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(b));
      std::memcpy(packed.data() + at, v.data, static_cast<size_t>(v.bytes()));
      at += v.numel();
    }
    MP_RETURN_IF_ERROR(communicate(mesh::CollectiveKind::kAllReduce,
                                   [&] { return c->all_reduce(packed.data(), total); }));
    at = 0;
    for (int32_t b : ins.out) {
      kernels::TensorView v = writable(b);
      std::memcpy(v.data, packed.data() + at, static_cast<size_t>(v.bytes()));
      at += v.numel();
    }
    return Status::ok();
  }

  Status collective(const Instruction& ins) {
    if (ins.in.size() > 1) return fused_all_reduce(ins);
    const mesh::CollectiveStep& step = ins.collective;
    const int a = step.axis;
    MP_ASSIGN_OR_RETURN(kernels::TensorView in, readable(ins.in[0]));
    kernels::TensorView out = writable(ins.out[0]);
    const int64_t n = mesh().size(a);
    if (step.kind == mesh::CollectiveKind::kAllReduce && n > 1) {  // no tile geometry needed
      comm::Communicator* c = group(a);
      if (c == nullptr || c->size() != n) {
        return make_error(Errc::kInternal, "no communicator of size {} for mesh axis {}", n, a);
      }
      if (out.data != in.data) std::memcpy(out.data, in.data, static_cast<size_t>(in.bytes()));
      return communicate(step.kind, [&] { return internal::all_reduce_view(*c, out, wide); });
    }
    const Ranges before = ranges(ins, ins.spec, -1, 0);
    const Ranges after = ranges(ins, step.after, -1, 0);
    if (step.kind == mesh::CollectiveKind::kSlice || n == 1) {
      kernels::copy_box(ctx, in, offset_in(after, before), out,
                        std::vector<int64_t>(after.size(), 0), extent_of(after));
      return Status::ok();
    }
    comm::Communicator* c = group(a);
    if (c == nullptr || c->size() != n) {
      return make_error(Errc::kInternal, "no communicator of size {} for mesh axis {}", n, a);
    }
    const int64_t es = dtype_size(in.dtype);
    switch (step.kind) {
      case mesh::CollectiveKind::kAllReduce:
        if (out.data != in.data) std::memcpy(out.data, in.data, static_cast<size_t>(in.bytes()));
        return communicate(step.kind, [&] { return internal::all_reduce_view(*c, out, wide); });
      case mesh::CollectiveKind::kAllGather: {
        // Rank r's tile lands at r * tile in the gathered one when it is a contiguous run of
        // it (a dim-0 split): gather in place; else through staging and a copy per piece.
        bool direct = ins.in[0] != ins.out[0];
        for (int64_t r = 0; r < n && direct; ++r) {
          const Ranges src = ranges(ins, ins.spec, a, r);
          direct =
              numel_of(extent_of(src)) == in.numel() &&
              contiguous_offset(out.shape, offset_in(src, after), extent_of(src)) == r * in.numel();
        }
        if (direct) {
          return communicate(step.kind,
                             [&] { return c->all_gather(in.data, out.data, in.bytes()); });
        }
        stage_out.resize(static_cast<size_t>(n * in.bytes()));
        uint8_t* all = stage_out.data();
        MP_RETURN_IF_ERROR(
            communicate(step.kind, [&] { return c->all_gather(in.data, all, in.bytes()); }));
        for (int64_t r = 0; r < n; ++r) {
          const Ranges src = ranges(ins, ins.spec, a, r);
          kernels::TensorView piece(all + r * in.bytes(), in.shape, in.dtype);
          kernels::copy_box(ctx, piece, std::vector<int64_t>(src.size(), 0), out,
                            offset_in(src, after), extent_of(src));
        }
        return Status::ok();
      }
      case mesh::CollectiveKind::kReduceScatter: {
        const int64_t chunk = out.numel();
        // Rank r's chunk is a contiguous run at r * chunk of the tile: reduce in place.
        bool direct = ins.in[0] != ins.out[0];
        for (int64_t r = 0; r < n && direct; ++r) {
          const Ranges dst = ranges(ins, step.after, a, r);
          direct = numel_of(extent_of(dst)) == chunk &&
                   contiguous_offset(in.shape, offset_in(dst, before), extent_of(dst)) == r * chunk;
        }
        if (direct) {
          return communicate(step.kind, [&] {
            return internal::reduce_scatter_view(*c, in.data, out, chunk, wide);
          });
        }
        stage_in.resize(static_cast<size_t>(n * chunk * es));
        uint8_t* send = stage_in.data();
        for (int64_t r = 0; r < n; ++r) {
          const Ranges dst = ranges(ins, step.after, a, r);
          kernels::TensorView piece(send + r * chunk * es, out.shape, out.dtype);
          kernels::copy_box(ctx, in, offset_in(dst, before), piece,
                            std::vector<int64_t>(dst.size(), 0), extent_of(dst));
        }
        return communicate(
            step.kind, [&] { return internal::reduce_scatter_view(*c, send, out, chunk, wide); });
      }
      case mesh::CollectiveKind::kAllToAll: {
        const int64_t chunk = in.bytes() / n;
        const bool distinct = ins.in[0] != ins.out[0];
        // Chunk j for rank j, and the chunk from rank i, each a contiguous run at j (i) * chunk
        // of their tiles: exchanged in place; else through staging.
        bool send_direct = distinct;
        for (int64_t j = 0; j < n; ++j) {
          const Ranges box = intersect(ranges(ins, step.after, a, j), before);
          const std::vector<int64_t> e = extent_of(box);
          if (numel_of(e) * es != chunk) {
            return make_error(Errc::kInternal, "all-to-all chunk of {} bytes, expected {}",
                              numel_of(e) * es, chunk);
          }
          send_direct = send_direct &&
                        contiguous_offset(in.shape, offset_in(box, before), e) * es == j * chunk;
        }
        bool recv_direct = distinct;
        for (int64_t i = 0; i < n && recv_direct; ++i) {
          const Ranges box = intersect(after, ranges(ins, ins.spec, a, i));
          const std::vector<int64_t> e = extent_of(box);
          recv_direct = numel_of(e) * es == chunk &&
                        contiguous_offset(out.shape, offset_in(box, after), e) * es == i * chunk;
        }
        const uint8_t* send = static_cast<const uint8_t*>(in.data);
        if (!send_direct) {
          stage_in.resize(static_cast<size_t>(in.bytes()));
          for (int64_t j = 0; j < n; ++j) {
            const Ranges box = intersect(ranges(ins, step.after, a, j), before);
            const std::vector<int64_t> e = extent_of(box);
            kernels::TensorView piece(stage_in.data() + j * chunk, Shape(e), in.dtype);
            kernels::copy_box(ctx, in, offset_in(box, before), piece,
                              std::vector<int64_t>(e.size(), 0), e);
          }
          send = stage_in.data();
        }
        uint8_t* recv = static_cast<uint8_t*>(out.data);
        if (!recv_direct) {
          stage_out.resize(static_cast<size_t>(out.bytes()));
          recv = stage_out.data();
        }
        MP_RETURN_IF_ERROR(
            communicate(step.kind, [&] { return c->all_to_all(send, recv, chunk); }));
        if (recv_direct) return Status::ok();
        for (int64_t i = 0; i < n; ++i) {
          const Ranges box = intersect(after, ranges(ins, ins.spec, a, i));
          const std::vector<int64_t> e = extent_of(box);
          kernels::TensorView piece(recv + i * chunk, Shape(e), in.dtype);
          kernels::copy_box(ctx, piece, std::vector<int64_t>(e.size(), 0), out,
                            offset_in(box, after), e);
        }
        return Status::ok();
      }
      case mesh::CollectiveKind::kSlice:
        break;
    }
    return Status::ok();
  }

  Status run(const Instruction& ins) {
    const LocalOp& l = dp->ops[static_cast<size_t>(ins.op)];
    if (!options.fail_op.empty() && l.op.name == options.fail_op) {
      return make_error(Errc::kInternal, "injected kernel failure in op '{}'", l.op.name);
    }
    OpAttrs scaled;  // loss scaling: the seed's and the optimizers' attributes
    const OpAttrs* attrs = scaling ? scaling->attrs_for(ins, l, scaled) : &l.op.attrs;
    std::vector<kernels::TensorView> in;
    for (size_t i = 0; i < ins.in.size(); ++i) {
      MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[i]));
      if (v.shape.numel() != l.inputs[i].numel()) {
        return make_error(Errc::kInternal, "input {} holds {} elements, the op expects shape {}", i,
                          v.shape.numel(), l.inputs[i].to_string());
      }
      v.shape = l.inputs[i];
      v.strides = v.shape.strides();
      in.push_back(v);
    }
    std::vector<kernels::TensorView> out;
    for (int32_t b : ins.out) out.push_back(writable(b));
    if (attrs == nullptr) return internal::keep_state(l, in, out);  // a skipped update
    Block ws;
    kernels::TensorView wsv;
    if (l.workspace_bytes > 0) {
      ws = pool.allocate(l.workspace_bytes);
      wsv = kernels::TensorView(ws.data, Shape{(l.workspace_bytes + 3) / 4}, DType::kF32);
    }
    kernels::KernelArgs args;
    args.ctx = &ctx;
    args.in = in;
    args.out = out;
    args.workspace = wsv;
    args.attrs = attrs;
    args.row_offset = l.row_offset;
    args.id_offset = l.id_offset;
    const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
    const Status s = kernels::run_kernel(ctx.device, l.op.kind, args);
    if (timed()) {
      const double k = std::chrono::duration<double>(now() - t0).count();
      timing->kernel_seconds[l.op.kind] += k;
      charged += k;
      ++timing->kernels_run;
    }
    if (ws.data != nullptr) pool.release(ws);
    if (!s.is_ok()) return s.with_context(fmt::format("op '{}'", l.op.name));
    if (l.output_scale != 1.0f) {
      const int64_t n = out[0].numel();
      if (out[0].dtype == DType::kF32) {
        float* p = out[0].f32();
        for (int64_t k = 0; k < n; ++k) p[k] *= l.output_scale;
      } else {  // a half output (mixed precision): scaled in f32, rounded again
        auto* h = static_cast<uint16_t*>(out[0].data);
        wide.out.resize(static_cast<size_t>(n));
        kernels::widen_from_half(h, wide.out.data(), n, out[0].dtype);
        for (int64_t k = 0; k < n; ++k) wide.out[static_cast<size_t>(k)] *= l.output_scale;
        kernels::round_to_half(wide.out.data(), h, n, out[0].dtype);
      }
    }
    if (options.check_finite) MP_RETURN_IF_ERROR(check_finite(l, out));
    return Status::ok();
  }

  // The first NaN or Inf among the floating (f32, f16, bf16) outputs of an op, as an error
  // naming it.
  static Status check_finite(const LocalOp& l, const std::vector<kernels::TensorView>& out) {
    for (size_t o = 0; o < out.size(); ++o) {
      const DType t = out[o].dtype;
      if (!is_floating(t)) continue;
      const int64_t n = out[o].numel();
      for (int64_t k = 0; k < n; ++k) {
        const float x = kernels::element_as_float(out[o].data, t, k);
        if (!std::isfinite(x)) {
          return make_error(Errc::kNumerics,
                            "op '{}' ({}) wrote a non-finite value ({}) at element {} of output {}",
                            l.op.name, op_kind_name(l.op.kind), x, k, o);
        }
      }
    }
    return Status::ok();
  }

  Status execute(const Instruction& ins, int32_t index,
                 const std::vector<std::vector<HostTensor>>& inputs, DeviceStepResult& result) {
    (void)index;
    switch (ins.code) {
      case Opcode::kRun:
        return run(ins);
      case Opcode::kCollective:
        return collective(ins);
      case Opcode::kSend: {
        MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[0]));
        // A gradient sent to the stage that updates its parameter: checked by its sender.
        if (scaling && ins.phase == Phase::kGradSync) {
          MP_RETURN_IF_ERROR(scaling->note(ctx, std::span<const kernels::TensorView>(&v, 1)));
        }
        MP_ASSIGN_OR_RETURN(comm::Request r,
                            links->transport->send(ins.peer, ins.tag, v.data, v.bytes()));
        pending_send[ins.in[0]].push_back(r);
        return Status::ok();
      }
      case Opcode::kRecv: {
        kernels::TensorView v = writable(ins.out[0]);
        MP_ASSIGN_OR_RETURN(comm::Request r,
                            links->transport->recv(ins.peer, ins.tag, v.data, v.bytes()));
        pending_recv[ins.out[0]] = r;
        return Status::ok();
      }
      case Opcode::kCopyBox: {
        MP_ASSIGN_OR_RETURN(kernels::TensorView src, readable(ins.in[0]));
        kernels::copy_box(ctx, src, ins.src_offset, writable(ins.out[0]), ins.dst_offset,
                          ins.extent);
        return Status::ok();
      }
      case Opcode::kLoadInput: {
        if (ins.micro_batch < 0 || static_cast<size_t>(ins.micro_batch) >= inputs.size() ||
            static_cast<size_t>(ins.input) >= inputs[static_cast<size_t>(ins.micro_batch)].size()) {
          return make_error(Errc::kInvalidArgument, "data input {} of micro-batch {} is missing",
                            ins.input, ins.micro_batch);
        }
        const HostTensor& t =
            inputs[static_cast<size_t>(ins.micro_batch)][static_cast<size_t>(ins.input)];
        const Shape& want = program->input_shapes[static_cast<size_t>(ins.input)];
        const DType want_dtype = program->input_dtypes[static_cast<size_t>(ins.input)];
        if (t.dtype() != want_dtype) {
          return make_error(Errc::kInvalidArgument, "data input '{}' is {}, the program expects {}",
                            program->inputs[static_cast<size_t>(ins.input)], dtype_name(t.dtype()),
                            dtype_name(want_dtype));
        }
        if (t.shape() != want) {
          return make_error(Errc::kInvalidArgument,
                            "data input '{}' has shape {}, the program expects {}",
                            program->inputs[static_cast<size_t>(ins.input)], t.shape().to_string(),
                            want.to_string());
        }
        kernels::TensorView out = writable(ins.out[0]);
        kernels::copy_box(ctx, t.view(), ins.src_offset, out,
                          std::vector<int64_t>(ins.src_offset.size(), 0), out.shape.dims());
        return Status::ok();
      }
      case Opcode::kAccumulate: {
        MP_ASSIGN_OR_RETURN(kernels::TensorView src, readable(ins.in[0]));
        kernels::TensorView dst = writable(ins.out[0]);
        if (ins.first) {
          std::memcpy(dst.data, src.data, static_cast<size_t>(src.bytes()));
        } else {
          const float* s = src.f32();
          float* d = dst.f32();
          const int64_t n = src.numel();  // (hoisted: Shape::numel walks the dims)
          for (int64_t k = 0; k < n; ++k) d[k] += s[k];
        }
        return Status::ok();
      }
      case Opcode::kScale: {
        MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[0]));
        float* p = v.f32();
        const int64_t n = v.numel();
        for (int64_t k = 0; k < n; ++k) p[k] *= ins.factor;
        return Status::ok();
      }
      case Opcode::kReportLoss: {
        MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[0]));
        result.losses.emplace_back(ins.micro_batch, static_cast<double>(v.f32()[0]));
        return Status::ok();
      }
      case Opcode::kFree:
        return release(ins.in[0]);
    }
    return Status::ok();
  }
};

DeviceInterpreter::DeviceInterpreter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  program_ = impl_->dp;
}

DeviceInterpreter::~DeviceInterpreter() {
  for (Block& b : impl_->blocks) {
    if (b.data != nullptr) impl_->pool.release(b);
  }
  for (auto& [id, b] : impl_->mb_blocks) {
    if (b.data != nullptr) impl_->pool.release(b);
  }
}

namespace {

// Allocates the persistent tiles (zeroed).
void allocate_persistent(const DeviceProgram& dp, BufferPool& pool, std::vector<Block>& blocks) {
  blocks.resize(dp.buffers.size());
  for (size_t b = 0; b < dp.buffers.size(); ++b) {
    if (dp.buffers[b].kind == BufferKind::kPersistent) {
      blocks[b] = pool.allocate(std::max<int64_t>(dp.buffers[b].bytes(), 1));
      std::memset(blocks[b].data, 0, static_cast<size_t>(dp.buffers[b].bytes()));
    }
  }
}

}  // namespace

Expected<std::unique_ptr<DeviceInterpreter>> DeviceInterpreter::create(const Program& program,
                                                                       int32_t device,
                                                                       InterpreterOptions options) {
  const DeviceProgram* dp = program.device(device);
  if (dp == nullptr) {
    return make_error(Errc::kInvalidArgument, "device {} has no program", device);
  }
  auto impl = std::make_unique<Impl>();
  impl->program = &program;
  impl->dp = dp;
  impl->shared = static_cast<int32_t>(dp->buffers.size());
  impl->options = std::move(options);
  MP_RETURN_IF_ERROR(impl->options.loss_scale.validate());
  if (impl->options.loss_scale.enabled) {
    impl->scaling.emplace(impl->options.loss_scale, program, *dp, nullptr);
  }
  allocate_persistent(*dp, impl->pool, impl->blocks);
  return std::unique_ptr<DeviceInterpreter>(new DeviceInterpreter(std::move(impl)));
}

Expected<std::unique_ptr<DeviceInterpreter>> DeviceInterpreter::create(
    const CompactProgram& program, int32_t device, InterpreterOptions options) {
  const DeviceProgram* dp = program.base.device(device);
  if (dp == nullptr || static_cast<size_t>(device) >= program.code.size()) {
    return make_error(Errc::kInvalidArgument, "device {} has no program", device);
  }
  const CompactCode& code = program.code[static_cast<size_t>(device)];
  const int64_t ids = static_cast<int64_t>(dp->buffers.size()) +
                      program.base.micro_batches * static_cast<int64_t>(code.classes.size());
  if (ids > std::numeric_limits<int32_t>::max()) {
    return make_error(Errc::kOutOfRange,
                      "device {}: {} micro-batches of {} buffers each need more buffer ids than "
                      "the interpreter numbers",
                      device, program.base.micro_batches, code.classes.size());
  }
  MP_RETURN_IF_ERROR(check_compact_code(code, *dp, program.base.micro_batches));
  auto impl = std::make_unique<Impl>();
  impl->program = &program.base;
  impl->dp = dp;
  impl->code = &code;
  impl->shared = static_cast<int32_t>(dp->buffers.size());
  impl->classes = static_cast<int32_t>(code.classes.size());
  impl->options = std::move(options);
  MP_RETURN_IF_ERROR(impl->options.loss_scale.validate());
  if (impl->options.loss_scale.enabled) {
    impl->scaling.emplace(impl->options.loss_scale, program.base, *dp, &code);
  }
  allocate_persistent(*dp, impl->pool, impl->blocks);
  return std::unique_ptr<DeviceInterpreter>(new DeviceInterpreter(std::move(impl)));
}

kernels::TensorView DeviceInterpreter::persistent(size_t i) const {
  return impl_->view(program_->persistent[i].buffer);
}

const LossScaler* DeviceInterpreter::loss_scaler() const {
  return impl_->scaling ? &impl_->scaling->scaler() : nullptr;
}

Status DeviceInterpreter::restore_loss_scale(float scale, int64_t good_steps) {
  if (!impl_->scaling) {
    return make_error(Errc::kInvalidArgument, "device {}: loss scaling is off", program_->device);
  }
  return impl_->scaling->scaler().restore(scale, good_steps);
}

int64_t DeviceInterpreter::persistent_bytes() const {
  int64_t total = 0;
  for (const BufferDesc& b : program_->buffers) {
    if (b.kind == BufferKind::kPersistent) total += b.bytes();
  }
  return total;
}

Status DeviceInterpreter::Impl::step(const Instruction& ins, int64_t i,
                                     const std::vector<std::vector<HostTensor>>& inputs,
                                     DeviceStepResult& result) {
  if ((ins.code == Opcode::kSend || ins.code == Opcode::kRecv) && links->transport == nullptr) {
    return make_error(Errc::kInternal, "device {} instruction {}: no transport", dp->device, i);
  }
  if (scaling && !scaling->agreed() && ins.phase == Phase::kUpdate) {
    MP_RETURN_IF_ERROR(agree_on_overflow(result).with_context(
        fmt::format("device {} before instruction {} (loss-scale overflow check)", dp->device, i)));
  }
  const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
  charged = 0.0;
  const Status s =
      execute(ins, static_cast<int32_t>(std::min<int64_t>(i, INT32_MAX)), inputs, result);
  if (timed()) {  // what the instruction spent besides what it charged (kernels, waits, ...)
    const double left = std::chrono::duration<double>(now() - t0).count() - charged;
    activity_seconds[static_cast<size_t>(instruction_activity(ins))] += std::max(left, 0.0);
  }
  if (!s.is_ok()) {
    return s.with_context(fmt::format("device {} instruction {} ({} '{}')", dp->device, i,
                                      opcode_name(ins.code), ins.what));
  }
  // Outstanding sends move only while their endpoint is progressed (a large message waits for
  // its sender): drive them between instructions, not only when their buffer is freed.
  if (!pending_send.empty()) progress_sends();
  return Status::ok();
}

Status DeviceInterpreter::Impl::agree_on_overflow(DeviceStepResult& result) {
  std::vector<kernels::TensorView> held;
  for (int32_t b : scaling->gradient_buffers()) {
    const Block* blk = find_block(b);
    if (pending_recv.count(b) == 0 && (blk == nullptr || blk->data == nullptr)) continue;
    MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(b));
    held.push_back(v);
  }
  MP_RETURN_IF_ERROR(scaling->note(ctx, held));
  MP_RETURN_IF_ERROR(scaling->agree(links->transport, options.timeout));
  result.loss_scale = scaling->step_scale();
  result.skipped = scaling->skipping();
  result.next_loss_scale = scaling->scaler().scale();
  result.good_steps = scaling->scaler().good_steps();
  return Status::ok();
}

void DeviceInterpreter::Impl::instantiate(const Segment& seg) {
  scratch = code->templates[static_cast<size_t>(seg.code)];
  if (seg.micro_batch < 0) return;
  const int32_t base = shared + seg.micro_batch * classes;
  for (Instruction& ins : scratch) {
    bind_micro_batch(ins, seg.micro_batch, [&](int32_t c) { return base + c; });
  }
}

Expected<DeviceStepResult> DeviceInterpreter::run_step(
    const std::vector<std::vector<HostTensor>>& inputs, const DeviceLinks& links) {
  Impl& m = *impl_;
  m.links = &links;
  m.pool.reset_peak();
  DeviceStepResult result;
  m.timing = &result;
  m.activity_seconds.fill(0.0);
  if (m.scaling) m.scaling->begin_step();
  const auto t0 = std::chrono::steady_clock::now();
  if (m.code == nullptr) {
    const auto& code = program_->instructions;
    for (size_t i = 0; i < code.size(); ++i) {
      MP_RETURN_IF_ERROR(m.step(code[i], static_cast<int64_t>(i), inputs, result));
    }
  } else {
    int64_t i = 0;
    for (const Segment& seg : m.code->segments) {
      m.instantiate(seg);
      for (const Instruction& ins : m.scratch) MP_RETURN_IF_ERROR(m.step(ins, i++, inputs, result));
    }
  }
  if (m.scaling && !m.scaling->agreed()) {
    MP_RETURN_IF_ERROR(m.agree_on_overflow(result).with_context(fmt::format(
        "device {} at the end of the step (loss-scale overflow check)", program_->device)));
  }
  const auto sends = m.timed() ? m.now() : std::chrono::steady_clock::time_point{};
  for (auto& [b, reqs] : m.pending_send) {
    for (comm::Request& r : reqs) {
      const Status s = links.transport->wait(r, m.options.timeout);
      if (!s.is_ok()) {
        return s.with_context(fmt::format("device {}: send from '{}' at the end of the step",
                                          program_->device, m.buffer_name(b)));
      }
    }
  }
  if (m.timed()) m.charge(kWaitSends, sends);
  m.pending_send.clear();
  if (!m.pending_recv.empty()) {
    const std::string name = m.buffer_name(m.pending_recv.begin()->first);
    m.pending_recv.clear();
    return make_error(Errc::kInternal, "device {}: receive into '{}' was never read",
                      program_->device, name);
  }
  // Buffers a program leaves allocated (it frees every step buffer) are released here.
  for (size_t b = 0; b < program_->buffers.size(); ++b) {
    if (program_->buffers[b].kind == BufferKind::kStep && m.blocks[b].data != nullptr) {
      MP_RETURN_IF_ERROR(m.release(static_cast<int32_t>(b)));
    }
  }
  std::vector<int32_t> left;
  for (const auto& [b, blk] : m.mb_blocks) left.push_back(b);
  for (int32_t b : left) MP_RETURN_IF_ERROR(m.release(b));
  if (m.timed()) {
    for (int a = 0; a < kActivities; ++a) {
      const double t = m.activity_seconds[static_cast<size_t>(a)];
      if (t > 0) result.other_seconds[activity_name(a)] = t;
    }
  }
  m.timing = nullptr;
  result.peak_bytes = m.pool.stats().peak.value();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace meshpipe::runtime

// DeviceInterpreter: one device's program through the kernel table and comm/, on host memory
// or on one GPU's (the state and helpers in runtime/internal/interpreter_impl.h; collectives in
// interpreter_collectives.cc).
#include "runtime/interpreter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>

#include "kernels/backend.h"
#include "kernels/half.h"
#include "kernels/layout.h"
#include "runtime/internal/interpreter_impl.h"

namespace meshpipe::runtime {

namespace {

using internal::kActivities;
using internal::kCommunicatorOf;
using internal::kCopiesOf;
using internal::kOpcodes;
using internal::kWaitReceives;
using internal::kWaitSends;
using internal::kWaitSide;

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
  if (a == kWaitSide) return "wait for overlapped collectives";
  return a == kWaitReceives ? "wait for receives" : "wait for sends";
}

}  // namespace

Status DeviceInterpreter::Impl::run(const Instruction& ins) {
  const LocalOp& l = dp->ops[static_cast<size_t>(ins.op)];
  if (!options.fail_op.empty() && l.op.name == options.fail_op) {
    return make_error(Errc::kInternal, "injected kernel failure in op '{}'", l.op.name);
  }
  OpAttrs scaled;  // loss scaling and clipping: the seed's and the optimizers' attributes
  const OpAttrs* attrs = agreement ? agreement->attrs_for(ins, l, scaled) : &l.op.attrs;
  if (evaluating && ins.phase == Phase::kUpdate &&
      (is_optimizer_update(l.op.kind) || l.op.kind == OpKind::kScale)) {
    attrs = nullptr;  // validation: the state is kept
  }
  if (lr_scale != 1.0f && attrs != nullptr && ins.phase == Phase::kUpdate &&
      is_optimizer_update(l.op.kind)) {  // the learning-rate schedule's factor for this step
    if (attrs != &scaled) scaled = *attrs;
    scaled.lr *= lr_scale;
    attrs = &scaled;
  }
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
  for (int32_t b : ins.out) {
    MP_ASSIGN_OR_RETURN(kernels::TensorView v, writable(b));
    out.push_back(v);
  }
  if (attrs == nullptr) {  // a skipped update
    return internal::keep_state(
        l.op.name, in, out, [&](void* d, const void* s, int64_t n) { return mem->copy(d, s, n); });
  }
  const int64_t ws_bytes = workspace_bytes[static_cast<size_t>(ins.op)];
  Block ws;
  kernels::TensorView wsv;
  if (ws_bytes > 0) {
    MP_ASSIGN_OR_RETURN(ws, mem->allocate(ws_bytes));
    wsv = kernels::TensorView(ws.data, Shape{(ws_bytes + 3) / 4}, DType::kF32);
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
  if (ws.data != nullptr) mem->release(ws);
  if (!s.is_ok()) return s.with_context(fmt::format("op '{}'", l.op.name));
  if (l.output_scale != 1.0f) MP_RETURN_IF_ERROR(scale(out[0], l.output_scale));
  // Under loss scaling an Inf in the backward pass is what the overflow check skips the step
  // for, not an error: only the other phases are checked then.
  const bool scaled_backward = agreement && agreement->scaling() &&
                               (ins.phase == Phase::kBackward || ins.phase == Phase::kGradSync);
  if (options.check_finite && !scaled_backward) MP_RETURN_IF_ERROR(check_finite(l, out));
  return Status::ok();
}

Status DeviceInterpreter::Impl::run_table(OpKind kind, const OpAttrs& attrs,
                                          std::span<const kernels::TensorView> in,
                                          std::span<const kernels::TensorView> out) {
  kernels::KernelArgs args;
  args.ctx = &ctx;
  args.in = in;
  args.out = out;
  args.attrs = &attrs;
  return kernels::run_kernel(ctx.device, kind, args);
}

Status DeviceInterpreter::Impl::scale(const kernels::TensorView& v, float factor) {
  const int64_t n = v.numel();
  if (!mem->on_host()) {  // the table's scale kernel, in place (f32 math, rounded for halves)
    OpAttrs a;
    a.alpha = factor;
    return run_table(OpKind::kScale, a, std::span<const kernels::TensorView>(&v, 1),
                     std::span<const kernels::TensorView>(&v, 1));
  }
  if (v.dtype == DType::kF32) {
    float* p = v.f32();
    for (int64_t k = 0; k < n; ++k) p[k] *= factor;
  } else {  // a half tensor (mixed precision): scaled in f32, rounded again
    auto* h = static_cast<uint16_t*>(v.data);
    wide.out.resize(static_cast<size_t>(n));
    kernels::widen_from_half(h, wide.out.data(), n, v.dtype);
    for (int64_t k = 0; k < n; ++k) wide.out[static_cast<size_t>(k)] *= factor;
    kernels::round_to_half(wide.out.data(), h, n, v.dtype);
  }
  return Status::ok();
}

Status DeviceInterpreter::Impl::check_finite(const LocalOp& l,
                                             const std::vector<kernels::TensorView>& out) {
  for (size_t o = 0; o < out.size(); ++o) {
    const DType t = out[o].dtype;
    if (!is_floating(t)) continue;
    const int64_t n = out[o].numel();
    const void* data = out[o].data;
    std::vector<uint8_t> host;  // a GPU's output, copied back (slow: for debugging)
    if (!mem->on_host()) {
      host.resize(static_cast<size_t>(out[o].bytes()));
      MP_RETURN_IF_ERROR(mem->download(host.data(), data, out[o].bytes()));
      data = host.data();
    }
    for (int64_t k = 0; k < n; ++k) {
      const float x = kernels::element_as_float(data, t, k);
      if (!std::isfinite(x)) {
        return make_error(Errc::kNumerics,
                          "op '{}' ({}) wrote a non-finite value ({}) at element {} of output {}",
                          l.op.name, op_kind_name(l.op.kind), x, k, o);
      }
    }
  }
  return Status::ok();
}

Status DeviceInterpreter::Impl::send(const Instruction& ins) {
  MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[0]));
  // A gradient sent to the stage that updates its parameter: checked by its sender.
  if (agreement && ins.phase == Phase::kGradSync) {
    MP_RETURN_IF_ERROR(agreement->note(ctx, std::span<const kernels::TensorView>(&v, 1)));
  }
  const void* data = v.data;
  if (!mem->on_host()) {  // the transport moves host memory: staged once per buffer
    auto it = send_staging.find(ins.in[0]);
    if (it == send_staging.end()) {
      MP_ASSIGN_OR_RETURN(void* host, mem->host_buffer(v.bytes()));
      it = send_staging.emplace(ins.in[0], HostBlock{host, v.bytes()}).first;
      MP_RETURN_IF_ERROR(mem->download(host, v.data, v.bytes()));
    }
    data = it->second.data;
  }
  MP_ASSIGN_OR_RETURN(comm::Request r, links->transport->send(ins.peer, ins.tag, data, v.bytes()));
  pending_send[ins.in[0]].push_back(r);
  return Status::ok();
}

Status DeviceInterpreter::Impl::recv(const Instruction& ins) {
  MP_ASSIGN_OR_RETURN(kernels::TensorView v, writable(ins.out[0]));
  void* data = v.data;
  if (!mem->on_host()) {  // received into host staging, uploaded by its first reader
    auto it = recv_staging.find(ins.out[0]);
    if (it == recv_staging.end()) {
      MP_ASSIGN_OR_RETURN(void* host, mem->host_buffer(v.bytes()));
      it = recv_staging.emplace(ins.out[0], HostBlock{host, v.bytes()}).first;
    }
    data = it->second.data;
  }
  MP_ASSIGN_OR_RETURN(comm::Request r, links->transport->recv(ins.peer, ins.tag, data, v.bytes()));
  pending_recv[ins.out[0]] = r;
  return Status::ok();
}

Status DeviceInterpreter::Impl::load_input(const Instruction& ins,
                                           const std::vector<std::vector<HostTensor>>& inputs) {
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
    return make_error(
        Errc::kInvalidArgument, "data input '{}' has shape {}, the program expects {}",
        program->inputs[static_cast<size_t>(ins.input)], t.shape().to_string(), want.to_string());
  }
  MP_ASSIGN_OR_RETURN(kernels::TensorView out, writable(ins.out[0]));
  const kernels::KernelContext host;
  const std::vector<int64_t> origin(ins.src_offset.size(), 0);
  if (mem->on_host()) {
    kernels::copy_box(host, t.view(), ins.src_offset, out, origin, out.shape.dims());
    return Status::ok();
  }
  HostTensor tile(out.shape, out.dtype);  // the tile on the host, then one upload
  kernels::copy_box(host, t.view(), ins.src_offset, tile.view(), origin, out.shape.dims());
  return mem->upload(out.data, tile.data(), tile.bytes());
}

Status DeviceInterpreter::Impl::execute(const Instruction& ins,
                                        const std::vector<std::vector<HostTensor>>& inputs,
                                        DeviceStepResult& result) {
  switch (ins.code) {
    case Opcode::kRun:
      return run(ins);
    case Opcode::kCollective:
      return collective(ins);
    case Opcode::kSend:
      return send(ins);
    case Opcode::kRecv:
      return recv(ins);
    case Opcode::kCopyBox: {
      MP_ASSIGN_OR_RETURN(kernels::TensorView src, readable(ins.in[0]));
      MP_ASSIGN_OR_RETURN(kernels::TensorView dst, writable(ins.out[0]));
      kernels::copy_box(ctx, src, ins.src_offset, dst, ins.dst_offset, ins.extent);
      return Status::ok();
    }
    case Opcode::kLoadInput:
      return load_input(ins, inputs);
    case Opcode::kAccumulate: {
      MP_ASSIGN_OR_RETURN(kernels::TensorView src, readable(ins.in[0]));
      // Adding reads the destination too (a received buffer: its data must have arrived).
      MP_ASSIGN_OR_RETURN(kernels::TensorView dst,
                          ins.first ? writable(ins.out[0]) : readable(ins.out[0]));
      if (ins.first) return mem->copy(dst.data, src.data, src.bytes());
      if (!mem->on_host()) {  // dst += src with the table's add, in place
        const kernels::TensorView both[2] = {dst, src};
        return run_table(OpKind::kAdd, OpAttrs{}, both,
                         std::span<const kernels::TensorView>(&dst, 1));
      }
      const float* s = src.f32();
      float* d = dst.f32();
      const int64_t n = src.numel();  // (hoisted: Shape::numel walks the dims)
      for (int64_t k = 0; k < n; ++k) d[k] += s[k];
      return Status::ok();
    }
    case Opcode::kScale: {
      MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[0]));
      return scale(v, ins.factor);
    }
    case Opcode::kReportLoss: {
      MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(ins.in[0]));
      float loss = 0.0f;
      MP_RETURN_IF_ERROR(mem->download(&loss, v.data, sizeof(loss)));
      result.losses.emplace_back(ins.micro_batch, static_cast<double>(loss));
      return Status::ok();
    }
    case Opcode::kFree:
      return release(ins.in[0]);
  }
  return Status::ok();
}

DeviceInterpreter::DeviceInterpreter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  program_ = impl_->dp;
}

DeviceInterpreter::~DeviceInterpreter() {
  if (!impl_->mem) return;
  impl_->abandon_side();
  // A GPU's kernels still queued may use the blocks: wait before handing them back.
  static_cast<void>(impl_->mem->synchronize());
  for (Block& b : impl_->blocks) {
    if (b.data != nullptr) impl_->mem->release(b);
  }
  for (auto& [id, b] : impl_->mb_blocks) {
    if (b.data != nullptr) impl_->mem->release(b);
  }
}

Status DeviceInterpreter::Impl::prepare(InterpreterOptions opts) {
  options = std::move(opts);
  MP_RETURN_IF_ERROR(options.loss_scale.validate());
  if (!(options.clip_grad_norm >= 0.0f) || !std::isfinite(options.clip_grad_norm)) {
    return make_error(Errc::kInvalidArgument,
                      "the gradient clipping norm must be finite and non-negative, got {}",
                      options.clip_grad_norm);
  }
  switch (options.device) {
    case kernels::Device::kCpu:
      mem = internal::make_host_memory(options.staged_host_memory,
                                       options.staged_host_memory && options.overlap_collectives,
                                       options.staged_side_delay);
      break;
    case kernels::Device::kCuda: {
      auto gpu = internal::make_gpu_memory(options.gpu);
      if (!gpu.has_value()) {
        return gpu.status().with_context(
            fmt::format("device {} on GPU {}", dp->device, options.gpu));
      }
      mem = std::move(*gpu);
      break;
    }
  }
  ctx = mem->context();
  // The lowering sized each op's scratch for the plan's devices; what runs here may differ (a
  // GPU plan on CPU devices, or the other way round).
  for (const LocalOp& l : dp->ops) {
    workspace_bytes.push_back(
        kernels::kernel_workspace_bytes(ctx.device, l.op.kind, l.inputs, l.op.attrs));
  }
  if (internal::UpdateAgreement::needed(options.loss_scale, options.clip_grad_norm)) {
    agreement.emplace(options.loss_scale, options.clip_grad_norm, *program, *dp, code);
  }
  // The persistent tiles, zeroed.
  blocks.resize(dp->buffers.size());
  for (size_t b = 0; b < dp->buffers.size(); ++b) {
    if (dp->buffers[b].kind != BufferKind::kPersistent) continue;
    MP_ASSIGN_OR_RETURN(blocks[b], mem->allocate(std::max<int64_t>(dp->buffers[b].bytes(), 1)));
    MP_RETURN_IF_ERROR(mem->zero(blocks[b].data, dp->buffers[b].bytes()));
  }
  return mem->synchronize();
}

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
  MP_RETURN_IF_ERROR(impl->prepare(std::move(options)));
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
  MP_RETURN_IF_ERROR(impl->prepare(std::move(options)));
  return std::unique_ptr<DeviceInterpreter>(new DeviceInterpreter(std::move(impl)));
}

kernels::TensorView DeviceInterpreter::persistent(size_t i) const {
  const kernels::TensorView v = impl_->view(program_->persistent[i].buffer);
  if (impl_->mem->on_host()) return v;
  if (i >= impl_->mirrors.size()) return kernels::TensorView(nullptr, v.shape, v.dtype);  // no pull
  return kernels::TensorView(impl_->mirrors[i].data(), v.shape, v.dtype);
}

Status DeviceInterpreter::pull_persistent() const {
  Impl& m = *impl_;
  if (m.mem->on_host()) return Status::ok();
  m.mirrors.resize(program_->persistent.size());
  for (size_t i = 0; i < program_->persistent.size(); ++i) {
    const kernels::TensorView v = m.view(program_->persistent[i].buffer);
    m.mirrors[i].resize(static_cast<size_t>(v.bytes()));
    MP_RETURN_IF_ERROR(m.mem->download(m.mirrors[i].data(), v.data, v.bytes()));
  }
  return Status::ok();
}

Status DeviceInterpreter::push_persistent() {
  Impl& m = *impl_;
  if (m.mem->on_host()) return Status::ok();
  if (m.mirrors.size() != program_->persistent.size()) {
    return make_error(Errc::kInternal, "device {}: persistent tiles pushed before a pull",
                      program_->device);
  }
  for (size_t i = 0; i < program_->persistent.size(); ++i) {
    const kernels::TensorView v = m.view(program_->persistent[i].buffer);
    MP_RETURN_IF_ERROR(m.mem->upload(v.data, m.mirrors[i].data(), v.bytes()));
  }
  return Status::ok();
}

kernels::GpuDevice* DeviceInterpreter::gpu() { return impl_->mem->gpu(); }

bool DeviceInterpreter::overlaps_collectives() const {
  return impl_->options.overlap_collectives && impl_->mem->has_side_queue();
}

void* DeviceInterpreter::side_stream() { return impl_->mem->side_stream(); }

void DeviceInterpreter::abandon_side_work() { impl_->abandon_side(); }

const LossScaler* DeviceInterpreter::loss_scaler() const {
  return impl_->agreement && impl_->agreement->scaling() ? &impl_->agreement->scaler() : nullptr;
}

Status DeviceInterpreter::restore_loss_scale(float scale, int64_t good_steps) {
  if (!impl_->agreement || !impl_->agreement->scaling()) {
    return make_error(Errc::kInvalidArgument, "device {}: loss scaling is off", program_->device);
  }
  return impl_->agreement->scaler().restore(scale, good_steps);
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
  if (agreement && !evaluating && agreement->needed_before(ins, *dp)) {
    MP_RETURN_IF_ERROR(agree_before_update(result).with_context(
        fmt::format("device {} before instruction {} (the update's agreement: {})", dp->device, i,
                    agreement_subject())));
  }
  if (early_active && early.count(i) != 0) return Status::ok();  // launched already
  const auto t0 = timed() ? now() : std::chrono::steady_clock::time_point{};
  charged = 0.0;
  const Status s = execute(ins, inputs, result);
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
  // Grad-sync collectives whose buffers this instruction touched last: launched now.
  if (auto it = early_active ? launch_after.find(i) : launch_after.end();
      it != launch_after.end()) {
    for (int64_t p : it->second) {
      const Instruction& e = early.at(p);
      const Status ls = collective_on_side(e);
      if (!ls.is_ok()) {
        return ls.with_context(fmt::format("device {} instruction {} ({} '{}', launched early)",
                                           dp->device, p, opcode_name(e.code), e.what));
      }
      ++result.early_collectives;
    }
  }
  return Status::ok();
}

Status DeviceInterpreter::Impl::agree_before_update(DeviceStepResult& result) {
  // Buffers received (`wait`: including those still arriving) or computed here.
  const auto held = [&](const std::vector<int32_t>& buffers,
                        bool wait) -> Expected<std::vector<kernels::TensorView>> {
    std::vector<kernels::TensorView> views;
    for (int32_t b : buffers) {
      const Block* blk = find_block(b);
      const bool arriving = pending_recv.count(b) != 0;
      if (arriving ? !wait : (blk == nullptr || blk->data == nullptr)) continue;
      MP_ASSIGN_OR_RETURN(kernels::TensorView v, readable(b));
      views.push_back(v);
    }
    return views;
  };
  internal::UpdateAgreement& a = *agreement;
  // A gradient still arriving was checked by its sender (send()); other values arriving now
  // (a step count another stage updates) are sent after the sender's own agreement, so
  // waiting for them here would wait forever.
  MP_ASSIGN_OR_RETURN(std::vector<kernels::TensorView> grads, held(a.gradient_buffers(), false));
  MP_RETURN_IF_ERROR(a.note(ctx, grads));
  if (a.clipping()) {
    // Every gradient this device counts is read by an update still to come, computed here or
    // sent from the backward pass of another stage: it is held or arriving.
    MP_ASSIGN_OR_RETURN(std::vector<kernels::TensorView> counted, held(a.norm_buffers(), true));
    if (counted.size() != a.norm_buffers().size()) {
      return make_error(Errc::kInternal, "{} of {} gradients of the norm are not held",
                        a.norm_buffers().size() - counted.size(), a.norm_buffers().size());
    }
    MP_RETURN_IF_ERROR(a.add_squares(ctx, counted));
  }
  MP_RETURN_IF_ERROR(a.agree(links->transport, options.timeout));
  if (a.scaling()) {
    result.loss_scale = a.step_scale();
    result.skipped = a.skipping();
    result.next_loss_scale = a.scaler().scale();
    result.good_steps = a.scaler().good_steps();
  }
  result.grad_norm = a.grad_norm();
  return Status::ok();
}

std::string DeviceInterpreter::Impl::agreement_subject() const {
  if (agreement->scaling() && agreement->clipping()) return "loss-scale overflow and gradient norm";
  return agreement->scaling() ? "loss-scale overflow check" : "gradient norm";
}

void DeviceInterpreter::Impl::instantiate(const Segment& seg) {
  scratch = code->templates[static_cast<size_t>(seg.code)];
  if (seg.micro_batch < 0) return;
  const int32_t base = shared + seg.micro_batch * classes;
  for (Instruction& ins : scratch) {
    bind_micro_batch(ins, seg.micro_batch, [&](int32_t c) { return base + c; });
  }
}

void DeviceInterpreter::set_evaluating(bool on) { impl_->evaluating = on; }

void DeviceInterpreter::set_lr_scale(float scale) { impl_->lr_scale = scale; }

Expected<DeviceStepResult> DeviceInterpreter::run_step(
    const std::vector<std::vector<HostTensor>>& inputs, const DeviceLinks& links) {
  Impl& m = *impl_;
  m.links = &links;
  m.mem->reset_peak();
  DeviceStepResult result;
  m.timing = &result;
  m.activity_seconds.fill(0.0);
  if (m.agreement) m.agreement->begin_step();
  m.abandon_side();  // a failed step's
  m.result_now = &result;
  m.early_active = m.overlap();
  if (m.early_active && !m.early_planned) m.plan_early_launches();
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
  MP_RETURN_IF_ERROR(m.finish_side().with_context(
      fmt::format("device {} at the end of the step", program_->device)));
  if (m.early_active && result.early_collectives != static_cast<int64_t>(m.early.size())) {
    return make_error(Errc::kInternal, "device {}: {} of {} collectives planned to start early did",
                      program_->device, result.early_collectives, m.early.size());
  }
  m.result_now = nullptr;
  if (m.agreement && !m.evaluating && !m.agreement->agreed()) {
    MP_RETURN_IF_ERROR(m.agree_before_update(result).with_context(
        fmt::format("device {} at the end of the step (the update's agreement: {})",
                    program_->device, m.agreement_subject())));
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
  m.drop_staging();
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
  // On a GPU the step ends when its kernels have run: a fault of any of them surfaces here.
  MP_RETURN_IF_ERROR(m.mem->synchronize().with_context(
      fmt::format("device {} at the end of the step", program_->device)));
  m.timing = nullptr;
  result.peak_bytes = m.mem->peak_bytes();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace meshpipe::runtime

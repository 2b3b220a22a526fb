// LossScaling: a device's share of f16 loss scaling (runtime/internal/loss_scaling.h).
#include "runtime/internal/loss_scaling.h"

#include <fmt/format.h>

#include <cstring>
#include <set>

#include "kernels/backend.h"

namespace meshpipe::runtime::internal {

LossScaling::LossScaling(const LossScaleOptions& options, const Program& program,
                         const DeviceProgram& dp, const CompactCode* code)
    : scaler_(options), device_(dp.device) {
  for (size_t d = 0; d < program.devices.size(); ++d) {
    if (program.device(static_cast<int32_t>(d)) != nullptr) {
      participants_.push_back(static_cast<int32_t>(d));
    }
  }
  const auto shared = static_cast<int32_t>(dp.buffers.size());
  std::set<int32_t> reads;
  const auto scan = [&](const std::vector<Instruction>& list) {
    for (const Instruction& ins : list) {
      if (ins.phase != Phase::kUpdate || ins.code == Opcode::kFree) continue;
      for (int32_t b : ins.in) {
        if (b < 0 || b >= shared) continue;  // micro-batch classes are no step-wide values
        const BufferDesc& d = dp.buffers[static_cast<size_t>(b)];
        if (d.kind == BufferKind::kStep && is_floating(d.dtype)) reads.insert(b);
      }
    }
  };
  if (code == nullptr) {
    scan(dp.instructions);
  } else {
    for (const std::vector<Instruction>& t : code->templates) scan(t);
  }
  gradients_.assign(reads.begin(), reads.end());
}

void LossScaling::begin_step() {
  step_scale_ = scaler_.scale();
  local_finite_ = true;
  agreed_ = false;
  skipping_ = false;
}

Status LossScaling::note(const kernels::KernelContext& ctx,
                         std::span<const kernels::TensorView> views) {
  MP_ASSIGN_OR_RETURN(bool ok, kernels::all_finite(ctx, views));
  local_finite_ = local_finite_ && ok;
  return Status::ok();
}

Status LossScaling::agree(comm::Transport* t, std::chrono::milliseconds timeout) {
  agreed_ = true;
  bool all = local_finite_;
  if (participants_.size() > 1) {
    if (t == nullptr) {
      return make_error(Errc::kInternal, "no transport for the loss-scale overflow agreement");
    }
    const int root = participants_.front();
    verdict_out_ = local_finite_ ? 1 : 0;
    if (device_ != root) {
      verdicts_in_.assign(1, 0);
      MP_ASSIGN_OR_RETURN(comm::Request up, t->send(root, kOverflowUpTag, &verdict_out_, 1));
      MP_ASSIGN_OR_RETURN(comm::Request down,
                          t->recv(root, kOverflowDownTag, verdicts_in_.data(), 1));
      MP_RETURN_IF_ERROR(t->wait(up, timeout));
      MP_RETURN_IF_ERROR(t->wait(down, timeout));
      all = verdicts_in_[0] != 0;
    } else {
      verdicts_in_.assign(participants_.size(), 1);  // [0]: this device, already in `all`
      std::vector<comm::Request> reqs;
      for (size_t k = 1; k < participants_.size(); ++k) {
        MP_ASSIGN_OR_RETURN(comm::Request r,
                            t->recv(participants_[k], kOverflowUpTag, &verdicts_in_[k], 1));
        reqs.push_back(r);
      }
      for (comm::Request& r : reqs) MP_RETURN_IF_ERROR(t->wait(r, timeout));
      for (uint8_t v : verdicts_in_) all = all && v != 0;
      verdict_out_ = all ? 1 : 0;
      reqs.clear();
      for (size_t k = 1; k < participants_.size(); ++k) {
        MP_ASSIGN_OR_RETURN(comm::Request r,
                            t->send(participants_[k], kOverflowDownTag, &verdict_out_, 1));
        reqs.push_back(r);
      }
      for (comm::Request& r : reqs) MP_RETURN_IF_ERROR(t->wait(r, timeout));
    }
  }
  skipping_ = !all;
  return scaler_.update(all);
}

const OpAttrs* LossScaling::attrs_for(const Instruction& ins, const LocalOp& l,
                                      OpAttrs& scratch) const {
  const bool update = ins.phase == Phase::kUpdate;
  if (update && skipping_ && (is_optimizer_update(l.op.kind) || l.op.kind == OpKind::kScale)) {
    return nullptr;
  }
  if (l.loss_seed) {
    scratch = l.op.attrs;
    scratch.alpha *= step_scale_;
    return &scratch;
  }
  if (update && is_optimizer_update(l.op.kind)) {
    scratch = l.op.attrs;
    scratch.grad_scale = 1.0f / step_scale_;
    return &scratch;
  }
  return &l.op.attrs;
}

Status keep_state(const std::string& op, std::span<const kernels::TensorView> in,
                  std::span<const kernels::TensorView> out,
                  const std::function<Status(void*, const void*, int64_t)>& copy) {
  for (size_t o = 0; o < out.size(); ++o) {
    // Update kinds read (p, g, states...) and write (p', states'...); kScale reads x, writes x'.
    const size_t src = o == 0 ? 0 : o + 1;
    if (src >= in.size() || in[src].bytes() != out[o].bytes() || in[src].dtype != out[o].dtype) {
      return make_error(Errc::kInternal, "op '{}': output {} does not match the state it updates",
                        op, o);
    }
    if (in[src].data == out[o].data) continue;
    MP_RETURN_IF_ERROR(copy(out[o].data, in[src].data, in[src].bytes()));
  }
  return Status::ok();
}

}  // namespace meshpipe::runtime::internal

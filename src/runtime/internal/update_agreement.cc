// UpdateAgreement: a device's share of loss scaling's verdict and clipping's global norm
// (runtime/internal/update_agreement.h).
#include "runtime/internal/update_agreement.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <set>

#include "kernels/backend.h"

namespace meshpipe::runtime::internal {

float clip_factor(double norm, float max_norm) {
  if (max_norm <= 0.0f || !std::isfinite(norm)) return 1.0f;
  const double f = static_cast<double>(max_norm) / (norm + 1e-6);
  return f < 1.0 ? static_cast<float>(f) : 1.0f;
}

namespace {

// Whether device `dp` counts the gradient tile update op `l` reads: the spec of the op's output
// (the parameter's tile as updated) leaves some mesh axes unused; the devices along them hold
// the same tile, and only coordinate 0 counts it.
bool counts_tile(const LocalOp& l, const Program& program, const DeviceProgram& dp) {
  if (l.computed_specs.empty()) return true;
  const uint8_t used = l.computed_specs[0].used_axes();
  const mesh::LogicalMesh& m = program.stages.at(static_cast<size_t>(dp.stage)).mesh;
  for (int a = 0; a < 2; ++a) {
    if (m.size(a) > 1 && ((used >> a) & 1u) == 0 && dp.coord[a] != 0) return false;
  }
  return true;
}

bool changes_state(const Instruction& ins, const DeviceProgram& dp) {
  if (ins.phase != Phase::kUpdate || ins.code != Opcode::kRun || ins.op < 0 ||
      ins.op >= static_cast<int32_t>(dp.ops.size())) {
    return false;
  }
  const OpKind k = dp.ops[static_cast<size_t>(ins.op)].op.kind;
  return is_optimizer_update(k) || k == OpKind::kScale;
}

}  // namespace

UpdateAgreement::UpdateAgreement(const LossScaleOptions& scaling, float clip_norm,
                                 const Program& program, const DeviceProgram& dp,
                                 const CompactCode* code)
    : scaling_(scaling.enabled), clip_norm_(clip_norm), scaler_(scaling), device_(dp.device) {
  for (size_t d = 0; d < program.devices.size(); ++d) {
    if (program.device(static_cast<int32_t>(d)) != nullptr) {
      participants_.push_back(static_cast<int32_t>(d));
    }
  }
  const auto shared = static_cast<int32_t>(dp.buffers.size());
  std::set<int32_t> reads;
  std::set<int32_t> counted;
  const auto scan = [&](const std::vector<Instruction>& list) {
    for (const Instruction& ins : list) {
      if (ins.phase != Phase::kUpdate || ins.code == Opcode::kFree) continue;
      for (int32_t b : ins.in) {
        if (b < 0 || b >= shared) continue;  // micro-batch classes are no step-wide values
        const BufferDesc& d = dp.buffers[static_cast<size_t>(b)];
        if (d.kind == BufferKind::kStep && is_floating(d.dtype)) reads.insert(b);
      }
      if (clip_norm_ > 0.0f && ins.code == Opcode::kRun && ins.in.size() > 1 && ins.op >= 0 &&
          ins.op < static_cast<int32_t>(dp.ops.size())) {
        const LocalOp& l = dp.ops[static_cast<size_t>(ins.op)];
        const int32_t g = ins.in[1];
        if (is_optimizer_update(l.op.kind) && g >= 0 && g < shared && counts_tile(l, program, dp)) {
          counted.insert(g);
        }
      }
    }
  };
  if (code == nullptr) {
    scan(dp.instructions);
  } else {
    for (const std::vector<Instruction>& t : code->templates) scan(t);
  }
  gradients_.assign(reads.begin(), reads.end());
  norm_buffers_.assign(counted.begin(), counted.end());
}

bool UpdateAgreement::needed_before(const Instruction& ins, const DeviceProgram& dp) const {
  return !agreed_ && changes_state(ins, dp);
}

void UpdateAgreement::begin_step() {
  step_scale_ = scaling_ ? scaler_.scale() : 1.0f;
  local_finite_ = true;
  local_squares_ = 0.0;
  agreed_ = false;
  skipping_ = false;
  grad_norm_ = -1.0;
  clip_ = 1.0f;
}

Status UpdateAgreement::note(const kernels::KernelContext& ctx,
                             std::span<const kernels::TensorView> views) {
  if (!scaling_) return Status::ok();
  MP_ASSIGN_OR_RETURN(bool ok, kernels::all_finite(ctx, views));
  local_finite_ = local_finite_ && ok;
  return Status::ok();
}

Status UpdateAgreement::add_squares(const kernels::KernelContext& ctx,
                                    std::span<const kernels::TensorView> views) {
  MP_ASSIGN_OR_RETURN(double s, kernels::sum_of_squares(ctx, views));
  local_squares_ += s;
  return Status::ok();
}

Status UpdateAgreement::agree(comm::Transport* t, std::chrono::milliseconds timeout) {
  agreed_ = true;
  bool all = local_finite_;
  double squares = local_squares_;
  if (participants_.size() > 1) {
    if (t == nullptr) {
      return make_error(Errc::kInternal, "no transport for the step's update agreement");
    }
    const int root = participants_.front();
    constexpr int64_t kBytes = sizeof(out_);
    out_[0] = local_finite_ ? 1.0 : 0.0;
    out_[1] = local_squares_;
    if (device_ != root) {
      in_.assign(2, 0.0);
      MP_ASSIGN_OR_RETURN(comm::Request up, t->send(root, kOverflowUpTag, out_, kBytes));
      MP_ASSIGN_OR_RETURN(comm::Request down, t->recv(root, kOverflowDownTag, in_.data(), kBytes));
      MP_RETURN_IF_ERROR(t->wait(up, timeout));
      MP_RETURN_IF_ERROR(t->wait(down, timeout));
      all = in_[0] != 0.0;
      squares = in_[1];
    } else {
      in_.assign(2 * participants_.size(), 0.0);  // [0, 1]: this device, already counted
      std::vector<comm::Request> reqs;
      for (size_t k = 1; k < participants_.size(); ++k) {
        MP_ASSIGN_OR_RETURN(comm::Request r,
                            t->recv(participants_[k], kOverflowUpTag, &in_[2 * k], kBytes));
        reqs.push_back(r);
      }
      for (comm::Request& r : reqs) MP_RETURN_IF_ERROR(t->wait(r, timeout));
      for (size_t k = 1; k < participants_.size(); ++k) {  // in device order: deterministic
        all = all && in_[2 * k] != 0.0;
        squares += in_[2 * k + 1];
      }
      out_[0] = all ? 1.0 : 0.0;
      out_[1] = squares;
      reqs.clear();
      for (size_t k = 1; k < participants_.size(); ++k) {
        MP_ASSIGN_OR_RETURN(comm::Request r,
                            t->send(participants_[k], kOverflowDownTag, out_, kBytes));
        reqs.push_back(r);
      }
      for (comm::Request& r : reqs) MP_RETURN_IF_ERROR(t->wait(r, timeout));
    }
  }
  skipping_ = scaling_ && !all;
  if (clip_norm_ > 0.0f) {
    grad_norm_ = std::sqrt(squares) / static_cast<double>(step_scale_);
    clip_ = skipping_ ? 1.0f : clip_factor(grad_norm_, clip_norm_);
  }
  return scaling_ ? scaler_.update(all) : Status::ok();
}

const OpAttrs* UpdateAgreement::attrs_for(const Instruction& ins, const LocalOp& l,
                                          OpAttrs& scratch) const {
  const bool update = ins.phase == Phase::kUpdate;
  if (update && skipping_ && (is_optimizer_update(l.op.kind) || l.op.kind == OpKind::kScale)) {
    return nullptr;
  }
  if (l.loss_seed && scaling_) {
    scratch = l.op.attrs;
    scratch.alpha *= step_scale_;
    return &scratch;
  }
  if (update && is_optimizer_update(l.op.kind)) {
    scratch = l.op.attrs;
    scratch.grad_scale = clip_ / step_scale_;
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

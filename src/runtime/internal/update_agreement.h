// A device interpreter's share of what every device of a step must agree on before the update
// phase changes any state (private to runtime/): f16 loss scaling's overflow verdict (the policy
// in runtime/loss_scale.h) and the global gradient norm of clipping
// (InterpreterOptions::clip_grad_norm). It knows which buffers hold the gradients the update
// phase reads, folds this device's verdict and its share of the squared norm, agrees with every
// device of the program over the transport, and gives the attributes the seed and the
// optimizers run with.
//
// The norm counts each gradient element once however the plan shards it: every optimizer
// update reads its gradient in the spec of its output, and of the devices of a stage that hold
// the same tile (those differing only along mesh axes the spec does not use) only the one at
// coordinate 0 of those axes adds it. A parameter is updated in one stage (gradient pieces from
// other stages are added there first), so the stages' shares are disjoint.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "comm/transport.h"
#include "core/op_attrs.h"
#include "core/status.h"
#include "kernels/tensor_view.h"
#include "runtime/compact_program.h"
#include "runtime/local_op.h"
#include "runtime/loss_scale.h"
#include "runtime/program.h"

namespace meshpipe::runtime::internal {

/// The clipping factor of a global norm: min(1, max_norm / (norm + 1e-6)), as PyTorch's
/// clip_grad_norm_ computes it; 1 when max_norm is 0 (off) or the norm is not finite. (There
/// PyTorch multiplies by 0 or NaN; the gradients are not finite either way: with loss scaling
/// the step is skipped, without it training has diverged and --check-numerics names where.)
float clip_factor(double norm, float max_norm);

class UpdateAgreement {
 public:
  /// For device `dp` of `program` (`code`: its compact code, or null for the flat program), with
  /// loss scaling per `scaling` (when enabled) and clipping to `clip_norm` (0: off).
  UpdateAgreement(const LossScaleOptions& scaling, float clip_norm, const Program& program,
                  const DeviceProgram& dp, const CompactCode* code);
  /// Whether a device needs one: loss scaling or clipping on.
  static bool needed(const LossScaleOptions& scaling, float clip_norm) {
    return scaling.enabled || clip_norm > 0.0f;
  }

  bool scaling() const { return scaling_; }
  bool clipping() const { return clip_norm_ > 0.0f; }
  LossScaler& scaler() { return scaler_; }
  const LossScaler& scaler() const { return scaler_; }
  /// The floating step buffers the update phase reads (the gradients), ascending.
  const std::vector<int32_t>& gradient_buffers() const { return gradients_; }
  /// The gradients this device counts in the global norm (empty without clipping).
  const std::vector<int32_t>& norm_buffers() const { return norm_buffers_; }
  /// Whether the agreement must be reached before `ins` runs: the first kRun of an optimizer
  /// update or of an update-phase kScale (a step count), which change state.
  bool needed_before(const Instruction& ins, const DeviceProgram& dp) const;

  /// Starts a step with the scaler's current scale.
  void begin_step();
  /// The step's scale (1 without loss scaling), and whether its verdict is known and says skip.
  float step_scale() const { return step_scale_; }
  bool agreed() const { return agreed_; }
  bool skipping() const { return skipping_; }
  /// Clipping: the step's global norm of the (unscaled) gradients and the factor they are
  /// multiplied by; -1 and 1 without clipping.
  double grad_norm() const { return grad_norm_; }
  float clip() const { return clip_; }

  /// Folds whether the floating tensors of `views` are finite into this device's verdict.
  Status note(const kernels::KernelContext& ctx, std::span<const kernels::TensorView> views);
  /// Adds the squares of `views`' elements to this device's share of the squared norm.
  Status add_squares(const kernels::KernelContext& ctx, std::span<const kernels::TensorView> views);
  /// This device's verdict and share, agreed with the program's other devices over
  /// `transport` (the lowest device id gathers, sums the shares in device order and answers
  /// with the AND and the sum), then the scaler's next state and the clipping factor.
  Status agree(comm::Transport* transport, std::chrono::milliseconds timeout);

  /// The attributes kRun `ins` of op `l` runs with: the seed's alpha times the scale, an
  /// optimizer's grad_scale clip / scale; `scratch` holds a changed copy. Null: keep the state
  /// (a skipped step's update or step count, see keep_state).
  const OpAttrs* attrs_for(const Instruction& ins, const LocalOp& l, OpAttrs& scratch) const;

 private:
  bool scaling_ = false;
  float clip_norm_ = 0.0f;
  LossScaler scaler_;
  std::vector<int32_t> gradients_;
  std::vector<int32_t> norm_buffers_;
  std::vector<int32_t> participants_;  // the program's devices, ascending
  int32_t device_ = -1;
  float step_scale_ = 1.0f;
  bool local_finite_ = true;
  double local_squares_ = 0.0;
  bool agreed_ = false;
  bool skipping_ = false;
  double grad_norm_ = -1.0;
  float clip_ = 1.0f;
  double out_[2] = {0.0, 0.0};  // {finite, squares} sent up; the answer comes back in it
  std::vector<double> in_;      // the root's: two per participant
};

/// A skipped update: each output of an update op (p', m', v') or a step-count kScale (x') gets
/// the input it would update (p, m, v; x), so what the update phase copies and sends afterwards
/// is the old state. Outputs that share their input's memory are left alone.
/// `copy` moves bytes within the memory the views are in (host or a GPU's). Used by the
/// interpreter and the single-device executor alike; errors name `op`.
Status keep_state(const std::string& op, std::span<const kernels::TensorView> in,
                  std::span<const kernels::TensorView> out,
                  const std::function<Status(void*, const void*, int64_t)>& copy);

}  // namespace meshpipe::runtime::internal

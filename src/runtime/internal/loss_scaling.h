// A device interpreter's share of f16 loss scaling (private to runtime/; the policy is in
// runtime/loss_scale.h, the protocol in InterpreterOptions::loss_scale): which buffers hold the
// gradients the update phase reads, the step's verdict on them, its agreement with every
// device of the program over the transport, and the attributes the seed and the optimizers
// run with.
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

class LossScaling {
 public:
  /// For device `dp` of `program` (`code`: its compact code, or null for the flat program).
  LossScaling(const LossScaleOptions& options, const Program& program, const DeviceProgram& dp,
              const CompactCode* code);

  LossScaler& scaler() { return scaler_; }
  const LossScaler& scaler() const { return scaler_; }
  /// The floating step buffers the update phase reads (the gradients), ascending.
  const std::vector<int32_t>& gradient_buffers() const { return gradients_; }

  /// Starts a step with the scaler's current scale.
  void begin_step();
  /// The step's scale, and whether its verdict is known and says skip.
  float step_scale() const { return step_scale_; }
  bool agreed() const { return agreed_; }
  bool skipping() const { return skipping_; }

  /// Folds whether the floating tensors of `views` are finite into this device's verdict.
  Status note(const kernels::KernelContext& ctx, std::span<const kernels::TensorView> views);
  /// This device's verdict, agreed with the program's other devices over `transport` (the
  /// lowest device id gathers and answers with the AND), then the scaler's next state.
  Status agree(comm::Transport* transport, std::chrono::milliseconds timeout);

  /// The attributes kRun `ins` of op `l` runs with: the seed's alpha times the scale, an
  /// optimizer's grad_scale 1 / scale; `scratch` holds a changed copy. Null: keep the state
  /// (a skipped step's update or step count, see keep_state).
  const OpAttrs* attrs_for(const Instruction& ins, const LocalOp& l, OpAttrs& scratch) const;

 private:
  LossScaler scaler_;
  std::vector<int32_t> gradients_;
  std::vector<int32_t> participants_;  // the program's devices, ascending
  int32_t device_ = -1;
  float step_scale_ = 1.0f;
  bool local_finite_ = true;
  bool agreed_ = false;
  bool skipping_ = false;
  uint8_t verdict_out_ = 0;
  std::vector<uint8_t> verdicts_in_;
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

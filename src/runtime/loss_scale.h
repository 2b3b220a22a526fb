// Dynamic loss scaling for f16 training: f16 holds magnitudes from about 6e-8 to 65504, so
// small activation gradients underflow to zero unless the loss is multiplied by a large factor
// S before the backward pass, and the parameter gradients are divided by S before the update.
// S adapts: a step whose gradients hold an Inf or NaN (S was too large) is skipped and S is
// halved; after `interval` steps in a row without overflow S is doubled (Micikevicius et al.,
// "Mixed Precision Training", ICLR 2018; the defaults are PyTorch's GradScaler's). bf16 has f32's
// range and needs none of this.
//
// In the runtime the scale multiplies the loss gradient's seed (graph::is_loss_seed), and the
// optimizer kernels read g / S (OpAttrs::grad_scale). Every device keeps its own LossScaler; all
// devices of a step see the same overflow verdict (the interpreter agrees on it before the
// update phase), so their scalers stay equal without any other exchange.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace meshpipe::runtime {

/// How the loss is scaled.
struct LossScaleOptions {
  bool enabled = false;
  float initial = 65536.0f;  ///< S at the first step (2^16)
  float growth = 2.0f;       ///< S *= growth after `interval` finite steps in a row
  float backoff = 0.5f;      ///< S *= backoff after a step with an overflow (skipped)
  int64_t interval = 2000;   ///< finite steps in a row before S grows
  /// A step that would take S below this fails instead (kNumerics): the gradients are not
  /// finite at any scale, so the loss or the parameters themselves are.
  float minimum = 1.0f / 16777216.0f;  // 2^-24

  /// Checks that initial, growth, backoff, interval and minimum make sense.
  Status validate() const;
  /// "dynamic (initial 65536, x2 every 2000 steps, x0.5 on overflow)" or "off".
  std::string to_string() const;
};

/// The state of the scale across steps.
class LossScaler {
 public:
  explicit LossScaler(LossScaleOptions options);

  /// The scale of the next step.
  float scale() const { return scale_; }
  /// Finite steps since the scale last changed.
  int64_t good_steps() const { return good_; }
  /// After a step: `finite` false means it was skipped. Fails (kNumerics) when the scale would
  /// fall below the minimum.
  Status update(bool finite);
  /// Restores a saved state (checkpoints): a positive finite scale and fewer good steps than
  /// the growth interval.
  Status restore(float scale, int64_t good_steps);

 private:
  LossScaleOptions options_;
  float scale_ = 1.0f;
  int64_t good_ = 0;
};

}  // namespace meshpipe::runtime

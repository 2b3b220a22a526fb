// LossScaler: the scale's state machine (runtime/loss_scale.h).
#include "runtime/loss_scale.h"

#include <fmt/format.h>

#include <cmath>

namespace meshpipe::runtime {

Status LossScaleOptions::validate() const {
  if (!enabled) return Status::ok();
  if (!std::isfinite(initial) || initial <= 0.0f) {
    return make_error(Errc::kInvalidArgument,
                      "the initial loss scale must be positive and finite, "
                      "got {}",
                      initial);
  }
  if (!std::isfinite(growth) || growth < 1.0f) {
    return make_error(Errc::kInvalidArgument, "the loss scale growth factor must be >= 1, got {}",
                      growth);
  }
  if (!(backoff > 0.0f && backoff < 1.0f)) {
    return make_error(Errc::kInvalidArgument,
                      "the loss scale backoff factor must be in (0, 1), got {}", backoff);
  }
  if (interval < 1) {
    return make_error(Errc::kInvalidArgument,
                      "the loss scale growth interval must be at least 1 step, got {}", interval);
  }
  if (!(minimum > 0.0f) || minimum > initial) {
    return make_error(Errc::kInvalidArgument,
                      "the minimum loss scale must be positive and at most the initial {}, got {}",
                      initial, minimum);
  }
  return Status::ok();
}

std::string LossScaleOptions::to_string() const {
  if (!enabled) return "off";
  return fmt::format("dynamic (initial {:g}, x{:g} every {} steps, x{:g} on overflow)", initial,
                     growth, interval, backoff);
}

LossScaler::LossScaler(LossScaleOptions options)
    : options_(options), scale_(options.enabled ? options.initial : 1.0f) {}

Status LossScaler::update(bool finite) {
  if (!options_.enabled) return Status::ok();
  if (finite) {
    if (++good_ >= options_.interval) {
      const float grown = scale_ * options_.growth;
      if (std::isfinite(grown)) scale_ = grown;
      good_ = 0;
    }
    return Status::ok();
  }
  good_ = 0;
  const float lowered = scale_ * options_.backoff;
  if (lowered < options_.minimum) {
    return make_error(Errc::kNumerics,
                      "the gradients overflowed at loss scale {:g} and the scale may not go below "
                      "{:g}: they are not finite at any scale (is the loss or a parameter NaN or "
                      "Inf?)",
                      scale_, options_.minimum);
  }
  scale_ = lowered;
  return Status::ok();
}

Status LossScaler::restore(float scale, int64_t good_steps) {
  if (!std::isfinite(scale) || scale <= 0.0f || good_steps < 0 || good_steps >= options_.interval) {
    return make_error(Errc::kInvalidArgument,
                      "loss scale state {} after {} good steps is invalid (the scale grows after "
                      "{} good steps)",
                      scale, good_steps, options_.interval);
  }
  scale_ = scale;
  good_ = good_steps;
  return Status::ok();
}

}  // namespace meshpipe::runtime

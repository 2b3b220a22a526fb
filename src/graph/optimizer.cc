// Optimizer configuration checks.
#include "graph/optimizer.h"

#include <fmt/format.h>

#include <cmath>

namespace meshpipe::graph {

Status OptimizerConfig::validate() const {
  // Written so that NaN fails every test (a comparison with NaN is false).
  if (!(lr > 0.0f) || !std::isfinite(lr)) {
    return make_error(Errc::kInvalidArgument, "learning rate must be finite and > 0, got {}", lr);
  }
  if (!(momentum >= 0.0f && momentum < 1.0f)) {
    return make_error(Errc::kInvalidArgument, "momentum must be in [0, 1), got {}", momentum);
  }
  if (!(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f)) {
    return make_error(Errc::kInvalidArgument, "Adam betas must be in [0, 1), got {} and {}", beta1,
                      beta2);
  }
  if (!(eps > 0.0f) || !std::isfinite(eps)) {
    return make_error(Errc::kInvalidArgument, "Adam eps must be finite and > 0, got {}", eps);
  }
  if (!(weight_decay >= 0.0f) || !std::isfinite(weight_decay)) {
    return make_error(Errc::kInvalidArgument, "weight decay must be finite and >= 0, got {}",
                      weight_decay);
  }
  return Status::ok();
}

std::string OptimizerConfig::to_string() const {
  if (kind == Kind::kSgd) {
    return momentum > 0 ? fmt::format("sgd(lr={}, momentum={})", lr, momentum)
                        : fmt::format("sgd(lr={})", lr);
  }
  return fmt::format("adam(lr={}, betas=({}, {}), eps={}, weight_decay={})", lr, beta1, beta2, eps,
                     weight_decay);
}

Expected<OptimizerConfig::Kind> parse_optimizer_kind(const std::string& name) {
  if (name == "sgd") return OptimizerConfig::Kind::kSgd;
  if (name == "adam") return OptimizerConfig::Kind::kAdam;
  return make_error(Errc::kInvalidArgument, "unknown optimizer '{}' (expected sgd or adam)", name);
}

}  // namespace meshpipe::graph

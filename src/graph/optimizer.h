// Optimizer configuration and the update ops it appends to a training graph.
#pragma once

#include <string>

#include "graph/graph.h"

namespace meshpipe::graph {

/// Which optimizer and its hyper-parameters.
struct OptimizerConfig {
  enum class Kind : uint8_t { kSgd, kAdam };
  Kind kind = Kind::kAdam;
  float lr = 1e-3f;
  float momentum = 0.0f;      ///< SGD only; > 0 adds a momentum buffer per parameter
  float beta1 = 0.9f;         ///< Adam
  float beta2 = 0.999f;       ///< Adam
  float eps = 1e-8f;          ///< Adam
  float weight_decay = 0.0f;  ///< L2 for SGD, decoupled (AdamW) for Adam

  /// Checks ranges (lr > 0, betas in [0, 1), ...).
  Status validate() const;
  /// "adam(lr=0.001)".
  std::string to_string() const;
};

/// Parses "sgd" or "adam".
Expected<OptimizerConfig::Kind> parse_optimizer_kind(const std::string& name);

}  // namespace meshpipe::graph

// MLP: a stack of dense ReLU layers with a softmax classifier, the smallest zoo model.
#pragma once

#include <cstdint>

#include "graph/builder.h"

namespace meshpipe::graph::models {

/// Sizes of an MLP classifier.
struct MlpConfig {
  int64_t input_dim = 64;
  int64_t hidden = 256;
  int64_t layers = 4;  ///< hidden layers (each dense + ReLU)
  int64_t num_classes = 16;

  Status validate() const;
};

/// Inputs "features" [batch, input_dim] f32 and "labels" [batch] i32; each hidden layer is a
/// layer, the classifier joins the last.
Expected<ForwardGraph> build_mlp(const MlpConfig& c, int64_t batch, DType dtype);

/// Closed-form parameter count.
int64_t mlp_parameter_count(const MlpConfig& c);

}  // namespace meshpipe::graph::models

// Attributes of an op: the parameters its kind reads (dimension numbers, axes, windows,
// constants, optimizer hyper-parameters). Shared by the graph IR and the kernel backend table.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/op_geometry.h"
#include "core/shape.h"

namespace meshpipe {

/// Attributes of an op. Each kind reads the fields its comment in core/op_kind.h names; the rest
/// keep their defaults (so two equal ops compare equal).
struct OpAttrs {
  DotDims dot;                ///< kDot
  std::vector<int64_t> axes;  ///< reduce axes, transpose permutation, bias/broadcast dims
  Shape shape;                ///< reshape/broadcast/pad/constant target, gradient shapes
  int64_t axis = 0;           ///< softmax, log-softmax, slice, concat, pad
  int64_t start = 0;          ///< slice, pad
  int64_t end = 0;            ///< slice
  Window2d window;            ///< conv and pooling
  bool causal = false;        ///< softmax
  int64_t k = 0;              ///< top-k gating
  int64_t capacity = 0;       ///< top-k gating
  float alpha = 1.0f;         ///< scale multiplier; constant fill value
  float beta = 0.0f;          ///< scale offset
  float eps = 1e-5f;          ///< normalisation epsilon, Adam epsilon
  float lr = 0.0f;            ///< optimizer learning rate
  float momentum = 0.0f;      ///< SGD momentum
  float beta1 = 0.9f;         ///< Adam
  float beta2 = 0.999f;       ///< Adam
  float weight_decay = 0.0f;  ///< optimizers
  /// Optimizers: multiplies the gradient before use (the runtime sets 1 / loss scale when it
  /// trains f16 with loss scaling; 1 otherwise, which is exact).
  float grad_scale = 1.0f;
  double count = 0.0;         ///< synchronised batch-norm pieces: the global N * H * W
  DType dtype = DType::kF32;  ///< convert: the output's storage type

  friend bool operator==(const OpAttrs&, const OpAttrs&) = default;
};

}  // namespace meshpipe

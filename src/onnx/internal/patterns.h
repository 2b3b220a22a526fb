// Rewrites of the ONNX node list before import: PyTorch exports some modules as chains of
// primitive nodes that meshpipe's graph has one op for. Each matched chain becomes one node of
// domain "meshpipe" at the position of its last node:
//   - LayerNorm decomposed (opset < 17): ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div,
//     Mul gamma, Add beta -> LayerNormalization(x, gamma, beta), attribute epsilon;
//   - GELU as erf: Div sqrt(2) (or Mul 1/sqrt(2)), Erf, Add 1, Mul x, Mul 0.5 -> Gelu
//     (approximate "none");
//   - GELU as tanh: x*x*x*0.044715 + x, Mul sqrt(2/pi), Tanh, Add 1, Mul x, Mul 0.5 -> Gelu
//     (approximate "tanh").
// A chain matches only when none of its intermediate values is read outside it.
#pragma once

#include <vector>

#include "onnx/model.h"

namespace meshpipe::onnx::internal {

/// Counts of the rewrites made.
struct PatternStats {
  int layer_norms = 0;
  int gelu_erf = 0;
  int gelu_tanh = 0;
};

/// The graph's nodes with the chains above replaced.
std::vector<Node> rewrite_patterns(const GraphProto& g, PatternStats* stats);

}  // namespace meshpipe::onnx::internal

// Reverse-mode automatic differentiation: appends backward ops to the same graph.
#pragma once

#include <map>
#include <set>
#include <vector>

#include "graph/graph.h"

namespace meshpipe::graph {

/// Appends the ops computing d loss / d v for every parameter v (values with role kParameter
/// that the loss depends on). Backward ops have phase kBackward, inherit the layer of the forward
/// op they differentiate, and are named "<forward name>/grad...". Returns parameter -> gradient;
/// parameters the loss does not depend on get no entry.
///
/// The loss gradient is seeded with a constant 1. A value read by several ops gets the sum of
/// the contributions (add ops, in reverse op order).
Expected<std::map<ValueId, ValueId>> append_backward(Graph& g, ValueId loss);

/// Whether `op` is the seed append_backward adds (a backward kConstant named
/// "<loss>/grad_seed"): the op the runtime scales by the loss scale when it trains f16.
bool is_loss_seed(const Op& op);

/// The ops that sum a parameter's gradient from two pieces (a weight read twice, as GPT's
/// embedding is by its LM head): adds of the backward phase whose output is the gradient an
/// optimizer update reads (its input 1) and is read by that op only, whose two distinct inputs
/// are made by backward ops and read by the add only. With several micro-batches the runtime
/// accumulates such pieces apart, synchronises each once per step and adds them after the
/// synchronisation (runtime/lower.cc); the planner counts the pieces as gradients.
std::set<OpId> gradient_piece_sums(const Graph& g);

}  // namespace meshpipe::graph

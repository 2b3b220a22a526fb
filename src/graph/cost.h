// FLOP and byte counts per op, and parameter counts per graph: the inputs of the cost model.
#pragma once

#include <cstdint>

#include "core/units.h"
#include "graph/graph.h"

namespace meshpipe::graph {

/// Floating-point operations of one op. Dots and convolutions count 2 per multiply-add (their
/// gradients too); elementwise and normalisation ops count a small documented constant per
/// element (see cost.cc); pure data movement counts 0.
Flops op_flops(const Graph& g, const Op& op);

/// Bytes the op reads plus bytes it writes (the memory traffic of a roofline estimate).
Bytes op_bytes(const Graph& g, const Op& op);

/// Totals over a graph, split by phase.
struct GraphCost {
  Flops forward;
  Flops backward;
  Flops update;
  Bytes parameter_bytes;
  Bytes optimizer_state_bytes;
  int64_t parameter_count = 0;

  Flops total() const { return forward + backward + update; }
};

/// Sums op_flops by phase and the sizes of parameters and optimizer states.
GraphCost graph_cost(const Graph& g);

/// Number of trained scalars (elements of values with role kParameter).
int64_t parameter_count(const Graph& g);

}  // namespace meshpipe::graph

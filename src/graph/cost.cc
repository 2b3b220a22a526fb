// Per-op FLOP and byte counts: op_flops dispatches to the kind's rule in its family (ops/*.cc,
// which documents its weights: 2 per multiply-add for dots and convolutions, a small constant
// per element for elementwise and normalisation ops, 0 for data movement); bytes are common.
#include "graph/cost.h"

#include "graph/internal/op_def.h"

namespace meshpipe::graph {
namespace internal {

double numel(const Graph& g, ValueId v) { return static_cast<double>(g.value(v).shape.numel()); }

double output_elements(const Graph& g, const Op& op) {
  return op.outputs.empty() ? 0.0 : numel(g, op.outputs[0]);
}

double input_elements(const Graph& g, const Op& op) {
  return op.inputs.empty() ? 0.0 : numel(g, op.inputs[0]);
}

Flops no_flops(const Graph&, const Op&) { return Flops(0.0); }

}  // namespace internal

Flops op_flops(const Graph& g, const Op& op) {
  const internal::OpDef& def = internal::op_def(op.kind);
  return def.flops != nullptr ? def.flops(g, op) : Flops(0.0);
}

Bytes op_bytes(const Graph& g, const Op& op) {
  const internal::OpDef& def = internal::op_def(op.kind);
  if (def.bytes != nullptr) return def.bytes(g, op);
  int64_t b = 0;
  for (ValueId v : op.inputs) b += g.value(v).bytes();
  for (ValueId v : op.outputs) b += g.value(v).bytes();
  return Bytes(b);
}

GraphCost graph_cost(const Graph& g) {
  GraphCost c;
  for (const Op& op : g.ops()) {
    const Flops f = op_flops(g, op);
    switch (op.phase) {
      case OpPhase::kForward:
        c.forward += f;
        break;
      case OpPhase::kBackward:
        c.backward += f;
        break;
      case OpPhase::kUpdate:
        c.update += f;
        break;
    }
  }
  for (const Value& v : g.values()) {
    if (v.role == ValueRole::kParameter) {
      c.parameter_bytes += Bytes(v.bytes());
      c.parameter_count += v.shape.numel();
    } else if (v.role == ValueRole::kOptimizerState) {
      c.optimizer_state_bytes += Bytes(v.bytes());
    }
  }
  return c;
}

int64_t parameter_count(const Graph& g) {
  int64_t n = 0;
  for (const Value& v : g.values()) {
    if (v.role == ValueRole::kParameter) n += v.shape.numel();
  }
  return n;
}

}  // namespace meshpipe::graph

// with_master_weights: rebuilds a half-precision forward graph with f32 master weights and
// f32 data inputs, converted to the half type per layer where they are read.
#include "graph/mixed_precision.h"

#include <fmt/format.h>

#include <map>
#include <utility>
#include <vector>

namespace meshpipe::graph {

namespace {

bool is_half(DType t) { return t == DType::kF16 || t == DType::kBF16; }

}  // namespace

Expected<ForwardGraph> with_master_weights(const ForwardGraph& forward) {
  const Graph& in = forward.graph;
  bool any = false;
  for (const Value& v : in.values()) {
    any = any ||
          ((v.role == ValueRole::kParameter || v.role == ValueRole::kInput) && is_half(v.dtype));
  }
  if (!any) return forward;

  ForwardGraph out;
  Graph& g = out.graph;
  std::vector<ValueId> remap(static_cast<size_t>(in.num_values()));
  // Half sources: their f32 master (or input) and its conversion per layer.
  std::map<size_t, DType> half_type;                        // old index -> half type
  std::map<std::pair<size_t, int32_t>, ValueId> converted;  // (old index, layer) -> value
  for (size_t i = 0; i < remap.size(); ++i) {
    const ValueId id(static_cast<int32_t>(i));
    const Value& v = in.value(id);
    if (v.producer.is_valid()) continue;
    const bool half =
        is_half(v.dtype) && (v.role == ValueRole::kParameter || v.role == ValueRole::kInput);
    remap[i] = g.add_source(v.name, v.shape, half ? DType::kF32 : v.dtype, v.role, v.init);
    if (half) half_type.emplace(i, v.dtype);
  }
  for (const Op& op : in.ops()) {
    std::vector<ValueId> inputs;
    inputs.reserve(op.inputs.size());
    for (ValueId x : op.inputs) {
      auto h = half_type.find(x.index());
      if (h == half_type.end()) {
        inputs.push_back(remap[x.index()]);
        continue;
      }
      auto key = std::make_pair(x.index(), op.layer);
      auto c = converted.find(key);
      if (c == converted.end()) {
        OpAttrs a;
        a.dtype = h->second;
        const std::string name =
            fmt::format("{}/to_{}@{}", in.value(x).name, dtype_name(h->second), op.layer);
        MP_ASSIGN_OR_RETURN(OpId cid, g.add_op(OpKind::kConvert, name, {remap[x.index()]}, a,
                                               op.layer, OpPhase::kForward));
        c = converted.emplace(key, g.op(cid).outputs[0]).first;
      }
      inputs.push_back(c->second);
    }
    MP_ASSIGN_OR_RETURN(
        OpId nid, g.add_op(op.kind, op.name, std::move(inputs), op.attrs, op.layer, op.phase));
    const Op& made = g.op(nid);
    for (size_t k = 0; k < op.outputs.size(); ++k) {
      remap[op.outputs[k].index()] = made.outputs[k];
    }
  }
  out.loss = remap[forward.loss.index()];
  for (ValueId x : forward.inputs) out.inputs.push_back(remap[x.index()]);
  for (ValueId x : in.outputs()) g.add_output(remap[x.index()]);
  MP_RETURN_IF_ERROR(g.validate());
  return out;
}

}  // namespace meshpipe::graph

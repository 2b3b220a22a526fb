// scan_memory: the planner's count of what one micro-batch of a stage holds, as the lowering
// allocates it (planner/internal/memory_scan.h).
#include "planner/internal/memory_scan.h"

#include <algorithm>
#include <optional>
#include <tuple>

namespace meshpipe::planner::internal {

using graph::Op;
using mesh::ShardingSpec;

MemoryScan scan_memory(const MemoryScanInput& in, const ShardingPlan& plan,
                       const std::map<OpId, const Strategy*>& chosen) {
  const auto is_persistent = [&](ValueId v) {
    const auto role = in.g.value(v).role;
    return role == graph::ValueRole::kParameter || role == graph::ValueRole::kOptimizerState;
  };
  const auto index_of = [&](OpId op) -> int64_t {
    auto it = std::lower_bound(in.ops.begin(), in.ops.end(), op);
    return it != in.ops.end() && *it == op ? it - in.ops.begin() : -1;
  };
  using Key = std::tuple<ValueId, ShardingSpec, int>;  // value, spec, phase scope of a copy
  auto bytes_in = [&](ValueId v, const ShardingSpec& spec) {
    const graph::Value& val = in.g.value(v);
    return mesh::tile_bytes(val.shape, dtype_size(val.dtype), spec, in.mesh);
  };
  const auto produced_outside = [&](ValueId v) {
    const graph::Value& val = in.g.value(v);
    return !val.producer.is_valid() || index_of(val.producer) < 0;
  };
  std::map<Key, int64_t> last_use;
  std::map<Key, int64_t> size;
  const auto key_of = [&](ValueId v, const ShardingSpec& want, graph::OpPhase phase) {
    const ShardingSpec& have = plan.specs.at(v);
    if (is_persistent(v)) {
      // Stored tiles are persistent; a copy in another spec lives for one phase.
      return want == have ? std::optional<Key>() : Key{v, want, static_cast<int>(phase) + 1};
    }
    return std::optional<Key>(Key{v, want, 0});
  };
  MemoryScan out;
  // The gradient synchronisation resolves every accumulator into the spec its update reads
  // before the first update runs (one fused collective): those copies are live together from
  // the first update op on, each until its update.
  int64_t first_update = -1;
  std::vector<Key> synced;
  for (size_t t = 0; t < in.ops.size(); ++t) {
    const Op& op = in.g.op(in.ops[t]);
    const Strategy* s = chosen.at(in.ops[t]);
    if (op.phase == graph::OpPhase::kUpdate && first_update < 0) {
      first_update = static_cast<int64_t>(t);
    }
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const ValueId v = op.inputs[i];
      if (in.gradient_values.count(v) != 0) {  // read from its accumulator, or a synced copy
        const ShardingSpec& want = i < s->inputs.size() ? s->inputs[i] : plan.specs.at(v);
        // An all-reduce resolves the accumulator in place; a reduce-scatter or any other
        // step writes a new buffer.
        bool scattered = false;
        if (plan.specs.count(v) != 0 && !produced_outside(v)) {
          const OpId producer = in.g.value(v).producer;
          const Op& pop = in.g.op(producer);
          for (const shard::OutputResolution& r : chosen.at(producer)->resolutions) {
            if (r.kind == mesh::CollectiveKind::kReduceScatter && r.output < pop.outputs.size() &&
                pop.outputs[r.output] == v) {
              scattered = true;
            }
          }
        }
        if (op.phase == graph::OpPhase::kUpdate && plan.specs.count(v) != 0 &&
            (scattered || want != plan.specs.at(v)) && !produced_outside(v)) {
          const Key k{v, want, static_cast<int>(graph::OpPhase::kUpdate) + 1};
          if (last_use.count(k) == 0) synced.push_back(k);
          last_use[k] = static_cast<int64_t>(t);
          size[k] = bytes_in(v, want);
        }
        continue;
      }
      const ShardingSpec& want = i < s->inputs.size() ? s->inputs[i] : plan.specs.at(v);
      for (const auto& k : {key_of(v, want, op.phase), key_of(v, plan.specs.at(v), op.phase)}) {
        if (!k || (is_persistent(v) && std::get<2>(*k) == 0)) continue;
        last_use[*k] = static_cast<int64_t>(t);
        size[*k] = bytes_in(v, std::get<1>(*k));
      }
    }
  }
  // A gradient as its producer computes it: before any reduce-scatter splits it (how it is
  // accumulated).
  const auto produced_bytes = [&](ValueId v) {
    const graph::Value& val = in.g.value(v);
    int64_t b = bytes_in(v, plan.specs.at(v));
    const Op& producer = in.g.op(val.producer);
    for (size_t o = 0; o < producer.outputs.size(); ++o) {
      if (producer.outputs[o] != v) continue;
      for (const shard::OutputResolution& r : chosen.at(val.producer)->resolutions) {
        if (r.output == o && r.kind == mesh::CollectiveKind::kReduceScatter) {
          b *= in.mesh.size(r.axis);
        }
      }
    }
    return b;
  };
  for (ValueId v : in.gradient_values) {
    if (plan.specs.count(v) == 0 || produced_outside(v)) continue;
    out.gradients += produced_bytes(v);
  }
  for (const auto& [k, bytes] : size) {
    if (std::get<2>(k) == static_cast<int>(graph::OpPhase::kForward) + 1) {
      out.forward_copies += bytes;
    }
  }
  std::set<Key> live_keys;
  int64_t live = 0;
  const auto add = [&](const Key& k) {
    if (live_keys.insert(k).second) live += size.at(k);
  };
  for (const auto& [k, t] : last_use) {  // values from outside the stage arrive first
    if (std::get<2>(k) == 0 && produced_outside(std::get<0>(k)) &&
        std::get<1>(k) == plan.specs.at(std::get<0>(k))) {
      add(k);
    }
  }
  int64_t last_forward = -1;
  for (size_t t = 0; t < in.ops.size(); ++t) {
    if (in.g.op(in.ops[t]).phase == graph::OpPhase::kForward)
      last_forward = static_cast<int64_t>(t);
  }
  out.peak = live;
  // One micro-batch: its gradients are the accumulators, live from their production on.
  const bool transient_gradients = in.micro_batches > 1;
  int64_t produced_gradients = 0;
  for (size_t t = 0; t < in.ops.size(); ++t) {
    const Op& op = in.g.op(in.ops[t]);
    const Strategy* s = chosen.at(in.ops[t]);
    if (static_cast<int64_t>(t) == first_update) {
      for (const Key& k : synced) add(k);
    }
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const ValueId v = op.inputs[i];
      if (in.gradient_values.count(v) != 0) continue;
      const ShardingSpec& want = i < s->inputs.size() ? s->inputs[i] : plan.specs.at(v);
      if (auto k = key_of(v, want, op.phase)) add(*k);
    }
    // The kernel's scratch on its input tiles, while it runs.
    std::vector<Shape> tiles;
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const graph::Value& input = in.g.value(op.inputs[i]);
      const ShardingSpec& want = i < s->inputs.size() ? s->inputs[i] : plan.specs.at(op.inputs[i]);
      tiles.push_back(mesh::tile_shape(input.shape, want, in.mesh));
    }
    // A shape attribute that is output 0's shape becomes its tile (as the runtime builds it:
    // before any reduce-scatter splits it).
    OpAttrs attrs = op.attrs;
    if (!op.outputs.empty() && attrs.shape.rank() > 0 &&
        attrs.shape == in.g.value(op.outputs[0]).shape) {
      ShardingSpec computed = s->outputs[0];
      for (const shard::OutputResolution& r : s->resolutions) {
        if (r.output == 0 && r.kind == mesh::CollectiveKind::kReduceScatter) {
          computed.dims[static_cast<size_t>(r.dim)] = mesh::DimSharding::kR;
        }
      }
      attrs.shape = mesh::tile_shape(attrs.shape, computed, in.mesh);
    }
    int64_t transient = in.cost.workspace_bytes(op.kind, tiles, attrs);
    for (ValueId o : op.outputs) {
      if (in.g.value(o).role == graph::ValueRole::kUpdated) continue;  // in place
      if (in.gradient_values.count(o) != 0) {
        if (transient_gradients) {
          transient += produced_bytes(o);
        } else {
          produced_gradients += produced_bytes(o);
        }
        continue;
      }
      const Key k{o, plan.specs.at(o), 0};
      if (last_use.count(k) != 0) {
        add(k);
      } else {
        transient += bytes_in(o, plan.specs.at(o));  // dead on arrival, or read in another spec
      }
    }
    out.peak = std::max(out.peak, live + transient + produced_gradients);
    for (auto it = live_keys.begin(); it != live_keys.end();) {
      if (last_use.at(*it) <= static_cast<int64_t>(t)) {
        live -= size.at(*it);
        it = live_keys.erase(it);
      } else {
        ++it;
      }
    }
    if (static_cast<int64_t>(t) == last_forward) {
      for (const Key& k : live_keys) {
        if (!produced_outside(std::get<0>(k))) out.stash += size.at(k);
      }
    }
  }
  return out;
}

}  // namespace meshpipe::planner::internal

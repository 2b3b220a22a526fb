// scan_memory: the planner's count of what one micro-batch of a stage holds, as the lowering
// allocates it (planner/internal/memory_scan.h).
#include "planner/internal/memory_scan.h"

#include <algorithm>
#include <optional>
#include <tuple>

namespace meshpipe::planner::internal {

using graph::Op;
using graph::OpPhase;
using mesh::ShardingSpec;

namespace {

// One step of a scan: op in.ops[t], or its re-run as the forward's recomputation.
struct Step {
  size_t t = 0;
  bool recomputed = false;
};

// Largest live bytes over `steps` (see MemoryScan). With `recompute` the forward keeps only the
// values other units read and the data inputs; the rest die at their last forward reader and
// are produced again (a second generation) by the recomputed forward, which runs in the
// backward phase just before the first backward op that reads one of them (runtime/lower.cc
// emit_recomputing_backward): its resharded persistent copies are the backward's.
MemoryScan scan_pass(const MemoryScanInput& in, const ShardingPlan& plan,
                     const std::map<OpId, const Strategy*>& chosen,
                     const std::set<ValueId>& read_outside, bool recompute) {
  const auto is_persistent = [&](ValueId v) {
    const auto role = in.g.value(v).role;
    return role == graph::ValueRole::kParameter || role == graph::ValueRole::kOptimizerState;
  };
  const auto index_of = [&](OpId op) -> int64_t {
    auto it = std::lower_bound(in.ops.begin(), in.ops.end(), op);
    return it != in.ops.end() && *it == op ? it - in.ops.begin() : -1;
  };
  // value, spec, phase scope of a persistent value's copy, generation (1: recomputed)
  using Key = std::tuple<ValueId, ShardingSpec, int, int>;
  auto bytes_in = [&](ValueId v, const ShardingSpec& spec) {
    const graph::Value& val = in.g.value(v);
    return in.cost.allocation_bytes(
        mesh::tile_bytes(val.shape, dtype_size(val.dtype), spec, in.mesh));
  };
  const auto produced_outside = [&](ValueId v) {
    const graph::Value& val = in.g.value(v);
    return !val.producer.is_valid() || index_of(val.producer) < 0;
  };
  // A value the unit's forward produces: recomputed, when the unit recomputes.
  const auto recomputable = [&](ValueId v) {
    return recompute && !is_persistent(v) && !produced_outside(v) &&
           in.g.op(in.g.value(v).producer).phase == OpPhase::kForward;
  };

  // The steps: every op in order; with recomputation the forward again before the first
  // backward op that reads a value the forward produced.
  std::vector<Step> steps;
  bool recomputed = !recompute;
  for (size_t t = 0; t < in.ops.size(); ++t) {
    const Op& op = in.g.op(in.ops[t]);
    if (!recomputed && op.phase == OpPhase::kBackward &&
        std::any_of(op.inputs.begin(), op.inputs.end(), recomputable)) {
      recomputed = true;
      for (size_t f = 0; f < t; ++f) {
        if (in.g.op(in.ops[f]).phase == OpPhase::kForward) steps.push_back({f, true});
      }
    }
    steps.push_back({t, false});
  }
  // The phase a step runs in, and the generation of value v it reads.
  const auto phase_of = [&](const Step& st) {
    return st.recomputed ? OpPhase::kBackward : in.g.op(in.ops[st.t]).phase;
  };
  // Recomputing, the forward keeps a value from outside the unit only as it arrived: a data
  // input is loaded again, a copy in another spec made again (runtime/lower.cc).
  const auto generation_read = [&](ValueId v, const ShardingSpec& want, const Step& st) {
    if (!recompute || is_persistent(v)) return 0;
    if (!st.recomputed && in.g.op(in.ops[st.t]).phase == OpPhase::kForward) return 0;
    const graph::Value& val = in.g.value(v);
    const bool again = recomputable(v) || val.role == graph::ValueRole::kInput ||
                       (plan.specs.count(v) != 0 && want != plan.specs.at(v));
    return again ? 1 : 0;
  };

  std::map<Key, int64_t> last_use;
  std::map<Key, int64_t> size;
  const auto key_of = [&](ValueId v, const ShardingSpec& want, const Step& st) {
    const ShardingSpec& have = plan.specs.at(v);
    if (is_persistent(v)) {
      // Stored tiles are persistent; a copy in another spec lives for one phase.
      return want == have ? std::optional<Key>()
                          : Key{v, want, static_cast<int>(phase_of(st)) + 1, 0};
    }
    return std::optional<Key>(Key{v, want, 0, generation_read(v, want, st)});
  };
  MemoryScan out;
  // The gradient synchronisation resolves every accumulator into the spec its update reads
  // before the first update runs (one fused collective): those copies are live together from
  // the first update op on, each until its update.
  int64_t first_update = -1;
  int64_t last_forward = -1;   // the last step of the (first) forward
  int64_t last_backward = -1;  // the last backward step
  std::vector<Key> synced;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& st = steps[i];
    const Op& op = in.g.op(in.ops[st.t]);
    const Strategy* s = chosen.at(in.ops[st.t]);
    if (op.phase == OpPhase::kUpdate && first_update < 0) first_update = static_cast<int64_t>(i);
    if (op.phase == OpPhase::kForward && !st.recomputed) last_forward = static_cast<int64_t>(i);
    if (op.phase == OpPhase::kBackward) last_backward = static_cast<int64_t>(i);
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const ValueId v = op.inputs[k];
      const ShardingSpec& want = k < s->inputs.size() ? s->inputs[k] : plan.specs.at(v);
      if (in.gradient_values.count(v) != 0) {  // read from its accumulator, or a synced copy
        // A sum of two pieces is its pieces' buffers (each synchronised into the update's
        // spec; one received when made on another stage).
        std::vector<ValueId> held = {v};
        const OpId sum = in.g.value(v).producer;
        if (op.phase == OpPhase::kUpdate && sum.is_valid() && in.piece_sums.count(sum) != 0) {
          held = in.g.op(sum).inputs;
        }
        for (ValueId h : held) {
          // An all-reduce resolves the accumulator in place; a reduce-scatter or any other
          // step writes a new buffer.
          bool scattered = false;
          if (plan.specs.count(h) != 0 && !produced_outside(h)) {
            const OpId producer = in.g.value(h).producer;
            const Op& pop = in.g.op(producer);
            for (const shard::OutputResolution& r : chosen.at(producer)->resolutions) {
              if (r.kind == mesh::CollectiveKind::kReduceScatter && r.output < pop.outputs.size() &&
                  pop.outputs[r.output] == h) {
                scattered = true;
              }
            }
          }
          const bool received = h != v && produced_outside(h);
          if (op.phase == OpPhase::kUpdate &&
              (received || (plan.specs.count(h) != 0 && !produced_outside(h) &&
                            (scattered || want != plan.specs.at(h))))) {
            const Key key{h, want, static_cast<int>(OpPhase::kUpdate) + 1, 0};
            if (last_use.count(key) == 0) synced.push_back(key);
            last_use[key] = static_cast<int64_t>(i);
            size[key] = bytes_in(h, want);
          }
        }
        continue;
      }
      for (const auto& key : {key_of(v, want, st), key_of(v, plan.specs.at(v), st)}) {
        if (!key || (is_persistent(v) && std::get<2>(*key) == 0)) continue;
        last_use[*key] = static_cast<int64_t>(i);
        size[*key] = bytes_in(v, std::get<1>(*key));
      }
    }
  }
  // Kept from a recomputing unit's forward: what other units read (they run in between).
  std::vector<Key> kept;
  if (recompute) {
    for (size_t t = 0; t < in.ops.size(); ++t) {
      const Op& op = in.g.op(in.ops[t]);
      if (op.phase != OpPhase::kForward) continue;
      for (ValueId o : op.outputs) {
        if (is_persistent(o) || plan.specs.count(o) == 0) continue;
        if (read_outside.count(o) != 0) {
          const Key key{o, plan.specs.at(o), 0, 0};
          kept.push_back(key);
          last_use[key] = std::max(last_use.count(key) != 0 ? last_use[key] : 0, last_forward);
          size[key] = bytes_in(o, plan.specs.at(o));
        }
      }
    }
  }
  // A gradient as its producer computes it: before any reduce-scatter splits it (how it is
  // accumulated).
  const auto produced_bytes = [&](ValueId v) {
    const graph::Value& val = in.g.value(v);
    int64_t b = mesh::tile_bytes(val.shape, dtype_size(val.dtype), plan.specs.at(v), in.mesh);
    const Op& producer = in.g.op(val.producer);
    for (size_t o = 0; o < producer.outputs.size(); ++o) {
      if (producer.outputs[o] != v) continue;
      for (const shard::OutputResolution& r : chosen.at(val.producer)->resolutions) {
        if (r.output == o && r.kind == mesh::CollectiveKind::kReduceScatter) {
          b *= in.mesh.size(r.axis);
        }
      }
    }
    return in.cost.allocation_bytes(b);
  };
  for (ValueId v : in.gradient_values) {
    if (plan.specs.count(v) == 0 || produced_outside(v)) continue;
    if (in.piece_sums.count(in.g.value(v).producer) != 0) continue;  // its pieces' buffers
    out.gradients += produced_bytes(v);
  }
  for (const auto& [k, bytes] : size) {
    if (std::get<2>(k) == static_cast<int>(OpPhase::kForward) + 1) out.forward_copies += bytes;
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
  out.peak = live;
  out.first_peak = live;
  // One micro-batch: its gradients are the accumulators, live from their production on.
  const bool transient_gradients = in.micro_batches > 1;
  int64_t produced_gradients = 0;
  int64_t allocated_accumulators = 0;  // several micro-batches: accumulators so far
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& st = steps[i];
    const Op& op = in.g.op(in.ops[st.t]);
    const Strategy* s = chosen.at(in.ops[st.t]);
    if (static_cast<int64_t>(i) == first_update) {
      for (const Key& k : synced) add(k);
    }
    if (in.piece_sums.count(in.ops[st.t]) != 0) continue;  // added after the synchronisation
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const ValueId v = op.inputs[k];
      if (in.gradient_values.count(v) != 0) continue;
      const ShardingSpec& want = k < s->inputs.size() ? s->inputs[k] : plan.specs.at(v);
      if (auto key = key_of(v, want, st)) add(*key);
    }
    // The kernel's scratch on its input tiles, while it runs.
    std::vector<Shape> tiles;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const graph::Value& input = in.g.value(op.inputs[k]);
      const ShardingSpec& want = k < s->inputs.size() ? s->inputs[k] : plan.specs.at(op.inputs[k]);
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
    const int64_t scratch = in.cost.workspace_bytes(op.kind, tiles, attrs);
    int64_t transient = scratch > 0 ? in.cost.allocation_bytes(scratch) : 0;
    for (ValueId o : op.outputs) {
      if (in.g.value(o).role == graph::ValueRole::kUpdated) continue;  // in place
      if (in.gradient_values.count(o) != 0) {
        const int64_t bytes = produced_bytes(o);
        if (transient_gradients) {
          transient += bytes;
          allocated_accumulators += bytes;
        } else {
          produced_gradients += bytes;
        }
        continue;
      }
      const Key k{o, plan.specs.at(o), 0, st.recomputed ? 1 : 0};
      if (last_use.count(k) != 0) {
        add(k);
      } else if (op.phase == OpPhase::kBackward && read_outside.count(o) != 0) {
        // A gradient for an earlier unit's backward: live from here to the end of the unit's
        // backward (that unit runs after it; the update comes later).
        last_use[k] = std::max(last_backward, static_cast<int64_t>(i));
        size[k] = bytes_in(o, plan.specs.at(o));
        add(k);
      } else {
        transient += bytes_in(o, plan.specs.at(o));  // dead on arrival, or read in another spec
      }
    }
    out.peak = std::max(out.peak, live + transient + produced_gradients);
    out.first_peak =
        std::max(out.first_peak, live + transient + produced_gradients + allocated_accumulators);
    for (auto it = live_keys.begin(); it != live_keys.end();) {
      if (last_use.at(*it) <= static_cast<int64_t>(i)) {
        live -= size.at(*it);
        it = live_keys.erase(it);
      } else {
        ++it;
      }
    }
    if (static_cast<int64_t>(i) == last_forward) {
      // Stashed: what the stage produced, and the data inputs (a micro-batch's own, kept
      // until the backward that reads them); what other stages send is counted by the DP.
      for (const Key& k : live_keys) {
        const ValueId v = std::get<0>(k);
        if (!produced_outside(v) || !in.g.value(v).producer.is_valid()) out.stash += size.at(k);
      }
      for (const Key& k : kept) {
        if (live_keys.count(k) == 0) out.stash += size.at(k);
      }
    }
  }
  return out;
}

}  // namespace

MemoryScan scan_memory(const MemoryScanInput& in, const ShardingPlan& plan,
                       const std::map<OpId, const Strategy*>& chosen) {
  // Values the stage produces that ops outside it read (one pass over the graph, shared by
  // both scans).
  std::vector<char> inside(static_cast<size_t>(in.g.num_ops()), 0);
  for (OpId op : in.ops) inside[op.index()] = 1;
  std::set<ValueId> read_outside;
  for (size_t i = 0; i < inside.size(); ++i) {
    if (inside[i] != 0) continue;
    for (ValueId v : in.g.ops()[i].inputs) {
      const OpId producer = in.g.value(v).producer;
      if (producer.is_valid() && inside[producer.index()] != 0) read_outside.insert(v);
    }
  }
  MemoryScan out = scan_pass(in, plan, chosen, read_outside, false);
  const MemoryScan rc = scan_pass(in, plan, chosen, read_outside, true);
  out.recompute_peak = rc.peak;
  out.recompute_first_peak = rc.first_peak;
  out.recompute_stash = rc.stash;
  return out;
}

}  // namespace meshpipe::planner::internal

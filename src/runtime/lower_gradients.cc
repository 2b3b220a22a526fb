// Lowering: gradients accumulated over micro-batches, then synchronised (resolved into the
// update's spec, averaged) and sent to the stage that updates them.
#include <fmt/format.h>

#include "runtime/internal/lowering.h"

namespace meshpipe::runtime::internal {

Status Lowering::accumulate(StageState& st, size_t producer, size_t o, int32_t mb, int32_t scope) {
  const ValueId v = g_.ops()[producer].outputs[o];
  const graph::Value& val = g_.value(v);
  const ShardingSpec spec =
      options_.defer_grad_sync ? produced_spec(producer, o) : strategy_[producer].outputs[o];
  MP_ASSIGN_OR_RETURN(int32_t src, fetch(st, v, scope, spec, Phase::kBackward, mb));
  if (M_ == 1) {  // one micro-batch: its gradient is the sum
    st.acc[v.value()] = Entry{spec, src};
    return Status::ok();
  }
  bool first = false;
  auto it = st.acc.find(v.value());
  if (it == st.acc.end()) {
    const int32_t b = add_buffer(st, val.name + " (accumulated)",
                                 mesh::tile_shape(val.shape, spec, st.plan->mesh), val.dtype);
    it = st.acc.emplace(v.value(), Entry{spec, b}).first;
    first = true;
  }
  Instruction ins;
  ins.code = Opcode::kAccumulate;
  ins.phase = Phase::kBackward;
  ins.micro_batch = mb;
  ins.in = {src};
  ins.out = {it->second.buffer};
  ins.first = first;
  ins.what = "accumulate " + val.name + mb_suffix(mb);
  emit_all(st, std::move(ins));
  return Status::ok();
}

Status Lowering::grad_sync(StageState& st) {
  // First every gradient's synchronisation (consecutive all-reduces, which fuse_all_reduces
  // packs into one collective), then each average and send.
  std::vector<std::pair<int32_t, const Crossing*>> synced;  // (buffer, transfer out or null)
  for (auto& [vid, e] : st.acc) {
    const ValueId v(vid);
    const Crossing* out = nullptr;
    for (const Crossing& c : crossings_) {
      if (c.value == v && c.per_step && c.from == st.index) out = &c;
    }
    MP_ASSIGN_OR_RETURN(const ShardingSpec target, sync_target(v, out));
    st.avail[{vid, kStepScope}] = {e};
    MP_ASSIGN_OR_RETURN(int32_t r, fetch(st, v, kStepScope, target, Phase::kGradSync, -1));
    st.avail[{vid, kStepScope}] = {Entry{target, r}};
    synced.emplace_back(r, out);
  }
  size_t k = 0;
  for (auto& [vid, e] : st.acc) {
    const auto [r, out] = synced[k++];
    if (M_ > 1) {
      Instruction scale;
      scale.code = Opcode::kScale;
      scale.phase = Phase::kGradSync;
      scale.in = {r};
      scale.out = {r};
      scale.factor = 1.0f / static_cast<float>(M_);
      scale.what = "average " + g_.value(ValueId(vid)).name;
      emit_all(st, std::move(scale));
    }
    if (out != nullptr) {
      MP_RETURN_IF_ERROR(emit_sends(st, *out, kStepScope, Phase::kGradSync, -1));
    }
  }
  return Status::ok();
}

Status Lowering::add_pieces(StageState& st) {
  for (size_t sum : deferred_sums_) {
    if (stage_of_op_[sum] != st.index) continue;
    const Op& op = g_.ops()[sum];
    MP_ASSIGN_OR_RETURN(const ShardingSpec target, sync_target(op.outputs[0], nullptr));
    // Into the piece made here (its accumulator), the other added to it.
    const size_t here = stage_of_op_[g_.value(op.inputs[0]).producer.index()] == st.index ? 0 : 1;
    MP_ASSIGN_OR_RETURN(int32_t a,
                        fetch(st, op.inputs[here], kStepScope, target, Phase::kUpdate, -1));
    MP_ASSIGN_OR_RETURN(int32_t b,
                        fetch(st, op.inputs[1 - here], kStepScope, target, Phase::kUpdate, -1));
    Instruction add;
    add.code = Opcode::kAccumulate;
    add.phase = Phase::kUpdate;
    add.in = {b};
    add.out = {a};
    add.first = false;
    add.what = op.name;
    emit_all(st, std::move(add));
    st.avail[{op.outputs[0].value(), kStepScope}] = {Entry{target, a}};
  }
  return Status::ok();
}

}  // namespace meshpipe::runtime::internal

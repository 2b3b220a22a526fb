// lower(): a Plan and its training graph -> one instruction program per device.
//
// Each stage is emitted on its own: its devices run the same sequence (SPMD) on tiles of equal
// shape, so buffers are declared once per stage and instructions pushed to every device, except
// the pieces of cross-stage transfers and the tile offsets of data inputs, which differ per
// device. A value becomes available in the spec its producer computes (partial sums included);
// a consumer that wants another spec gets it by the collectives of plan_resharding, which also
// resolves partial sums. Cross-stage values are sent right after they are produced and received
// at the start of the task that first needs them; sends never block, so the schedule cannot
// deadlock.
#include "runtime/lower.h"

#include <algorithm>
#include <set>

#include "graph/autodiff.h"
#include "runtime/internal/lowering.h"

namespace meshpipe::runtime {

Status LowerOptions::validate() const {
  if (fuse_all_reduce_bytes < 0) {
    return make_error(Errc::kInvalidArgument, "fuse_all_reduce_bytes must be >= 0");
  }
  return Status::ok();
}

std::vector<std::pair<Phase, int32_t>> stage_schedule(planner::Schedule schedule, int32_t stage,
                                                      int32_t stages, int32_t micro_batches) {
  std::vector<std::pair<Phase, int32_t>> tasks;
  if (schedule == planner::Schedule::kGPipe) {
    for (int32_t m = 0; m < micro_batches; ++m) tasks.emplace_back(Phase::kForward, m);
    for (int32_t m = 0; m < micro_batches; ++m) tasks.emplace_back(Phase::kBackward, m);
    return tasks;
  }
  const int32_t warmup = std::min(stages - stage - 1, micro_batches);
  int32_t f = 0;
  for (; f < warmup; ++f) tasks.emplace_back(Phase::kForward, f);
  for (int32_t b = 0; b < micro_batches; ++b) {
    if (f < micro_batches) tasks.emplace_back(Phase::kForward, f++);
    tasks.emplace_back(Phase::kBackward, b);
  }
  return tasks;
}

namespace internal {

Expected<Program> Lowering::run() {
  MP_RETURN_IF_ERROR(options_.validate());
  MP_RETURN_IF_ERROR(plan_.validate());
  MP_ASSIGN_OR_RETURN(binding_, planner::bind_plan(plan_, g_));
  if (g_.outputs().empty()) {
    return make_error(Errc::kInvalidArgument, "the training graph has no loss output");
  }
  schedule_ = options_.schedule.value_or(plan_.schedule);
  M_ = static_cast<int32_t>(plan_.micro_batches);
  MP_RETURN_IF_ERROR(assign_stages());
  find_deferred_sums();
  MP_RETURN_IF_ERROR(make_strategies());
  MP_RETURN_IF_ERROR(find_crossings());

  Program prog;
  prog.model = plan_.model;
  prog.micro_batches = plan_.micro_batches;
  prog.schedule = schedule_;
  for (ValueId v : g_.values_with_role(ValueRole::kInput)) {
    input_index_[v.value()] = static_cast<int32_t>(prog.inputs.size());
    prog.inputs.push_back(g_.value(v).name);
    prog.input_shapes.push_back(g_.value(v).shape);
    prog.input_dtypes.push_back(g_.value(v).dtype);
  }
  prog.devices.resize(static_cast<size_t>(plan_.cluster.num_devices()));
  for (auto& d : prog.devices) d.device = -1;
  for (size_t s = 0; s < plan_.stages.size(); ++s) {
    prog.stages.push_back({plan_.stages[s].devices, plan_.stages[s].mesh});
    StageState st;
    st.index = static_cast<int32_t>(s);
    st.plan = &plan_.stages[s];
    MP_RETURN_IF_ERROR(emit_stage(st).with_context(fmt::format("lowering stage {}", s)));
    for (size_t k = 0; k < st.plan->devices.size(); ++k) {
      DeviceProgram& dp = prog.devices[static_cast<size_t>(st.plan->devices[k])];
      dp.device = st.plan->devices[k];
      dp.stage = st.index;
      dp.coord[0] = st.i0(k);
      dp.coord[1] = st.i1(k);
      dp.buffers = st.buffers;
      dp.ops = std::move(st.ops[k]);
      dp.instructions = std::move(st.code[k]);
      for (const auto& [v, e] : st.persistent) {
        dp.persistent.push_back({e.buffer, g_.value(ValueId(v)).name,
                                 mesh::tile_ranges(g_.value(ValueId(v)).shape, e.spec,
                                                   st.plan->mesh, dp.coord[0], dp.coord[1])});
      }
    }
  }
  fuse_all_reduces(prog, options_.fuse_all_reduce_bytes);
  for (DeviceProgram& dp : prog.devices) insert_frees(dp);
  prog.loss_device = loss_device_;
  MP_RETURN_IF_ERROR(validate_program(prog).with_context("lowered program"));
  return prog;
}

Status Lowering::assign_stages() {
  stage_of_op_ = binding_.stage_of_op;
  for (const graph::Alias& a : g_.aliases()) alias_source_[a.updated.value()] = a.source;
  // Owner of a persistent value: the stage of the update reading it, else its first reader.
  for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
    const Op& op = g_.ops()[i];
    for (ValueId v : op.inputs) {
      if (!is_persistent(g_.value(v))) continue;
      auto it = owner_.find(v.value());
      if (it == owner_.end() || (op.phase == OpPhase::kUpdate && !owner_by_update_[v.value()])) {
        owner_[v.value()] = stage_of_op_[i];
        owner_by_update_[v.value()] = op.phase == OpPhase::kUpdate;
      }
    }
    if (is_optimizer_update(op.kind)) grad_update_[op.inputs[1].value()] = static_cast<int32_t>(i);
  }
  return Status::ok();
}

void Lowering::find_deferred_sums() {
  if (M_ <= 1) return;  // one micro-batch: nothing to accumulate, the sum runs as it is
  for (OpId sum : graph::gradient_piece_sums(g_)) {
    const size_t i = sum.index();
    const Op& op = g_.ops()[i];
    // The update reads the sum on the sum's own stage (nothing sends the sum before the add).
    if (stage_of_op_[static_cast<size_t>(grad_update_.at(op.outputs[0].value()))] !=
        stage_of_op_[i]) {
      continue;
    }
    deferred_sums_.insert(i);
    for (ValueId in : op.inputs) piece_sum_[in.value()] = i;
  }
}

Expected<ShardingSpec> Lowering::sync_target(ValueId v, const Crossing* out) const {
  if (out != nullptr) return out->send_spec;
  auto u = grad_update_.find(v.value());
  if (u == grad_update_.end()) {
    auto p = piece_sum_.find(v.value());
    if (p != piece_sum_.end()) u = grad_update_.find(g_.ops()[p->second].outputs[0].value());
  }
  if (u == grad_update_.end()) {
    return make_error(Errc::kInternal, "the accumulated '{}' is neither updated nor sent",
                      g_.value(v).name);
  }
  return strategy_[static_cast<size_t>(u->second)].inputs[1];
}

Status Lowering::make_strategies() {
  strategy_.resize(static_cast<size_t>(g_.num_ops()));
  local_.resize(static_cast<size_t>(g_.num_ops()));
  for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
    const Op& op = g_.ops()[i];
    const planner::StagePlan& sp = plan_.stages[static_cast<size_t>(stage_of_op_[i])];
    MP_ASSIGN_OR_RETURN(strategy_[i], shard::shard_op(g_, op, sp.mesh, binding_.op_layout[i]));
    for (size_t k = 0; k < sp.devices.size(); ++k) {
      const int64_t i0 = static_cast<int64_t>(k) / sp.mesh.size(1);
      const int64_t i1 = static_cast<int64_t>(k) % sp.mesh.size(1);
      auto l = make_local_op(
          g_, op, strategy_[i], sp.mesh, i0, i1,
          plan_.cluster.device.kind == "cpu" ? kernels::Device::kCpu : kernels::Device::kCuda);
      if (!l.has_value()) {
        return l.status().with_context(fmt::format("op '{}' with layout '{}' on mesh {}", op.name,
                                                   shard::layout_to_string(binding_.op_layout[i]),
                                                   sp.mesh.to_string()));
      }
      local_[i].push_back(std::move(*l));
    }
  }
  return Status::ok();
}

ShardingSpec Lowering::stored_spec(ValueId v) {
  const size_t owner = static_cast<size_t>(owner_.at(v.value()));
  const planner::StagePlan& sp = plan_.stages[owner];
  auto it = binding_.value_specs[owner].find(v);
  if (it != binding_.value_specs[owner].end() &&
      mesh::validate_sharding(g_.value(v).shape, it->second, sp.mesh).is_ok()) {
    return it->second;
  }
  // Not recorded: the spec its first reader on the owner stage wants.
  for (OpId u : g_.users(v)) {
    if (stage_of_op_[u.index()] != owner_.at(v.value())) continue;
    const Op& op = g_.op(u);
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      if (op.inputs[i] == v) return strategy_[u.index()].inputs[i];
    }
  }
  return ShardingSpec::replicated(g_.value(v).shape.rank());
}

Status Lowering::find_crossings() {
  std::map<std::tuple<int32_t, int32_t, bool>, size_t> index;  // (value, to, per_step)
  for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
    const Op& op = g_.ops()[i];
    const int32_t to = stage_of_op_[i];
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const ValueId v = op.inputs[k];
      const graph::Value& val = g_.value(v);
      int32_t from = -1;
      bool per_step = false;
      ShardingSpec send;
      if (is_persistent(val)) {
        from = owner_.at(v.value());
        per_step = true;
        send = stored_spec(v);
      } else if (val.producer.is_valid()) {
        const size_t p = val.producer.index();
        from = stage_of_op_[p];
        // Once per step: an accumulated gradient, or a value the optimizer phase computes
        // (a layer's step counter read by updates on two stages).
        per_step = op.phase == OpPhase::kUpdate && ((is_optimizer_update(op.kind) && k == 1) ||
                                                    g_.ops()[p].phase == OpPhase::kUpdate);
        send = strategy_[p].outputs[static_cast<size_t>(val.output_index)];
        // A piece of a deferred gradient sum: accumulated, sent once per step.
        if (piece_sum_.count(v.value()) != 0) per_step = true;
        if (g_.ops()[p].phase == OpPhase::kUpdate && op.phase != OpPhase::kUpdate) {
          return make_error(Errc::kInvalidArgument,
                            "op '{}' reads '{}', which the optimizer update produces", op.name,
                            val.name);
        }
      }
      if (from < 0 || from == to) continue;
      const auto key = std::make_tuple(v.value(), to, per_step);
      if (index.count(key) != 0) continue;
      Crossing c;
      c.value = v;
      c.from = from;
      c.to = to;
      c.per_step = per_step;
      c.phase = op.phase == OpPhase::kForward    ? Phase::kForward
                : op.phase == OpPhase::kBackward ? Phase::kBackward
                                                 : Phase::kUpdate;
      if (is_persistent(val)) c.phase = Phase::kPrologue;
      c.send_spec = send;
      c.recv_spec = strategy_[i].inputs[k];
      if (piece_sum_.count(v.value()) != 0) {  // added to the other piece in its update's spec
        MP_ASSIGN_OR_RETURN(c.recv_spec, sync_target(op.outputs[0], nullptr));
      }
      c.id = static_cast<int32_t>(crossings_.size());
      if (c.id >= (1 << 16)) {
        return make_error(Errc::kOutOfRange, "more than 65535 cross-stage transfers");
      }
      std::vector<int64_t> load(plan_.stages[static_cast<size_t>(from)].devices.size(), 0);
      auto cp = mesh::plan_cross_mesh(val.shape, val.dtype, c.send_spec,
                                      plan_.stages[static_cast<size_t>(from)].mesh, c.recv_spec,
                                      plan_.stages[static_cast<size_t>(to)].mesh, &load,
                                      {options_.local_allgather});
      if (!cp.has_value()) {
        return cp.status().with_context(
            fmt::format("transfer of '{}' from stage {} to stage {}", val.name, from, to));
      }
      c.plan = std::move(*cp);
      index[key] = crossings_.size();
      crossings_.push_back(std::move(c));
    }
  }
  return Status::ok();
}

Status Lowering::emit_stage(StageState& st) {
  const size_t n = st.plan->devices.size();
  st.code.resize(n);
  st.ops.resize(n);
  // Persistent tiles this stage owns.
  for (const auto& [vid, owner] : owner_) {
    if (owner != st.index) continue;
    const ValueId v(vid);
    const graph::Value& val = g_.value(v);
    const ShardingSpec spec = stored_spec(v);
    const int32_t b = add_buffer(st, val.name, mesh::tile_shape(val.shape, spec, st.plan->mesh),
                                 val.dtype, BufferKind::kPersistent);
    st.persistent[vid] = {spec, b};
    st.avail[{vid, kStepScope}].push_back({spec, b});
  }
  // Prologue: parameters read here but owned elsewhere travel once per step.
  for (const Crossing& c : crossings_) {
    if (!is_persistent(g_.value(c.value))) continue;
    if (c.from == st.index) {
      MP_RETURN_IF_ERROR(emit_sends(st, c, kStepScope, Phase::kPrologue, -1));
    }
    if (c.to == st.index) {
      MP_RETURN_IF_ERROR(emit_recvs(st, c, kStepScope, Phase::kPrologue, -1));
    }
  }
  const int32_t stages = static_cast<int32_t>(plan_.stages.size());
  for (const auto& [phase, mb] : stage_schedule(schedule_, st.index, stages, M_)) {
    const OpPhase want = phase == Phase::kForward ? OpPhase::kForward : OpPhase::kBackward;
    for (const Crossing& c : crossings_) {
      if (c.to == st.index && !c.per_step && c.phase == phase) {
        MP_RETURN_IF_ERROR(emit_recvs(st, c, mb, phase, mb));
      }
    }
    if (phase == Phase::kBackward && st.plan->recompute) {
      MP_RETURN_IF_ERROR(emit_recomputing_backward(st, mb));
      continue;
    }
    // Persistent values resharded for a unit (a ZeRO-3 gather, a tied embedding read in another
    // layout) live under a scope of that unit: freed after it, gathered again by the next unit
    // that needs them, as the planner prices and counts them (each unit on its own).
    // A recomputing stage's forward reshards what an op reads under a scope of the op's unit
    // (freed after the unit): the backward recomputes from the units' inputs as produced.
    const bool recomputing = st.plan->recompute && phase == Phase::kForward;
    std::pair<int32_t, int32_t> unit = {-1, -1};
    int32_t scope_for_step_values = kStepScope;
    int32_t unit_values = kNoScope;
    for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
      if (stage_of_op_[i] != st.index || g_.ops()[i].phase != want) continue;
      if (unit_of(i) != unit) {
        unit = unit_of(i);
        scope_for_step_values = st.next_task_scope--;
        if (recomputing) {
          unit_values = st.next_task_scope--;
          st.parent[unit_values] = mb;
        }
      }
      MP_RETURN_IF_ERROR(
          emit_op(st, i, phase, mb, scope_for_step_values, kNoScope, false, unit_values));
    }
  }
  MP_RETURN_IF_ERROR(grad_sync(st));
  for (const Crossing& c : crossings_) {
    if (c.to == st.index && c.per_step && !is_persistent(g_.value(c.value))) {
      MP_RETURN_IF_ERROR(emit_recvs(st, c, kStepScope, Phase::kUpdate, -1));
    }
  }
  MP_RETURN_IF_ERROR(add_pieces(st));
  for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
    if (stage_of_op_[i] != st.index || g_.ops()[i].phase != OpPhase::kUpdate) continue;
    MP_RETURN_IF_ERROR(emit_op(st, i, Phase::kUpdate, -1, kStepScope));
  }
  return Status::ok();
}

std::pair<int32_t, int32_t> Lowering::unit_of(size_t op) const {
  return {plan_.op_layers[op], g_.ops()[op].layer};
}

Status Lowering::emit_recomputing_backward(StageState& st, int32_t mb) {
  const int32_t scope = st.next_task_scope--;
  // Persistent values resharded for a unit live under a scope of the unit (its recomputed
  // forward and its backward share them).
  std::map<std::pair<int32_t, int32_t>, int32_t> unit_scope;
  const auto task_scope_of = [&](size_t op) {
    auto [it, fresh] = unit_scope.emplace(unit_of(op), 0);
    if (fresh) it->second = st.next_task_scope--;
    return it->second;
  };
  st.parent[scope] = mb;
  std::set<std::pair<int32_t, int32_t>> done;
  const size_t n = static_cast<size_t>(g_.num_ops());
  for (size_t i = 0; i < n; ++i) {
    if (stage_of_op_[i] != st.index || g_.ops()[i].phase != OpPhase::kBackward) continue;
    for (ValueId v : g_.ops()[i].inputs) {
      const OpId p = g_.value(v).producer;
      if (!p.is_valid()) continue;
      const size_t j = static_cast<size_t>(p.value());
      if (stage_of_op_[j] != st.index || g_.ops()[j].phase != OpPhase::kForward) continue;
      // Only the op's own unit is recomputed for it; another unit's values it reads (its
      // inputs, kept from the forward) come from the forward, or from that unit's
      // recomputation when it ran already.
      const auto unit = unit_of(j);
      if (unit != unit_of(i) || !done.insert(unit).second) continue;
      for (size_t k = 0; k < n; ++k) {
        if (stage_of_op_[k] != st.index || g_.ops()[k].phase != OpPhase::kForward ||
            unit_of(k) != unit) {
          continue;
        }
        MP_RETURN_IF_ERROR(emit_op(st, k, Phase::kBackward, mb, task_scope_of(k), scope, true));
      }
    }
    MP_RETURN_IF_ERROR(emit_op(st, i, Phase::kBackward, mb, task_scope_of(i), scope));
  }
  return Status::ok();
}

}  // namespace internal

Expected<Program> lower(const planner::Plan& plan, const graph::Graph& g,
                        const LowerOptions& options) {
  internal::Lowering l(plan, g, options);
  return l.run();
}

}  // namespace meshpipe::runtime

// Lowering: buffers, values fetched (and resharded inside a mesh) where an op reads them, and
// the RUN instructions of ops.
#include <fmt/format.h>

#include "runtime/internal/lowering.h"

namespace meshpipe::runtime::internal {

int32_t Lowering::add_buffer(StageState& st, std::string name, Shape shape, DType dtype,
                             BufferKind kind) {
  st.buffers.push_back({std::move(name), std::move(shape), dtype, kind});
  return static_cast<int32_t>(st.buffers.size() - 1);
}

void Lowering::emit_all(StageState& st, const Instruction& ins) {
  for (auto& code : st.code) code.push_back(ins);
}

void Lowering::emit_all(StageState& st, Instruction&& ins) {
  for (size_t k = 0; k + 1 < st.code.size(); ++k) st.code[k].push_back(ins);
  st.code.back().push_back(std::move(ins));
}

std::string Lowering::mb_suffix(int32_t mb) { return mb >= 0 ? fmt::format(" #{}", mb) : ""; }

Expected<int32_t> Lowering::fetch(StageState& st, ValueId v, int32_t scope,
                                  const ShardingSpec& want, Phase phase, int32_t mb) {
  const graph::Value& val = g_.value(v);
  const auto key = std::make_pair(v.value(), scope);
  // The scopes searched: this one, its parents, then the step's.
  std::vector<int32_t> chain = {scope};
  for (auto p = st.parent.find(scope); p != st.parent.end(); p = st.parent.find(p->second)) {
    chain.push_back(p->second);
  }
  if (scope != kStepScope) chain.push_back(kStepScope);
  for (int32_t s : chain) {
    auto it = st.avail.find(std::make_pair(v.value(), s));
    if (it == st.avail.end()) continue;
    for (const Entry& e : it->second) {
      if (e.spec == want) return e.buffer;
    }
  }
  if (val.role == ValueRole::kInput) return load_input(st, v, scope, want, phase, mb);
  Entry* src = nullptr;
  for (int32_t s : chain) {
    auto it = st.avail.find(std::make_pair(v.value(), s));
    if (src == nullptr && it != st.avail.end() && !it->second.empty()) src = &it->second[0];
  }
  if (src == nullptr) {
    return make_error(Errc::kInternal, "value '{}'{} is not available on stage {}", val.name,
                      mb_suffix(mb), st.index);
  }
  ShardingSpec now = src->spec;
  const int32_t from = src->buffer;
  MP_ASSIGN_OR_RETURN(int32_t buffer, reshard(st, v, from, src->spec, want, phase, mb,
                                              val.name + mb_suffix(mb), &now));
  src->spec = now;  // partial sums resolved in place: nothing reads them unresolved
  if (buffer != from) st.avail[key].push_back({want, buffer});
  return buffer;
}

Expected<int32_t> Lowering::reshard(StageState& st, ValueId v, int32_t from, const ShardingSpec& a,
                                    const ShardingSpec& b, Phase phase, int32_t mb,
                                    const std::string& what, ShardingSpec* from_spec) {
  const graph::Value& val = g_.value(v);
  MP_ASSIGN_OR_RETURN(mesh::ReshardingPlan rp,
                      mesh::plan_resharding(val.shape, val.dtype, a, b, st.plan->mesh));
  int32_t cur = from;
  ShardingSpec spec = a;
  const bool consume_from = from_spec != nullptr && a.partial != 0;
  for (const mesh::CollectiveStep& step : rp.steps) {
    const bool in_place = step.kind == mesh::CollectiveKind::kAllReduce &&
                          (cur != from || consume_from) &&
                          mesh::tile_shape(val.shape, step.after, st.plan->mesh) ==
                              mesh::tile_shape(val.shape, spec, st.plan->mesh);
    const int32_t next =
        in_place ? cur
                 : add_buffer(st, fmt::format("{} {}", what, step.after.to_string()),
                              mesh::tile_shape(val.shape, step.after, st.plan->mesh), val.dtype);
    if (next == from && from_spec != nullptr) *from_spec = step.after;
    Instruction ins;
    ins.code = Opcode::kCollective;
    ins.phase = phase;
    ins.micro_batch = mb;
    ins.in = {cur};
    ins.out = {next};
    ins.collective = step;
    ins.spec = spec;
    ins.shape = val.shape;
    ins.what = fmt::format("{}: {}", what, mesh::collective_name(step.kind));
    emit_all(st, std::move(ins));
    cur = next;
    spec = step.after;
  }
  return cur;
}

Expected<int32_t> Lowering::load_input(StageState& st, ValueId v, int32_t scope,
                                       const ShardingSpec& want, Phase phase, int32_t mb) {
  const graph::Value& val = g_.value(v);
  MP_RETURN_IF_ERROR(mesh::validate_sharding(val.shape, want, st.plan->mesh));
  const int32_t b = add_buffer(st, val.name + mb_suffix(mb),
                               mesh::tile_shape(val.shape, want, st.plan->mesh), val.dtype);
  for (size_t k = 0; k < st.code.size(); ++k) {
    Instruction ins;
    ins.code = Opcode::kLoadInput;
    ins.phase = phase;
    ins.micro_batch = mb;
    ins.out = {b};
    ins.input = input_index_.at(v.value());
    ins.src_offset = begins(mesh::tile_ranges(val.shape, want, st.plan->mesh, st.i0(k), st.i1(k)));
    ins.what = "load " + val.name + mb_suffix(mb);
    st.code[k].push_back(std::move(ins));
  }
  st.avail[{v.value(), scope}].push_back({want, b});
  return b;
}

ShardingSpec Lowering::produced_spec(size_t op, size_t o) const {
  const LocalOp& l = local_[op][0];
  ShardingSpec s = l.computed_specs[o];
  if (l.sync_axes != 0) return s;
  for (const shard::OutputResolution& r : strategy_[op].resolutions) {
    if (r.output == o) s.partial = static_cast<uint8_t>(s.partial | (1u << r.axis));
  }
  return s;
}

Status Lowering::emit_op(StageState& st, size_t id, Phase phase, int32_t mb, int32_t task_scope,
                         int32_t value_scope, bool recompute, int32_t fetch_scope) {
  const Op& op = g_.ops()[id];
  const shard::ShardedOp& s = strategy_[id];
  const std::string what = op.name + mb_suffix(mb) + (recompute ? " (recompute)" : "");
  const int32_t scope =
      value_scope != kNoScope ? value_scope : (phase == Phase::kUpdate ? kStepScope : mb);
  if (deferred_sums_.count(id) != 0 && phase == Phase::kBackward) {
    return Status::ok();  // its pieces are accumulated apart and added once per step (add_pieces)
  }
  std::vector<int32_t> in;
  for (size_t i = 0; i < op.inputs.size(); ++i) {
    const int32_t in_scope = is_persistent(g_.value(op.inputs[i])) ? task_scope
                             : fetch_scope != kNoScope             ? fetch_scope
                                                                   : scope;
    MP_ASSIGN_OR_RETURN(int32_t b, fetch(st, op.inputs[i], in_scope, s.inputs[i], phase, mb));
    in.push_back(b);
  }
  std::vector<int32_t> out;
  std::vector<ShardingSpec> specs;
  for (size_t o = 0; o < op.outputs.size(); ++o) {
    const graph::Value& val = g_.value(op.outputs[o]);
    ShardingSpec spec = produced_spec(id, o);
    int32_t b = -1;
    auto alias = alias_source_.find(op.outputs[o].value());
    if (alias != alias_source_.end()) {
      auto p = st.persistent.find(alias->second.value());
      for (size_t i = 0; p != st.persistent.end() && i < op.inputs.size(); ++i) {
        if (op.inputs[i] == alias->second && in[i] == p->second.buffer && spec == p->second.spec) {
          b = p->second.buffer;  // in place
        }
      }
    }
    if (b < 0) b = add_buffer(st, val.name + mb_suffix(mb), local_[id][0].outputs[o], val.dtype);
    out.push_back(b);
    specs.push_back(spec);
  }
  if (local_[id][0].sync_axes != 0) {
    MP_RETURN_IF_ERROR(emit_synchronised_batch_norm(st, id, in, out, phase, mb));
  } else {
    emit_run(st, local_[id], in, out, phase, mb, what);
  }

  for (size_t o = 0; o < op.outputs.size(); ++o) {
    const ValueId v = op.outputs[o];
    st.avail[{v.value(), scope}].push_back({specs[o], out[o]});
    auto alias = alias_source_.find(v.value());
    if (alias != alias_source_.end()) {
      auto p = st.persistent.find(alias->second.value());
      if (p == st.persistent.end()) {
        return make_error(Errc::kInternal, "'{}' updates '{}', which stage {} does not own",
                          op.name, g_.value(alias->second).name, st.index);
      }
      if (out[o] != p->second.buffer) {
        MP_ASSIGN_OR_RETURN(int32_t r, fetch(st, v, scope, p->second.spec, phase, mb));
        Instruction copy;
        copy.code = Opcode::kCopyBox;
        copy.phase = phase;
        copy.in = {r};
        copy.out = {p->second.buffer};
        const Shape& t = st.buffers[static_cast<size_t>(r)].shape;
        copy.src_offset.assign(static_cast<size_t>(t.rank()), 0);
        copy.dst_offset = copy.src_offset;
        copy.extent = t.dims();
        copy.what = "store " + g_.value(alias->second).name;
        emit_all(st, std::move(copy));
      }
    }
    if (phase == Phase::kUpdate) {
      for (const Crossing& c : crossings_) {
        if (c.value == v && c.from == st.index) {
          MP_RETURN_IF_ERROR(emit_sends(st, c, kStepScope, phase, -1));
        }
      }
    }
    if (!recompute && (phase == Phase::kForward || phase == Phase::kBackward)) {
      for (const Crossing& c : crossings_) {
        if (c.value == v && c.from == st.index && !c.per_step) {
          MP_RETURN_IF_ERROR(emit_sends(st, c, scope, phase, mb));
        }
      }
      if (grad_update_.count(v.value()) != 0 || piece_sum_.count(v.value()) != 0) {
        MP_RETURN_IF_ERROR(accumulate(st, id, o, mb, scope));
      }
      if (v == g_.outputs()[0]) {
        const ShardingSpec whole = ShardingSpec::replicated(g_.value(v).shape.rank());
        MP_ASSIGN_OR_RETURN(int32_t lb, fetch(st, v, scope, whole, phase, mb));
        Instruction report;
        report.code = Opcode::kReportLoss;
        report.phase = phase;
        report.micro_batch = mb;
        report.in = {lb};
        report.what = "loss" + mb_suffix(mb);
        emit_all(st, std::move(report));
        loss_device_ = st.plan->devices[0];
      }
    }
  }
  return Status::ok();
}

void Lowering::emit_run(StageState& st, const std::vector<LocalOp>& per_device,
                        const std::vector<int32_t>& in, const std::vector<int32_t>& out,
                        Phase phase, int32_t mb, const std::string& what) {
  auto [it, fresh] = st.op_index.emplace(&per_device, 0);
  if (fresh) {
    for (size_t k = 0; k < st.code.size(); ++k) st.ops[k].push_back(per_device[k]);
    it->second = static_cast<int32_t>(st.ops[0].size()) - 1;
  }
  emit_run_instruction(st, in, out, phase, mb, what, it->second);
}

void Lowering::emit_run(StageState& st, std::vector<LocalOp>&& per_device,
                        const std::vector<int32_t>& in, const std::vector<int32_t>& out,
                        Phase phase, int32_t mb, const std::string& what) {
  for (size_t k = 0; k < st.code.size(); ++k) st.ops[k].push_back(std::move(per_device[k]));
  emit_run_instruction(st, in, out, phase, mb, what, static_cast<int32_t>(st.ops[0].size()) - 1);
}

void Lowering::emit_run_instruction(StageState& st, const std::vector<int32_t>& in,
                                    const std::vector<int32_t>& out, Phase phase, int32_t mb,
                                    const std::string& what, int32_t op) {
  Instruction run;
  run.code = Opcode::kRun;
  run.phase = phase;
  run.micro_batch = mb;
  run.in = in;
  run.out = out;
  run.op = op;
  run.what = what;
  emit_all(st, std::move(run));
}

}  // namespace meshpipe::runtime::internal

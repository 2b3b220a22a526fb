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
#include <map>

#include "mesh/cross_mesh.h"
#include "planner/plan_binding.h"
#include "shard/op_layout.h"

namespace meshpipe::runtime {

using graph::Op;
using graph::OpKind;
using graph::OpPhase;
using graph::ValueRole;
using mesh::ShardingSpec;

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

namespace {

constexpr int32_t kStepScope = -1;

struct Entry {
  ShardingSpec spec;
  int32_t buffer = -1;
};

// A value crossing from one stage's mesh to another's.
struct Crossing {
  ValueId value;
  int32_t from = 0;
  int32_t to = 0;
  bool per_step = false;          // a persistent value (prologue) or an accumulated gradient
  Phase phase = Phase::kForward;  // when the receiver first needs it
  ShardingSpec send_spec;
  ShardingSpec recv_spec;  // what the first consumer wants
  mesh::CrossMeshPlan plan;
  int32_t id = 0;
};

// Emission state of one stage.
struct StageState {
  int32_t index = 0;
  const planner::StagePlan* plan = nullptr;
  std::vector<BufferDesc> buffers;
  std::vector<std::vector<Instruction>> code;                       // per device of the stage
  std::vector<std::vector<LocalOp>> ops;                            // per device of the stage
  std::map<std::pair<int32_t, int32_t>, std::vector<Entry>> avail;  // (value, scope)
  std::map<int32_t, Entry> persistent;                              // stored tiles
  std::map<int32_t, Entry> acc;                                     // gradient accumulators
  int32_t next_task_scope = -2;
  int64_t i0(size_t k) const { return static_cast<int64_t>(k) / plan->mesh.size(1); }
  int64_t i1(size_t k) const { return static_cast<int64_t>(k) % plan->mesh.size(1); }
};

std::vector<int64_t> begins(const std::vector<mesh::DimRange>& r) {
  std::vector<int64_t> b;
  for (const mesh::DimRange& x : r) b.push_back(x.begin);
  return b;
}

std::vector<int64_t> relative(const std::vector<mesh::DimRange>& r,
                              const std::vector<mesh::DimRange>& base) {
  std::vector<int64_t> b;
  for (size_t d = 0; d < r.size(); ++d) b.push_back(r[d].begin - base[d].begin);
  return b;
}

Shape extent_shape(const std::vector<mesh::DimRange>& r) {
  std::vector<int64_t> dims;
  for (const mesh::DimRange& x : r) dims.push_back(x.end - x.begin);
  return Shape(dims);
}

bool is_persistent(const graph::Value& v) {
  return v.role == ValueRole::kParameter || v.role == ValueRole::kOptimizerState;
}

class Lowering {
 public:
  Lowering(const planner::Plan& plan, const graph::Graph& g, const LowerOptions& options)
      : plan_(plan), g_(g), options_(options) {}

  Expected<Program> run() {
    MP_RETURN_IF_ERROR(options_.validate());
    MP_RETURN_IF_ERROR(plan_.validate());
    MP_ASSIGN_OR_RETURN(binding_, planner::bind_plan(plan_, g_));
    if (g_.outputs().empty()) {
      return make_error(Errc::kInvalidArgument, "the training graph has no loss output");
    }
    schedule_ = options_.schedule.value_or(plan_.schedule);
    M_ = static_cast<int32_t>(plan_.micro_batches);
    MP_RETURN_IF_ERROR(assign_stages());
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

 private:
  // ---- set-up ----

  Status assign_stages() {
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
      if (is_update_kind(op.kind)) grad_update_[op.inputs[1].value()] = static_cast<int32_t>(i);
    }
    return Status::ok();
  }

  static bool is_update_kind(OpKind k) {
    return k == OpKind::kSgdUpdate || k == OpKind::kSgdMomentumUpdate || k == OpKind::kAdamUpdate;
  }

  Status make_strategies() {
    strategy_.resize(static_cast<size_t>(g_.num_ops()));
    local_.resize(static_cast<size_t>(g_.num_ops()));
    for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
      const Op& op = g_.ops()[i];
      const planner::StagePlan& sp = plan_.stages[static_cast<size_t>(stage_of_op_[i])];
      MP_ASSIGN_OR_RETURN(strategy_[i], shard::shard_op(g_, op, sp.mesh, binding_.op_layout[i]));
      for (size_t k = 0; k < sp.devices.size(); ++k) {
        const int64_t i0 = static_cast<int64_t>(k) / sp.mesh.size(1);
        const int64_t i1 = static_cast<int64_t>(k) % sp.mesh.size(1);
        auto l = make_local_op(g_, op, strategy_[i], sp.mesh, i0, i1);
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

  // The spec a persistent value is stored in on its owner stage.
  ShardingSpec stored_spec(ValueId v) {
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

  Status find_crossings() {
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
          per_step = op.phase == OpPhase::kUpdate &&
                     ((is_update_kind(op.kind) && k == 1) || g_.ops()[p].phase == OpPhase::kUpdate);
          send = strategy_[p].outputs[static_cast<size_t>(val.output_index)];
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

  // ---- emission helpers ----

  int32_t add_buffer(StageState& st, std::string name, Shape shape, DType dtype,
                     BufferKind kind = BufferKind::kStep) {
    st.buffers.push_back({std::move(name), std::move(shape), dtype, kind});
    return static_cast<int32_t>(st.buffers.size() - 1);
  }

  static void emit_all(StageState& st, const Instruction& ins) {
    for (auto& code : st.code) code.push_back(ins);
  }
  // The last device takes the instruction itself, the others a copy.
  static void emit_all(StageState& st, Instruction&& ins) {
    for (size_t k = 0; k + 1 < st.code.size(); ++k) st.code[k].push_back(ins);
    st.code.back().push_back(std::move(ins));
  }

  static std::string mb_suffix(int32_t mb) { return mb >= 0 ? fmt::format(" #{}", mb) : ""; }

  // A buffer holding value v in spec `want`, found under scope `scope` (then the step scope),
  // resharded inside the mesh when it is only available in another spec.
  Expected<int32_t> fetch(StageState& st, ValueId v, int32_t scope, const ShardingSpec& want,
                          Phase phase, int32_t mb) {
    const graph::Value& val = g_.value(v);
    const auto key = std::make_pair(v.value(), scope);
    for (int pass = 0; pass < 2; ++pass) {
      auto it = st.avail.find(pass == 0 ? key : std::make_pair(v.value(), kStepScope));
      if (it == st.avail.end()) continue;
      for (const Entry& e : it->second) {
        if (e.spec == want) return e.buffer;
      }
    }
    if (val.role == ValueRole::kInput) return load_input(st, v, scope, want, phase, mb);
    const Entry* src = nullptr;
    for (const auto& k : {key, std::make_pair(v.value(), kStepScope)}) {
      auto it = st.avail.find(k);
      if (src == nullptr && it != st.avail.end() && !it->second.empty()) src = &it->second[0];
    }
    if (src == nullptr) {
      return make_error(Errc::kInternal, "value '{}'{} is not available on stage {}", val.name,
                        mb_suffix(mb), st.index);
    }
    Entry e = *src;
    MP_ASSIGN_OR_RETURN(int32_t buffer, reshard(st, v, e.buffer, e.spec, want, phase, mb,
                                                val.name + mb_suffix(mb)));
    st.avail[key].push_back({want, buffer});
    return buffer;
  }

  // Emits the collectives that take buffer `from` (spec `a`) to spec `b`; returns the result.
  Expected<int32_t> reshard(StageState& st, ValueId v, int32_t from, const ShardingSpec& a,
                            const ShardingSpec& b, Phase phase, int32_t mb,
                            const std::string& what) {
    const graph::Value& val = g_.value(v);
    MP_ASSIGN_OR_RETURN(mesh::ReshardingPlan rp,
                        mesh::plan_resharding(val.shape, val.dtype, a, b, st.plan->mesh));
    int32_t cur = from;
    ShardingSpec spec = a;
    for (const mesh::CollectiveStep& step : rp.steps) {
      const int32_t next =
          add_buffer(st, fmt::format("{} {}", what, step.after.to_string()),
                     mesh::tile_shape(val.shape, step.after, st.plan->mesh), val.dtype);
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

  Expected<int32_t> load_input(StageState& st, ValueId v, int32_t scope, const ShardingSpec& want,
                               Phase phase, int32_t mb) {
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
      ins.src_offset =
          begins(mesh::tile_ranges(val.shape, want, st.plan->mesh, st.i0(k), st.i1(k)));
      ins.what = "load " + val.name + mb_suffix(mb);
      st.code[k].push_back(std::move(ins));
    }
    st.avail[{v.value(), scope}].push_back({want, b});
    return b;
  }

  uint64_t tag_of(const Crossing& c, int32_t mb, size_t piece) const {
    return (static_cast<uint64_t>(c.id) << 32) | (static_cast<uint64_t>(mb + 1) << 16) |
           static_cast<uint64_t>(piece);
  }

  Status emit_sends(StageState& st, const Crossing& c, int32_t scope, Phase phase, int32_t mb) {
    const graph::Value& val = g_.value(c.value);
    if (c.plan.pieces.size() >= (1u << 16) || mb + 1 >= (1 << 16)) {
      return make_error(Errc::kOutOfRange, "transfer of '{}' has too many pieces or micro-batches",
                        val.name);
    }
    MP_ASSIGN_OR_RETURN(int32_t src, fetch(st, c.value, scope, c.send_spec, phase, mb));
    const planner::StagePlan& dst = plan_.stages[static_cast<size_t>(c.to)];
    for (size_t p = 0; p < c.plan.pieces.size(); ++p) {
      const mesh::TransferPiece& piece = c.plan.pieces[p];
      const size_t k = static_cast<size_t>(piece.src);
      const auto tile =
          mesh::tile_ranges(val.shape, c.send_spec, st.plan->mesh, st.i0(k), st.i1(k));
      int32_t buf = src;
      const std::string what = fmt::format("{}{} -> stage {} device {}", val.name, mb_suffix(mb),
                                           c.to, dst.devices[static_cast<size_t>(piece.dst)]);
      if (piece.region != tile) {
        buf = add_buffer(st, "send " + what, extent_shape(piece.region), val.dtype);
        Instruction pack;
        pack.code = Opcode::kCopyBox;
        pack.phase = phase;
        pack.micro_batch = mb;
        pack.in = {src};
        pack.out = {buf};
        pack.src_offset = relative(piece.region, tile);
        pack.dst_offset.assign(piece.region.size(), 0);
        pack.extent = extent_shape(piece.region).dims();
        pack.what = "pack " + what;
        st.code[k].push_back(std::move(pack));
      }
      Instruction send;
      send.code = Opcode::kSend;
      send.phase = phase;
      send.micro_batch = mb;
      send.in = {buf};
      send.peer = dst.devices[static_cast<size_t>(piece.dst)];
      send.tag = tag_of(c, mb, p);
      send.what = "send " + what;
      st.code[k].push_back(std::move(send));
    }
    return Status::ok();
  }

  Status emit_recvs(StageState& st, const Crossing& c, int32_t scope, Phase phase, int32_t mb) {
    const graph::Value& val = g_.value(c.value);
    const planner::StagePlan& src = plan_.stages[static_cast<size_t>(c.from)];
    const mesh::LogicalMesh& m = st.plan->mesh;
    const std::string name = fmt::format("{}{} from stage {}", val.name, mb_suffix(mb), c.from);
    const int32_t rb =
        add_buffer(st, name, mesh::tile_shape(val.shape, c.plan.received, m), val.dtype);
    for (size_t p = 0; p < c.plan.pieces.size(); ++p) {
      const mesh::TransferPiece& piece = c.plan.pieces[p];
      const size_t k = static_cast<size_t>(piece.dst);
      const auto tile = mesh::tile_ranges(val.shape, c.plan.received, m, st.i0(k), st.i1(k));
      int32_t buf = rb;
      if (piece.region != tile) {
        buf = add_buffer(st, fmt::format("recv {} piece {}", name, p), extent_shape(piece.region),
                         val.dtype);
      }
      Instruction recv;
      recv.code = Opcode::kRecv;
      recv.phase = phase;
      recv.micro_batch = mb;
      recv.out = {buf};
      recv.peer = src.devices[static_cast<size_t>(piece.src)];
      recv.tag = tag_of(c, mb, p);
      recv.what = fmt::format("recv {} from device {}", name, recv.peer);
      st.code[k].push_back(std::move(recv));
      if (buf != rb) {
        Instruction unpack;
        unpack.code = Opcode::kCopyBox;
        unpack.phase = phase;
        unpack.micro_batch = mb;
        unpack.in = {buf};
        unpack.out = {rb};
        unpack.src_offset.assign(piece.region.size(), 0);
        unpack.dst_offset = relative(piece.region, tile);
        unpack.extent = extent_shape(piece.region).dims();
        unpack.what = fmt::format("unpack {} piece {}", name, p);
        st.code[k].push_back(std::move(unpack));
      }
    }
    st.avail[{c.value.value(), scope}].push_back({c.plan.received, rb});
    if (!(c.plan.received == c.recv_spec)) {
      MP_ASSIGN_OR_RETURN(int32_t fin, fetch(st, c.value, scope, c.recv_spec, phase, mb));
      (void)fin;
    }
    return Status::ok();
  }

  // The spec op output o is computed in: the strategy's, before reduce-scatter splits, with the
  // partial sums its resolutions would resolve (none for a synchronised batch norm, whose
  // statistics are all-reduced inside the op).
  ShardingSpec produced_spec(size_t op, size_t o) const {
    const LocalOp& l = local_[op][0];
    ShardingSpec s = l.computed_specs[o];
    if (l.sync_axes != 0) return s;
    for (const shard::OutputResolution& r : strategy_[op].resolutions) {
      if (r.output == o) s.partial = static_cast<uint8_t>(s.partial | (1u << r.axis));
    }
    return s;
  }

  // Emits op `id` of micro-batch mb (-1 in the update phase). Per-micro-batch values live under
  // scope mb; persistent values resharded for this task live under `task_scope`, so a ZeRO-3
  // parameter gathered for one task is freed after it.
  Status emit_op(StageState& st, size_t id, Phase phase, int32_t mb, int32_t task_scope) {
    const Op& op = g_.ops()[id];
    const shard::ShardedOp& s = strategy_[id];
    const std::string what = op.name + mb_suffix(mb);
    const int32_t scope = phase == Phase::kUpdate ? kStepScope : mb;
    std::vector<int32_t> in;
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const int32_t in_scope = is_persistent(g_.value(op.inputs[i])) ? task_scope : scope;
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
          if (op.inputs[i] == alias->second && in[i] == p->second.buffer &&
              spec == p->second.spec) {
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
      if (phase == Phase::kForward || phase == Phase::kBackward) {
        for (const Crossing& c : crossings_) {
          if (c.value == v && c.from == st.index && !c.per_step) {
            MP_RETURN_IF_ERROR(emit_sends(st, c, scope, phase, mb));
          }
        }
        if (grad_update_.count(v.value()) != 0) MP_RETURN_IF_ERROR(accumulate(st, id, o, mb));
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

  // One RUN instruction on every device of the stage, each with its own part of the op.
  static void emit_run(StageState& st, const std::vector<LocalOp>& per_device,
                       const std::vector<int32_t>& in, const std::vector<int32_t>& out, Phase phase,
                       int32_t mb, const std::string& what) {
    for (size_t k = 0; k < st.code.size(); ++k) st.ops[k].push_back(per_device[k]);
    emit_run_instruction(st, in, out, phase, mb, what);
  }
  // The same for parts made for this one instruction (moved, not copied).
  static void emit_run(StageState& st, std::vector<LocalOp>&& per_device,
                       const std::vector<int32_t>& in, const std::vector<int32_t>& out, Phase phase,
                       int32_t mb, const std::string& what) {
    for (size_t k = 0; k < st.code.size(); ++k) st.ops[k].push_back(std::move(per_device[k]));
    emit_run_instruction(st, in, out, phase, mb, what);
  }
  // The RUN of the op part each device added last.
  static void emit_run_instruction(StageState& st, const std::vector<int32_t>& in,
                                   const std::vector<int32_t>& out, Phase phase, int32_t mb,
                                   const std::string& what) {
    Instruction run;
    run.code = Opcode::kRun;
    run.phase = phase;
    run.micro_batch = mb;
    run.in = in;
    run.out = out;
    run.op = static_cast<int32_t>(st.ops[0].size()) - 1;
    run.what = what;
    emit_all(st, std::move(run));
  }

  // All-reduces the per-channel buffer `b` (spec `spec` on the stage's mesh, tensor `shape`)
  // over every axis in `axes` whose group has more than one device, axis 0 first.
  void emit_channel_all_reduces(StageState& st, int32_t b, const Shape& shape, ShardingSpec spec,
                                uint8_t axes, Phase phase, int32_t mb, const std::string& what) {
    const mesh::LogicalMesh& m = st.plan->mesh;
    for (int a = 0; a < 2; ++a) {
      if ((axes & (1u << a)) != 0 && m.size(a) > 1) spec.partial |= static_cast<uint8_t>(1u << a);
    }
    for (int a = 0; a < 2; ++a) {
      if ((spec.partial & (1u << a)) == 0) continue;
      Instruction ins;
      ins.code = Opcode::kCollective;
      ins.phase = phase;
      ins.micro_batch = mb;
      ins.in = {b};
      ins.out = {b};
      ins.spec = spec;
      ins.shape = shape;
      ins.collective.kind = mesh::CollectiveKind::kAllReduce;
      ins.collective.axis = a;
      ins.collective.bytes = st.buffers[static_cast<size_t>(b)].bytes();
      spec.partial = static_cast<uint8_t>(spec.partial & ~(1u << a));
      ins.collective.after = spec;
      ins.collective.cost =
          mesh::collective_cost(mesh::CollectiveKind::kAllReduce, ins.collective.bytes, m, a);
      ins.what = fmt::format("{}: all-reduce", what);
      emit_all(st, std::move(ins));
    }
  }

  // A batch norm whose batch is split over mesh axes (LocalOp::sync_axes) runs as pieces with
  // the per-channel sums all-reduced between them, so every device normalises with the whole
  // batch's statistics (same arithmetic, in the same order, as batch_norm on one device):
  //   forward   x -> sums --all-reduce--> (mean, sq) --all-reduce sq--> (y, rstd)
  //   backward  (dy, x, mean, rstd) -> (dgamma, dbeta) --all-reduce both--> dx
  // The op's compute is charged to its first piece.
  Status emit_synchronised_batch_norm(StageState& st, size_t id, const std::vector<int32_t>& in,
                                      const std::vector<int32_t>& out, Phase phase, int32_t mb) {
    const Op& op = g_.ops()[id];
    const LocalOp& l0 = local_[id][0];
    const std::string what = op.name + mb_suffix(mb);
    const auto piece = [&](OpKind kind, std::vector<Shape> ins, std::vector<Shape> outs,
                           bool first) {
      std::vector<LocalOp> per_device;
      for (const LocalOp& l : local_[id]) {
        LocalOp p;
        p.op.kind = kind;
        p.op.name = l.op.name;
        p.op.attrs.eps = l.op.attrs.eps;
        p.op.attrs.count = l.sync_count;
        p.op.layer = l.op.layer;
        p.op.phase = l.op.phase;
        p.inputs = ins;
        p.outputs = outs;
        if (first) p.work = l.work;
        per_device.push_back(std::move(p));
      }
      return per_device;
    };
    const Shape& x = l0.inputs[op.kind == OpKind::kBatchNorm ? 0 : 1];
    const Shape& channels = l0.outputs[1];
    const Shape& full_channels = g_.value(op.outputs[1]).shape;
    const ShardingSpec channel_spec = l0.computed_specs[1];
    if (op.kind == OpKind::kBatchNorm) {
      // in: x, gamma, beta; out: y, mean, rstd. The sums live in the mean's buffer (turned into
      // the mean in place) and the square sums in rstd's (read per channel before rstd is
      // written there), so the pieces need no buffers of their own.
      const int32_t sums = out[1];
      const int32_t sq = out[2];
      emit_run(st, piece(OpKind::kBatchNormSums, {x}, {channels}, true), {in[0]}, {sums}, phase, mb,
               what + " (sums)");
      emit_channel_all_reduces(st, sums, full_channels, channel_spec, l0.sync_axes, phase, mb,
                               what + " channel sums");
      emit_run(st, piece(OpKind::kBatchNormStats, {x, channels}, {channels, channels}, false),
               {in[0], sums}, {out[1], sq}, phase, mb, what + " (statistics)");
      emit_channel_all_reduces(st, sq, full_channels, channel_spec, l0.sync_axes, phase, mb,
                               what + " square sums");
      emit_run(st,
               piece(OpKind::kBatchNormApply, {x, channels, channels, l0.inputs[1], l0.inputs[2]},
                     {l0.outputs[0], channels}, false),
               {in[0], out[1], sq, in[1], in[2]}, {out[0], out[2]}, phase, mb, what);
      return Status::ok();
    }
    if (op.kind == OpKind::kBatchNormGrad) {
      // in: dy, x, mean, rstd, gamma; out: dx, dgamma, dbeta
      emit_run(st,
               piece(OpKind::kBatchNormGradSums, {l0.inputs[0], x, l0.inputs[2], l0.inputs[3]},
                     {channels, channels}, true),
               {in[0], in[1], in[2], in[3]}, {out[1], out[2]}, phase, mb, what + " (sums)");
      emit_channel_all_reduces(st, out[1], full_channels, channel_spec, l0.sync_axes, phase, mb,
                               what + " dgamma");
      emit_channel_all_reduces(st, out[2], full_channels, channel_spec, l0.sync_axes, phase, mb,
                               what + " dbeta");
      emit_run(
          st,
          piece(OpKind::kBatchNormGradApply,
                {l0.inputs[0], x, l0.inputs[2], l0.inputs[3], l0.inputs[4], channels, channels},
                {l0.outputs[0]}, false),
          {in[0], in[1], in[2], in[3], in[4], out[1], out[2]}, {out[0]}, phase, mb, what);
      return Status::ok();
    }
    return make_error(Errc::kInternal, "op '{}' ({}) has synchronised statistics", op.name,
                      op_kind_name(op.kind));
  }

  // Adds micro-batch mb's gradient to its accumulator (before or after its synchronisation).
  Status accumulate(StageState& st, size_t producer, size_t o, int32_t mb) {
    const ValueId v = g_.ops()[producer].outputs[o];
    const graph::Value& val = g_.value(v);
    const ShardingSpec spec =
        options_.defer_grad_sync ? produced_spec(producer, o) : strategy_[producer].outputs[o];
    MP_ASSIGN_OR_RETURN(int32_t src, fetch(st, v, mb, spec, Phase::kBackward, mb));
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

  // After the last micro-batch: resolve each accumulated gradient into the spec its update
  // reads (or the spec it is sent in), average it, and send it when the update is elsewhere.
  Status grad_sync(StageState& st) {
    // First every gradient's synchronisation (consecutive all-reduces, which fuse_all_reduces
    // packs into one collective), then each average and send.
    std::vector<std::pair<int32_t, const Crossing*>> synced;  // (buffer, transfer out or null)
    for (auto& [vid, e] : st.acc) {
      const ValueId v(vid);
      const size_t u = static_cast<size_t>(grad_update_.at(vid));
      const Crossing* out = nullptr;
      for (const Crossing& c : crossings_) {
        if (c.value == v && c.per_step && c.from == st.index) out = &c;
      }
      const ShardingSpec target = out != nullptr ? out->send_spec : strategy_[u].inputs[1];
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

  Status emit_stage(StageState& st) {
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
      const int32_t scope_for_step_values = st.next_task_scope--;
      for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
        if (stage_of_op_[i] != st.index || g_.ops()[i].phase != want) continue;
        MP_RETURN_IF_ERROR(emit_op(st, i, phase, mb, scope_for_step_values));
      }
    }
    MP_RETURN_IF_ERROR(grad_sync(st));
    for (const Crossing& c : crossings_) {
      if (c.to == st.index && c.per_step && !is_persistent(g_.value(c.value))) {
        MP_RETURN_IF_ERROR(emit_recvs(st, c, kStepScope, Phase::kUpdate, -1));
      }
    }
    for (size_t i = 0; i < static_cast<size_t>(g_.num_ops()); ++i) {
      if (stage_of_op_[i] != st.index || g_.ops()[i].phase != OpPhase::kUpdate) continue;
      MP_RETURN_IF_ERROR(emit_op(st, i, Phase::kUpdate, -1, kStepScope));
    }
    return Status::ok();
  }

  const planner::Plan& plan_;
  const graph::Graph& g_;
  LowerOptions options_;
  planner::PlanBinding binding_;
  planner::Schedule schedule_ = planner::Schedule::k1F1B;
  int32_t M_ = 1;
  std::vector<int32_t> stage_of_op_;
  std::vector<shard::ShardedOp> strategy_;
  std::vector<std::vector<LocalOp>> local_;  // per op, per device of its stage
  std::map<int32_t, ValueId> alias_source_;  // updated value -> persistent source
  std::map<int32_t, int32_t> owner_;         // persistent value -> owner stage
  std::map<int32_t, bool> owner_by_update_;
  std::map<int32_t, int32_t> grad_update_;  // gradient value -> update op
  std::map<int32_t, int32_t> input_index_;  // data input value -> Program::inputs index
  std::vector<Crossing> crossings_;
  int32_t loss_device_ = -1;
};

}  // namespace

Expected<Program> lower(const planner::Plan& plan, const graph::Graph& g,
                        const LowerOptions& options) {
  Lowering l(plan, g, options);
  return l.run();
}

}  // namespace meshpipe::runtime

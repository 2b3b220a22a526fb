// The lowering's state and steps, shared by the files that emit its parts (internal to
// runtime/): lower.cc (set-up, the stage loop, the program), lower_emit.cc (buffers, fetching
// and resharding values, ops), lower_transfers.cc (cross-stage sends and receives),
// lower_batch_norm.cc (synchronised batch norm as pieces with all-reduces) and
// lower_gradients.cc (accumulation and synchronisation of gradients). See lower.cc for the
// design.
#pragma once

#include <algorithm>
#include <climits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mesh/cross_mesh.h"
#include "planner/plan_binding.h"
#include "runtime/lower.h"
#include "shard/op_layout.h"

namespace meshpipe::runtime::internal {

using graph::Op;
using graph::OpKind;
using graph::OpPhase;
using graph::ValueRole;
using mesh::ShardingSpec;

inline constexpr int32_t kStepScope = -1;
inline constexpr int32_t kNoScope = INT32_MIN;  // emit_op: the default scope

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
  std::vector<std::vector<Instruction>> code;  // per device of the stage
  std::vector<std::vector<LocalOp>> ops;       // per device of the stage
  // The index in `ops` of a graph op's local ops (local_[op]), shared by every micro-batch's RUN.
  std::map<const std::vector<LocalOp>*, int32_t> op_index;
  std::map<std::pair<int32_t, int32_t>, std::vector<Entry>> avail;  // (value, scope)
  std::map<int32_t, Entry> persistent;                              // stored tiles
  std::map<int32_t, Entry> acc;                                     // gradient accumulators
  std::map<int32_t, int32_t> parent;  // scope -> the scope searched next (recomputation's -> mb)
  int32_t next_task_scope = -2;
  int64_t i0(size_t k) const { return static_cast<int64_t>(k) / plan->mesh.size(1); }
  int64_t i1(size_t k) const { return static_cast<int64_t>(k) % plan->mesh.size(1); }
};

inline std::vector<int64_t> begins(const std::vector<mesh::DimRange>& r) {
  std::vector<int64_t> b;
  for (const mesh::DimRange& x : r) b.push_back(x.begin);
  return b;
}

inline std::vector<int64_t> relative(const std::vector<mesh::DimRange>& r,
                                     const std::vector<mesh::DimRange>& base) {
  std::vector<int64_t> b;
  for (size_t d = 0; d < r.size(); ++d) b.push_back(r[d].begin - base[d].begin);
  return b;
}

inline Shape extent_shape(const std::vector<mesh::DimRange>& r) {
  std::vector<int64_t> dims;
  for (const mesh::DimRange& x : r) dims.push_back(x.end - x.begin);
  return Shape(dims);
}

inline bool is_persistent(const graph::Value& v) {
  return v.role == ValueRole::kParameter || v.role == ValueRole::kOptimizerState;
}
class Lowering {
 public:
  Lowering(const planner::Plan& plan, const graph::Graph& g, const LowerOptions& options)
      : plan_(plan), g_(g), options_(options) {}

  Expected<Program> run();

 private:
  // ---- set-up ----

  Status assign_stages();

  Status make_strategies();

  // The spec a persistent value is stored in on its owner stage.
  ShardingSpec stored_spec(ValueId v);

  Status find_crossings();

  // ---- emission helpers ----

  int32_t add_buffer(StageState& st, std::string name, Shape shape, DType dtype,
                     BufferKind kind = BufferKind::kStep);

  static void emit_all(StageState& st, const Instruction& ins);
  // The last device takes the instruction itself, the others a copy.
  static void emit_all(StageState& st, Instruction&& ins);

  static std::string mb_suffix(int32_t mb);

  // A buffer holding value v in spec `want`, found under scope `scope` (then the step scope),
  // resharded inside the mesh when it is only available in another spec.
  Expected<int32_t> fetch(StageState& st, ValueId v, int32_t scope, const ShardingSpec& want,
                          Phase phase, int32_t mb);

  // Emits the collectives that take buffer `from` (spec `a`) to spec `b`; returns the result.
  // All-reduces run in place on intermediate buffers and, when `from` holds partial sums (only
  // ever read to be resolved), on `from` itself: then `*from_spec` becomes what `from` holds
  // afterwards.
  Expected<int32_t> reshard(StageState& st, ValueId v, int32_t from, const ShardingSpec& a,
                            const ShardingSpec& b, Phase phase, int32_t mb, const std::string& what,
                            ShardingSpec* from_spec = nullptr);

  Expected<int32_t> load_input(StageState& st, ValueId v, int32_t scope, const ShardingSpec& want,
                               Phase phase, int32_t mb);

  uint64_t tag_of(const Crossing& c, int32_t mb, size_t piece) const;

  Status emit_sends(StageState& st, const Crossing& c, int32_t scope, Phase phase, int32_t mb);

  Status emit_recvs(StageState& st, const Crossing& c, int32_t scope, Phase phase, int32_t mb);

  // The spec op output o is computed in: the strategy's, before reduce-scatter splits, with the
  // partial sums its resolutions would resolve (none for a synchronised batch norm, whose
  // statistics are all-reduced inside the op).
  ShardingSpec produced_spec(size_t op, size_t o) const;

  // Emits op `id` of micro-batch mb (-1 in the update phase). Per-micro-batch values live under
  // scope mb (or `value_scope` when given, searched first, then its parents); persistent values
  // resharded for this task live under `task_scope`, so a ZeRO-3 parameter gathered for one task
  // is freed after it. A `recompute` emission repeats a forward op inside the backward: no
  // sends, no loss report. `fetch_scope` (a scope whose parent is the value scope): where the
  // inputs are looked up first and resharded copies of them are kept, so that they are freed
  // after the task (a recomputing stage's forward keeps only its units' inputs as produced).
  Status emit_op(StageState& st, size_t id, Phase phase, int32_t mb, int32_t task_scope,
                 int32_t value_scope = kNoScope, bool recompute = false,
                 int32_t fetch_scope = kNoScope);

  // The backward task of micro-batch mb on a recomputing stage: each unit's forward (ops of one
  // clustered layer and one model layer tag) is emitted again right before the first backward
  // op that reads one of its values. The task's values live under a fresh scope whose parent is
  // mb, so recomputed values shadow the forward's, which are then dead after the forward except
  // where a recomputation reads them (the units' inputs: the stash).
  Status emit_recomputing_backward(StageState& st, int32_t mb);

  // The planner's unit of op `op`: (clustered layer, model layer tag).
  std::pair<int32_t, int32_t> unit_of(size_t op) const;

  // One RUN instruction on every device of the stage, each with its own part of the op.
  static void emit_run(StageState& st, const std::vector<LocalOp>& per_device,
                       const std::vector<int32_t>& in, const std::vector<int32_t>& out, Phase phase,
                       int32_t mb, const std::string& what);
  // The same for parts made for this one instruction (moved, not copied).
  static void emit_run(StageState& st, std::vector<LocalOp>&& per_device,
                       const std::vector<int32_t>& in, const std::vector<int32_t>& out, Phase phase,
                       int32_t mb, const std::string& what);
  // The RUN of op part `op` (an index into every device's ops).
  static void emit_run_instruction(StageState& st, const std::vector<int32_t>& in,
                                   const std::vector<int32_t>& out, Phase phase, int32_t mb,
                                   const std::string& what, int32_t op);

  // All-reduces the per-channel buffer `b` (spec `spec` on the stage's mesh, tensor `shape`)
  // over every axis in `axes` whose group has more than one device, axis 0 first.
  void emit_channel_all_reduces(StageState& st, int32_t b, const Shape& shape, ShardingSpec spec,
                                uint8_t axes, Phase phase, int32_t mb, const std::string& what);

  // A batch norm whose batch is split over mesh axes (LocalOp::sync_axes) runs as pieces with
  // the per-channel sums all-reduced between them, so every device normalises with the whole
  // batch's statistics (same arithmetic, in the same order, as batch_norm on one device):
  //   forward   x -> sums --all-reduce--> (mean, sq) --all-reduce sq--> (y, rstd)
  //   backward  (dy, x, mean, rstd) -> (dgamma, dbeta) --all-reduce both--> dx
  // The op's compute is charged to its first piece.
  Status emit_synchronised_batch_norm(StageState& st, size_t id, const std::vector<int32_t>& in,
                                      const std::vector<int32_t>& out, Phase phase, int32_t mb);

  // Adds micro-batch mb's gradient to its accumulator (before or after its synchronisation).
  Status accumulate(StageState& st, size_t producer, size_t o, int32_t mb, int32_t scope);

  // After the last micro-batch: resolve each accumulated gradient into the spec its update
  // reads (or the spec it is sent in), average it, and send it when the update is elsewhere.
  Status grad_sync(StageState& st);

  // After the per-step receives: each deferred sum of this stage adds its second piece into the
  // first (both synchronised, in the spec the update reads), which becomes the gradient.
  Status add_pieces(StageState& st);

  // Finds the deferred sums (after assign_stages).
  void find_deferred_sums();

  // The spec an accumulated value is synchronised into: its update's (a piece: its sum's
  // update's), or the spec it is sent in when `out` (its per-step crossing) is given.
  Expected<ShardingSpec> sync_target(ValueId v, const Crossing* out) const;

  Status emit_stage(StageState& st);

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
  // A parameter's gradient summed from two pieces (a tied weight read twice: GPT's embedding
  // and LM head), with several micro-batches: each piece is accumulated where it is made, like a
  // gradient, synchronised once per step (and sent once per step when made on another stage),
  // and the pieces are added after the synchronisation, before the update. Per micro-batch the
  // sum is not computed, nothing crosses stages and no piece is all-reduced (the planner counts
  // pieces as gradients too: planner/sharding_pass.cc, stage_costs.cc).
  std::set<size_t> deferred_sums_;          // the sum ops
  std::map<int32_t, size_t> piece_sum_;     // piece value -> the sum op that adds it
  std::map<int32_t, int32_t> input_index_;  // data input value -> Program::inputs index
  std::vector<Crossing> crossings_;
  int32_t loss_device_ = -1;
};

}  // namespace meshpipe::runtime::internal

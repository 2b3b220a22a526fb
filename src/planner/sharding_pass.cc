// The intra-op pass: groups of ops sharing one decision, the IlpProblem, and decoding.
#include "planner/sharding_pass.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "core/logging.h"
#include "graph/autodiff.h"
#include "planner/internal/memory_scan.h"
#include "planner/strategy.h"
#include "shard/iteration_space.h"

namespace meshpipe::planner {

using internal::MemoryScan;
using internal::scan_memory;

using graph::Op;
using graph::OpKind;
using mesh::ShardingSpec;

Status ShardingOptions::validate() const {
  if ((first_layer < 0) != (last_layer < 0) || first_layer > last_layer) {
    return make_error(Errc::kInvalidArgument, "layer range {}:{} is invalid", first_layer,
                      last_layer);
  }
  if (micro_batches < 1) {
    return make_error(Errc::kInvalidArgument, "micro_batches must be >= 1, got {}", micro_batches);
  }
  if (parameter_mode == ParameterMode::kZero2 && !prefer_reduce_scatter) {
    return make_error(Errc::kInvalidArgument, "ZeRO-2 parameters need prefer_reduce_scatter");
  }
  if (solver.time_limit_seconds <= 0) {
    return make_error(Errc::kInvalidArgument, "solver time limit must be > 0");
  }
  return Status::ok();
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One op or source value inside a group, with its strategy for each of the group's choices.
struct Member {
  OpId op;            // invalid for a source value
  ValueId source;     // the value, for source members
  int followed = -1;  // input index this op follows (-1: leader or source)
  std::vector<Strategy> table;
};

// Ops and sources that share one ILP node (one strategy index for all).
struct Group {
  std::string name;
  std::vector<Member> members;
  std::vector<int> zero_axis;  // per strategy: ZeRO-2 axis of a parameter group, or -1
  size_t size() const { return members.front().table.size(); }
};

struct Where {
  int group = -1;
  int member = -1;
  int output = 0;
};

bool is_leader_kind(OpKind k) {
  switch (k) {
    case OpKind::kDot:
    case OpKind::kConv2d:
    case OpKind::kConv2dGradInput:
    case OpKind::kConv2dGradFilter:
    case OpKind::kEmbedding:
    case OpKind::kEmbeddingGrad:
    case OpKind::kTopKGating:
    case OpKind::kTopKGatingGrad:
    case OpKind::kConstant:
      return true;
    default:
      return false;
  }
}

bool is_heavy(OpKind k) {
  return k == OpKind::kDot || k == OpKind::kConv2d || k == OpKind::kConv2dGradInput ||
         k == OpKind::kConv2dGradFilter;
}

class Pass {
 public:
  Pass(const graph::Graph& g, const mesh::LogicalMesh& mesh, const CostModel& cost,
       const ShardingOptions& options)
      : g_(g), mesh_(mesh), cost_(cost), options_(options) {
    ctx_.graph = &g_;
    ctx_.mesh = &mesh_;
    ctx_.cost = &cost_;
  }

  Status select_ops() {
    for (const Op& op : g_.ops()) {
      if (is_optimizer_update(op.kind) && op.inputs.size() > 1)
        gradient_values_.insert(op.inputs[1]);
    }
    // A gradient summed from two pieces: with several micro-batches the runtime accumulates and
    // synchronises each piece as a gradient and adds them once per step (runtime/lower.cc
    // find_deferred_sums).
    if (options_.micro_batches > 1) piece_sums_ = graph::gradient_piece_sums(g_);
    for (OpId sum : piece_sums_) {
      for (ValueId in : g_.op(sum).inputs) gradient_values_.insert(in);
    }
    for (int64_t i = 0; i < g_.num_ops(); ++i) {
      const Op& op = g_.ops()[static_cast<size_t>(i)];
      if (options_.first_layer < 0 ||
          (op.layer >= options_.first_layer && op.layer <= options_.last_layer)) {
        ops_.push_back(OpId(static_cast<int32_t>(i)));
      }
    }
    if (ops_.empty()) {
      return make_error(Errc::kInvalidArgument, "layers {}:{} contain no ops (the graph has {})",
                        options_.first_layer, options_.last_layer, g_.num_layers());
    }
    return Status::ok();
  }

  // Which dim of every value carries the data batch (-1: none), propagated from the data inputs'
  // dim 0 through each op's iteration space, over the whole graph.
  Status analyse_batch_dims() {
    batch_dim_.assign(static_cast<size_t>(g_.num_values()), -1);
    for (ValueId v : g_.values_with_role(graph::ValueRole::kInput)) {
      if (g_.value(v).shape.rank() > 0 && g_.value(v).shape[0] > 1) batch_dim_[v.index()] = 0;
    }
    for (const Op& op : g_.ops()) {
      const int it = batch_iteration_dim(op);
      if (it < 0) continue;
      MP_ASSIGN_OR_RETURN(IterSpace space, iteration_space(g_, op));
      for (size_t o = 0; o < op.outputs.size(); ++o) {
        const auto& map = space.outputs[o];
        const auto pos = std::find(map.begin(), map.end(), it);
        if (pos != map.end())
          batch_dim_[op.outputs[o].index()] = static_cast<int>(pos - map.begin());
      }
    }
    return Status::ok();
  }

  // The iteration dim an input's batch dim maps to (-1: none).
  int batch_iteration_dim(const Op& op) const {
    auto space = iteration_space(g_, op);
    if (!space.has_value()) return -1;
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const int d = batch_dim_[op.inputs[i].index()];
      if (d < 0 || d >= static_cast<int>(space->inputs[i].size())) continue;
      const int it = space->inputs[i][static_cast<size_t>(d)];
      if (it >= 0 && space->splittable[static_cast<size_t>(it)]) return it;
    }
    return -1;
  }

  bool force_batch() const {
    switch (options_.force_batch_to_axis0) {
      case ShardingOptions::ForceBatch::kOn:
        return mesh_.size(0) > 1;
      case ShardingOptions::ForceBatch::kOff:
        return false;
      case ShardingOptions::ForceBatch::kAuto:
        return mesh_.size(0) > 1 && mesh_.size(1) > 1;
    }
    return false;
  }

  Status build_groups() {
    if (force_batch() || options_.canonical_boundaries) MP_RETURN_IF_ERROR(analyse_batch_dims());
    for (OpId id : ops_) {
      const Op& op = g_.op(id);
      MP_ASSIGN_OR_RETURN(IterSpace space, iteration_space(g_, op));
      if (is_optimizer_update(op.kind)) {
        MP_RETURN_IF_ERROR(add_update(id, space));
        continue;
      }
      for (ValueId in : op.inputs) MP_RETURN_IF_ERROR(ensure_source(in));
      const int follow = is_leader_kind(op.kind) ? -1 : pick_followed(op);
      bool placed = false;
      if (follow >= 0) {
        const Where w = where_.at(op.inputs[static_cast<size_t>(follow)]);
        Member m{id, ValueId(), follow, {}};
        bool ok = true;
        for (size_t p = 0; p < groups_[w.group].size() && ok; ++p) {
          auto s = follow_strategy(ctx_, op, space, static_cast<size_t>(follow), spec_at(w, p));
          ok = s.has_value();
          if (ok) m.table.push_back(std::move(*s));
        }
        if (ok) {
          place(op, w.group, std::move(m));
          placed = true;
        }
      }
      if (!placed) {
        MP_ASSIGN_OR_RETURN(auto table,
                            enumerate_strategies(ctx_, op, options_.prefer_reduce_scatter));
        const int batch_it = force_batch() ? batch_iteration_dim(op) : -1;
        if (batch_it >= 0) {
          // Keep the strategies with the batch on axis 0 (Alpa's forcing), when there are any.
          std::vector<Strategy> kept;
          for (const Strategy& st : table) {
            const auto axes = mesh::dim_axes(st.iter[static_cast<size_t>(batch_it)]);
            if (!axes.empty() && axes.front() == 0) kept.push_back(st);
          }
          if (!kept.empty()) table = std::move(kept);
        }
        Group grp;
        grp.name = op.name;
        grp.zero_axis.assign(table.size(), -1);
        grp.members.push_back(Member{id, ValueId(), -1, std::move(table)});
        groups_.push_back(std::move(grp));
        place_outputs(op, static_cast<int>(groups_.size() - 1), 0);
      }
    }
    return Status::ok();
  }

  Status build_problem(IlpProblem& problem) {
    problem.nodes.resize(groups_.size());
    std::map<std::pair<int, int>, size_t> edge_index;
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      Group& grp = groups_[gi];
      IlpProblem::Node& node = problem.nodes[gi];
      node.name = grp.name;
      node.cost.assign(grp.size(), 0.0);
      node.memory.assign(grp.size(), 0.0);
      for (const Member& m : grp.members) {
        const Scale sc = scale_of(m);
        for (size_t p = 0; p < grp.size(); ++p) {
          node.cost[p] += sc.compute * m.table[p].compute + sc.comm * m.table[p].communication;
          node.memory[p] += m.table[p].memory;
        }
        if (!m.op.is_valid()) continue;
        const Op& op = g_.op(m.op);
        for (size_t i = 0; i < op.inputs.size(); ++i) {
          if (static_cast<int>(i) == m.followed) continue;
          const ValueId u = op.inputs[i];
          const Where w = where_.at(u);
          const graph::Value& v = g_.value(u);
          if (w.group == static_cast<int>(gi)) {
            for (size_t p = 0; p < grp.size(); ++p) {
              node.cost[p] += sc.input * reshard(v, spec_at(w, p), m.table[p].inputs[i]);
            }
            continue;
          }
          const auto key = std::make_pair(w.group, static_cast<int>(gi));
          auto it = edge_index.find(key);
          if (it == edge_index.end()) {
            IlpProblem::Edge e;
            e.src = w.group;
            e.dst = static_cast<int32_t>(gi);
            e.cost.assign(groups_[w.group].size() * grp.size(), 0.0);
            problem.edges.push_back(std::move(e));
            it = edge_index.emplace(key, problem.edges.size() - 1).first;
          }
          IlpProblem::Edge& e = problem.edges[it->second];
          for (size_t q = 0; q < groups_[w.group].size(); ++q) {
            for (size_t p = 0; p < grp.size(); ++p) {
              e.cost[q * grp.size() + p] +=
                  sc.input * reshard(v, spec_at(w, q), m.table[p].inputs[i]);
            }
          }
        }
      }
    }
    if (options_.canonical_boundaries) add_boundary_conversions(problem);
    build_liveness(problem);
    problem.memory_budget = options_.memory_budget;
    return problem.validate();
  }

  ShardingPlan decode(const IlpSolution& sol) const {
    ShardingPlan plan;
    // Gradient accumulation, priced after the solve: the layouts stay the ILP's choice, the
    // stage's time (which the stage DP weighs across micro-batch counts) counts it.
    double accumulation = 0.0;
    plan.mesh = mesh_;
    for (const auto& [v, w] : where_) plan.specs[v] = spec_at(w, sol.choice[w.group]);
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      const size_t p = static_cast<size_t>(sol.choice[gi]);
      for (const Member& m : groups_[gi].members) {
        const Strategy& s = m.table[p];
        const Scale sc = scale_of(m);
        const double accumulate = sc.compute * accumulate_seconds(m, s);
        const double compute = sc.compute * s.compute + accumulate;
        accumulation += accumulate;
        plan.compute_seconds += compute;
        plan.communication_seconds += sc.comm * s.communication;
        if (m.op.is_valid()) {
          plan.ops.push_back({m.op, s.name, s.layout(), compute, sc.comm * s.communication});
        } else if (is_persistent(m.source)) {
          plan.persistent_memory += Bytes(cost_.allocation_bytes(static_cast<int64_t>(s.memory)));
        }
      }
    }
    std::sort(plan.ops.begin(), plan.ops.end(),
              [](const OpDecision& a, const OpDecision& b) { return a.op < b.op; });
    plan.total_seconds = sol.objective + accumulation;
    plan.resharding_seconds =
        std::max(0.0, plan.total_seconds - plan.compute_seconds - plan.communication_seconds);
    std::map<OpId, const Strategy*> chosen;
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      for (const Member& m : groups_[gi].members) {
        if (m.op.is_valid()) chosen[m.op] = &m.table[static_cast<size_t>(sol.choice[gi])];
      }
    }
    const MemoryScan scan =
        scan_memory({g_, mesh_, cost_, options_.micro_batches, ops_, gradient_values_, piece_sums_},
                    plan, chosen);
    plan.gradient_memory = Bytes(scan.gradients);
    plan.stash_memory = Bytes(scan.stash);
    plan.forward_parameter_copies = Bytes(scan.forward_copies);
    plan.peak_memory = plan.persistent_memory + Bytes(scan.peak);
    plan.first_backward_memory = plan.persistent_memory + Bytes(scan.first_peak);
    plan.recompute_peak_memory = plan.persistent_memory + Bytes(scan.recompute_peak);
    plan.recompute_first_backward_memory =
        plan.persistent_memory + Bytes(scan.recompute_first_peak);
    plan.recompute_stash_memory = Bytes(scan.recompute_stash);
    if (options_.micro_batches > 1) {
      plan.peak_memory += plan.gradient_memory;
      plan.recompute_peak_memory += plan.gradient_memory;
    }
    return plan;
  }

  int64_t num_ops() const { return static_cast<int64_t>(ops_.size()); }

 private:
  // Per-micro-batch weights of a member's costs: optimizer updates (and the resharding into
  // them) run once per step, a parameter gradient's collectives once per step.
  struct Scale {
    double compute = 1.0;
    double comm = 1.0;
    double input = 1.0;
  };
  Scale scale_of(const Member& m) const {
    Scale s;
    if (!m.op.is_valid() || options_.micro_batches <= 1) return s;
    const double once = 1.0 / static_cast<double>(options_.micro_batches);
    const Op& op = g_.op(m.op);
    if (op.phase == graph::OpPhase::kUpdate || piece_sums_.count(m.op) != 0) {
      return {once, once, once};
    }
    for (ValueId out : op.outputs) {
      if (gradient_values_.count(out) != 0) s.comm = once;
    }
    return s;
  }

  // With several micro-batches the runtime adds every parameter gradient into its accumulator
  // once per micro-batch (the lowering's accumulate: the gradient's tile read and written, as
  // the simulator prices it): memory-bound work per micro-batch that grows with the tile, so
  // replicated parameters pay it in full on every device.
  double accumulate_seconds(const Member& m, const Strategy& s) const {
    if (!m.op.is_valid() || options_.micro_batches <= 1 || piece_sums_.count(m.op) != 0) return 0.0;
    const Op& op = g_.op(m.op);
    double t = 0.0;
    for (size_t o = 0; o < op.outputs.size() && o < s.outputs.size(); ++o) {
      if (gradient_values_.count(op.outputs[o]) == 0) continue;
      const graph::Value& v = g_.value(op.outputs[o]);
      // Accumulated as computed: before a reduce-scatter splits it.
      int64_t bytes = mesh::tile_shape(v.shape, s.outputs[o], mesh_).numel() * dtype_size(v.dtype);
      for (const shard::OutputResolution& r : s.resolutions) {
        if (r.output == o && r.kind == mesh::CollectiveKind::kReduceScatter) {
          bytes *= mesh_.size(r.axis);
        }
      }
      t += cost_.compute({Flops(0.0), Bytes(2 * bytes), DType::kF32, false, {}, {}}).value();
    }
    return t;
  }

  bool is_persistent(ValueId v) const {
    const auto role = g_.value(v).role;
    return role == graph::ValueRole::kParameter || role == graph::ValueRole::kOptimizerState;
  }

  const ShardingSpec& spec_at(const Where& w, size_t p) const {
    return groups_[static_cast<size_t>(w.group)]
        .members[static_cast<size_t>(w.member)]
        .table[p]
        .outputs[static_cast<size_t>(w.output)];
  }

  double reshard(const graph::Value& v, const ShardingSpec& from, const ShardingSpec& to) {
    if (from == to) return 0.0;
    const auto key = std::make_tuple(v.shape.dims(), v.dtype, from, to);
    auto it = reshard_cache_.find(key);
    if (it != reshard_cache_.end()) return it->second;
    auto c = cost_.resharding(v.shape, v.dtype, from, to, mesh_);
    const double r = c.has_value() ? c->value() : kInf;
    reshard_cache_.emplace(key, r);
    return r;
  }

  // An external value (source or boundary activation) becomes a group of its own.
  Status ensure_source(ValueId v) {
    if (where_.count(v) != 0) return Status::ok();
    Group grp;
    grp.name = g_.value(v).name;
    auto table = enumerate_source_strategies(ctx_, v);
    if (options_.batch_split_inputs && g_.value(v).role == graph::ValueRole::kInput &&
        g_.value(v).shape.rank() > 0) {
      const ShardingSpec want = batch_split(g_.value(v).shape);
      std::erase_if(table, [&](const Strategy& s) { return !(s.outputs[0] == want); });
    }
    if (options_.canonical_boundaries && g_.value(v).producer.is_valid()) {
      const ShardingSpec want = canonical(v);
      std::erase_if(table, [&](const Strategy& s) { return !(s.outputs[0] == want); });
    }
    if (table.empty()) {
      return make_error(Errc::kInfeasible, "value '{}' {} has no valid layout on mesh {}", grp.name,
                        g_.value(v).shape.to_string(), mesh_.to_string());
    }
    grp.zero_axis.assign(table.size(), -1);
    if (options_.prefer_reduce_scatter && g_.value(v).role == graph::ValueRole::kParameter) {
      add_zero_variants(grp, table);
    }
    if (g_.value(v).role == graph::ValueRole::kParameter) restrict_parameter(grp, table);
    grp.members.push_back(Member{OpId(), v, -1, std::move(table)});
    groups_.push_back(std::move(grp));
    where_[v] = {static_cast<int>(groups_.size() - 1), 0, 0};
    return Status::ok();
  }

  // Values produced here and read by ops outside the stage leave in the canonical layout: the
  // conversion is charged to the producing node.
  void add_boundary_conversions(IlpProblem& problem) {
    std::set<OpId> inside(ops_.begin(), ops_.end());
    std::set<ValueId> leaving;
    for (int64_t i = 0; i < g_.num_ops(); ++i) {
      const OpId id(static_cast<int32_t>(i));
      if (inside.count(id) != 0) continue;
      for (ValueId v : g_.op(id).inputs) {
        const graph::Value& val = g_.value(v);
        if (val.producer.is_valid() && inside.count(val.producer) != 0) leaving.insert(v);
      }
    }
    for (ValueId v : leaving) {
      const Where w = where_.at(v);
      const ShardingSpec want = canonical(v);
      // A gradient (or a piece of one) leaves once per step, accumulated.
      const double scale = gradient_values_.count(v) != 0 && options_.micro_batches > 1
                               ? 1.0 / static_cast<double>(options_.micro_batches)
                               : 1.0;
      auto& cost = problem.nodes[static_cast<size_t>(w.group)].cost;
      for (size_t p = 0; p < cost.size(); ++p) {
        cost[p] += scale * reshard(g_.value(v), spec_at(w, p), want);
      }
    }
  }

  // Keeps the parameter layouts the options' parameter mode allows (when any is left).
  void restrict_parameter(Group& grp, std::vector<Strategy>& table) const {
    using Mode = ShardingOptions::ParameterMode;
    const Mode mode = options_.parameter_mode;
    if (mode == Mode::kFree) return;
    const auto keep = [&](size_t p) {
      const ShardingSpec& s = table[p].outputs[0];
      const bool whole = s.used_axes() == 0;
      switch (mode) {
        case Mode::kReplicated:
          return whole && grp.zero_axis[p] < 0;
        case Mode::kZero2:
          return whole && grp.zero_axis[p] == 0;
        case Mode::kZero3: {
          int split = 0;
          for (auto d : s.dims) split += d == mesh::DimSharding::kS0 ? 1 : 0;
          return split == 1 && s.used_axes() == 1 && grp.zero_axis[p] < 0;
        }
        case Mode::kFree:
          return true;
      }
      return true;
    };
    std::vector<Strategy> kept;
    std::vector<int> axes;
    for (size_t p = 0; p < table.size(); ++p) {
      if (!keep(p)) continue;
      kept.push_back(table[p]);
      axes.push_back(grp.zero_axis[p]);
    }
    if (kept.empty() && mode == Mode::kZero3) {  // nothing divisible: keep it whole
      for (size_t p = 0; p < table.size(); ++p) {
        if (table[p].outputs[0].used_axes() == 0 && grp.zero_axis[p] < 0) {
          kept.push_back(table[p]);
          axes.push_back(-1);
        }
      }
    }
    if (kept.empty()) return;
    table = std::move(kept);
    grp.zero_axis = std::move(axes);
  }

  // The canonical boundary layout of a value: its batch dim (if any) over mesh axis 0 when that
  // divides it, everything else whole.
  ShardingSpec canonical(ValueId v) const {
    const graph::Value& val = g_.value(v);
    ShardingSpec s = ShardingSpec::replicated(val.shape.rank());
    const int d = static_cast<size_t>(v.index()) < batch_dim_.size() ? batch_dim_[v.index()] : -1;
    if (d >= 0 && mesh_.size(0) > 1 && val.shape[d] % mesh_.size(0) == 0) {
      s.dims[static_cast<size_t>(d)] = mesh::DimSharding::kS0;
    }
    return s;
  }

  // Dim 0 split over every mesh axis (of size > 1) whose size divides it, axis 0 first.
  ShardingSpec batch_split(const Shape& shape) const {
    ShardingSpec s = ShardingSpec::replicated(shape.rank());
    std::vector<int> axes;
    int64_t shards = 1;
    for (int a = 0; a < 2; ++a) {
      if (mesh_.size(a) > 1 && shape[0] % (shards * mesh_.size(a)) == 0) {
        axes.push_back(a);
        shards *= mesh_.size(a);
      }
    }
    s.dims[0] = mesh::dim_sharding_of(axes);
    return s;
  }

  // ZeRO-2 variants: the parameter keeps layout s, its gradient and optimizer state are split
  // over an unused mesh axis a (the update all-gathers the new parameter).
  void add_zero_variants(Group& grp, std::vector<Strategy>& table) {
    const size_t n = table.size();
    for (size_t p = 0; p < n; ++p) {
      for (int a = 0; a < 2; ++a) {
        if (mesh_.size(a) <= 1 || (table[p].outputs[0].used_axes() & (1u << a)) != 0) continue;
        Strategy s = table[p];
        s.name += fmt::format(" (ZeRO-2 over axis {})", a);
        table.push_back(std::move(s));
        grp.zero_axis.push_back(a);
      }
    }
  }

  // The input with the most recent producer (the main data path), preferring floating values.
  int pick_followed(const Op& op) const {
    int best = -1;
    int64_t best_key = std::numeric_limits<int64_t>::min();
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const graph::Value& v = g_.value(op.inputs[i]);
      if (!is_floating(v.dtype) || v.shape.rank() == 0) continue;
      const int64_t key = v.producer.is_valid() ? v.producer.value() : -1;
      if (key > best_key) {
        best_key = key;
        best = static_cast<int>(i);
      }
    }
    return best;
  }

  // An update op follows its parameter; its optimizer states join the parameter's group.
  Status add_update(OpId id, const IterSpace& space) {
    const Op& op = g_.op(id);
    MP_RETURN_IF_ERROR(ensure_source(op.inputs[0]));
    const Where w = where_.at(op.inputs[0]);
    Group& grp = groups_[static_cast<size_t>(w.group)];
    Member m{id, ValueId(), 0, {}};
    for (size_t p = 0; p < grp.size(); ++p) {
      const ShardingSpec& pspec = spec_at(w, p);
      std::vector<mesh::DimSharding> iter = pspec.dims;
      const int za = grp.zero_axis[p];
      if (za >= 0) {
        const graph::Value& pv = g_.value(op.inputs[0]);
        for (size_t d = 0; d < iter.size(); ++d) {
          if (iter[d] != mesh::DimSharding::kR ||
              pv.shape[static_cast<int64_t>(d)] % mesh_.size(za) != 0)
            continue;
          iter[d] = za == 0 ? mesh::DimSharding::kS0 : mesh::DimSharding::kS1;
          break;
        }
      }
      MP_ASSIGN_OR_RETURN(Strategy s, make_strategy(ctx_, op, space, iter));
      if (za >= 0 && !(s.outputs[0] == pspec)) {
        // ZeRO-2: update the local chunk, then all-gather the new parameter.
        const graph::Value& pv = g_.value(op.outputs[0]);
        s.communication += reshard(pv, s.outputs[0], pspec);
        s.memory += static_cast<double>(
            mesh::tile_bytes(pv.shape, dtype_size(pv.dtype), pspec, mesh_) -
            mesh::tile_bytes(pv.shape, dtype_size(pv.dtype), s.outputs[0], mesh_));
        s.outputs[0] = pspec;
        s.inputs[0] = pspec;
        s.zero_axis = za;
        s.name += " | ZeRO-2 all-gather";
      }
      m.table.push_back(std::move(s));
    }
    // Optimizer states read by this update and by nothing else live in the group: their layout
    // is the one the update reads them in, which is also the layout of their updated value.
    for (size_t i = 1; i < op.inputs.size(); ++i) {
      const ValueId v = op.inputs[i];
      if (where_.count(v) != 0 || g_.value(v).role != graph::ValueRole::kOptimizerState ||
          g_.value(v).shape.rank() == 0) {
        continue;
      }
      Member state{OpId(), v, -1, {}};
      for (size_t p = 0; p < grp.size(); ++p) {
        Strategy s;
        s.outputs.push_back(m.table[p].inputs[i]);
        s.memory = static_cast<double>(mesh::tile_bytes(
            g_.value(v).shape, dtype_size(g_.value(v).dtype), s.outputs[0], mesh_));
        s.name = s.outputs[0].to_string();
        state.table.push_back(std::move(s));
      }
      grp.members.push_back(std::move(state));
      where_[v] = {w.group, static_cast<int>(grp.members.size() - 1), 0};
    }
    for (ValueId in : op.inputs) MP_RETURN_IF_ERROR(ensure_source(in));
    place(op, w.group, std::move(m));
    return Status::ok();
  }

  void place(const Op& op, int group, Member m) {
    groups_[static_cast<size_t>(group)].members.push_back(std::move(m));
    place_outputs(op, group,
                  static_cast<int>(groups_[static_cast<size_t>(group)].members.size() - 1));
  }

  void place_outputs(const Op& op, int group, int member) {
    for (size_t o = 0; o < op.outputs.size(); ++o) {
      where_[op.outputs[o]] = {group, member, static_cast<int>(o)};
    }
  }

  // Memory rows (c) at heavy ops: per group, the tile bytes of exactly the values it holds that
  // are live there (persistent values always), under each of the group's strategies.
  void build_liveness(IlpProblem& problem) const {
    std::map<ValueId, int64_t> last_use;
    for (size_t t = 0; t < ops_.size(); ++t) {
      for (ValueId in : g_.op(ops_[t]).inputs) last_use[in] = static_cast<int64_t>(t);
    }
    for (size_t t = 0; t < ops_.size(); ++t) {
      if (!is_heavy(g_.op(ops_[t]).kind)) continue;
      std::map<int32_t, std::vector<double>> rows;
      for (const auto& [v, w] : where_) {
        const graph::Value& val = g_.value(v);
        const int64_t born = val.producer.is_valid() ? index_of(val.producer) : -1;
        auto lu = last_use.find(v);
        const int64_t dies = lu == last_use.end() ? born : lu->second;
        const bool live = is_persistent(v) ||
                          (born <= static_cast<int64_t>(t) && dies >= static_cast<int64_t>(t));
        if (!live) continue;
        const Group& grp = groups_[static_cast<size_t>(w.group)];
        auto& row = rows[w.group];
        row.resize(grp.size(), 0.0);
        for (size_t p = 0; p < grp.size(); ++p) {
          row[p] += static_cast<double>(
              mesh::tile_bytes(val.shape, dtype_size(val.dtype), spec_at(w, p), mesh_));
        }
      }
      std::vector<int32_t> nodes;
      std::vector<std::vector<double>> memory;
      for (auto& [group, row] : rows) {
        nodes.push_back(group);
        memory.push_back(std::move(row));
      }
      problem.liveness.push_back(std::move(nodes));
      problem.liveness_memory.push_back(std::move(memory));
    }
  }

  int64_t index_of(OpId op) const {
    auto it = std::lower_bound(ops_.begin(), ops_.end(), op);
    return it != ops_.end() && *it == op ? it - ops_.begin() : -1;
  }

  const graph::Graph& g_;
  const mesh::LogicalMesh& mesh_;
  const CostModel& cost_;
  const ShardingOptions& options_;
  StrategyContext ctx_;
  std::vector<OpId> ops_;
  std::vector<Group> groups_;
  std::map<ValueId, Where> where_;
  std::vector<int> batch_dim_;         // per value: the dim carrying the data batch, or -1
  std::set<ValueId> gradient_values_;  // parameter gradients (read by update ops) and pieces
  std::set<OpId> piece_sums_;          // gradients summed from two pieces
  std::map<std::tuple<std::vector<int64_t>, DType, ShardingSpec, ShardingSpec>, double>
      reshard_cache_;
};

}  // namespace

Expected<ShardingPlan> shard_stage(const graph::Graph& g, const mesh::LogicalMesh& mesh,
                                   const CostModel& cost, const ShardingOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  const auto log = module_logger("planner");
  Pass pass(g, mesh, cost, options);
  MP_RETURN_IF_ERROR(pass.select_ops());
  MP_RETURN_IF_ERROR(pass.build_groups());
  IlpProblem problem;
  MP_RETURN_IF_ERROR(pass.build_problem(problem));
  log->debug("sharding {} ops on mesh {}: {} nodes, {} edges, {} memory rows, budget {}",
             pass.num_ops(), mesh.to_string(), problem.nodes.size(), problem.edges.size(),
             problem.liveness.size(), options.memory_budget);
  MP_ASSIGN_OR_RETURN(IlpSolution sol, solve_ilp(problem, options.solver));
  log->debug("solved by {} in {:.3f} s, objective {:.6g} s", sol.method, sol.solve_seconds,
             sol.objective);
  ShardingPlan plan = pass.decode(sol);
  plan.stats.ops = pass.num_ops();
  plan.stats.nodes = static_cast<int64_t>(problem.nodes.size());
  plan.stats.edges = static_cast<int64_t>(problem.edges.size());
  plan.stats.variables = sol.num_variables;
  plan.stats.constraints = sol.num_constraints;
  plan.stats.solve_seconds = sol.solve_seconds;
  plan.stats.method = sol.method;
  plan.stats.optimal = sol.optimal;
  return plan;
}

}  // namespace meshpipe::planner

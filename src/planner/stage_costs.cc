// Stage profiling: units, their intra-op plans per logical mesh, and stage composition.
#include "planner/stage_costs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <thread>

namespace meshpipe::planner {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int32_t kManyStages = 1 << 20;

}  // namespace

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::kOff:
      return "off";
    case Recompute::kOn:
      return "on";
    case Recompute::kAuto:
      return "auto";
  }
  return "?";
}

Expected<Recompute> parse_recompute(std::string_view text) {
  for (Recompute r : {Recompute::kOff, Recompute::kOn, Recompute::kAuto}) {
    if (text == recompute_name(r)) return r;
  }
  return make_error(Errc::kInvalidArgument, "unknown recomputation '{}' (known: off, on, auto)",
                    text);
}

Status StageProfileOptions::validate() const {
  if (micro_batches < 1) {
    return make_error(Errc::kInvalidArgument, "micro_batches must be >= 1, got {}", micro_batches);
  }
  if (!(level_time_limit_seconds > 0.0)) {
    return make_error(Errc::kInvalidArgument, "level_time_limit_seconds must be > 0");
  }
  if (threads < 0 || threads > 1024) {
    return make_error(Errc::kInvalidArgument,
                      "threads must be in [0, 1024] (0: every core), got {}", threads);
  }
  if (!(memory_fraction > 0.0 && memory_fraction <= 1.0)) {
    return make_error(Errc::kInvalidArgument, "memory_fraction must be in (0, 1], got {}",
                      memory_fraction);
  }
  return sharding.validate();
}

StageProfiler::StageProfiler(const graph::Graph& g, std::vector<int32_t> block_layers,
                             const mesh::ClusterSpec& cluster, const CostModel& cost,
                             StageProfileOptions options, ShardingCache& cache)
    : g_(g), cluster_(cluster), cost_(cost), options_(std::move(options)), cache_(cache) {
  // Units are solved separately and composed: they must agree on the layouts between them.
  options_.sharding.canonical_boundaries = true;
  num_layers_ = g_.num_layers();
  build_units(block_layers);
  submeshes_ = mesh::submesh_shapes(cluster_, options_.submesh_space);
  if (!options_.only_submeshes.empty()) {
    std::erase_if(submeshes_, [&](const mesh::SubmeshShape& s) {
      return std::find(options_.only_submeshes.begin(), options_.only_submeshes.end(), s) ==
             options_.only_submeshes.end();
    });
  }
  for (const mesh::SubmeshShape& s : submeshes_) {
    std::vector<mesh::LogicalMesh> meshes;
    for (const mesh::LogicalMesh& lm : mesh::logical_meshes(cluster_, s)) {
      const bool dp = lm.shape[1] == 1;
      const bool mp = lm.shape[0] == 1;
      if (options_.logical_space == LogicalSpace::kSingleNodeModelParallel ||
          (options_.logical_space == LogicalSpace::kDataParallelOnly && dp) ||
          (options_.logical_space == LogicalSpace::kModelParallelOnly && mp)) {
        meshes.push_back(lm);
      }
    }
    if (meshes.empty()) {
      const bool mp = options_.logical_space == LogicalSpace::kModelParallelOnly;
      auto lm =
          mesh::make_logical_mesh(cluster_, s, mp ? 1 : s.num_devices(), mp ? s.num_devices() : 1);
      if (lm.has_value()) meshes.push_back(*lm);
    }
    // One device cannot shard: a single level.
    const int32_t levels = s.num_devices() == 1 ? 1 : std::max(1, options_.memory_levels);
    // Configs without recomputation first (pass 2 finds a level's predecessors by index), then
    // their recomputing copies in the same order.
    std::vector<StageConfig> configs;
    for (const mesh::LogicalMesh& lm : meshes) {
      for (int32_t k = 0; k < levels; ++k) configs.push_back({lm, k, false});
    }
    if (options_.recompute != Recompute::kOff) {
      const size_t base = configs.size();
      for (size_t c = 0; c < base; ++c)
        configs.push_back({configs[c].mesh, configs[c].level, true});
    }
    max_configs_ = std::max<int32_t>(max_configs_, static_cast<int32_t>(configs.size()));
    configs_.push_back(std::move(configs));
  }
}

void StageProfiler::build_units(const std::vector<int32_t>& block_layers) {
  const int64_t n = g_.num_ops();
  std::vector<int32_t> unit(static_cast<size_t>(n), -1);
  std::map<std::pair<int32_t, int32_t>, int32_t> ids;  // (clustered layer, block) -> unit
  int32_t last_key_layer = -1;
  int32_t last_key_block = -1;
  for (int64_t i = 0; i < n; ++i) {
    const graph::Op& op = g_.ops()[static_cast<size_t>(i)];
    if (op.phase != graph::OpPhase::kForward) continue;
    const int32_t block = static_cast<size_t>(i) < block_layers.size()
                              ? block_layers[static_cast<size_t>(i)]
                              : op.layer;
    // Units are consecutive runs: a return to an earlier (layer, block) pair starts a new unit
    // only when the pair changes, so the numbering follows the forward order.
    if (op.layer != last_key_layer || block != last_key_block) {
      auto it = ids.find({op.layer, block});
      if (it == ids.end() || it->second != num_units_ - 1) {
        ids[{op.layer, block}] = num_units_++;
        unit_layer_.push_back(op.layer);
      }
      last_key_layer = op.layer;
      last_key_block = block;
    }
    unit[static_cast<size_t>(i)] = num_units_ - 1;
  }
  if (num_units_ == 0) {  // no forward ops: one unit per layer tag
    for (int32_t l = 0; l < num_layers_; ++l) unit_layer_.push_back(l);
    num_units_ = num_layers_;
  }
  int32_t previous = 0;
  for (int64_t i = 0; i < n; ++i) {
    const graph::Op& op = g_.ops()[static_cast<size_t>(i)];
    if (unit[static_cast<size_t>(i)] < 0) {
      if (op.forward.is_valid() && unit[op.forward.index()] >= 0) {
        unit[static_cast<size_t>(i)] = unit[op.forward.index()];
      } else {
        unit[static_cast<size_t>(i)] = std::min(previous, num_units_ - 1);
      }
    }
    previous = unit[static_cast<size_t>(i)];
  }
  unit_graph_ = g_;
  unit_graph_.set_layers(unit);
  layer_units_.assign(static_cast<size_t>(std::max(num_layers_, 1)), {});
  for (int32_t u = 0; u < num_units_; ++u) {
    layer_units_[static_cast<size_t>(unit_layer_[static_cast<size_t>(u)])].push_back(u);
  }
  // Parameter gradients: the gradient inputs of update ops and, through gradient sums, every
  // piece added into them.
  parameter_gradient_.assign(static_cast<size_t>(unit_graph_.num_values()), false);
  for (const graph::Op& op : unit_graph_.ops()) {
    if (is_optimizer_update(op.kind) && op.inputs.size() > 1)
      parameter_gradient_[op.inputs[1].index()] = true;
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    const graph::Op& op = unit_graph_.ops()[static_cast<size_t>(i)];
    if (op.kind != graph::OpKind::kAdd || op.phase != graph::OpPhase::kBackward) continue;
    if (!parameter_gradient_[op.outputs[0].index()]) continue;
    for (ValueId in : op.inputs) parameter_gradient_[in.index()] = true;
  }
  std::map<std::pair<int32_t, int32_t>, size_t> seen;  // (value, reading unit) -> crossing
  std::map<int32_t, int32_t> last_crossing;            // value -> its latest crossing
  for (int64_t i = 0; i < n; ++i) {
    const graph::Op& op = unit_graph_.ops()[static_cast<size_t>(i)];
    for (ValueId v : op.inputs) {
      const graph::Value& val = unit_graph_.value(v);
      if (!val.producer.is_valid()) continue;
      const graph::Op& producer = unit_graph_.op(val.producer);
      const int32_t from = producer.layer;
      if (from == op.layer) continue;
      auto [it, fresh] = seen.emplace(std::make_pair(v.value(), op.layer), crossings_.size());
      if (fresh) {
        auto last = last_crossing.find(v.value());
        const int32_t previous = last == last_crossing.end() ? -1 : last->second;
        last_crossing[v.value()] = static_cast<int32_t>(crossings_.size());
        crossings_.push_back(
            {v, from, op.layer, parameter_gradient_[v.index()], false, false, previous});
      }
      if (op.phase == graph::OpPhase::kBackward && producer.phase == graph::OpPhase::kForward) {
        crossings_[it->second].stashed = true;
      }
      if (op.phase == graph::OpPhase::kForward) crossings_[it->second].forward_read = true;
    }
  }
}

UnitProfile StageProfiler::recomputing(const UnitProfile& base) const {
  UnitProfile p = base;
  if (!p.feasible) return p;
  p.time += base.forward_time;
  p.compute_time += base.forward_compute;
  // Memory from the intra-op pass's scan of the recomputing unit: its forward keeps what other
  // units read and the data inputs; the recomputed activations live during its backward.
  const ShardingPlan& plan = base.plan;
  const int64_t accumulators = options_.micro_batches > 1 ? p.gradients : 0;
  p.stash = plan.recompute_stash_memory.value();
  p.working = std::max<int64_t>(
      0, plan.recompute_peak_memory.value() - p.persistent - accumulators - p.stash);
  p.first_working =
      std::max<int64_t>(0, plan.recompute_first_backward_memory.value() - p.persistent - p.stash);
  return p;
}

const UnitProfile& StageProfiler::unit(int32_t u, int32_t m, int32_t c) const {
  return profiles_[(static_cast<size_t>(u) * submeshes_.size() + static_cast<size_t>(m)) *
                       static_cast<size_t>(max_configs_) +
                   static_cast<size_t>(c)];
}

void StageProfiler::fill_profile(UnitProfile& p, ShardingPlan plan) const {
  p.feasible = true;
  p.error = Status::ok();
  p.time = plan.total_seconds;
  p.persistent = plan.persistent_memory.value();
  p.gradients = plan.gradient_memory.value();
  p.stash = plan.stash_memory.value();
  const int64_t accumulators = options_.micro_batches > 1 ? p.gradients : 0;
  p.working =
      std::max<int64_t>(0, plan.peak_memory.value() - p.persistent - accumulators - p.stash);
  p.first_working =
      std::max<int64_t>(0, plan.first_backward_memory.value() - p.persistent - p.stash);
  p.forward_time = 0.0;
  p.compute_time = 0.0;
  p.forward_compute = 0.0;
  for (const OpDecision& d : plan.ops) {
    p.compute_time += d.compute;
    if (unit_graph_.op(d.op).phase == graph::OpPhase::kForward) {
      p.forward_time += d.compute + d.communication;
      p.forward_compute += d.compute;
    }
  }
  p.plan = std::move(plan);
}

Status StageProfiler::profile() {
  MP_RETURN_IF_ERROR(options_.validate());
  profiles_.assign(
      static_cast<size_t>(num_units_) * submeshes_.size() * static_cast<size_t>(max_configs_),
      UnitProfile{});
  int64_t total = 0;
  for (const auto& cs : configs_) total += static_cast<int64_t>(cs.size()) * num_units_;
  int64_t done = 0;
  const auto at = [&](int32_t u, size_t m, size_t c) -> UnitProfile& {
    return profiles_[(static_cast<size_t>(u) * submeshes_.size() + m) *
                         static_cast<size_t>(max_configs_) +
                     c];
  };
  const auto tick = [&] {
    if (options_.progress) options_.progress(++done, total);
  };
  // Each unit's fingerprint, computed once for its requests on every mesh.
  std::vector<StageFingerprint> fingerprints;
  fingerprints.reserve(static_cast<size_t>(num_units_));
  for (int32_t u = 0; u < num_units_; ++u)
    fingerprints.push_back(stage_fingerprint(unit_graph_, u, u));
  const int threads = options_.threads > 0
                          ? options_.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Pass 1: every unit at level 0 (the fastest layouts). The distinct problems are solved on
  // `threads` threads first; the loop then takes every answer from the cache.
  {
    std::vector<ShardRequest> requests;
    for (int32_t u = 0; u < num_units_; ++u) {
      for (size_t m = 0; m < submeshes_.size(); ++m) {
        for (size_t c = 0; c < configs_[m].size(); ++c) {
          if (configs_[m][c].level != 0 || configs_[m][c].recompute) continue;
          ShardRequest r{configs_[m][c].mesh, options_.sharding, &fingerprints[size_t(u)]};
          r.options.first_layer = u;
          r.options.last_layer = u;
          r.options.micro_batches = options_.micro_batches;
          requests.push_back(std::move(r));
        }
      }
    }
    cache_.prefetch(unit_graph_, requests, cost_, threads);
  }
  for (int32_t u = 0; u < num_units_; ++u) {
    for (size_t m = 0; m < submeshes_.size(); ++m) {
      for (size_t c = 0; c < configs_[m].size(); ++c) {
        if (configs_[m][c].level != 0 || configs_[m][c].recompute) continue;
        ShardingOptions o = options_.sharding;
        o.first_layer = u;
        o.last_layer = u;
        o.micro_batches = options_.micro_batches;
        UnitProfile& p = at(u, m, c);
        auto plan =
            cache_.shard(unit_graph_, configs_[m][c].mesh, cost_, o, &fingerprints[size_t(u)]);
        if (!plan.has_value()) {
          if (plan.status().code() != Errc::kInfeasible) return plan.status();
          p.error = plan.status();
        } else {
          fill_profile(p, std::move(*plan));
        }
        tick();
      }
    }
  }
  // Pass 2: leaner levels, only for logical meshes on which the whole model at level 0 would
  // not fit one device with every micro-batch of a full-depth pipeline in flight (otherwise no
  // stage can need them, and level k is a copy of level 0).
  const double avail =
      options_.memory_fraction * static_cast<double>(cluster_.device.memory.value());
  // The problem of unit u at config c (level > 0) of submesh m, from pass 1's answers; none when
  // no stage can need the level or the unit has no level-0 plan.
  const auto level_problem = [&](size_t m, size_t c, int32_t u) -> std::optional<ShardingOptions> {
    const StageConfig& cfg = configs_[m][c];
    const size_t c0 = c - static_cast<size_t>(cfg.level);
    double whole = 0.0;
    double stash = 0.0;
    for (int32_t v = 0; v < num_units_; ++v) {
      const UnitProfile& b = at(v, m, c0);
      whole += static_cast<double>(b.persistent + b.gradients + b.stash + b.working);
      stash += static_cast<double>(b.stash);
    }
    const bool needed = whole + stash * std::max(0, num_layers_ - 1) > avail;
    const UnitProfile& base = at(u, m, c0);
    if (!needed || !base.feasible) return std::nullopt;
    ShardingOptions o = options_.sharding;
    o.first_layer = u;
    o.last_layer = u;
    o.micro_batches = options_.micro_batches;
    o.prefer_reduce_scatter = true;
    if (cfg.level == 1) {
      // Level 1: the fastest layouts with ZeRO's allowed (no memory rows), which is ZeRO-2
      // where sharding the optimizer state costs no time; a copy of level 0 when they already
      // were allowed.
      if (options_.sharding.prefer_reduce_scatter) return std::nullopt;
      return o;
    }
    // Level k >= 2 asks each unit for the larger of 1 / 2^(k-1) of its level-0 peak and
    // r / 2^(k-2), r the share that lets the whole model fit the device as one stage: a model
    // slightly too large for one stage gets a level that just fits, a much larger one the
    // halving ladder (r is then tiny).
    const double fit_share = whole > avail ? avail / whole : 1.0;
    const double halving = 1.0 / static_cast<double>(int64_t{1} << (cfg.level - 1));
    o.memory_budget = static_cast<double>(base.plan.peak_memory.value()) *
                      (fit_share < 1.0 ? std::max(halving, 2.0 * halving * fit_share) : halving);
    o.solver.time_limit_seconds =
        std::min(o.solver.time_limit_seconds, options_.level_time_limit_seconds);
    return o;
  };
  {
    std::vector<ShardRequest> requests;
    for (size_t m = 0; m < submeshes_.size(); ++m) {
      for (size_t c = 0; c < configs_[m].size(); ++c) {
        if (configs_[m][c].level == 0 || configs_[m][c].recompute) continue;
        for (int32_t u = 0; u < num_units_; ++u) {
          if (auto o = level_problem(m, c, u)) {
            requests.push_back({configs_[m][c].mesh, *o, &fingerprints[size_t(u)]});
          }
        }
      }
    }
    cache_.prefetch(unit_graph_, requests, cost_, threads);
  }
  for (size_t m = 0; m < submeshes_.size(); ++m) {
    for (size_t c = 0; c < configs_[m].size(); ++c) {
      const StageConfig& cfg = configs_[m][c];
      if (cfg.level == 0 || cfg.recompute) continue;
      for (int32_t u = 0; u < num_units_; ++u) {
        UnitProfile& p = at(u, m, c);
        // The budget ladder (levels >= 2) falls back on the level before it, level 2 on level 0:
        // level 1's ZeRO layouts can be slower and larger than level 0's (GPT-39B's embedding
        // on a (2, 2) mesh: 19% slower, its gradient accumulators replicated), so they are a
        // choice of their own, not a leaner step of the ladder.
        const UnitProfile& previous = at(u, m, cfg.level == 2 ? c - 2 : c - 1);
        const std::optional<ShardingOptions> o = level_problem(m, c, u);
        if (!o) {
          p = previous;
          tick();
          continue;
        }
        // When the budget cannot be met, keep the leanest level of the ladder found.
        auto plan = cache_.shard(unit_graph_, cfg.mesh, cost_, *o, &fingerprints[size_t(u)]);
        if (!plan.has_value()) {
          if (plan.status().code() != Errc::kInfeasible && plan.status().code() != Errc::kTimeout) {
            return plan.status();
          }
          p = previous;
        } else {
          fill_profile(p, std::move(*plan));
        }
        tick();
      }
    }
  }
  // Pass 3: the recomputing copies of every config (no solve: the same layouts).
  for (size_t m = 0; m < submeshes_.size(); ++m) {
    const size_t n = configs_[m].size();
    size_t base = 0;
    while (base < n && !configs_[m][base].recompute) ++base;
    for (size_t c = base; c < n; ++c) {
      for (int32_t u = 0; u < num_units_; ++u) {
        at(u, m, c) = recomputing(at(u, m, c - base));
        tick();
      }
    }
  }
  const size_t per = submeshes_.size() * static_cast<size_t>(max_configs_);
  crossing_costs_.assign(crossings_.size() * per, kInf);
  for (size_t x = 0; x < crossings_.size(); ++x) {
    for (size_t m = 0; m < submeshes_.size(); ++m) {
      for (size_t c = 0; c < configs_[m].size(); ++c) {
        crossing_costs_[x * per + m * static_cast<size_t>(max_configs_) + c] =
            options_.sharding.canonical_boundaries
                ? 0.0  // the producing unit already converted the value to the canonical layout
                : crossing_cost(crossings_[x], static_cast<int32_t>(m), static_cast<int32_t>(c));
      }
    }
  }
  return Status::ok();
}

double StageProfiler::crossing_cost(const Crossing& x, int32_t m, int32_t c) const {
  const UnitProfile& a = unit(x.from_unit, m, c);
  const UnitProfile& b = unit(x.to_unit, m, c);
  if (!a.feasible || !b.feasible) return kInf;
  auto sa = a.plan.specs.find(x.value);
  auto sb = b.plan.specs.find(x.value);
  if (sa == a.plan.specs.end() || sb == b.plan.specs.end()) return 0.0;
  const graph::Value& v = unit_graph_.value(x.value);
  auto r = cost_.resharding(v.shape, v.dtype, sa->second, sb->second,
                            configs_[static_cast<size_t>(m)][static_cast<size_t>(c)].mesh);
  return r.has_value() ? r->value() : kInf;
}

int32_t StageProfiler::submesh_index(const mesh::SubmeshShape& s) const {
  auto it = std::find(submeshes_.begin(), submeshes_.end(), s);
  return it == submeshes_.end() ? -1 : static_cast<int32_t>(it - submeshes_.begin());
}

StageCost StageProfiler::stage(int32_t i, int32_t j, int32_t m, int32_t c) const {
  return stage(i, j, m, c, cluster_.hosts > 1 ? cluster_.inter_host : cluster_.intra_host);
}

StageDpInput StageProfiler::dp_input() const {
  return dp_input(cluster_.hosts > 1 ? cluster_.inter_host : cluster_.intra_host);
}

StageCost StageProfiler::stage(int32_t i, int32_t j, int32_t m, int32_t c,
                               const mesh::LinkSpec& link) const {
  StageCost s;
  if (c >= static_cast<int32_t>(configs_[static_cast<size_t>(m)].size()) ||
      (options_.recompute == Recompute::kOn &&
       !configs_[static_cast<size_t>(m)][static_cast<size_t>(c)].recompute)) {
    s.time = kInf;
    s.fill = kInf;
    return s;
  }
  const int32_t u0 = layer_units_[static_cast<size_t>(i)].front();
  const int32_t u1 = layer_units_[static_cast<size_t>(j)].back();
  // Memory: the backward runs the units last to first, so while unit u computes, the units
  // before it still hold their stash and (with one micro-batch, whose gradients are the
  // accumulators) the units after it hold their gradients; with several micro-batches every
  // accumulator is live from the first micro-batch on. `working` is the largest excess over
  // persistent + gradients + the whole stash.
  const bool one_micro_batch = options_.micro_batches <= 1;
  int64_t later_stash = 0;
  int64_t later_gradients = 0;
  int64_t later_accumulators = 0;  // the first backward: those of the units already done
  double compute = 0.0;
  for (int32_t u = u1; u >= u0; --u) {
    const UnitProfile& p = unit(u, m, c);
    if (!p.feasible) {
      s.time = kInf;
      s.fill = kInf;
      return s;
    }
    s.time += p.time;
    compute += p.compute_time;
    s.memory.persistent += p.persistent;
    if (!one_micro_batch) s.memory.gradients += p.gradients;
    s.memory.stash += p.stash;
    s.memory.working = std::max(s.memory.working, p.working - later_stash + later_gradients);
    s.first_working = std::max(s.first_working, p.first_working - later_stash + later_accumulators);
    later_stash += p.stash;
    later_accumulators += p.gradients;
    if (one_micro_batch) later_gradients += p.gradients;
  }
  const size_t per = submeshes_.size() * static_cast<size_t>(max_configs_);
  // Which of the profile's transfer tables prices `link` (the DP runs with either link).
  const bool inter_host = cluster_.hosts > 1 && link == cluster_.inter_host;
  const bool recomputing_stage = configs_[static_cast<size_t>(m)][static_cast<size_t>(c)].recompute;
  // Values the stage sends to a later stage: the send holds the producer's buffer, which is
  // also the one a later unit of the stage reads (counted once).
  std::set<int32_t> sent;
  for (const Crossing& y : crossings_) {
    if (y.from_unit >= u0 && y.from_unit <= u1 && y.to_unit > u1 && !y.once_per_step) {
      sent.insert(y.value.value());
    }
  }
  for (size_t k = 0; k < crossings_.size(); ++k) {
    const Crossing& x = crossings_[k];
    const bool to_in = x.to_unit >= u0 && x.to_unit <= u1;
    const bool from_in = x.from_unit >= u0 && x.from_unit <= u1;
    // Whether an earlier crossing of the same value also satisfies `pred` (count buffers once).
    const auto counted = [&](const auto& pred) {
      for (int32_t e = x.previous; e >= 0; e = crossings_[static_cast<size_t>(e)].previous) {
        if (pred(crossings_[static_cast<size_t>(e)])) return true;
      }
      return false;
    };
    const auto sent_later = [&](const Crossing& y) {
      return y.from_unit >= u0 && y.from_unit <= u1 && y.to_unit > u1 && !y.once_per_step;
    };
    // Received and read again later: by the backward, or, when the stage recomputes, by the
    // forward it repeats there.
    const auto received_stashed = [&](const Crossing& y) {
      return (y.stashed || (recomputing_stage && y.forward_read && !y.once_per_step)) &&
             y.to_unit >= u0 && y.to_unit <= u1 && (y.from_unit < u0 || y.from_unit > u1);
    };
    // One buffer of x's value per micro-batch in flight, in the spec of `u`'s layout.
    const auto stash_in_spec_of = [&](int32_t u) {
      const UnitProfile& p = unit(u, m, c);
      auto spec = p.plan.specs.find(x.value);
      if (spec == p.plan.specs.end()) return;
      const graph::Value& v = unit_graph_.value(x.value);
      s.memory.stash += cost_.allocation_bytes(
          mesh::tile_bytes(v.shape, dtype_size(v.dtype), spec->second, p.plan.mesh));
    };
    const auto internal_stashed = [&](const Crossing& y) {
      return y.stashed && !y.once_per_step && y.from_unit >= u0 && y.from_unit <= u1 &&
             y.to_unit >= u0 && y.to_unit <= u1;
    };
    // (A recomputing unit's stash already holds what it hands on: what other units read.)
    if (!recomputing_stage && sent_later(x) && !counted(sent_later)) {
      // Sent to a later stage: the send holds its buffer until the receiver takes it, which in
      // a pipeline can be as late as the stash (in-flight micro-batches).
      stash_in_spec_of(x.from_unit);
    }
    if (!recomputing_stage && internal_stashed(x) && !counted(internal_stashed) &&
        sent.count(x.value.value()) == 0) {
      // Handed between two units of the stage and read by the later one's backward: it lives
      // from the forward to that backward.
      stash_in_spec_of(x.from_unit);
    }
    if (!to_in) continue;
    if (!from_in && received_stashed(x) && !counted(received_stashed)) {
      // Received from another stage and read by this stage's backward: stashed here too.
      stash_in_spec_of(x.to_unit);
    }
    if (from_in) {
      s.time +=
          crossing_costs_[k * per + static_cast<size_t>(m) * static_cast<size_t>(max_configs_) +
                          static_cast<size_t>(c)];
    } else {
      const graph::Value& v = unit_graph_.value(x.value);
      double t = cost_.transfer(v.bytes(), link, inter_host).value();
      if (x.once_per_step) t /= static_cast<double>(options_.micro_batches);
      s.time += t;
      s.transfer += t;
    }
  }
  const double alone =
      cost_.sharing(static_cast<double>(submeshes_[static_cast<size_t>(m)].num_devices()));
  // Sends are asynchronous: in the steady state a stage receives the next micro-batch's tensors
  // while it computes this one's, so they cost time only where they outlast its own work (MoE-70B
  // on 64 V100s: 2 x 5.4 ms per micro-batch over 25 Gbps against 31 ms of work, which the
  // simulator hides and a sum over-priced by a third). A micro-batch passing through the fill
  // or the drain waits for them.
  s.work = s.time - s.transfer;
  s.time = std::max(s.work, s.transfer);
  s.fill = s.work + s.transfer - compute * (1.0 - alone);
  s.memory.peak = s.memory.persistent + s.memory.gradients + s.memory.working + s.memory.stash;
  const double avail =
      options_.memory_fraction * static_cast<double>(cluster_.device.memory.value());
  const double fixed =
      static_cast<double>(s.memory.persistent + s.memory.gradients + s.memory.working);
  if (fixed + static_cast<double>(s.memory.stash) > avail) {
    s.max_succ_stages = -1;
  } else if (options_.schedule == Schedule::kGPipe && options_.micro_batches > 1) {
    // Every micro-batch's stash, whatever follows.
    const auto all = static_cast<int32_t>(std::min<int64_t>(options_.micro_batches, kManyStages));
    const bool fits =
        static_cast<double>(stage_peak(s, all, options_.micro_batches, Schedule::kGPipe)) <= avail;
    s.max_succ_stages = fits ? kManyStages : -1;
  } else if (static_cast<double>(stage_peak(
                 s, static_cast<int32_t>(std::min<int64_t>(options_.micro_batches, kManyStages)),
                 options_.micro_batches, options_.schedule)) <= avail) {
    // A stage never holds more micro-batches than the step has (1F1B: min(S - k, B); GPipe
    // with one micro-batch: 1): when all of them fit, any number of stages may follow.
    s.max_succ_stages = kManyStages;
  } else if (s.memory.stash == 0) {
    s.max_succ_stages = kManyStages;
  } else {
    const double fit = std::floor((avail - fixed) / static_cast<double>(s.memory.stash));
    s.max_succ_stages = static_cast<int32_t>(std::clamp(fit - 1.0, -1.0, double(kManyStages)));
  }
  return s;
}

double steady_scale(const CostModel& cost, int32_t devices, int32_t stages, int64_t micro_batches,
                    double utilisation) {
  if (micro_batches <= 1 || stages <= 1 || devices < stages || !(cost.sharing(1.0) < 1.0)) {
    return 1.0;
  }
  const int64_t s = stages;
  const int64_t b = micro_batches;
  const double per_stage = static_cast<double>(devices) / static_cast<double>(stages);
  const double u = std::clamp(utilisation, 0.0, 1.0);
  double slots = 0.0;
  for (int64_t k = 0; k < b + s - 1; ++k) {
    const int64_t busy = std::min({k + 1, s, b, b + s - 1 - k});
    slots += cost.sharing(std::max(per_stage, per_stage * static_cast<double>(busy) * u));
  }
  const double scale =
      (slots - static_cast<double>(s) * cost.sharing(per_stage)) / static_cast<double>(b - 1);
  return std::clamp(scale, 1e-3, 1.0);
}

int32_t stage_in_flight(Schedule schedule, size_t stage, size_t stages, int64_t micro_batches) {
  return schedule == Schedule::kGPipe ? static_cast<int32_t>(micro_batches)
                                      : static_cast<int32_t>(std::min<int64_t>(
                                            static_cast<int64_t>(stages - stage), micro_batches));
}

int64_t stage_peak(const StageCost& cost, int32_t in_flight, int64_t micro_batches,
                   Schedule schedule) {
  const StageMemory& m = cost.memory;
  const int64_t first = m.persistent + cost.first_working + in_flight * m.stash;
  const int64_t steady = m.persistent + m.gradients + m.working;
  if (schedule == Schedule::kGPipe && micro_batches > 1) {
    return std::max(first, steady + (in_flight - 1) * m.stash);
  }
  return std::max(first, steady + in_flight * m.stash);
}

StageDpInput StageProfiler::dp_input(const mesh::LinkSpec& link) const {
  StageDpInput in;
  in.num_layers = num_layers_;
  in.num_devices = cluster_.num_devices();
  for (const auto& s : submeshes_) in.submesh_devices.push_back(s.num_devices());
  in.num_configs = max_configs_;
  in.micro_batches = options_.micro_batches;
  const size_t size = static_cast<size_t>(num_layers_) * static_cast<size_t>(num_layers_) *
                      submeshes_.size() * static_cast<size_t>(max_configs_);
  in.cost.assign(size, kInf);
  in.fill_cost.assign(size, kInf);
  for (int32_t s = 0; s <= std::min(num_layers_, cluster_.num_devices()); ++s) {
    in.steady_scale.push_back(
        steady_scale(cost_, cluster_.num_devices(), s, options_.micro_batches));
  }
  in.max_succ_stages.assign(size, -1);
  for (int32_t i = 0; i < num_layers_; ++i) {
    for (int32_t j = i; j < num_layers_; ++j) {
      for (int32_t m = 0; m < static_cast<int32_t>(submeshes_.size()); ++m) {
        for (int32_t c = 0; c < max_configs_; ++c) {
          const StageCost s = stage(i, j, m, c, link);
          const size_t k = in.index(i, j, m, c);
          in.cost[k] = s.time;
          in.fill_cost[k] = s.fill;
          in.max_succ_stages[k] = s.max_succ_stages;
        }
      }
    }
  }
  return in;
}

}  // namespace meshpipe::planner

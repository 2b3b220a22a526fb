// Baselines: fixed parallelisation recipes evaluated with the planner's cost model.
#include "planner/baselines.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "core/logging.h"

namespace meshpipe::planner {
namespace {

using ParameterMode = ShardingOptions::ParameterMode;
using ForceBatch = ShardingOptions::ForceBatch;

// Forward ops split into L chunks of (nearly) equal count; other ops follow their forward op.
LayerClustering cluster_equal_ops(const graph::Graph& g, int32_t layers) {
  LayerClustering c;
  c.num_layers = layers;
  c.op_layer.assign(static_cast<size_t>(g.num_ops()), 0);
  std::vector<size_t> forward;
  for (size_t i = 0; i < g.ops().size(); ++i) {
    if (g.ops()[i].phase == graph::OpPhase::kForward) forward.push_back(i);
  }
  for (size_t k = 0; k < forward.size(); ++k) {
    c.op_layer[forward[k]] = static_cast<int32_t>(k * static_cast<size_t>(layers) / forward.size());
  }
  int32_t previous = 0;
  for (size_t i = 0; i < g.ops().size(); ++i) {
    const graph::Op& op = g.ops()[i];
    if (op.phase != graph::OpPhase::kForward) {
      c.op_layer[i] = op.forward.is_valid() ? c.op_layer[op.forward.index()] : previous;
    }
    previous = c.op_layer[i];
  }
  c.layer_flops.assign(static_cast<size_t>(layers), 0.0);
  c.input_bytes.assign(static_cast<size_t>(layers), 0.0);
  return c;
}

// Keeps the faster of two outcomes (a plan beats an error).
void keep_best(BaselineResult& r, Expected<Plan> plan, const std::string& description) {
  if (!plan.has_value()) {
    if (!r.plan && (r.status.is_ok() || r.status.code() != Errc::kResourceExhausted)) {
      r.status = plan.status();
    }
    return;
  }
  if (!r.plan || plan->step_time < r.plan->step_time) {
    r.plan = std::move(*plan);
    r.description = description;
    r.status = Status::ok();
  }
}

// Everything one micro-batching needs to evaluate recipes.
class Evaluator {
 public:
  Evaluator(const graph::Graph& g, const mesh::ClusterSpec& cluster, const CostModel& cost,
            const PlannerOptions& options, int64_t micro_batches, ShardingCache& cache)
      : g_(g),
        cluster_(cluster),
        cost_(cost),
        options_(options),
        b_(micro_batches),
        cache_(cache) {}

  Status cluster() {
    MP_ASSIGN_OR_RETURN(clustering_, cluster_layers(g_, options_.clustering));
    for (const graph::Op& op : g_.ops()) blocks_.push_back(op.layer);
    return Status::ok();
  }

  // A profiler of the clustered graph with the given restrictions (kept alive by the evaluator).
  Expected<StageProfiler*> profiler(const LayerClustering& c, ParameterMode mode, bool zero,
                                    ForceBatch force, LogicalSpace space,
                                    std::vector<mesh::SubmeshShape> only) {
    StageProfileOptions po = options_.profile;
    po.micro_batches = b_;
    po.schedule = options_.schedule;
    po.submesh_space = mesh::SubmeshSpace::kAll;
    po.logical_space = space;
    po.only_submeshes = std::move(only);
    po.sharding.parameter_mode = mode;
    po.sharding.prefer_reduce_scatter = zero || po.sharding.prefer_reduce_scatter;
    po.sharding.force_batch_to_axis0 = force;
    po.progress = nullptr;
    graphs_.push_back(std::make_unique<graph::Graph>(apply_clustering(g_, c)));
    profilers_.push_back(
        std::make_unique<StageProfiler>(*graphs_.back(), blocks_, cluster_, cost_, po, cache_));
    MP_RETURN_IF_ERROR(profilers_.back()->profile());
    return profilers_.back().get();
  }

  // Whether `stages` certainly cannot give a plan faster than `best` seconds: build_plan's step
  // time is sum + (B - 1) max over the stages of their times, each at least the stage's own work
  // (the actual transfers are added to the fill and overlap the work in the steady state), and
  // float sums and products of non-negative terms are monotone, so the same formula over the
  // work alone is a lower bound.
  bool cannot_beat(const StageProfiler& p, const std::vector<StageChoice>& stages,
                   double best) const {
    if (!std::isfinite(best)) return false;
    double sum = 0.0;
    double max = 0.0;
    for (const StageChoice& s : stages) {
      if (s.submesh < 0) return false;
      const StageCost sc = p.stage(s.first_layer, s.last_layer, s.submesh, s.config);
      if (!std::isfinite(sc.time)) return false;  // evaluate() names it
      const double t = sc.work;
      sum += t;
      max = std::max(max, t);
    }
    return sum + static_cast<double>(b_ - 1) * max >= best;
  }

  // Candidates are skipped against the fastest plan of any recipe, not only their own kind's
  // (best_pipeline_recipe keeps only the fastest).
  void share_bound() { share_ = true; }

  // Prices `stages` into r (keep_best), unless they cannot beat r's fastest plan so far (with
  // share_bound(), any recipe's): keep_best would not keep them.
  void offer(BaselineResult& r, const LayerClustering& c, const StageProfiler& p,
             const std::vector<StageChoice>& stages, const std::string& description) {
    const double mine = r.plan ? r.plan->step_time : std::numeric_limits<double>::infinity();
    if (cannot_beat(p, stages, std::min(mine, shared_best_))) return;
    keep_best(r, evaluate(c, p, stages), description);
    if (share_ && r.plan) shared_best_ = std::min(shared_best_, r.plan->step_time);
  }

  // A plan from fixed stages, rejected when a stage exceeds device memory (if `check_memory`).
  Expected<Plan> evaluate(const LayerClustering& c, const StageProfiler& p,
                          const std::vector<StageChoice>& stages, bool check_memory = true) {
    for (const StageChoice& s : stages) {
      if (s.submesh < 0 ||
          !std::isfinite(p.stage(s.first_layer, s.last_layer, s.submesh, s.config).time)) {
        return make_error(Errc::kInfeasible, "a stage has no valid sharding");
      }
    }
    if (check_memory) {
      // Each stage's peak as build_plan gives it (StagePlan::memory.peak), before building.
      const double avail =
          options_.profile.memory_fraction * static_cast<double>(cluster_.device.memory.value());
      for (size_t k = 0; k < stages.size(); ++k) {
        const StageChoice& s = stages[k];
        const StageCost sc = p.stage(s.first_layer, s.last_layer, s.submesh, s.config);
        const int64_t peak = stage_peak(
            sc, stage_in_flight(options_.schedule, k, stages.size(), b_), b_, options_.schedule);
        if (static_cast<double>(peak) > avail) {
          return make_error(
              Errc::kResourceExhausted, "out of memory: stage {} needs {} per device, {} available",
              k, format_bytes(Bytes(peak)), format_bytes(Bytes(static_cast<int64_t>(avail))));
        }
      }
    }
    return build_plan(g_, c, p, stages, cluster_, {options_.model, options_.schedule, b_});
  }

  // The fastest config of submesh m for layers i..j that holds `in_flight` micro-batches
  // (the fastest overall when none does).
  int32_t best_config(const StageProfiler& p, int32_t i, int32_t j, int32_t m,
                      int32_t in_flight) const {
    int32_t best = -1;
    int32_t fastest = 0;
    double t = std::numeric_limits<double>::infinity();
    double tf = std::numeric_limits<double>::infinity();
    for (int32_t c = 0; c < static_cast<int32_t>(p.configs(m).size()); ++c) {
      const StageCost s = p.stage(i, j, m, c);
      if (s.time < tf) {
        tf = s.time;
        fastest = c;
      }
      if (s.max_succ_stages >= in_flight - 1 && s.time < t) {
        t = s.time;
        best = c;
      }
    }
    return best >= 0 ? best : fastest;
  }

  // Submesh shape with n devices (one host's prefix, or whole hosts), if any.
  std::optional<mesh::SubmeshShape> shape_for(int64_t n) const {
    const int32_t per = cluster_.devices_per_host;
    if (n <= per && per % n == 0) return mesh::SubmeshShape{1, static_cast<int32_t>(n)};
    if (n % per == 0 && n / per <= cluster_.hosts) {
      return mesh::SubmeshShape{static_cast<int32_t>(n / per), per};
    }
    return std::nullopt;
  }

  // Layers 0..L-1 in pp near-equal consecutive ranges.
  std::vector<std::pair<int32_t, int32_t>> equal_ranges(int32_t pp) const {
    std::vector<std::pair<int32_t, int32_t>> out;
    const int32_t l = clustering_.num_layers;
    for (int32_t k = 0; k < pp; ++k) out.push_back({k * l / pp, (k + 1) * l / pp - 1});
    return out;
  }

  const LayerClustering& clustering() const { return clustering_; }
  const graph::Graph& graph() const { return g_; }
  int64_t micro_batches() const { return b_; }
  const mesh::ClusterSpec& cluster_spec() const { return cluster_; }

 private:
  const graph::Graph& g_;
  const mesh::ClusterSpec& cluster_;
  const CostModel& cost_;
  const PlannerOptions& options_;
  int64_t b_;
  ShardingCache& cache_;
  LayerClustering clustering_;
  std::vector<int32_t> blocks_;
  std::vector<std::unique_ptr<graph::Graph>> graphs_;
  std::vector<std::unique_ptr<StageProfiler>> profilers_;
  bool share_ = false;
  double shared_best_ = std::numeric_limits<double>::infinity();
};

std::string batching(const Evaluator& e) {
  return fmt::format("{} micro-batches of {}", e.micro_batches(), graph_micro_batch(e.graph()));
}

void single_stage(Evaluator& e, BaselineResult& r, ParameterMode mode, bool zero) {
  const mesh::ClusterSpec& c = e.cluster_spec();
  const mesh::SubmeshShape all{c.hosts, c.devices_per_host};
  auto p = e.profiler(e.clustering(), mode, zero, ForceBatch::kOn, LogicalSpace::kDataParallelOnly,
                      {all});
  if (!p.has_value()) return keep_best(r, p.status(), "");
  const int32_t last = e.clustering().num_layers - 1;
  for (int32_t cfg = 0; cfg < static_cast<int32_t>((*p)->configs(0).size()); ++cfg) {
    keep_best(r, e.evaluate(e.clustering(), **p, {{0, last, 0, cfg, 0.0}}),
              fmt::format("{} devices, {}", c.num_devices(), batching(e)));
  }
}

void intra_only(Evaluator& e, BaselineResult& r) {
  const mesh::ClusterSpec& c = e.cluster_spec();
  auto p = e.profiler(e.clustering(), ParameterMode::kFree, false, ForceBatch::kAuto,
                      LogicalSpace::kSingleNodeModelParallel, {{c.hosts, c.devices_per_host}});
  if (!p.has_value()) return keep_best(r, p.status(), "");
  const int32_t last = e.clustering().num_layers - 1;
  for (int32_t cfg = 0; cfg < static_cast<int32_t>((*p)->configs(0).size()); ++cfg) {
    keep_best(r, e.evaluate(e.clustering(), **p, {{0, last, 0, cfg, 0.0}}),
              fmt::format("one stage, mesh {}, {}", (*p)->configs(0)[size_t(cfg)].mesh.to_string(),
                          batching(e)));
  }
}

void grids(Evaluator& e, BaselineResult& megatron, BaselineResult& equal_layer) {
  // Only the submeshes some grid uses are profiled (the shapes of d / pp devices).
  const int64_t devices = e.cluster_spec().num_devices();
  std::vector<mesh::SubmeshShape> shapes;
  for (int32_t pp = 1; pp <= e.clustering().num_layers && pp <= devices; ++pp) {
    if (devices % pp != 0) continue;
    if (const auto shape = e.shape_for(devices / pp)) shapes.push_back(*shape);
  }
  if (shapes.empty()) {
    const Status none(Errc::kInfeasible, "no grid's stage shape is a submesh of the cluster");
    keep_best(megatron, none, "");
    keep_best(equal_layer, none, "");
    return;
  }
  auto p = e.profiler(e.clustering(), ParameterMode::kFree, false, ForceBatch::kAuto,
                      LogicalSpace::kSingleNodeModelParallel, shapes);
  if (!p.has_value()) {
    keep_best(megatron, p.status(), "");
    keep_best(equal_layer, p.status(), "");
    return;
  }
  const StageProfiler& prof = **p;
  const int64_t d = e.cluster_spec().num_devices();
  for (int32_t pp = 1; pp <= e.clustering().num_layers && pp <= d; ++pp) {
    if (d % pp != 0) continue;
    const auto shape = e.shape_for(d / pp);
    if (!shape) continue;
    const int32_t m = prof.submesh_index(*shape);
    if (m < 0) continue;
    const auto ranges = e.equal_ranges(pp);
    // Megatron-style: one (dp, tp) for every stage.
    for (int32_t cfg = 0; cfg < static_cast<int32_t>(prof.configs(m).size()); ++cfg) {
      std::vector<StageChoice> stages;
      for (const auto& [i, j] : ranges) stages.push_back({i, j, m, cfg, 0.0});
      const auto& lm = prof.configs(m)[size_t(cfg)].mesh;
      e.offer(megatron, e.clustering(), prof, stages,
              fmt::format("dp {} x tp {} x pp {}, {}", lm.shape[0], lm.shape[1], pp, batching(e)));
    }
    // Equal layers: each stage picks its own best logical mesh.
    std::vector<StageChoice> stages;
    for (size_t k = 0; k < ranges.size(); ++k) {
      const auto [i, j] = ranges[k];
      const auto in_flight = static_cast<int32_t>(ranges.size() - k);
      stages.push_back({i, j, m, e.best_config(prof, i, j, m, in_flight), 0.0});
    }
    e.offer(
        equal_layer, e.clustering(), prof, stages,
        fmt::format("{} stages of equal layers on {}, {}", pp, shape->to_string(), batching(e)));
  }
}

void equal_operators(Evaluator& e, BaselineResult& r) {
  const int64_t d = e.cluster_spec().num_devices();
  for (int32_t pp = 2; pp <= e.clustering().num_layers && pp <= d; pp *= 2) {
    if (d % pp != 0) continue;
    const auto shape = e.shape_for(d / pp);
    if (!shape) continue;
    const LayerClustering c = cluster_equal_ops(e.graph(), pp);
    auto p = e.profiler(c, ParameterMode::kFree, false, ForceBatch::kAuto,
                        LogicalSpace::kSingleNodeModelParallel, {*shape});
    if (!p.has_value()) {
      keep_best(r, p.status(), "");
      continue;
    }
    std::vector<StageChoice> stages;
    for (int32_t k = 0; k < pp; ++k) {
      stages.push_back({k, k, 0, e.best_config(**p, k, k, 0, pp - k), 0.0});
    }
    e.offer(
        r, c, **p, stages,
        fmt::format("{} stages of equal op counts on {}, {}", pp, shape->to_string(), batching(e)));
  }
}

void inter_only(Evaluator& e, BaselineResult& r) {
  auto p = e.profiler(e.clustering(), ParameterMode::kReplicated, false, ForceBatch::kOn,
                      LogicalSpace::kDataParallelOnly, {});
  if (!p.has_value()) return keep_best(r, p.status(), "");
  auto dp = solve_stage_dp((*p)->dp_input());
  if (!dp.has_value()) return keep_best(r, dp.status(), "");
  keep_best(r, e.evaluate(e.clustering(), **p, dp->stages),
            fmt::format("{} data-parallel stages (stage DP), {}", dp->stages.size(), batching(e)));
}

}  // namespace

Expected<Plan> best_pipeline_recipe(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                    const CostModel& cost, const PlannerOptions& options,
                                    int64_t micro_batches, ShardingCache& cache) {
  Evaluator e(g, cluster, cost, options, micro_batches, cache);
  MP_RETURN_IF_ERROR(e.cluster());
  e.share_bound();  // only the fastest recipe is returned
  BaselineResult megatron;
  BaselineResult equal_layer;
  BaselineResult equal_op;
  const auto t0 = std::chrono::steady_clock::now();
  grids(e, megatron, equal_layer);
  const auto t1 = std::chrono::steady_clock::now();
  equal_operators(e, equal_op);
  module_logger("planner")->debug(
      "recipes: grids {:.2f} s, equal operators {:.2f} s",
      std::chrono::duration<double>(t1 - t0).count(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
  const BaselineResult* best = nullptr;
  for (const BaselineResult* r : {&megatron, &equal_layer, &equal_op}) {
    if (r->plan && (!best || r->plan->step_time < best->plan->step_time)) best = r;
  }
  if (best == nullptr) {
    return make_error(Errc::kInfeasible, "no pipeline recipe fits: {}", megatron.status.message());
  }
  return *best->plan;
}

Expected<Plan> grid_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                         const CostModel& cost, const PlannerOptions& options,
                         int64_t micro_batches, const GridConfig& grid) {
  if (grid.dp < 1 || grid.tp < 1 || grid.pp < 1) {
    return make_error(Errc::kInvalidArgument, "grid dp {} x tp {} x pp {}: sizes must be >= 1",
                      grid.dp, grid.tp, grid.pp);
  }
  if (grid.dp * grid.tp * grid.pp > cluster.num_devices()) {
    return make_error(Errc::kInvalidArgument,
                      "grid dp {} x tp {} x pp {} needs {} devices, cluster {} has {}", grid.dp,
                      grid.tp, grid.pp, grid.dp * grid.tp * grid.pp, cluster.name,
                      cluster.num_devices());
  }
  ShardingCache cache;
  Evaluator e(g, cluster, cost, options, micro_batches, cache);
  MP_RETURN_IF_ERROR(e.cluster());
  if (grid.pp > e.clustering().num_layers) {
    return make_error(Errc::kInvalidArgument, "grid pp {} exceeds the {} clustered layers", grid.pp,
                      e.clustering().num_layers);
  }
  const auto shape = e.shape_for(grid.dp * grid.tp);
  if (!shape) {
    return make_error(Errc::kInvalidArgument, "no submesh of {} devices on cluster {}",
                      grid.dp * grid.tp, cluster.name);
  }
  const bool zero =
      grid.parameters == ParameterMode::kZero2 || grid.parameters == ParameterMode::kZero3;
  const ForceBatch force =
      grid.parameters == ParameterMode::kFree ? ForceBatch::kAuto : ForceBatch::kOn;
  MP_ASSIGN_OR_RETURN(StageProfiler * p,
                      e.profiler(e.clustering(), grid.parameters, zero, force,
                                 LogicalSpace::kSingleNodeModelParallel, {*shape}));
  std::vector<int32_t> configs;  // of the grid's logical mesh (memory levels, recomputation)
  for (size_t c = 0; c < p->configs(0).size(); ++c) {
    const mesh::LogicalMesh& lm = p->configs(0)[c].mesh;
    if (lm.shape[0] == grid.dp && lm.shape[1] == grid.tp)
      configs.push_back(static_cast<int32_t>(c));
  }
  if (configs.empty()) {
    return make_error(Errc::kInvalidArgument, "logical mesh ({}, {}) is not available on {}",
                      grid.dp, grid.tp, shape->to_string());
  }
  // Per stage: the fastest config that holds the micro-batches the stages after it put in
  // flight (the 1F1B rule), else the leanest (the memory check then reports it).
  std::vector<StageChoice> stages;
  const auto ranges = e.equal_ranges(static_cast<int32_t>(grid.pp));
  for (size_t k = 0; k < ranges.size(); ++k) {
    const auto [i, j] = ranges[k];
    const int32_t after = static_cast<int32_t>(ranges.size() - 1 - k);
    int32_t fastest = -1;
    int32_t leanest = configs.back();
    double fastest_time = std::numeric_limits<double>::infinity();
    int64_t leanest_bytes = std::numeric_limits<int64_t>::max();
    for (int32_t c : configs) {
      const StageCost sc = p->stage(i, j, 0, c);
      if (!std::isfinite(sc.time)) continue;
      if (sc.max_succ_stages >= after && sc.time < fastest_time) {
        fastest_time = sc.time;
        fastest = c;
      }
      const int32_t in_flight =
          options.schedule == Schedule::kGPipe
              ? static_cast<int32_t>(std::min<int64_t>(micro_batches, 1 << 20))
              : static_cast<int32_t>(std::min<int64_t>(after + 1, micro_batches));
      const int64_t bytes = stage_peak(sc, in_flight, micro_batches, options.schedule);
      if (bytes < leanest_bytes) {
        leanest_bytes = bytes;
        leanest = c;
      }
    }
    stages.push_back({i, j, 0, fastest >= 0 ? fastest : leanest, 0.0});
  }
  return e.evaluate(e.clustering(), *p, stages, grid.check_memory);
}

std::vector<BaselineResult> run_baselines(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                          const CostModel& cost, const PlannerOptions& options,
                                          ShardingCache* shared) {
  std::vector<BaselineResult> out(8);
  const char* names[] = {"data parallel", "ZeRO-2",          "ZeRO-3",        "Megatron grid",
                         "equal layers",  "equal operators", "intra-op only", "inter-op only"};
  for (size_t k = 0; k < out.size(); ++k) out[k].name = names[k];
  auto candidates = micro_batch_candidates(g, options, cluster.num_devices());
  if (!candidates.has_value()) {
    for (auto& r : out) r.status = candidates.status();
    return out;
  }
  ShardingCache own;
  ShardingCache& cache = shared != nullptr ? *shared : own;
  for (const MicroBatching& mb : *candidates) {
    auto graph = graph_for_micro_batch(g, options, mb.micro_batch);
    if (!graph.has_value()) {
      for (auto& r : out) keep_best(r, graph.status(), "");
      continue;
    }
    Evaluator e(*graph, cluster, cost, options, mb.micro_batches, cache);
    if (Status s = e.cluster(); !s.is_ok()) {
      for (auto& r : out) keep_best(r, s, "");
      continue;
    }
    single_stage(e, out[0], ParameterMode::kReplicated, false);
    single_stage(e, out[1], ParameterMode::kZero2, true);
    single_stage(e, out[2], ParameterMode::kZero3, true);
    grids(e, out[3], out[4]);
    equal_operators(e, out[5]);
    intra_only(e, out[6]);
    inter_only(e, out[7]);
  }
  return out;
}

}  // namespace meshpipe::planner

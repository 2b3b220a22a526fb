// make_plan: clustering -> stage profiling -> stage DP -> placement and the Plan.
#include "planner/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <set>

#include "core/logging.h"
#include "core/rng.h"
#include "graph/cost.h"
#include "planner/baselines.h"
#include "planner/sharding_cache.h"

namespace meshpipe::planner {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Status PlannerOptions::validate() const {
  if (global_batch < 0 || micro_batches < 0) {
    return make_error(Errc::kInvalidArgument, "global batch and micro-batches must be >= 0");
  }
  if (schedule != "1f1b" && schedule != "gpipe") {
    return make_error(Errc::kInvalidArgument, "schedule '{}' is not 1f1b or gpipe", schedule);
  }
  for (int64_t s : micro_batch_sizes) {
    if (s < 1) return make_error(Errc::kInvalidArgument, "micro-batch size {} is not positive", s);
  }
  MP_RETURN_IF_ERROR(clustering.validate());
  return profile.validate();
}

int64_t graph_micro_batch(const graph::Graph& g) {
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kInput && v.shape.rank() > 0) return v.shape[0];
  }
  return 1;
}

std::string graph_fingerprint(const graph::Graph& g) {
  return fmt::format("{:016x}", hash_name(stage_fingerprint(g, -1, -1).text));
}

double model_flops_per_micro_batch(const graph::Graph& g) {
  const graph::GraphCost c = graph::graph_cost(g);
  return c.forward.value() + c.backward.value();
}

Expected<Plan> build_plan(const graph::Graph& g, const LayerClustering& clustering,
                          const StageProfiler& profiler, const std::vector<StageAssignment>& stages,
                          const mesh::ClusterSpec& cluster, const CostModel& cost,
                          const PlannerOptions& options, int64_t micro_batches) {
  (void)cost;
  Plan plan;
  plan.model = options.model;
  plan.graph_fingerprint = graph_fingerprint(g);
  plan.dtype = "f32";
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kParameter) {
      plan.dtype = std::string(dtype_name(v.dtype));
      break;
    }
  }
  plan.micro_batch = graph_micro_batch(g);
  plan.micro_batches = micro_batches;
  plan.global_batch = plan.micro_batch * micro_batches;
  plan.schedule = options.schedule;
  plan.cluster = cluster;
  plan.num_layers = clustering.num_layers;
  plan.op_layers = clustering.op_layer;

  // Placement: largest submeshes first; whole hosts for multi-host or full-host submeshes, the
  // rest packed left to right inside a host.
  const int32_t per_host = cluster.devices_per_host;
  std::vector<int32_t> next_free(static_cast<size_t>(cluster.hosts), 0);
  std::vector<size_t> order(stages.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return profiler.submeshes()[static_cast<size_t>(stages[a].submesh)].num_devices() >
           profiler.submeshes()[static_cast<size_t>(stages[b].submesh)].num_devices();
  });
  std::vector<std::vector<int32_t>> devices(stages.size());
  for (size_t k : order) {
    const mesh::SubmeshShape s = profiler.submeshes()[static_cast<size_t>(stages[k].submesh)];
    bool placed = false;
    if (s.hosts > 1 || s.devices_per_host == per_host) {
      for (int32_t h = 0; h + s.hosts <= cluster.hosts && !placed; ++h) {
        bool free = true;
        for (int32_t x = h; x < h + s.hosts; ++x) free = free && next_free[size_t(x)] == 0;
        if (!free) continue;
        for (int32_t x = h; x < h + s.hosts; ++x) {
          for (int32_t d = 0; d < per_host; ++d) devices[k].push_back(x * per_host + d);
          next_free[size_t(x)] = per_host;
        }
        placed = true;
      }
    } else {
      for (int32_t h = 0; h < cluster.hosts && !placed; ++h) {
        if (next_free[size_t(h)] + s.devices_per_host > per_host) continue;
        for (int32_t d = 0; d < s.devices_per_host; ++d) {
          devices[k].push_back(h * per_host + next_free[size_t(h)] + d);
        }
        next_free[size_t(h)] += s.devices_per_host;
        placed = true;
      }
    }
    if (!placed) {
      return make_error(Errc::kInfeasible, "cannot place stage {} on submesh {} of cluster {}", k,
                        s.to_string(), cluster.name);
    }
  }

  // Which stage runs each unit.
  const graph::Graph& ug = profiler.unit_graph();
  std::map<int32_t, size_t> stage_of_unit;
  for (size_t k = 0; k < stages.size(); ++k) {
    for (int32_t l = stages[k].first_layer; l <= stages[k].last_layer; ++l) {
      for (int32_t u : profiler.units_of_layer(l)) stage_of_unit[u] = k;
    }
  }
  const auto spec_in_stage = [&](size_t k, ValueId v) -> std::string {
    const StageAssignment& a = stages[k];
    for (int32_t l = a.first_layer; l <= a.last_layer; ++l) {
      for (int32_t u : profiler.units_of_layer(l)) {
        const auto& specs = profiler.unit(u, a.submesh, a.config).plan.specs;
        auto it = specs.find(v);
        if (it != specs.end()) return it->second.to_string();
      }
    }
    return "";
  };
  const auto host_of = [&](int32_t device) { return device / per_host; };
  const auto one_host = [&](size_t a, size_t b) {
    std::set<int32_t> hosts;
    for (int32_t d : devices[a]) hosts.insert(host_of(d));
    for (int32_t d : devices[b]) hosts.insert(host_of(d));
    return hosts.size() == 1;
  };

  for (size_t k = 0; k < stages.size(); ++k) {
    const StageAssignment& a = stages[k];
    StagePlan sp;
    sp.first_layer = a.first_layer;
    sp.last_layer = a.last_layer;
    sp.submesh = profiler.submeshes()[static_cast<size_t>(a.submesh)];
    sp.devices = devices[k];
    sp.mesh = profiler.configs(a.submesh)[static_cast<size_t>(a.config)].mesh;
    const StageCost sc = profiler.stage(a.first_layer, a.last_layer, a.submesh, a.config);
    sp.time = sc.time - sc.transfer;
    sp.memory = sc.memory;
    sp.in_flight = options.schedule == "gpipe" ? static_cast<int32_t>(micro_batches)
                                               : static_cast<int32_t>(stages.size() - k);
    sp.memory.peak = sp.memory.persistent + sp.memory.working + sp.in_flight * sp.memory.stash;
    for (int32_t l = a.first_layer; l <= a.last_layer; ++l) {
      for (int32_t u : profiler.units_of_layer(l)) {
        const ShardingPlan& up = profiler.unit(u, a.submesh, a.config).plan;
        for (const auto& [v, spec] : up.specs)
          sp.value_specs.emplace(ug.value(v).name, spec.to_string());
        for (const OpDecision& d : up.ops) {
          sp.op_strategies[ug.op(d.op).name] = d.strategy;
          sp.op_layouts[ug.op(d.op).name] = layout_to_string(d.layout);
        }
      }
    }
    plan.stages.push_back(std::move(sp));
  }

  // Cross-stage transfers on their actual links (each byte crosses once: local all-gather).
  std::set<std::pair<int32_t, size_t>> seen;
  for (const graph::Op& op : ug.ops()) {
    auto to = stage_of_unit.find(op.layer);
    if (to == stage_of_unit.end()) continue;
    for (ValueId v : op.inputs) {
      const graph::Value& val = ug.value(v);
      if (!val.producer.is_valid()) continue;
      auto from = stage_of_unit.find(ug.op(val.producer).layer);
      if (from == stage_of_unit.end() || from->second == to->second) continue;
      if (!seen.insert({v.value(), to->second}).second) continue;
      const mesh::LinkSpec& link =
          one_host(from->second, to->second) ? cluster.intra_host : cluster.inter_host;
      CrossStageTransfer t;
      t.value = val.name;
      t.from_stage = static_cast<int32_t>(from->second);
      t.to_stage = static_cast<int32_t>(to->second);
      t.from_spec = spec_in_stage(from->second, v);
      t.to_spec = spec_in_stage(to->second, v);
      t.bytes = val.bytes();
      t.seconds = link.latency.value() + static_cast<double>(t.bytes) / link.bandwidth;
      // A parameter gradient (e.g. of a tied embedding) is summed locally and sent once per step.
      if (profiler.is_parameter_gradient(v)) t.seconds /= static_cast<double>(micro_batches);
      plan.stages[to->second].time += t.seconds;
      plan.transfers.push_back(std::move(t));
    }
  }

  double sum = 0.0;
  double max = 0.0;
  for (const StagePlan& sp : plan.stages) {
    sum += sp.time;
    max = std::max(max, sp.time);
    plan.max_memory_per_device = std::max(plan.max_memory_per_device, sp.memory.peak);
  }
  plan.step_time = sum + static_cast<double>(micro_batches - 1) * max;
  const double flops = model_flops_per_micro_batch(g) * static_cast<double>(micro_batches);
  plan.tflops_per_device =
      plan.step_time > 0 ? flops / (plan.step_time * cluster.num_devices()) / 1e12 : 0.0;
  MP_RETURN_IF_ERROR(plan.validate());
  return plan;
}

namespace {

Expected<Plan> plan_one(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                        const CostModel& cost, const PlannerOptions& options, int64_t micro_batches,
                        ShardingCache& cache, PlanningTimes& times) {
  const auto report = [&](const std::string& phase, int64_t done, int64_t total) {
    if (options.progress) options.progress(phase, done, total);
  };
  auto t0 = std::chrono::steady_clock::now();
  report("clustering", 0, 1);
  MP_ASSIGN_OR_RETURN(LayerClustering clustering, cluster_layers(g, options.clustering));
  graph::Graph clustered = apply_clustering(g, clustering);
  std::vector<int32_t> blocks;
  for (const graph::Op& op : g.ops()) blocks.push_back(op.layer);
  times.clustering += seconds_since(t0);
  report("clustering", 1, 1);

  t0 = std::chrono::steady_clock::now();
  StageProfileOptions po = options.profile;
  po.micro_batches = micro_batches;
  po.progress = [&](int64_t done, int64_t total) { report("stage costs", done, total); };
  StageProfiler profiler(clustered, blocks, cluster, cost, po, cache);
  MP_RETURN_IF_ERROR(profiler.profile());
  const StageDpInput input = profiler.dp_input();
  times.stage_costs += seconds_since(t0);

  // The DP cannot know which stages will share a host, so it runs twice: with transfers priced
  // on the network and on the intra-host link; each answer is placed and priced exactly, and the
  // faster plan wins.
  t0 = std::chrono::steady_clock::now();
  report("stage DP", 0, 1);
  std::vector<StageDpInput> inputs{input};
  if (cluster.hosts > 1) inputs.push_back(profiler.dp_input(cluster.intra_host));
  std::optional<Plan> best;
  Status error;
  for (const StageDpInput& in : inputs) {
    auto dp = solve_stage_dp(in);
    if (!dp.has_value()) {
      error = dp.status().with_context(
          fmt::format("{} micro-batches of {}", micro_batches, graph_micro_batch(g)));
      continue;
    }
    auto plan =
        build_plan(g, clustering, profiler, dp->stages, cluster, cost, options, micro_batches);
    if (!plan.has_value()) {
      error = plan.status();
      continue;
    }
    if (!best || plan->step_time < best->step_time) best = std::move(*plan);
  }
  // The standard pipeline recipes, priced on the same profiles (see best_pipeline_recipe).
  auto recipe = best_pipeline_recipe(g, cluster, cost, options, micro_batches, cache);
  if (recipe.has_value() && (!best || recipe->step_time < best->step_time))
    best = std::move(*recipe);
  times.stage_dp += seconds_since(t0);
  report("stage DP", 1, 1);
  if (!best) return error;
  return *best;
}

}  // namespace

Expected<std::vector<MicroBatching>> micro_batch_candidates(const graph::Graph& g,
                                                            const PlannerOptions& options) {
  const int64_t micro = graph_micro_batch(g);
  const int64_t global = options.global_batch > 0
                             ? options.global_batch
                             : micro * std::max<int64_t>(1, options.micro_batches);
  std::vector<MicroBatching> out;
  if (options.micro_batches > 0) {
    if (global % options.micro_batches != 0) {
      return make_error(Errc::kInvalidArgument,
                        "global batch {} is not divisible by {} micro-batches", global,
                        options.micro_batches);
    }
    out.push_back({global / options.micro_batches, options.micro_batches});
  } else if (options.graph_for_micro_batch) {
    std::vector<int64_t> sizes = options.micro_batch_sizes;
    if (sizes.empty()) {
      for (int64_t s = 1; s <= 32; s *= 2) sizes.push_back(s);
    }
    for (int64_t s : sizes) {
      if (s <= global && global % s == 0) out.push_back({s, global / s});
    }
  } else {
    if (global % micro != 0) {
      return make_error(Errc::kInvalidArgument,
                        "global batch {} is not a multiple of the graph's micro-batch {}", global,
                        micro);
    }
    out.push_back({micro, global / micro});
  }
  if (out.empty()) {
    return make_error(Errc::kInvalidArgument, "no micro-batch size divides the global batch {}",
                      global);
  }
  return out;
}

Expected<graph::Graph> graph_for_micro_batch(const graph::Graph& g, const PlannerOptions& options,
                                             int64_t micro_batch) {
  if (micro_batch == graph_micro_batch(g)) return g;
  if (!options.graph_for_micro_batch) {
    return make_error(Errc::kInvalidArgument,
                      "micro-batch {} needs its own graph (the given one has {}) and no graph "
                      "factory was given",
                      micro_batch, graph_micro_batch(g));
  }
  return options.graph_for_micro_batch(micro_batch);
}

Expected<Plan> make_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                         const CostModel& cost, const PlannerOptions& options) {
  ShardingCache cache;
  return make_plan(g, cluster, cost, options, cache);
}

Expected<Plan> make_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                         const CostModel& cost, const PlannerOptions& options,
                         ShardingCache& cache) {
  const auto start = std::chrono::steady_clock::now();
  MP_RETURN_IF_ERROR(options.validate());
  MP_RETURN_IF_ERROR(cluster.validate());
  const auto log = module_logger("planner");
  MP_ASSIGN_OR_RETURN(std::vector<MicroBatching> candidates, micro_batch_candidates(g, options));
  const int64_t solves0 = cache.solves();
  const int64_t hits0 = cache.hits();
  PlanningTimes times;
  std::optional<Plan> best;
  Status last_error;
  for (const MicroBatching& c : candidates) {
    MP_ASSIGN_OR_RETURN(graph::Graph graph, graph_for_micro_batch(g, options, c.micro_batch));
    auto plan = plan_one(graph, cluster, cost, options, c.micro_batches, cache, times);
    if (!plan.has_value()) {
      log->debug("micro-batch {}: {}", c.micro_batch, plan.status().to_string());
      last_error = plan.status();
      if (plan.status().code() != Errc::kInfeasible) return plan.status();
      continue;
    }
    log->debug("micro-batch {} x {}: step {:.4f} s, {} stages", c.micro_batch, c.micro_batches,
               plan->step_time, plan->stages.size());
    if (!best || plan->step_time < best->step_time) best = std::move(*plan);
  }
  if (!best) return last_error;
  times.intra_op_solves = cache.solves() - solves0;
  times.intra_op_reused = cache.hits() - hits0;
  times.total = seconds_since(start);
  best->times = times;
  return *best;
}

}  // namespace meshpipe::planner

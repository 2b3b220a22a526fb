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

// options.progress, when set.
void report(const PlannerOptions& options, const std::string& phase, int64_t done, int64_t total) {
  if (options.progress) options.progress(phase, done, total);
}

}  // namespace

Status PlannerOptions::validate() const {
  if (global_batch < 0 || micro_batches < 0) {
    return make_error(Errc::kInvalidArgument, "global batch and micro-batches must be >= 0");
  }
  if (schedule != Schedule::k1F1B && schedule != Schedule::kGPipe) {
    return make_error(Errc::kInvalidArgument, "schedule {} is neither 1f1b nor gpipe",
                      static_cast<int>(schedule));
  }
  for (int64_t s : micro_batch_sizes) {
    if (s < 1) return make_error(Errc::kInvalidArgument, "micro-batch size {} is not positive", s);
  }
  MP_RETURN_IF_ERROR(clustering.validate());
  return profile.validate();
}

namespace {

// The plan for one clustering: stage profiles, the stage DP (and the recipes it is compared
// with), the faster of the two.
Expected<Plan> plan_clustered(const graph::Graph& g, const LayerClustering& clustering,
                              const mesh::ClusterSpec& cluster, const CostModel& cost,
                              const PlannerOptions& options, int64_t micro_batches,
                              ShardingCache& cache, PlanningTimes& times) {
  graph::Graph clustered = apply_clustering(g, clustering);
  std::vector<int32_t> blocks;
  for (const graph::Op& op : g.ops()) blocks.push_back(op.layer);

  auto t0 = std::chrono::steady_clock::now();
  StageProfileOptions po = options.profile;
  po.micro_batches = micro_batches;
  po.schedule = options.schedule;
  po.progress = [&](int64_t done, int64_t total) { report(options, "stage costs", done, total); };
  StageProfiler profiler(clustered, blocks, cluster, cost, po, cache);
  MP_RETURN_IF_ERROR(profiler.profile());
  const StageDpInput input = profiler.dp_input();
  times.stage_costs += seconds_since(t0);
  module_logger("planner")->debug("{} layers, {} micro-batches of {}: stage costs {:.2f} s",
                                  clustering.num_layers, micro_batches, graph_micro_batch(g),
                                  seconds_since(t0));

  // The DP cannot know which stages will share a host, so it runs twice: with transfers priced
  // on the network and on the intra-host link; each answer is placed and priced exactly, and the
  // faster plan wins.
  t0 = std::chrono::steady_clock::now();
  report(options, "stage DP", 0, 1);
  std::vector<StageDpInput> inputs{input};
  if (cluster.hosts > 1) inputs.push_back(profiler.dp_input(cluster.intra_host));
  std::optional<Plan> best;
  Status error;
  double dp_step_time = 0.0;
  double recipe_step_time = 0.0;
  for (const StageDpInput& in : inputs) {
    auto dp = solve_stage_dp(in);
    if (!dp.has_value()) {
      error = dp.status().with_context(
          fmt::format("{} micro-batches of {}", micro_batches, graph_micro_batch(g)));
      continue;
    }
    // The DP's split and the runners-up it met, each placed and priced exactly: the DP's
    // transfer costs do not know placement, so its second best may be faster.
    std::vector<std::vector<StageChoice>> splits = {dp->stages};
    for (auto& alt : dp->alternatives) splits.push_back(std::move(alt));
    for (const std::vector<StageChoice>& split : splits) {
      auto plan = build_plan(g, clustering, profiler, split, cluster,
                             {options.model, options.schedule, micro_batches});
      if (!plan.has_value()) {
        error = plan.status();
        continue;
      }
      if (!best || plan->step_time < best->step_time) best = std::move(*plan);
    }
  }
  if (best) dp_step_time = best->step_time;
  const double dp_seconds = seconds_since(t0);
  // The standard pipeline recipes, priced on the same profiles (see best_pipeline_recipe).
  PlannerOptions ro = options;
  ro.clustering.num_layers = clustering.num_layers;
  auto recipe = best_pipeline_recipe(g, cluster, cost, ro, micro_batches, cache);
  if (recipe.has_value()) recipe_step_time = recipe->step_time;
  if (recipe.has_value() && (!best || recipe->step_time < best->step_time))
    best = std::move(*recipe);
  times.stage_dp += seconds_since(t0);
  module_logger("planner")->debug(
      "{} layers, {} micro-batches of {}: stage DP and its splits priced {:.2f} s, recipes {:.2f} "
      "s",
      clustering.num_layers, micro_batches, graph_micro_batch(g), dp_seconds,
      seconds_since(t0) - dp_seconds);
  report(options, "stage DP", 1, 1);
  if (!best) return error;
  best->times.dp_step_time = dp_step_time;
  best->times.recipe_step_time = recipe_step_time;
  return *best;
}

// The layer counts make_plan plans at: the given one, or the searched one (the widest-cut rule)
// and, when that is below max_layers, the finest clustering that exists up to max_layers too —
// a coarse clustering bounds the pipeline (at most L stages, cut only where it cuts), so the
// plan each allows decides (heterogeneous models such as Wide-ResNet need the finer one).
Expected<std::vector<LayerClustering>> clustering_candidates(const graph::Graph& g,
                                                             const ClusteringOptions& options) {
  std::vector<LayerClustering> out;
  MP_ASSIGN_OR_RETURN(LayerClustering searched, cluster_layers(g, options));
  const int32_t searched_layers = searched.num_layers;
  out.push_back(std::move(searched));
  if (options.num_layers != 0) return out;
  for (int32_t l = options.max_layers; l > searched_layers; l /= 2) {
    ClusteringOptions fine = options;
    fine.num_layers = l;
    auto c = cluster_layers(g, fine);
    if (c.has_value()) {
      out.push_back(std::move(*c));
      break;
    }
  }
  return out;
}

Expected<Plan> plan_one(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                        const CostModel& cost, const PlannerOptions& options, int64_t micro_batches,
                        ShardingCache& cache, PlanningTimes& times) {
  auto t0 = std::chrono::steady_clock::now();
  report(options, "clustering", 0, 1);
  MP_ASSIGN_OR_RETURN(std::vector<LayerClustering> clusterings,
                      clustering_candidates(g, options.clustering));
  times.clustering += seconds_since(t0);
  report(options, "clustering", 1, 1);
  std::optional<Plan> best;
  Status error;
  // The best DP answer and recipe over every clustering (what make_plan compared).
  double dp_step_time = 0.0;
  double recipe_step_time = 0.0;
  const auto keep_min = [](double& m, double t) {
    if (t > 0 && (m == 0 || t < m)) m = t;
  };
  for (size_t k = 0; k < clusterings.size(); ++k) {
    auto plan =
        plan_clustered(g, clusterings[k], cluster, cost, options, micro_batches, cache, times);
    if (!plan.has_value()) {
      // The searched clustering's errors are the answer; an extra candidate's are skipped.
      if (k == 0 && plan.status().code() != Errc::kInfeasible) return plan.status();
      if (k == 0 || !best) error = plan.status();
      continue;
    }
    keep_min(dp_step_time, plan->times.dp_step_time);
    keep_min(recipe_step_time, plan->times.recipe_step_time);
    if (!best || plan->step_time < best->step_time) best = std::move(*plan);
  }
  if (!best) return error;
  best->times.dp_step_time = dp_step_time;
  best->times.recipe_step_time = recipe_step_time;
  return *best;
}

}  // namespace

Expected<std::vector<MicroBatching>> micro_batch_candidates(const graph::Graph& g,
                                                            const PlannerOptions& options,
                                                            int64_t devices) {
  const int64_t micro = graph_micro_batch(g);
  const int64_t global = options.global_batch > 0
                             ? options.global_batch
                             : micro * std::max<int64_t>(1, options.micro_batches);
  if (global > kMaxGlobalBatch) {
    return make_error(Errc::kOutOfRange,
                      "the global batch of {} is more than the {} a plan may have", global,
                      kMaxGlobalBatch);
  }
  if (options.micro_batches > kMaxMicroBatches) {
    return make_error(Errc::kOutOfRange,
                      "{} micro-batches are more than the {} a plan may have (lowered programs "
                      "grow with the micro-batch count)",
                      options.micro_batches, kMaxMicroBatches);
  }
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
    const int64_t multiple = std::max<int64_t>(1, options.micro_batch_multiple);
    if (sizes.empty()) {
      const int64_t largest = std::max<int64_t>(32 * multiple, devices > 0 ? global / devices : 0);
      for (int64_t s = multiple; s <= largest; s *= 2) sizes.push_back(s);
    }
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    for (int64_t s : sizes) {
      if (s % multiple == 0 && s <= global && global % s == 0 && global / s <= kMaxMicroBatches) {
        out.push_back({s, global / s});
      }
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
    return make_error(Errc::kInvalidArgument,
                      "no micro-batch size divides the global batch {} into at most {} "
                      "micro-batches",
                      global, kMaxMicroBatches);
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
  MP_ASSIGN_OR_RETURN(std::vector<MicroBatching> candidates,
                      micro_batch_candidates(g, options, cluster.num_devices()));
  const int64_t solves0 = cache.solves();
  const int64_t hits0 = cache.hits();
  PlanningTimes times;
  std::optional<Plan> best;
  Status last_error;
  const auto n = static_cast<int64_t>(candidates.size());
  for (int64_t k = 0; k < n; ++k) {
    const MicroBatching& c = candidates[size_t(k)];
    if (n > 1) {
      report(options,
             fmt::format("micro-batch size {} ({} micro-batches)", c.micro_batch, c.micro_batches),
             k, n);
    }
    MP_ASSIGN_OR_RETURN(graph::Graph graph, graph_for_micro_batch(g, options, c.micro_batch));
    auto plan = plan_one(graph, cluster, cost, options, c.micro_batches, cache, times);
    if (!plan.has_value()) {
      log->debug("micro-batch {}: {}", c.micro_batch, plan.status().to_string());
      last_error = plan.status();
      if (plan.status().code() != Errc::kInfeasible) return plan.status();
      // Nothing fits at this size, so nothing fits at a larger one: a stage's activations per
      // micro-batch grow with its size, while its parameters, gradients and optimizer state do
      // not shrink; the stashes it holds do not shrink either (1F1B: min(s, B) in flight, and
      // min(s, B/2) x (2 b) >= min(s, B) x b; GPipe: all B x b samples), nor does the working
      // set of one micro-batch. The candidates are in ascending size order.
      if (k + 1 < n) {
        report(options,
               fmt::format("micro-batch size {}: nothing fits in memory; the {} larger sizes are "
                           "skipped (their activations only grow)",
                           c.micro_batch, n - k - 1),
               k + 1, n);
      }
      break;
    }
    log->debug("micro-batch {} x {}: step {:.4f} s, {} stages", c.micro_batch, c.micro_batches,
               plan->step_time, plan->stages.size());
    if (!best || plan->step_time < best->step_time) best = std::move(*plan);
  }
  if (!best) return last_error;
  times.intra_op_solves = cache.solves() - solves0;
  times.intra_op_reused = cache.hits() - hits0;
  times.total = seconds_since(start);
  times.dp_step_time = best->times.dp_step_time;
  times.recipe_step_time = best->times.recipe_step_time;
  best->times = times;
  return *best;
}

}  // namespace meshpipe::planner

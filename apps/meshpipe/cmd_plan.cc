// `meshpipe plan`, `meshpipe explain` and `meshpipe compare`: the inter-operator planner, a
// plan's description in words, and the plan next to every baseline.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>

#include "core/files.h"
#include "core/units.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "planner/baselines.h"
#include "planner/plan_binding.h"
#include "planner/planner.h"
#include "runtime/cost_models.h"
#include "runtime/counted_plan.h"

namespace meshpipe::cli {
namespace {

// --grid or --stages: the written-down plan priced (no search); one that does not fit device
// memory is printed, then reported as an error, and not written.
int run_manual_plan(const PlanArgs& args, const PlanSetup& setup, const std::string& output) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto cost_model = runtime::cost_model_for(setup.cluster);
  const planner::CostModel& cost = *cost_model;
  planner::ShardingCache cache;
  auto priced = price_manual_plan(args, setup, cost, cache);
  if (!priced.has_value()) return fail(priced.status());
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("manual plan: {}\n", manual_plan_label(args));
  print_plan_summary(priced->plan);
  fmt::print("pricing time: {:.2f} s\n", took);
  std::fflush(stdout);  // the table comes before the error
  if (!priced->fits.is_ok()) {
    return fail(priced->fits.with_context("the plan does not fit device memory"));
  }
  if (!output.empty()) {
    if (Status s = planner::save_plan(priced->plan, output); !s.is_ok()) return fail(s);
    fmt::print("wrote {}\n", output);
  }
  return 0;
}

int run_plan(const PlanArgs& args, const std::string& output) {
  auto setup = make_plan_setup(args);
  if (!setup.has_value()) return fail(setup.status());
  fmt::print("meshpipe plan: {} ({}) on {} ({} devices), global batch {}\n", setup->spec.name,
             dtype_name(setup->spec.dtype), setup->cluster.name, setup->cluster.num_devices(),
             setup->options.global_batch);
  std::fflush(stdout);
  if (!args.grid.empty() || !args.stages.empty()) return run_manual_plan(args, *setup, output);
  const auto cost_model = runtime::cost_model_for(setup->cluster);
  const planner::CostModel& cost = *cost_model;
  const auto t0 = std::chrono::steady_clock::now();
  auto plan = runtime::make_counted_plan(setup->graph, setup->cluster, cost, setup->options);
  if (!plan.has_value()) return fail(plan.status());
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  print_plan_summary(*plan);
  const planner::PlanningTimes& t = plan->times;
  fmt::print(
      "planning time: clustering {:.2f} s, stage costs {:.2f} s ({} ILPs solved, {} "
      "reused), stage DP {:.2f} s, total {:.2f} s; memory counted on the lowered program in "
      "{:.2f} s\n",
      t.clustering, t.stage_costs, t.intra_op_solves, t.intra_op_reused, t.stage_dp, t.total,
      std::max(0.0, wall - t.total));
  if (!output.empty()) {
    if (Status s = planner::save_plan(*plan, output); !s.is_ok()) return fail(s);
    fmt::print("wrote {}\n", output);
  }
  return 0;
}

// A layout in words: "column split over mesh axis 1", "replicated", ...
std::string in_words(const mesh::ShardingSpec& spec, int64_t rank) {
  const mesh::ShardingSpec* s = &spec;
  std::vector<std::string> parts;
  for (size_t d = 0; d < s->dims.size(); ++d) {
    const auto axes = mesh::dim_axes(s->dims[d]);
    if (axes.empty()) continue;
    std::string where = axes.size() == 2 ? fmt::format("mesh axes {} and {}", axes[0], axes[1])
                                         : fmt::format("mesh axis {}", axes[0]);
    std::string what = fmt::format("dim {}", d);
    if (rank == 2) what = d == 0 ? "row" : "column";
    parts.push_back(fmt::format("{} split over {}", what, where));
  }
  if (parts.empty()) return "replicated";
  std::string out = parts[0];
  for (size_t k = 1; k < parts.size(); ++k) out += ", " + parts[k];
  return out;
}

int run_explain(const std::string& path) {
  auto plan = planner::load_plan(path);
  if (!plan.has_value()) return fail(plan.status());
  // The model's parameters (shapes and roles) when it is a zoo model; the plan's layouts and
  // specs are checked against the graph's shapes first, as training would.
  std::map<std::string, int64_t> rank_of;
  bool stale = false;
  if (auto spec = graph::models::find_model(plan->model); spec.has_value()) {
    auto g = training_graph(*spec, plan->micro_batch, plan->dtype);
    if (g.has_value()) {
      if (planner::graph_fingerprint(*g) != plan->graph_fingerprint) {
        stale = true;
      } else if (auto bound = planner::bind_plan(*plan, *g); !bound.has_value()) {
        return fail(bound.status().with_context(fmt::format("plan file '{}'", path)));
      }
      for (const graph::Value& v : g->values()) {
        if (v.role == graph::ValueRole::kParameter) rank_of[v.name] = v.shape.rank();
      }
    }
  }
  fmt::print("plan {}: {} on {} ({} devices), global batch {}\n", printable(path), plan->model,
             plan->cluster.name, plan->cluster.num_devices(), plan->global_batch);
  if (stale) {
    fmt::print("warning: the plan was made for a different version of {}'s graph\n", plan->model);
  }
  print_plan_summary(*plan);
  for (size_t k = 0; k < plan->stages.size(); ++k) {
    const planner::StagePlan& s = plan->stages[k];
    fmt::print("\nstage {}: layers {}-{} on devices {}-{} as logical mesh {}{}\n", k, s.first_layer,
               s.last_layer, s.devices.front(), s.devices.back(), s.mesh.to_string(),
               s.recompute ? ", recomputing its activations" : "");
    fmt::print(
        "  memory per device: parameters and optimizer state {}, gradients {}, stash {} x "
        "{} in flight, working {}: peak {}{}\n",
        format_bytes(Bytes(s.memory.persistent)), format_bytes(Bytes(s.memory.gradients)),
        format_bytes(Bytes(s.memory.stash)), s.in_flight, format_bytes(Bytes(s.memory.working)),
        s.memory.estimated > 0 ? format_bytes(Bytes(s.memory.estimated))
                               : format_bytes(Bytes(s.memory.peak)),
        s.memory.estimated > 0 ? fmt::format(" estimated; {} counted on the lowered program",
                                             format_bytes(Bytes(s.memory.peak)))
                               : "");
    int shown = 0;
    for (const auto& [name, spec] : s.value_specs) {
      auto it = rank_of.find(name);
      if (it == rank_of.end() || it->second < 2) continue;  // matrices and larger weights
      fmt::print("  {:<32} {:<10} {}\n", name, spec.to_string(), in_words(spec, it->second));
      ++shown;
    }
    if (shown == 0) fmt::print("  (no weight matrices: model not in the zoo)\n");
  }
  if (!plan->transfers.empty()) {
    fmt::print("\ncross-stage transfers per micro-batch:\n");
    for (const auto& t : plan->transfers) {
      fmt::print("  {:<36} stage {} -> {}  {} -> {}  {}  {}\n", t.value, t.from_stage, t.to_stage,
                 t.from_spec.to_string(), t.to_spec.to_string(), format_bytes(Bytes(t.bytes)),
                 format_seconds(Seconds(t.seconds)));
    }
  }
  return 0;
}

int run_compare(const PlanArgs& args) {
  auto setup = make_plan_setup(args);
  if (!setup.has_value()) return fail(setup.status());
  fmt::print("meshpipe compare: {} on {} ({} devices), global batch {}\n", setup->spec.name,
             setup->cluster.name, setup->cluster.num_devices(), setup->options.global_batch);
  std::fflush(stdout);
  const auto cost_model = runtime::cost_model_for(setup->cluster);
  const planner::CostModel& cost = *cost_model;
  planner::ShardingCache cache;
  // A written-down plan first: an impossible one is reported before the search.
  std::optional<planner::PricedPlan> manual;
  if (!args.grid.empty() || !args.stages.empty()) {
    auto priced = price_manual_plan(args, *setup, cost, cache);
    if (!priced.has_value()) return fail(priced.status());
    manual = std::move(*priced);
  }
  auto plan =
      runtime::make_counted_plan(setup->graph, setup->cluster, cost, setup->options, &cache);
  if (!plan.has_value()) return fail(plan.status());
  setup->options.progress = nullptr;
  const auto baselines =
      planner::run_baselines(setup->graph, setup->cluster, cost, setup->options, &cache);
  fmt::print("{:<16} {:>11} {:>9} {:>12} {:>9}  {}\n", "plan", "step time", "TFLOP/s", "memory/dev",
             "slower by", "configuration");
  fmt::print("{:<16} {:>11} {:>9.3g} {:>12} {:>9}  {} stages, {} micro-batches of {}\n", "meshpipe",
             format_seconds(Seconds(plan->step_time)), plan->tflops_per_device,
             format_bytes(Bytes(plan->max_memory_per_device)), "1.00x", plan->stages.size(),
             plan->micro_batches, plan->micro_batch);
  if (manual) {
    const planner::Plan& m = manual->plan;
    const std::string label = args.grid.empty() ? "--stages" : "--grid";
    const std::string config =
        fmt::format("{}, {} micro-batches of {}{}", manual_plan_label(args), m.micro_batches,
                    m.micro_batch, manual->fits.is_ok() ? "" : " (does not fit memory)");
    fmt::print("{:<16} {:>11} {:>9.3g} {:>12} {:>8.2f}x  {}\n", label,
               format_seconds(Seconds(m.step_time)), m.tflops_per_device,
               format_bytes(Bytes(m.max_memory_per_device)), m.step_time / plan->step_time, config);
  }
  for (const auto& b : baselines) {
    if (!b.plan) {
      fmt::print("{:<16} {:>11} {:>9} {:>12} {:>9}  {}\n", b.name, "-", "-", "-", "-",
                 b.status.message());
      continue;
    }
    fmt::print("{:<16} {:>11} {:>9.3g} {:>12} {:>8.2f}x  {}\n", b.name,
               format_seconds(Seconds(b.plan->step_time)), b.plan->tflops_per_device,
               format_bytes(Bytes(b.plan->max_memory_per_device)),
               b.plan->step_time / plan->step_time, b.description);
  }
  fmt::print("(slower by: the plan's step time / meshpipe's, under the same cost model)\n");
  return 0;
}

}  // namespace

void add_plan_commands(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<PlanArgs>();
  auto output = std::make_shared<std::string>();
  CLI::App* plan = app.add_subcommand(
      "plan",
      "Plan a model for a cluster: cluster layers, cost every stage on every submesh with "
      "the intra-op ILP, choose stages, meshes and micro-batches by the stage DP; or price a "
      "plan written down with --grid or --stages");
  add_plan_options(plan, *args);
  plan->add_option("-o,--output", *output, "write the plan as JSON");
  plan->callback([args, output, &exit_code] { exit_code = run_plan(*args, *output); });

  auto path = std::make_shared<std::string>();
  CLI::App* explain = app.add_subcommand(
      "explain",
      "Describe a plan file: stages, meshes, predicted costs, and the sharding of each "
      "stage's weight matrices in words");
  explain->add_option("plan", *path, "plan JSON written by `meshpipe plan -o`")->required();
  explain->callback([path, &exit_code] { exit_code = run_explain(*path); });

  auto cargs = std::make_shared<PlanArgs>();
  CLI::App* compare = app.add_subcommand(
      "compare",
      "Plan a model and show it next to data parallel, ZeRO-2/3, the best Megatron "
      "grid, equal-layer and equal-operator pipelines, intra-op only and inter-op only, "
      "all under the same cost model (and the --grid or --stages plan, when given)");
  add_plan_options(compare, *cargs);
  compare->callback([cargs, &exit_code] { exit_code = run_compare(*cargs); });
}

}  // namespace meshpipe::cli

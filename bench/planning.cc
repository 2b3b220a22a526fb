// Planning time of Alpa's benchmark suites on their cluster sizes (p3.16xlarge hosts), and the
// predicted throughput of meshpipe's plan against every baseline and against the plan Alpa found
// for the point (written down with --stages: docs/algorithms.md §4.2), all under the same cost
// model. Per point: the stage DP's own answer, the best standard recipe, the plan returned (the
// faster of the two), Alpa's plan and the planning time. Targets: GPT-39B on 64 GPUs planned in
// under 60 s; meshpipe never predicted slower than the best baseline or Alpa's plan.
//
//   bench_planning [--markdown PATH] [--only NAME] [--no-baselines]
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "bench_env.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/manual_plan.h"
#include "planner/planner.h"
#include "runtime/counted_plan.h"

using namespace meshpipe;

namespace {

struct Case {
  std::string model;
  int32_t gpus;
  int64_t global_batch;
  int64_t micro_batch;  // samples per micro-batch of meshpipe's plan
  // The plan Alpa found for this point (docs/algorithms.md §4.2), in --stages form; empty when none
  // is listed. alpa_micro_batches: its NB (0: the same micro-batches as meshpipe's).
  std::string alpa_stages;
  int64_t alpa_micro_batches = 0;
};

// n stages "0@S:L;1@S:L;..." of one clustered layer each, on submesh S with logical mesh L (or
// alternating between L and L2 when given).
std::string stages_of(int n, const std::string& submesh, const std::string& logical,
                      const std::string& logical2 = "") {
  std::string out;
  for (int k = 0; k < n; ++k) {
    if (k > 0) out += ";";
    out += fmt::format("{}@{}:{}", k, submesh, logical2.empty() || k % 2 == 0 ? logical : logical2);
  }
  return out;
}

Expected<graph::Graph> training_graph(const graph::models::ModelSpec& spec, int64_t micro) {
  MP_ASSIGN_OR_RETURN(graph::ForwardGraph fg,
                      graph::models::build_model(spec, {.batch = micro, .dtype = {}}));
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                      graph::make_training_graph(std::move(fg), graph::OptimizerConfig{}));
  return std::move(tg.graph);
}

// p3.16xlarge hosts; fewer than 8 GPUs is one host with that many.
mesh::ClusterSpec cluster_for(int32_t gpus) {
  mesh::ClusterSpec c = *mesh::cluster_preset(fmt::format("p3.16xlarge:{}", std::max(1, gpus / 8)));
  if (gpus < 8) {
    c.devices_per_host = gpus;
    c.name = fmt::format("p3.16xlarge ({} GPUs)", gpus);
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  std::string markdown;
  std::string only;
  bool baselines = true;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--markdown" && i + 1 < argc) {
      markdown = argv[++i];
    } else if (flag == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (flag == "--no-baselines") {
      baselines = false;
    } else {
      fmt::print(stderr,
                 "usage: bench_planning [--markdown PATH] [--only MODEL] [--no-baselines]\n");
      return 2;
    }
  }
  // GPU counts and global batches of Alpa's weak-scaling suites (docs/algorithms.md §4.2).
  // Alpa's plans are docs/algorithms.md §4.2's (suite_auto_*.py); a stage count without a layer
  // count becomes one clustered layer per stage.
  const std::vector<Case> cases = {
      {"gpt-350m", 1, 1024, 1, "0@1x1:1x1", 512},
      {"gpt-760m", 2, 1024, 1, "0-2@1x1:1x1;3-5@1x1:1x1", 128},
      {"gpt-1.3b", 4, 1024, 1, stages_of(2, "1x2", "2x1"), 128},
      {"gpt-2.6b", 8, 1024, 1, "0-1@1x2:2x1;2-3@1x2:2x1;4-7@1x4:4x1", 128},
      {"gpt-6.7b", 16, 1024, 1, stages_of(2, "1x8", "2x4"), 64},
      {"gpt-15b", 32, 1024, 1, "0-3@1x8:2x4;4-7@1x8:2x4;8-11@1x8:2x4;12-15@1x8:2x4", 128},
      {"gpt-39b", 64, 1024, 1, stages_of(16, "1x4", "1x4"), 1024},
      {"moe-380m", 1, 1024, 2, "", 0},
      {"moe-690m", 2, 1024, 2, "", 0},
      {"moe-1.3b", 4, 1024, 2, "", 0},
      {"moe-2.4b", 8, 1024, 2, "", 0},
      {"moe-10b", 16, 1024, 2, stages_of(2, "1x8", "8x1"), 0},
      {"moe-27b", 32, 1024, 2, stages_of(8, "1x4", "4x1"), 0},
      {"moe-70b", 64, 1024, 2, stages_of(8, "1x8", "8x1"), 0},
      {"wresnet-250m", 1, 1536, 4, "", 0},
      {"wresnet-500m", 2, 1536, 4, "", 0},
      {"wresnet-1b", 4, 1536, 4, "", 0},
      {"wresnet-2b", 8, 1536, 4, "", 0},
      {"wresnet-4b", 16, 1536, 4, "0-4@1x4:4x1;5-8@1x4:4x1;9-15@1x8:8x1", 0},
      {"wresnet-6.8b", 32, 1536, 4, "", 0},
      {"wresnet-13b", 64, 1520, 4, stages_of(8, "1x8", "8x1", "1x8"), 0},
  };
  std::string table =
      "| model | GPUs | micro-batches | planning s (stage costs / DP + recipes) | ILPs solved / "
      "reused | GiB per GPU counted / model's estimate (count's time) | stages | meshpipe TFLOP/s "
      "per GPU | stage DP alone | best recipe | best baseline | its TFLOP/s | Alpa's plan | its "
      "TFLOP/s | meshpipe / best other |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::string detail;
  double gpt39 = -1;
  bool never_slower = true;
  std::vector<std::string> slower_rows;
  const auto tflops_at = [](const planner::Plan& p, double step_time) {
    return step_time > 0 ? p.tflops_per_device * p.step_time / step_time : 0.0;
  };
  for (const Case& c : cases) {
    if (!only.empty() && c.model != only) continue;
    auto spec = graph::models::find_model(c.model);
    auto g = training_graph(*spec, c.micro_batch);
    if (!g) return fmt::print(stderr, "{}: {}\n", c.model, g.status().to_string()), 1;
    const mesh::ClusterSpec cluster = cluster_for(c.gpus);
    planner::AnalyticCostModel cost(cluster.device);
    planner::PlannerOptions o;
    o.model = c.model;
    o.global_batch = c.global_batch;
    o.micro_batches = c.global_batch / c.micro_batch;
    // Alpa's micro-batch size is a candidate of meshpipe's search too.
    const int64_t alpa_nb = c.alpa_micro_batches > 0 ? c.alpa_micro_batches : o.micro_batches;
    if (alpa_nb != o.micro_batches) {
      o.micro_batches = 0;
      o.micro_batch_sizes = {c.micro_batch, c.global_batch / alpa_nb};
      o.graph_for_micro_batch = [&spec](int64_t micro) { return training_graph(*spec, micro); };
    }
    planner::ShardingCache cache;
    const auto t0 = std::chrono::steady_clock::now();
    // The plan a user gets: its memory counted on its lowered program (planned again if the
    // count does not fit); the count's time is reported apart from the planning time.
    auto plan = runtime::make_counted_plan(*g, cluster, cost, o, &cache);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double seconds = plan ? plan->times.total : wall;
    const double counting = std::max(0.0, wall - seconds);
    const std::string batches =
        o.micro_batches > 0 ? fmt::format("{} x {}", o.micro_batches, c.micro_batch)
                            : fmt::format("{} x {} or {} x {}", c.global_batch / c.micro_batch,
                                          c.micro_batch, alpa_nb, c.global_batch / alpa_nb);
    if (!plan) {
      table += fmt::format("| {} | {} | {} | {:.1f} | - | - | - | {} | | | | | | | |\n", c.model,
                           c.gpus, batches, seconds, plan.status().message());
      fmt::print("{}: {}\n", c.model, plan.status().to_string());
      never_slower = false;
      slower_rows.push_back(c.model + " (no plan)");
      continue;
    }
    if (c.model == "gpt-39b") gpt39 = seconds;
    std::string best_name = "-";
    double best_tflops = 0;
    std::string row_detail = fmt::format(
        "\n**{} on {} GPUs** (meshpipe: {} stages, {} x {}, {:.1f} TFLOP/s per GPU)\n\n| baseline "
        "| configuration | TFLOP/s per GPU |\n|---|---|---|\n",
        c.model, c.gpus, plan->stages.size(), plan->micro_batches, plan->micro_batch,
        plan->tflops_per_device);
    if (baselines) {
      planner::PlannerOptions bo = o;  // the baselines at meshpipe's chosen micro-batching
      bo.micro_batches = plan->micro_batches;
      auto bg = training_graph(*spec, plan->micro_batch);
      if (!bg) return fmt::print(stderr, "{}: {}\n", c.model, bg.status().to_string()), 1;
      const auto results = planner::run_baselines(*bg, cluster, cost, bo, &cache);
      for (const auto& b : results) {
        if (b.plan) {
          row_detail += fmt::format("| {} | {} | {:.2f} |\n", b.name, b.description,
                                    b.plan->tflops_per_device);
          if (b.plan->tflops_per_device > best_tflops) {
            best_tflops = b.plan->tflops_per_device;
            best_name = b.name;
          }
        } else {
          row_detail += fmt::format("| {} | {} | - |\n", b.name, b.status.message());
        }
      }
    }
    // Alpa's plan, priced by the same model (recomputation chosen per stage, as for meshpipe).
    double alpa_tflops = 0;
    std::string alpa_cell = "-";
    if (!c.alpa_stages.empty()) {
      auto stages = planner::parse_manual_stages(c.alpa_stages);
      auto ag = training_graph(*spec, c.global_batch / alpa_nb);
      planner::PlannerOptions ao = o;
      ao.micro_batches = alpa_nb;
      ao.micro_batch_sizes.clear();
      ao.graph_for_micro_batch = nullptr;
      ao.clustering.num_layers = 0;  // the stages' own layer count
      auto priced = stages && ag ? planner::price_manual_stages(*ag, cluster, cost, ao, alpa_nb,
                                                                *stages, cache)
                                 : Expected<planner::Plan>(stages ? ag.status() : stages.status());
      if (priced && ag) {
        const Status counted = runtime::count_plan_memory(*priced, *ag);
        if (!counted.is_ok()) priced = Expected<planner::Plan>(counted);
      }
      if (priced) {
        const Status fits = planner::check_stage_memory(*priced, ao.profile.memory_fraction);
        if (fits.is_ok()) {
          alpa_tflops = priced->tflops_per_device;
          alpa_cell = fmt::format("{:.1f}", alpa_tflops);
        } else {
          alpa_cell = fmt::format("({:.1f}, does not fit)", priced->tflops_per_device);
        }
        row_detail += fmt::format("| Alpa's plan | `{}`, {} x {}: {} | {} |\n", c.alpa_stages,
                                  alpa_nb, c.global_batch / alpa_nb,
                                  fits.is_ok() ? "fits" : fits.message(), alpa_cell);
      } else {
        alpa_cell = "error";
        row_detail += fmt::format("| Alpa's plan | `{}`: {} | - |\n", c.alpa_stages,
                                  priced.status().message());
      }
    }
    const double other = std::max(best_tflops, alpa_tflops);
    // Within the table's rounding (two decimals) counts as a tie.
    if (other > plan->tflops_per_device + 0.005) {
      never_slower = false;
      slower_rows.push_back(c.model);
    }
    const auto& t = plan->times;
    int64_t estimated = 0;
    for (const planner::StagePlan& sp : plan->stages) {
      estimated = std::max(estimated, sp.memory.estimated);
    }
    const std::string row = fmt::format(
        "| {} | {} | {} x {} | {:.1f} ({:.1f} / {:.2f}) | {} / {} | {:.2f} / {:.2f} ({:.1f} s) | "
        "{} "
        "| {:.2f} | {} | {} | {} | {} | {} | {} | {} |\n",
        c.model, c.gpus, plan->micro_batches, plan->micro_batch, seconds, t.stage_costs, t.stage_dp,
        t.intra_op_solves, t.intra_op_reused,
        static_cast<double>(plan->max_memory_per_device) / 1073741824.0,
        static_cast<double>(estimated) / 1073741824.0, counting, plan->stages.size(),
        plan->tflops_per_device,
        t.dp_step_time > 0 ? fmt::format("{:.2f}", tflops_at(*plan, t.dp_step_time)) : "-",
        t.recipe_step_time > 0 ? fmt::format("{:.2f}", tflops_at(*plan, t.recipe_step_time)) : "-",
        best_name, baselines ? fmt::format("{:.2f}", best_tflops) : "-",
        c.alpa_stages.empty() ? "-" : "yes", alpa_cell,
        other > 0 ? fmt::format("{:.2f}", plan->tflops_per_device / other) : "-");
    fmt::print("{}", row);
    std::fflush(stdout);
    table += row;
    detail += row_detail;
  }
  const std::string date = bench::utc_now();
  const std::string doc = fmt::format(
      "# Planning time and predicted throughput (Alpa's suites)\n\n"
      "Machine: {}; date {}; GLPK 5.0, the planner's intra-op problems solved on every core "
      "(one GLPK solve per thread). Clusters: p3.16xlarge hosts (8x V100 16 GB, "
      "NVLink, 25 Gbps between hosts), 4 GPUs = one host with 4. Analytic cost model (peak FLOP/s, "
      "alpha-beta links), so TFLOP/s are predictions, not measurements. Activation recomputation "
      "is chosen per stage by the DP (--recompute auto); the micro-batch sizes are fixed per "
      "suite (the rows' second factor). The plan's memory is counted on its lowered program "
      "(runtime/counted_plan.h; the model's estimate beside it, bench/results/memory.md), and so "
      "is Alpa's plan's; baselines keep the model's estimate. Baselines run under the same cost "
      "model and memory limit. Produced by `build/bin/bench_planning --markdown "
      "bench/results/planning.md`.\n\n{}\n"
      "GPT-39B on 64 GPUs planned in **{:.1f} s** (target < 60 s: {}). meshpipe predicted at least "
      "as fast as the best baseline and Alpa's plan on every row: **{}**{}.\n\n"
      "Columns: *stage DP alone* is the throughput of make_plan's stage DP answer and *best "
      "recipe* that of the best standard pipeline recipe (Megatron grid, equal layers, equal "
      "operators) it is compared with; the plan returned is the faster. *Alpa's plan* is the "
      "configuration docs/algorithms.md §4.2 lists for the point, written with --stages and priced "
      "by the "
      "same "
      "model at Alpa's micro-batch count (the intra-op pass shards inside each stage, "
      "recomputation "
      "chosen per stage); meshpipe's search also tries Alpa's micro-batch size.\n\n"
      "## Baselines per model\n{}",
      bench::machine(), date, table, gpt39, gpt39 >= 0 && gpt39 < 60 ? "met" : "not met",
      never_slower ? "yes" : "NO",
      slower_rows.empty() ? "" : fmt::format(" ({})", fmt::join(slower_rows, ", ")), detail);
  if (!markdown.empty()) {
    std::ofstream(markdown) << doc;
    fmt::print("wrote {}\n", markdown);
  }
  return 0;
}

// Planning time of Alpa's benchmark suites on their cluster sizes (p3.16xlarge hosts), and the
// predicted throughput of meshpipe's plan against every baseline under the same cost model.
// Targets: GPT-39B on 64 GPUs planned in under 60 s; meshpipe never predicted slower than the
// best baseline.
//
//   bench_planning [--markdown PATH] [--only NAME] [--no-baselines]
#include <fmt/format.h>

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
#include "planner/planner.h"

using namespace meshpipe;

namespace {

struct Case {
  std::string model;
  int32_t gpus;
  int64_t global_batch;
  int64_t micro_batch;  // samples per micro-batch (no activation recomputation: small)
};

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
  const std::vector<Case> cases = {
      {"gpt-1.3b", 4, 1024, 1},    {"gpt-2.6b", 8, 1024, 1},      {"gpt-6.7b", 16, 1024, 1},
      {"gpt-15b", 32, 1024, 1},    {"gpt-39b", 64, 1024, 1},      {"moe-1.3b", 4, 1024, 2},
      {"moe-2.4b", 8, 1024, 2},    {"moe-10b", 16, 1024, 2},      {"moe-27b", 32, 1024, 2},
      {"moe-70b", 64, 1024, 2},    {"wresnet-1b", 4, 1536, 4},    {"wresnet-2b", 8, 1536, 4},
      {"wresnet-4b", 16, 1536, 4}, {"wresnet-6.8b", 32, 1536, 4}, {"wresnet-13b", 64, 1520, 4},
  };
  std::string table =
      "| model | GPUs | micro-batches | planning s (stage costs / DP + recipes) | ILPs solved / "
      "reused | "
      "stages | meshpipe TFLOP/s per GPU | best baseline | its TFLOP/s | meshpipe / best |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n";
  std::string detail;
  double gpt39 = -1;
  bool never_slower = true;
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
    planner::ShardingCache cache;
    const auto t0 = std::chrono::steady_clock::now();
    auto plan = planner::make_plan(*g, cluster, cost, o, cache);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!plan) {
      table += fmt::format("| {} | {} | {} | {:.1f} | - | - | {} | | | |\n", c.model, c.gpus,
                           o.micro_batches, seconds, plan.status().message());
      fmt::print("{}: {}\n", c.model, plan.status().to_string());
      continue;
    }
    if (c.model == "gpt-39b") gpt39 = seconds;
    std::string best_name = "-";
    double best_tflops = 0;
    std::string row_detail = fmt::format(
        "\n**{} on {} GPUs** (meshpipe: {} stages, {:.1f} TFLOP/s per GPU)\n\n| baseline | "
        "configuration | TFLOP/s per GPU |\n|---|---|---|\n",
        c.model, c.gpus, plan->stages.size(), plan->tflops_per_device);
    if (baselines) {
      const auto results = planner::run_baselines(*g, cluster, cost, o, &cache);
      for (const auto& b : results) {
        if (b.plan) {
          row_detail += fmt::format("| {} | {} | {:.1f} |\n", b.name, b.description,
                                    b.plan->tflops_per_device);
          if (b.plan->tflops_per_device > best_tflops) {
            best_tflops = b.plan->tflops_per_device;
            best_name = b.name;
          }
        } else {
          row_detail += fmt::format("| {} | {} | - |\n", b.name, b.status.message());
        }
      }
      if (best_tflops > plan->tflops_per_device * (1 + 1e-9)) never_slower = false;
    }
    const auto& t = plan->times;
    const std::string row = fmt::format(
        "| {} | {} | {} x {} | {:.1f} ({:.1f} / {:.2f}) | {} / {} | {} | {:.1f} | {} | {} | {} |\n",
        c.model, c.gpus, o.micro_batches, c.micro_batch, seconds, t.stage_costs, t.stage_dp,
        t.intra_op_solves, t.intra_op_reused, plan->stages.size(), plan->tflops_per_device,
        best_name, baselines ? fmt::format("{:.1f}", best_tflops) : "-",
        baselines && best_tflops > 0 ? fmt::format("{:.2f}", plan->tflops_per_device / best_tflops)
                                     : "-");
    fmt::print("{}", row);
    std::fflush(stdout);
    table += row;
    detail += row_detail;
  }
  const std::string date = bench::utc_now();
  const std::string doc = fmt::format(
      "# Planning time and predicted throughput (Alpa's suites)\n\n"
      "Machine: {}; date {}; GLPK 5.0, one thread. Clusters: p3.16xlarge hosts (8x V100 16 GB, "
      "NVLink, 25 Gbps between hosts), 4 GPUs = one host with 4. Analytic cost model (peak FLOP/s, "
      "alpha-beta links), so TFLOP/s are predictions, not measurements. Activation recomputation "
      "is chosen per stage by the DP (--recompute auto); the micro-batch sizes are fixed per "
      "suite (the rows' second factor). The memory model counts gradient accumulators and "
      "resharded copies (bench/results/memory.md). Baselines run under the same cost "
      "model and memory limit. Produced by `build/bin/bench_planning --markdown "
      "bench/results/planning.md`.\n\n{}\n"
      "GPT-39B on 64 GPUs planned in **{:.1f} s** (target < 60 s: {}). meshpipe predicted at least "
      "as fast as the best baseline on every row: **{}**.\n\n## Baselines per model\n{}",
      bench::machine(), date, table, gpt39, gpt39 >= 0 && gpt39 < 60 ? "met" : "not met",
      never_slower ? "yes" : "NO", detail);
  if (!markdown.empty()) {
    std::ofstream(markdown) << doc;
    fmt::print("wrote {}\n", markdown);
  }
  return 0;
}

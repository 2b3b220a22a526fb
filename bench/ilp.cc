// ILP size and solve time of the intra-op pass for one GPT-39B layer, one MoE layer (MoE-70B)
// and one Wide-ResNet block (13B) on the logical meshes (1,8), (2,4) and (8,1) of one
// p3.16xlarge host. Target: every distinct (layer, mesh) problem solves in under 1 s.
//
//   bench_ilp [--markdown PATH] [--batch N]
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
#include "mesh/device_mesh.h"
#include "planner/sharding_pass.h"

using namespace meshpipe;

namespace {

struct Case {
  std::string model;
  int32_t layer;
  std::string what;
};

}  // namespace

int main(int argc, char** argv) {
  std::string markdown;
  int64_t batch = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--markdown") {
      markdown = argv[i + 1];
    } else if (flag == "--batch") {
      batch = std::stoll(argv[i + 1]);
    } else {
      fmt::print(stderr, "unknown flag {} (flags: --markdown PATH, --batch N)\n", flag);
      return 2;
    }
  }
  auto cluster = mesh::cluster_preset("p3.16xlarge:1");
  if (!cluster) return fmt::print(stderr, "{}\n", cluster.status().to_string()), 1;
  planner::AnalyticCostModel cost(cluster->device);
  const std::vector<Case> cases = {
      {"gpt-39b", 1, "GPT-39B layer 1 (hidden 8192, 64 heads, seq 1024)"},
      {"moe-70b", 2, "MoE-70B layer 2 (MoE: 64 experts, hidden 2048)"},
      {"wresnet-13b", 10, "Wide-ResNet-13B block 10 (320 channels x 16)"},
  };
  const std::vector<std::pair<int64_t, int64_t>> meshes = {{1, 8}, {2, 4}, {8, 1}};
  std::string table =
      "| layer | mesh | ops | ILP nodes | edges | variables | constraints | build s | solve s "
      "| method | predicted step s | memory/device "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  double worst = 0;
  for (const Case& c : cases) {
    auto spec = graph::models::find_model(c.model);
    auto fg = graph::models::build_model(*spec, {.batch = batch, .dtype = {}});
    if (!fg) return fmt::print(stderr, "{}\n", fg.status().to_string()), 1;
    auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
    if (!tg) return fmt::print(stderr, "{}\n", tg.status().to_string()), 1;
    for (const auto& [d0, d1] : meshes) {
      auto lm = mesh::make_logical_mesh(*cluster, mesh::SubmeshShape{1, 8}, d0, d1);
      planner::ShardingOptions opts;
      opts.first_layer = c.layer;
      opts.last_layer = c.layer;
      const auto t0 = std::chrono::steady_clock::now();
      auto plan = planner::shard_stage(tg->graph, *lm, cost, opts);
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!plan) return fmt::print(stderr, "{}: {}\n", c.what, plan.status().to_string()), 1;
      const auto& st = plan->stats;
      worst = std::max(worst, wall);
      const std::string row = fmt::format(
          "| {} | ({}, {}) | {} | {} | {} | {} | {} | {:.3f} | {:.3f} | {}{} | {:.4g} | {} |\n",
          c.what, d0, d1, st.ops, st.nodes, st.edges, st.variables, st.constraints,
          wall - st.solve_seconds, st.solve_seconds, st.method, st.optimal ? " (optimal)" : "",
          plan->total_seconds, format_bytes(plan->peak_memory));
      fmt::print("{}", row);
      std::fflush(stdout);
      table += row;
    }
  }
  const std::string date = bench::utc_now();
  const std::string doc = fmt::format(
      "# Intra-op ILP: size and solve time per (layer, mesh)\n\n"
      "Machine: {}; date {}; GLPK 5.0, single thread. Cluster preset p3.16xlarge (one host, "
      "8 GPUs); micro-batch {}; training step = forward + backward + Adam update of the layer; "
      "analytic cost model. `build s` = strategy enumeration, resharding costs and problem "
      "construction; `solve s` = GLPK. Produced by `build/bin/bench_ilp --markdown "
      "bench/results/ilp.md`.\n\n{}\nSlowest (layer, mesh) problem end to end: **{:.3f} s** "
      "(target: under 1 s) — {}.\n",
      bench::machine(), date, batch, table, worst, worst < 1.0 ? "met" : "NOT met");
  if (!markdown.empty()) {
    std::ofstream(markdown) << doc;
    fmt::print("wrote {}\n", markdown);
  }
  fmt::print("slowest: {:.3f} s\n", worst);
  return 0;
}

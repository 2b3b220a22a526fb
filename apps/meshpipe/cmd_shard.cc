// `meshpipe shard`: the intra-op pass on one stage (a layer range) of a zoo model over a 2-D
// logical mesh of a cluster; prints each op's strategy by layer, the cost and per-device memory.
#include <fmt/format.h>

#include <cstdio>
#include <map>

#include "core/files.h"
#include "core/units.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "mesh/cluster.h"
#include "mesh/device_mesh.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "planner/sharding_pass.h"
#include "train/job.h"

namespace meshpipe::cli {
namespace {

struct ShardArgs {
  std::string model = "gpt-1.3b";
  std::string layers;  // "A:B"
  std::string mesh = "1x8";
  std::string cluster = "p3.16xlarge";
  int64_t batch = 0;
  double memory_gib = 0.0;
  bool zero = false;
  bool all_ops = false;
  double time_limit = 60.0;
};

Expected<std::pair<int64_t, int64_t>> parse_pair(const std::string& text, char sep,
                                                 const char* what) {
  const auto pos = text.find(sep);
  try {
    if (pos == std::string::npos) throw std::invalid_argument(text);
    size_t used_a = 0;
    size_t used_b = 0;
    const int64_t a = std::stoll(text.substr(0, pos), &used_a);
    const int64_t b = std::stoll(text.substr(pos + 1), &used_b);
    if (used_a != pos || used_b != text.size() - pos - 1) throw std::invalid_argument(text);
    return std::make_pair(a, b);
  } catch (const std::exception&) {
    return make_error(Errc::kInvalidArgument, "{} '{}' must look like A{}B", what, text, sep);
  }
}

int fail(const Status& s) {
  fmt::print(stderr, "error: {}\n", printable(s.message()));
  return s.code() == Errc::kInvalidArgument || s.code() == Errc::kNotFound ? 2 : 1;
}

int run_shard(const ShardArgs& args) {
  auto spec = graph::models::find_model(args.model);
  if (!spec.has_value()) return fail(spec.status());
  auto cluster = mesh::resolve_cluster(args.cluster);
  if (!cluster.has_value()) return fail(cluster.status());
  auto shape = parse_pair(args.mesh, 'x', "--mesh");
  if (!shape.has_value()) return fail(shape.status());
  const auto [d0, d1] = *shape;
  const int64_t devices = d0 * d1;
  const int32_t per_host = cluster->devices_per_host;
  if (d0 < 1 || d1 < 1 || devices > cluster->num_devices() ||
      (devices > per_host && devices % per_host != 0)) {
    return fail(make_error(Errc::kInvalidArgument,
                           "--mesh {} needs {} devices; cluster {} has {} ({} per host), and a "
                           "mesh larger than a host must use whole hosts",
                           args.mesh, devices, cluster->name, cluster->num_devices(), per_host));
  }
  const mesh::SubmeshShape sub =
      devices <= per_host ? mesh::SubmeshShape{1, static_cast<int32_t>(devices)}
                          : mesh::SubmeshShape{static_cast<int32_t>(devices / per_host), per_host};
  auto lmesh = mesh::make_logical_mesh(*cluster, sub, d0, d1);
  if (!lmesh.has_value()) return fail(lmesh.status());

  const int64_t batch =
      args.batch > 0 ? args.batch : std::max<int64_t>(1, spec->default_batch / 128);
  auto fg = graph::models::build_model(*spec, {.batch = batch, .dtype = {}});
  if (!fg.has_value()) return fail(fg.status());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  if (!tg.has_value()) return fail(tg.status());
  const graph::Graph& g = tg->graph;

  planner::ShardingOptions opts;
  if (!args.layers.empty()) {
    auto range = parse_pair(args.layers, ':', "--layers");
    if (!range.has_value()) return fail(range.status());
    if (range->first < 0 || range->second < range->first || range->second >= g.num_layers()) {
      return fail(make_error(Errc::kInvalidArgument,
                             "--layers {} is outside 0:{} ({} has {} layers)", args.layers,
                             g.num_layers() - 1, spec->name, g.num_layers()));
    }
    opts.first_layer = static_cast<int32_t>(range->first);
    opts.last_layer = static_cast<int32_t>(range->second);
  }
  opts.memory_budget = args.memory_gib > 0 ? args.memory_gib * double(int64_t{1} << 30) : -1.0;
  opts.prefer_reduce_scatter = args.zero;
  opts.solver.time_limit_seconds = args.time_limit;

  fmt::print("meshpipe shard: {} ({}), micro-batch {}, layers {}, mesh {} on {} submesh {}\n",
             spec->name, dtype_name(spec->dtype), batch, args.layers.empty() ? "all" : args.layers,
             lmesh->to_string(), cluster->name, sub.to_string());
  std::fflush(stdout);
  planner::AnalyticCostModel cost(cluster->device);
  auto plan = planner::shard_stage(g, *lmesh, cost, opts);
  if (!plan.has_value()) return fail(plan.status());
  const planner::IlpStats& st = plan->stats;
  fmt::print("ILP: {} ops -> {} nodes, {} edges, {} variables, {} constraints; {} {} in {:.2f} s\n",
             st.ops, st.nodes, st.edges, st.variables, st.constraints, st.method,
             st.optimal ? "optimal" : "(not proven optimal)", st.solve_seconds);

  std::map<int32_t, std::vector<const planner::OpDecision*>> by_layer;
  for (const auto& d : plan->ops) {
    const graph::Op& op = g.op(d.op);
    if (args.all_ops || op.phase == graph::OpPhase::kForward) by_layer[op.layer].push_back(&d);
  }
  for (const auto& [layer, decisions] : by_layer) {
    fmt::print("layer {}:\n", layer);
    for (const planner::OpDecision* d : decisions) {
      const graph::Op& op = g.op(d->op);
      fmt::print("  {:<34} {:<12} {}\n", op.name, op_kind_name(op.kind), d->strategy);
    }
    fmt::print("  parameters:");
    int n = 0;
    for (const auto& [v, s] : plan->specs) {
      const graph::Value& val = g.value(v);
      if (val.role != graph::ValueRole::kParameter) continue;
      bool in_layer = false;
      for (OpId u : g.users(v)) in_layer = in_layer || g.op(u).layer == layer;
      if (!in_layer) continue;
      fmt::print("{}{} {}", n++ % 3 == 0 ? "\n    " : "   ", val.name, s.to_string());
    }
    fmt::print("\n");
  }
  fmt::print(
      "cost per step of this stage: compute {}, collectives in ops {}, resharding {}, "
      "total {}\n",
      format_seconds(Seconds(plan->compute_seconds)),
      format_seconds(Seconds(plan->communication_seconds)),
      format_seconds(Seconds(plan->resharding_seconds)),
      format_seconds(Seconds(plan->total_seconds)));
  fmt::print("memory per device: parameters + optimizer state {}, peak {} (device: {})\n",
             format_bytes(plan->persistent_memory), format_bytes(plan->peak_memory),
             format_bytes(cluster->device.memory));
  return 0;
}

}  // namespace

void add_shard_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ShardArgs>();
  CLI::App* cmd = app.add_subcommand(
      "shard",
      "Choose the sharding of every op of one stage (a layer range) on a 2-D logical "
      "mesh with the intra-op ILP, and print it with its cost and memory");
  cmd->add_option("--model", args->model, "zoo model name")->capture_default_str();
  cmd->add_option("--layers", args->layers, "layer range A:B (inclusive; default all layers)");
  cmd->add_option("--mesh", args->mesh, "logical mesh D0xD1 (e.g. 2x4)")->capture_default_str();
  cmd->add_option("--cluster", args->cluster,
                  "cluster preset (p3.16xlarge[:hosts], dgx-h100[:hosts], cpu[:HxD]) or JSON file")
      ->capture_default_str();
  cmd->add_option("--batch", args->batch,
                  "micro-batch size (default: the model's global batch / 128)")
      ->check(CLI::Range(int64_t{1}, train::kMaxGlobalBatch));
  cmd->add_option("--memory-gib", args->memory_gib,
                  "memory budget per device in GiB (default: none)")
      ->check(kFinitePositive);
  cmd->add_flag("--zero", args->zero,
                "allow ZeRO-style reduce-scattered gradients and sharded optimizer state");
  cmd->add_flag("--all-ops", args->all_ops, "list backward and update ops too");
  cmd->add_option("--time-limit", args->time_limit, "ILP time limit in seconds")
      ->capture_default_str()
      ->check(finite_range(0.001, 86400.0));
  cmd->callback([args, &exit_code] { exit_code = run_shard(*args); });
}

}  // namespace meshpipe::cli

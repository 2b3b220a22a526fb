// Shared pieces of `plan`, `explain` and `compare`.
#include "meshpipe/plan_common.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>

#include "core/crash.h"
#include "core/files.h"
#include "core/units.h"
#include "graph/models/zoo_training.h"
#include "graph/training_graph.h"
#include "runtime/counted_plan.h"
#include "train/device_profiler.h"
#include "train/job.h"
#include "train/model_source.h"

namespace meshpipe::cli {

namespace {

// Parses a command-line real number; empty when it is not one or not finite.
std::optional<double> finite_number(const std::string& text) {
  double v = 0.0;
  if (!CLI::detail::lexical_cast(text, v) || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

const CLI::Validator kFinitePositive(
    [](std::string& text) -> std::string {
      const auto v = finite_number(text);
      return v && *v > 0 ? std::string() : "must be a finite number > 0, got '" + text + "'";
    },
    "POSITIVE");

const CLI::Validator kFiniteNonNegative(
    [](std::string& text) -> std::string {
      const auto v = finite_number(text);
      return v && *v >= 0 ? std::string() : "must be a finite number >= 0, got '" + text + "'";
    },
    "NONNEGATIVE");

const CLI::Validator kPositiveInteger(
    [](std::string& text) -> std::string {
      int64_t v = 0;
      return CLI::detail::lexical_cast(text, v) && v >= 1
                 ? std::string()
                 : "must be a whole number >= 1, got '" + text + "'";
    },
    "POSITIVE");

CLI::Validator finite_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const auto v = finite_number(text);
        if (v && *v >= lo && *v <= hi) return std::string();
        return fmt::format("must be a finite number in [{}, {}], got '{}'", lo, hi, text);
      },
      fmt::format("[{} - {}]", lo, hi));
}

int exit_code_of(const Status& s) {
  switch (s.code()) {
    case Errc::kInvalidArgument:
    case Errc::kNotFound:
    case Errc::kOutOfRange:
      return 2;
    case Errc::kCancelled:
      return 128 + (stop_signal() > 0 ? stop_signal() : SIGINT);
    default:
      return 1;
  }
}

int fail(const Status& s) {
  fmt::print(stderr, "error: {}\n", printable(s.message()));
  return exit_code_of(s);
}

void add_model_file_options(CLI::App* cmd, ModelFileArgs& args, CLI::Option* model) {
  auto* file = cmd->add_option(
      "--model-file", args.file,
      "an ONNX file exported from PyTorch (torch.onnx.export, opsets 13-17) instead of a zoo "
      "model: meshpipe imports its forward graph and initial weights and builds the training "
      "step itself (see `meshpipe models --file`); every node of a multi-node job reads the "
      "same path");
  if (model != nullptr) file->excludes(model);
  cmd->add_option("--loss", args.loss,
                  "with --model-file: output (the model's output is the loss, a scalar) or "
                  "cross-entropy (the mean softmax cross-entropy of the output and a labels "
                  "input meshpipe adds)")
      ->capture_default_str()
      ->check(CLI::IsMember({"output", "cross-entropy"}))
      ->needs(file);
  cmd->add_option("--labels", args.labels,
                  "with --loss cross-entropy: the name of the labels input it adds")
      ->capture_default_str()
      ->needs(file);
  cmd->add_option("--model-output", args.output,
                  "with --model-file: the graph output to train (default: the first)")
      ->needs(file);
}

Expected<graph::models::ModelSpec> resolve_model_args(const std::string& zoo_name,
                                                      const ModelFileArgs& file, int64_t batch) {
  train::ModelFile f;
  f.path = file.file;
  MP_ASSIGN_OR_RETURN(f.import.loss, train::parse_loss_kind(file.loss));
  f.import.labels = file.labels;
  f.import.output = file.output;
  f.import.batch = std::max<int64_t>(0, batch);
  return train::resolve_model(zoo_name, f);
}

void add_plan_options(CLI::App* cmd, PlanArgs& args) {
  auto* model = cmd->add_option("--model", args.model, "zoo model name")->capture_default_str();
  add_model_file_options(cmd, args.model_file, model);
  cmd->add_option("--cluster", args.cluster,
                  "cluster preset (p3.16xlarge[:hosts], dgx-h100[:hosts], cpu[:HxD]) or JSON file")
      ->capture_default_str();
  cmd->add_option("--batch", args.batch, "global batch per step (default: the model's)")
      ->check(CLI::Range(int64_t{1}, train::kMaxGlobalBatch));
  cmd->add_option("--precision", args.precision,
                  "plan for mixed precision as `train --precision` trains it: bf16 or f16 "
                  "activations with f32 master weights (default: the model's own dtype)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--micro-batches", args.micro_batches,
                  "micro-batches per step (default: chosen among micro-batch sizes 1..32)")
      ->check(kPositiveInteger);
  cmd->add_option("--layers", args.layers,
                  "layers to cluster the model into (default: planned at the count Alpa's "
                  "widest-cut rule gives and at the finest up to 16, the faster plan kept; with "
                  "--stages, the layers the stages name)")
      ->check(kPositiveInteger);
  cmd->add_option("--threads", args.threads,
                  "threads solving the intra-op problems at once (default 0: every core; the plan "
                  "is the same for any count)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--memory-fraction", args.memory_fraction,
                  "share of device memory a stage may use")
      ->capture_default_str()
      ->check(finite_range(0.01, 1.0));
  cmd->add_flag("--zero", args.zero, "allow ZeRO-style sharded optimizer state");
  cmd->add_option("--schedule", args.schedule, "pipeline schedule")
      ->capture_default_str()
      ->check(CLI::IsMember({"1f1b", "gpipe"}));
  cmd->add_option("--recompute", args.recompute,
                  "activation recomputation: the stage recomputes its units' forward in the "
                  "backward and stashes only their inputs; auto: the stage DP chooses per stage")
      ->capture_default_str()
      ->check(CLI::IsMember({"off", "on", "auto"}));
  cmd->add_flag("--quiet", args.quiet, "no progress output");
  cmd->add_option("--profile", args.profile,
                  "price with this measured device profile (written by `meshpipe profile`) "
                  "instead of the cluster's nominal figures where it has measurements");
  auto* grid = cmd->add_option(
      "--grid", args.grid,
      "a fixed Megatron-style grid instead of the search: \"dp=A,tp=B,pp=C[,params=MODE]\" = pp "
      "stages of equal clustered-layer ranges, each on dp x tp devices as logical mesh (dp, tp); "
      "MODE free (the intra-op pass lays parameters out, default), replicated, zero2 or zero3");
  auto* stages = cmd->add_option(
      "--stages", args.stages,
      "fixed stages instead of the search (Alpa's ManualStageOption): "
      "\"FIRST-LAST@HxD[:D0xD1][,level=K][,recompute=on|off];...\", e.g. "
      "\"0-7@1x8:2x4;8-15@1x8:8x1\" = layers "
      "0..7 on 1 host x 8 devices as logical mesh (2, 4), then 8..15 on 8 devices as (8, 1); "
      "without :D0xD1 the fastest logical mesh, without level the fastest memory level that "
      "fits; the layer count is --layers, else the last stage's last layer + 1");
  grid->excludes(stages);
}

Expected<graph::Graph> training_graph(const graph::models::ModelSpec& spec, int64_t micro_batch,
                                      DType precision) {
  // The spec's own dtype as the model is defined; another (a half type) as mixed precision.
  const std::optional<DType> dtype =
      precision == spec.dtype ? std::nullopt : std::optional<DType>(precision);
  MP_ASSIGN_OR_RETURN(
      graph::TrainingGraph tg,
      graph::models::zoo_training_graph(spec, micro_batch, graph::OptimizerConfig{}, dtype));
  return std::move(tg.graph);
}

Expected<PlanSetup> make_plan_setup(const PlanArgs& args) {
  PlanSetup s;
  // A malformed --grid or --stages is reported before any planning.
  if (!args.grid.empty()) MP_RETURN_IF_ERROR(planner::parse_grid(args.grid).status());
  if (!args.stages.empty()) MP_RETURN_IF_ERROR(planner::parse_manual_stages(args.stages).status());
  MP_ASSIGN_OR_RETURN(s.spec, resolve_model_args(args.model, args.model_file, args.batch));
  MP_ASSIGN_OR_RETURN(s.cluster, mesh::resolve_cluster(args.cluster));
  if (!args.profile.empty()) {
    MP_ASSIGN_OR_RETURN(s.cluster, train::with_profile(std::move(s.cluster), args.profile));
  }
  const int64_t global = args.batch > 0 ? args.batch : s.spec.default_batch;
  if (args.micro_batches > 0 && global % args.micro_batches != 0) {
    return make_error(Errc::kInvalidArgument, "--batch {} is not divisible by --micro-batches {}",
                      global, args.micro_batches);
  }
  planner::PlannerOptions& o = s.options;
  o.model = s.spec.name;
  o.global_batch = global;
  o.micro_batches = args.micro_batches;
  o.clustering.num_layers = args.layers;
  o.profile.memory_fraction = args.memory_fraction;
  o.profile.threads = args.threads;
  o.profile.sharding.prefer_reduce_scatter = args.zero;
  MP_ASSIGN_OR_RETURN(o.schedule, planner::parse_schedule(args.schedule));
  MP_ASSIGN_OR_RETURN(o.profile.recompute, planner::parse_recompute(args.recompute));
  const graph::models::ModelSpec spec = s.spec;
  const DType precision = args.precision.empty() ? spec.dtype : *parse_dtype(args.precision);
  o.graph_for_micro_batch = [spec, precision](int64_t micro) {
    return training_graph(spec, micro, precision);
  };
  o.micro_batch_multiple = graph::models::min_micro_batch(spec);
  const int64_t first = args.micro_batches > 0 ? global / args.micro_batches
                                               : std::min(global, o.micro_batch_multiple);
  MP_ASSIGN_OR_RETURN(s.graph, training_graph(s.spec, first, precision));
  if (!args.quiet) {
    // A bar on a terminal (redrawn when it changes), one line per phase otherwise.
    const bool tty = isatty(fileno(stderr)) != 0;
    auto last = std::make_shared<int>(-1);
    o.progress = [tty, last](const std::string& phase, int64_t done, int64_t total) {
      if (phase.rfind("memory", 0) == 0) {  // make_counted_plan searching again
        fmt::print(stderr, "{} (try {} of {})\n", phase, done + 1, total);
        std::fflush(stderr);
        return;
      }
      if (phase.rfind("micro-batch", 0) == 0) {  // make_plan trying micro-batch sizes
        fmt::print(stderr, "{} [{} of {}]\n", phase, std::min(done + 1, total), total);
        std::fflush(stderr);
        return;
      }
      if (phase != "stage costs" || total <= 0) return;
      const int width = 30;
      const int filled = static_cast<int>(width * done / total);
      if (done == total) {
        fmt::print(stderr, "{}{:<12} [{}] {}/{} (unit, logical mesh) problems\n", tty ? "\r" : "",
                   phase, std::string(size_t(width), '#'), done, total);
      } else if (tty && filled != *last) {
        fmt::print(stderr, "\r{:<12} [{}{}] {}/{}", phase, std::string(size_t(filled), '#'),
                   std::string(size_t(width - filled), '.'), done, total);
      }
      *last = done == total ? -1 : filled;
      std::fflush(stderr);
    };
  }
  return s;
}

std::string manual_plan_label(const PlanArgs& args) {
  return args.grid.empty() ? "stages " + args.stages : "grid " + args.grid;
}

Expected<planner::PricedPlan> price_manual_plan(const PlanArgs& args, const PlanSetup& setup,
                                                const planner::CostModel& cost,
                                                planner::ShardingCache& cache) {
  MP_ASSIGN_OR_RETURN(planner::PricedPlan priced,
                      price_manual_plan_estimated(args, setup, cost, cache));
  // The memory the written-down plan's lowered program holds (runtime/counted_plan.h).
  MP_ASSIGN_OR_RETURN(graph::Graph g, planner::graph_for_micro_batch(setup.graph, setup.options,
                                                                     priced.plan.micro_batch));
  MP_RETURN_IF_ERROR(runtime::count_plan_memory(priced.plan, g));
  priced.fits = planner::check_stage_memory(priced.plan, setup.options.profile.memory_fraction);
  return priced;
}

Expected<planner::PricedPlan> price_manual_plan_estimated(const PlanArgs& args,
                                                          const PlanSetup& setup,
                                                          const planner::CostModel& cost,
                                                          planner::ShardingCache& cache) {
  const planner::PlannerOptions& o = setup.options;
  if (!args.grid.empty()) {
    MP_ASSIGN_OR_RETURN(planner::GridConfig grid, planner::parse_grid(args.grid));
    grid.check_memory = false;  // reported with the plan (check_stage_memory)
    return planner::price_micro_batchings(
        setup.graph, o, [&](const graph::Graph& g, int64_t micro_batches) {
          return planner::grid_plan(g, setup.cluster, cost, o, micro_batches, grid);
        });
  }
  MP_ASSIGN_OR_RETURN(std::vector<planner::ManualStage> stages,
                      planner::parse_manual_stages(args.stages));
  return planner::price_micro_batchings(
      setup.graph, o, [&](const graph::Graph& g, int64_t micro_batches) {
        return planner::price_manual_stages(g, setup.cluster, cost, o, micro_batches, stages,
                                            cache);
      });
}

void print_plan_summary(const planner::Plan& plan) {
  fmt::print("{:<6} {:<7} {:<9} {:<13} {:<9} {:>12} {:>9} {:>13}\n", "stage", "layers", "submesh",
             "devices", "logical", "time/ubatch", "in-flight", "memory/device");
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    const planner::StagePlan& s = plan.stages[k];
    const std::string devices = s.devices.size() == 1
                                    ? fmt::format("{}", s.devices.front())
                                    : fmt::format("{}-{}", s.devices.front(), s.devices.back());
    fmt::print("{:<6} {:<7} {:<9} {:<13} {:<9} {:>12} {:>9} {:>13}\n", k,
               fmt::format("{}-{}", s.first_layer, s.last_layer), s.submesh.to_string(), devices,
               s.mesh.to_string(), format_seconds(Seconds(s.time)), s.in_flight,
               format_bytes(Bytes(s.memory.peak)));
  }
  fmt::print("micro-batches: {} x {} ({}), {} clustered layers\n", plan.micro_batches,
             plan.micro_batch, planner::schedule_name(plan.schedule), plan.num_layers);
  std::string recomputing;
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    if (!plan.stages[k].recompute) continue;
    recomputing += fmt::format("{}{}", recomputing.empty() ? "" : ", ", k);
  }
  fmt::print("recomputation: {}\n",
             recomputing.empty()
                 ? std::string("none")
                 : fmt::format("stage{} {} (forward repeated in the backward, "
                               "only unit inputs stashed)",
                               recomputing.find(',') == std::string::npos ? "" : "s", recomputing));
  fmt::print("predicted step time: {}, {:.3g} TFLOP/s per device ({:.3g} TFLOP/s total)\n",
             format_seconds(Seconds(plan.step_time)), plan.tflops_per_device,
             plan.tflops_per_device * plan.cluster.num_devices());
  fmt::print("cost model: {}\n",
             plan.cluster.profile != nullptr
                 ? fmt::format("measured profile ({})", printable(plan.cluster.profile->source))
                 : std::string("analytic (the cluster's nominal figures; `meshpipe profile` "
                               "measures them)"));
  int64_t estimated = 0;
  for (const planner::StagePlan& s : plan.stages) {
    estimated = std::max(estimated, s.memory.estimated);
  }
  fmt::print("memory: at most {} per device{} (device: {})\n",
             format_bytes(Bytes(plan.max_memory_per_device)),
             estimated > 0 ? fmt::format(", counted on the lowered program (the memory model "
                                         "estimated {})",
                                         format_bytes(Bytes(estimated)))
                           : "",
             format_bytes(plan.cluster.device.memory));
}

}  // namespace meshpipe::cli

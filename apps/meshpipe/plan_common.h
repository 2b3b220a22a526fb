// Shared pieces of the planning commands: building a zoo model's training graph for any
// micro-batch size, the planner options from the command line, progress output, plan tables.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "graph/models/zoo.h"
#include "mesh/cluster.h"
#include "planner/manual_plan.h"
#include "planner/plan.h"
#include "planner/planner.h"

namespace meshpipe::cli {

/// --model-file and its import options, shared by `plan`, `compare`, `simulate` and `train`.
struct ModelFileArgs {
  std::string file;             ///< an ONNX file; empty: the zoo model --model names
  std::string loss = "output";  ///< output (the model's output is the loss) or cross-entropy
  std::string labels = "labels";
  std::string output;
};

/// Registers --model-file, --loss, --labels and --model-output (--model-file excludes `model`, the
/// command's --model option, when given).
void add_model_file_options(CLI::App* cmd, ModelFileArgs& args, CLI::Option* model = nullptr);

/// The zoo model `zoo_name`, or the imported --model-file (first imported at `batch` samples
/// when > 0, else at its exported batch).
Expected<graph::models::ModelSpec> resolve_model_args(const std::string& zoo_name,
                                                      const ModelFileArgs& file, int64_t batch);

/// Command-line settings shared by `plan` and `compare`.
struct PlanArgs {
  std::string model = "gpt-1.3b";
  ModelFileArgs model_file;
  std::string cluster = "p3.16xlarge:1";
  int64_t batch = 0;          ///< global batch; 0: the model's
  int64_t micro_batches = 0;  ///< 0: chosen by the planner
  int32_t layers = 0;         ///< clustered layers; 0: searched
  double memory_fraction = 0.9;
  int threads = 0;  ///< 0: every core
  bool zero = false;
  std::string schedule = "1f1b";
  std::string recompute = "auto";  ///< activation recomputation: off, on, auto (per stage)
  bool quiet = false;
  std::string grid;       ///< --grid "dp=A,tp=B,pp=C[,params=MODE]": a fixed Megatron-style grid
  std::string stages;     ///< --stages "0-7@1x8:2x4;...": fixed stages (planner/manual_plan.h)
  std::string profile;    ///< --profile FILE: the cluster's measured profile (`meshpipe profile`)
  std::string precision;  ///< --precision f32|bf16|f16; "": the model's own dtype
};

/// Registers the shared options on a sub-command.
void add_plan_options(CLI::App* cmd, PlanArgs& args);

/// The zoo spec, cluster, a graph factory and planner options from the arguments.
struct PlanSetup {
  graph::models::ModelSpec spec;
  mesh::ClusterSpec cluster;
  graph::Graph graph;  ///< the training graph at the smallest candidate micro-batch
  planner::PlannerOptions options;
};
Expected<PlanSetup> make_plan_setup(const PlanArgs& args);

/// The training graph (Adam) of a zoo model at a micro-batch size, in `precision`: the spec's
/// own dtype, or f16/bf16 mixed precision (f32 master weights) as `train --precision` builds it.
Expected<graph::Graph> training_graph(const graph::models::ModelSpec& spec, int64_t micro_batch,
                                      DType precision);

/// The stage table, step time, throughput and memory of a plan.
void print_plan_summary(const planner::Plan& plan);

/// The written-down plan priced by the memory model alone (price_manual_plan counts it).
Expected<planner::PricedPlan> price_manual_plan_estimated(const PlanArgs& args,
                                                          const PlanSetup& setup,
                                                          const planner::CostModel& cost,
                                                          planner::ShardingCache& cache);

/// The manual plan of --grid or --stages (one of them must be set), priced over the
/// micro-batchings the planner would try, with its memory counted on its lowered program
/// (runtime/counted_plan.h); `fits` says whether that count fits device memory. Errors:
/// malformed or impossible grids and stages (kInvalidArgument, naming the stage).
Expected<planner::PricedPlan> price_manual_plan(const PlanArgs& args, const PlanSetup& setup,
                                                const planner::CostModel& cost,
                                                planner::ShardingCache& cache);

/// "grid dp=2,tp=4,pp=4" or "stages 0-7@1x8:2x4;...", for headers and tables.
std::string manual_plan_label(const PlanArgs& args);

/// Command-line checks for real numbers that also refuse NaN and infinities (CLI11's own
/// PositiveNumber and Range let NaN through, since every comparison with it is false).
extern const CLI::Validator kFinitePositive;
extern const CLI::Validator kFiniteNonNegative;
/// A whole number >= 1 ("--steps: must be a whole number >= 1, got '0'").
extern const CLI::Validator kPositiveInteger;
/// A finite number in [lo, hi].
CLI::Validator finite_range(double lo, double hi);

/// The exit status for an error: 2 bad input (invalid, not found, out of range), 128 + signal
/// when stopped by SIGINT/SIGTERM, 1 otherwise.
int exit_code_of(const Status& s);

/// Prints "error: ..." and returns the exit code for a status (2: bad input, 1: other).
int fail(const Status& s);

}  // namespace meshpipe::cli

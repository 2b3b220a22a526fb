// `meshpipe simulate plan.json`: lowers a plan for its zoo model and runs the device programs on
// the simulated backend: predicted step time next to the planner's, per-device busy time and
// peak memory, the bubble fraction, and optionally a Chrome trace of the step.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>

#include "core/files.h"
#include "core/units.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "planner/planner.h"
#include "runtime/compact_program.h"
#include "runtime/lower.h"
#include "runtime/simulator.h"
#include "train/device_profiler.h"

namespace meshpipe::cli {
namespace {

struct SimulateArgs {
  std::string plan;
  std::string trace;
  std::string schedule;
  std::string profile;
  bool flat = false;
  ModelFileArgs model_file;
};

int run_simulate(const SimulateArgs& args) {
  const auto t0 = std::chrono::steady_clock::now();
  auto plan = planner::load_plan(args.plan);
  if (!plan.has_value()) return fail(plan.status());
  bool repriced = false;
  if (!args.profile.empty()) {
    // The simulator prices with the measured profile; the plan's own figures stay as planned.
    auto c = train::with_profile(plan->cluster, args.profile);
    if (!c.has_value()) return fail(c.status());
    repriced = plan->cluster.profile == nullptr || !(*plan->cluster.profile == *c->profile);
    plan->cluster = std::move(*c);
  }
  if (args.model_file.file.empty() && plan->model.rfind("onnx:", 0) == 0) {
    return fail(make_error(Errc::kInvalidArgument,
                           "plan {} is for the imported model '{}': give its file with "
                           "--model-file (and the --loss it was planned with)",
                           args.plan, plan->model));
  }
  auto spec = resolve_model_args(plan->model, args.model_file, plan->micro_batch);
  if (!spec.has_value()) {
    if (!args.model_file.file.empty()) return fail(spec.status());
    return fail(make_error(Errc::kInvalidArgument,
                           "plan {} is for '{}', which is not a zoo model (simulate rebuilds the "
                           "model's graph; give an imported model's file with --model-file): {}",
                           args.plan, plan->model, spec.status().message()));
  }
  if (spec->name != plan->model) {
    return fail(make_error(Errc::kInvalidArgument, "plan {} is for '{}', not for {} ('{}')",
                           args.plan, plan->model, args.model_file.file, spec->name));
  }
  auto g = training_graph(*spec, plan->micro_batch, plan->dtype);
  if (!g.has_value()) return fail(g.status());
  runtime::LowerOptions lo;
  if (!args.schedule.empty()) {
    auto schedule = planner::parse_schedule(args.schedule);
    if (!schedule.has_value()) return fail(schedule.status());
    lo.schedule = *schedule;
  }
  // The program's micro-batch tasks as templates (runtime/compact_program.h): memory that does
  // not grow with the micro-batch count. --flat: every instruction, as training lowers it.
  std::optional<runtime::Program> flat;
  std::optional<runtime::CompactProgram> compact;
  int64_t instructions = 0;
  std::string form;
  if (args.flat) {
    auto p = runtime::lower(*plan, *g, lo);
    if (!p.has_value()) return fail(p.status());
    for (const runtime::DeviceProgram& d : p->devices) {
      instructions += static_cast<int64_t>(d.instructions.size());
    }
    flat = std::move(*p);
    form = "flat";
  } else {
    auto p = runtime::lower_compact(*plan, *g, lo);
    if (!p.has_value()) return fail(p.status());
    instructions = p->instructions();
    int64_t templates = 0;
    for (const runtime::CompactCode& c : p->code) {
      templates += static_cast<int64_t>(c.templates.size());
    }
    compact = std::move(*p);
    form = fmt::format("{} task templates", templates);
  }
  constexpr int64_t kMaxTraced = 2000000;
  if (!args.trace.empty() && instructions > kMaxTraced) {
    return fail(make_error(Errc::kInvalidArgument,
                           "--trace: the step has {} instructions; a trace is written for at most "
                           "{} (about 200 bytes each): trace the plan with fewer micro-batches",
                           instructions, kMaxTraced));
  }
  fmt::print(stderr, "simulating {} instructions...\n", instructions);
  runtime::SimulationOptions so;
  so.trace = !args.trace.empty();
  auto sim = flat ? runtime::simulate(*flat, plan->cluster, so)
                  : runtime::simulate(*compact, plan->cluster, so);
  if (!sim.has_value()) return fail(sim.status());
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  fmt::print("plan {}: {} on {} ({} devices), {} micro-batches of {} ({})\n", args.plan,
             plan->model, plan->cluster.name, plan->cluster.num_devices(), plan->micro_batches,
             plan->micro_batch,
             planner::schedule_name(flat ? flat->schedule : compact->base.schedule));
  fmt::print("lowered: {} instructions on {} devices ({})\n", instructions, sim->devices.size(),
             form);
  fmt::print("{:<7} {:<6} {:>11} {:>11} {:>11} {:>13} {:>13}\n", "device", "stage", "compute",
             "collective", "waiting", "peak memory", "plan memory");
  for (const runtime::SimulatedDevice& d : sim->devices) {
    fmt::print("{:<7} {:<6} {:>11} {:>11} {:>11} {:>13} {:>13}\n", d.device, d.stage,
               format_seconds(Seconds(d.compute)), format_seconds(Seconds(d.collective)),
               format_seconds(Seconds(d.waiting)), format_bytes(Bytes(d.peak_bytes)),
               format_bytes(Bytes(plan->stages[static_cast<size_t>(d.stage)].memory.peak)));
  }
  fmt::print("simulated step time: {} (planner: {}, ratio {:.3f})\n",
             format_seconds(Seconds(sim->step_time)), format_seconds(Seconds(plan->step_time)),
             plan->step_time > 0 ? sim->step_time / plan->step_time : 0.0);
  if (repriced) {
    fmt::print(
        "(simulated with the profile {}; the planner's figure is the one the plan was made "
        "with)\n",
        args.profile);
  }
  fmt::print("bubble fraction: {:.1f}%\n", 100.0 * sim->bubble_fraction);
  if (!args.trace.empty()) {
    if (Status w = write_text_file(args.trace, sim->trace_json, "trace file"); !w.is_ok()) {
      return fail(w);
    }
    fmt::print("wrote {} (open in chrome://tracing or ui.perfetto.dev)\n", args.trace);
  }
  fmt::print("simulation took {:.2f} s\n", took);
  return 0;
}

}  // namespace

void add_simulate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<SimulateArgs>();
  CLI::App* cmd =
      app.add_subcommand("simulate",
                         "Lower a plan for its model (a zoo model, or the --model-file it was "
                         "planned for) and run it on the simulated backend (cost-model clock): "
                         "step time, busy time, peak memory per device, bubble fraction");
  cmd->add_option("plan", args->plan, "plan file (from `meshpipe plan -o`)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--trace", args->trace, "write the step's timeline as Chrome trace JSON");
  cmd->add_option("--schedule", args->schedule, "pipeline schedule (default: the plan's)")
      ->check(CLI::IsMember({"1f1b", "gpipe"}));
  cmd->add_option("--profile", args->profile,
                  "simulate with this measured device profile (`meshpipe profile`) instead of "
                  "the one (or the nominal figures) the plan was made with")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--flat", args->flat,
                "lower every micro-batch's instructions instead of lowering a few and repeating "
                "the steady state's (as training does): the slower reference");
  add_model_file_options(cmd, args->model_file);
  cmd->callback([args, &exit_code] { exit_code = run_simulate(*args); });
}

}  // namespace meshpipe::cli

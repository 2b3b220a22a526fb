// `meshpipe train`: training of a zoo model or an imported ONNX file, on synthetic data or
// arrays, one progress line per step: on
// one device (the CPU, or one GPU with --device cuda/auto), or planned (or from --plan) on a
// cluster of virtual CPU devices run as threads.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <thread>

#include "actors/actor_runtime.h"
#include "actors/cluster.h"
#include "actors/launch_env.h"
#include "actors/secret.h"
#include "comm/nccl_communicator.h"
#include "core/crash.h"
#include "core/files.h"
#include "core/units.h"
#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "kernels/backend.h"
#include "kernels/device.h"
#include "mesh/cluster.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "meshpipe/train_args.h"
#include "planner/plan.h"
#include "runtime/checkpoint.h"
#include "train/device_profiler.h"
#include "train/job.h"
#include "train/metrics.h"
#include "train/report.h"
#include "train/session.h"
#include "train/single_device.h"

namespace meshpipe::cli {
namespace {

// Loss scaling's skipped steps and clipping's clipped ones, when the session had them.
void print_loss_scaling(const train::SessionSummary& s, const train::JobSpec& job) {
  if (const std::string line = train::loss_scaling_line(s); !line.empty()) fmt::print("{}\n", line);
  if (const std::string line = train::clipping_line(s, job.clip_grad_norm); !line.empty()) {
    fmt::print("{}\n", line);
  }
}

// A failure of the job itself (planning, building devices, a step): the code is named.
int fail_run(const Status& s) {
  fmt::print(stderr, "error: {}\n", printable(s.to_string()));
  return exit_code_of(s);
}

// The session of a planned job: steps, checkpoints and reports, whoever runs the steps.
train::SessionOptions session_options(const TrainArgs& args, const train::JobSpec& job,
                                      int64_t first_step) {
  train::SessionOptions so;
  so.first_step = first_step;
  so.steps = args.steps;
  so.samples_per_step = job.samples_per_step();
  so.tokens_per_step = job.tokens_per_step();
  so.save_dir = args.save;
  so.save_every = args.save_every;
  so.model = job.model.name;
  // The data's identity goes into checkpoints (a failure to compute it surfaces when the data
  // is opened).
  if (auto id = train::data_identity(job.data_path); id.has_value()) so.data = *id;
  so.seed = job.seed;
  so.lr = job.optimizer.lr;
  const bool is_lm = graph::models::is_language_model(job.model);
  so.val_every = args.val_every;
  so.val_batches = args.val_batches;
  so.on_validation = [log = args.metrics_log](const train::ValidationReport& v) {
    fmt::print("validation after step {}: loss {:.4f} ({} batches)\n", v.step, v.loss, v.batches);
    std::fflush(stdout);
    if (log == nullptr) return;
    if (Status s = log->write_validation(v); !s.is_ok()) {
      fmt::print(stderr, "warning: {}\n", printable(s.message()));
    }
  };
  so.on_step = [is_lm, log = args.metrics_log, lr = job.optimizer.lr, schedule = job.schedule,
                warned = std::make_shared<bool>(false)](const train::StepReport& r) {
    fmt::print("{}\n", train::step_line(r, is_lm));
    std::fflush(stdout);
    if (log == nullptr) return;
    // The step's own rate: the schedule's factor times the base (as the kernels compute it).
    const float step_lr = lr * static_cast<float>(schedule.factor(r.step));
    if (Status s = log->write_step(r, step_lr); !s.is_ok() && !*warned) {
      *warned = true;  // training goes on; the file stops where it failed
      fmt::print(stderr, "warning: {}\n", printable(s.message()));
    }
  };
  // From here on a first SIGINT/SIGTERM ends the session after its step (saving when --save is
  // given); a second one ends the process.
  so.stop = &install_stop_handlers("meshpipe");
  return so;
}

train::PlanRequest plan_request(const TrainArgs& args) {
  train::PlanRequest request;
  request.micro_batches = args.micro_batches;
  if (!args.schedule.empty()) request.schedule = *planner::parse_schedule(args.schedule);
  request.recompute = *planner::parse_recompute(args.recompute);
  return request;
}

// Batch norm under micro-batching normalises each micro-batch (as in GPipe and Alpa), which a
// PyTorch user comparing against a whole-batch run should know.
void note_batch_norm(const planner::Plan& plan, const train::JobSpec& job) {
  if (plan.micro_batches <= 1 || (job.model.family != "onnx" && job.model.family != "wresnet")) {
    return;
  }
  auto fg = graph::models::build_model(job.model, {.batch = plan.micro_batch, .dtype = {}});
  if (!fg.has_value()) return;
  for (const graph::Op& op : fg->graph.ops()) {
    if (op.kind == OpKind::kBatchNorm || op.kind == OpKind::kBatchNormSums) {
      fmt::print(
          "note: batch norm computes its statistics over each micro-batch of {} samples ({} "
          "micro-batches), not over the whole batch of {}; --micro-batches 1 keeps whole-batch "
          "statistics\n",
          plan.micro_batch, plan.micro_batches, plan.global_batch);
      return;
    }
  }
}

// The job's secret: given (a file, the environment), or new (printed, or written to a file).
Expected<actors::Secret> listen_secret(const TrainArgs& args) {
  MP_ASSIGN_OR_RETURN(actors::Secret secret, actors::find_secret(args.secret_file));
  if (!secret.value.empty()) {
    if (!args.write_secret.empty()) {
      return make_error(Errc::kInvalidArgument,
                        "--write-secret writes a new secret, but one was given ({})",
                        secret.source);
    }
    return secret;
  }
  MP_ASSIGN_OR_RETURN(secret.value, actors::generate_secret());
  if (!args.write_secret.empty()) {
    MP_RETURN_IF_ERROR(actors::write_secret_file(args.write_secret, secret.value));
    secret.source = "--write-secret " + args.write_secret;
    fmt::print(
        "secret: a new one for this job, written to {} (mode 0600); start the nodes "
        "with --secret-file {}\n",
        args.write_secret, args.write_secret);
  } else {
    secret.source = "generated";
    fmt::print(
        "secret: {} (new for this job; start the nodes with {} set to it, or give "
        "the driver --secret-file or --write-secret to keep it off the terminal)\n",
        secret.value, actors::kSecretEnvironment);
  }
  return secret;
}

// The summary line of --metrics (a failed write is a warning: the run itself succeeded).
void write_metrics_summary(const TrainArgs& args, const train::SessionSummary& s) {
  if (!args.metrics_log) return;
  if (Status w = args.metrics_log->write_summary(s); !w.is_ok()) {
    fmt::print(stderr, "warning: {}\n", printable(w.message()));
  }
}

// The plan's predicted step time beside the measured median (the first step, which warms up
// buffers and threads, left out when there are others).
void print_step_time(const planner::Plan& plan, const train::SessionSummary& s) {
  std::vector<double> t = s.step_seconds;
  if (t.empty()) return;
  const size_t skip = t.size() > 1 ? 1 : 0;
  std::vector<double> steady(t.begin() + static_cast<std::ptrdiff_t>(skip), t.end());
  std::sort(steady.begin(), steady.end());
  const size_t n = steady.size();
  const double measured = n % 2 == 1 ? steady[n / 2] : 0.5 * (steady[n / 2 - 1] + steady[n / 2]);
  fmt::print(
      "timing: predicted {} a step ({} cost model), measured median {} over steps {}-{} "
      "(measured / predicted {:.2f}; min {}, max {})\n",
      format_seconds(Seconds(plan.step_time)),
      plan.cluster.profile != nullptr ? "profiled" : "analytic", format_seconds(Seconds(measured)),
      s.first_step + static_cast<int64_t>(skip), s.last_step,
      plan.step_time > 0 ? measured / plan.step_time : 0.0, format_seconds(Seconds(steady.front())),
      format_seconds(Seconds(steady.back())));
}

// Where the devices' time went (--breakdown): seconds per device and step by activity, the
// largest first, as a share of the measured step.
void print_breakdown(const train::SessionSummary& s) {
  if (s.breakdown_steps == 0 || s.breakdown.empty()) return;
  int64_t devices = 0;
  for (const auto& [device, bytes] : s.peak_bytes) devices += bytes > 0 ? 1 : 0;
  devices = std::max<int64_t>(devices, 1);
  std::vector<std::pair<double, std::string>> rows;
  double total = 0.0;
  for (const auto& [what, t] : s.breakdown) {
    const double per = t / static_cast<double>(devices * s.breakdown_steps);
    rows.emplace_back(per, what);
    total += per;
  }
  std::sort(rows.rbegin(), rows.rend());
  const size_t skip = s.step_seconds.size() > 1 ? 1 : 0;
  double step = 0.0;
  for (size_t k = skip; k < s.step_seconds.size(); ++k) step += s.step_seconds[k];
  step /= static_cast<double>(std::max<size_t>(s.step_seconds.size() - skip, 1));
  fmt::print("breakdown: a device's step ({} devices, mean of {} steps; the step took {}):\n",
             devices, s.breakdown_steps, format_seconds(Seconds(step)));
  for (const auto& [per, what] : rows) {
    if (per < 1e-3 * total) continue;
    fmt::print("  {:>10} {:5.1f}%  {}\n", format_seconds(Seconds(per)),
               step > 0 ? 100.0 * per / step : 0.0, printable(what));  // nodes name them
  }
  fmt::print("  {:>10} {:5.1f}%  accounted\n", format_seconds(Seconds(total)),
             step > 0 ? 100.0 * total / step : 0.0);
}

// The driver of a multi-process job: publish the coordinator behind its gate, wait for the
// nodes, form the cluster from their reports, plan, start the job on every node and run the
// session.
int run_listen(const TrainArgs& args, train::JobSpec job, kernels::Device device) {
  if (args.collectives == "in-process") {
    return fail(make_error(Errc::kInvalidArgument,
                           "--collectives in-process cannot reach across nodes: with --listen use "
                           "ucx (the default) or gloo (groups inside a node use shared memory "
                           "anyway)"));
  }
  auto secret = listen_secret(args);
  if (!secret.has_value()) return fail(secret.status());
  actors::CoordinatorOptions co;
  co.secret = secret->value;
  co.port = static_cast<uint16_t>(args.listen);
  co.bind = args.listen_address;
  co.nodes = args.nodes;
  co.join_timeout = std::chrono::milliseconds(args.join_timeout_ms);
  co.step_timeout = std::chrono::milliseconds(args.step_timeout_ms);
  co.liveness = std::chrono::milliseconds(args.liveness_ms);
  co.heartbeat =
      std::min(co.liveness / 4 + std::chrono::milliseconds(1), std::chrono::milliseconds(1000));
  auto base = mesh::resolve_cluster(args.cluster.empty() ? "cpu" : args.cluster);
  if (base.has_value() && !args.profile.empty()) base = train::with_profile(*base, args.profile);
  if (!base.has_value()) return fail(base.status());  // before any node joins
  int64_t done = 0;                                   // steps of the checkpoint resumed
  if (!args.load.empty()) {
    auto info = runtime::read_checkpoint_info(args.load);
    if (!info.has_value()) return fail(info.status());
    if (info->model != job.model.name) {
      return fail(make_error(Errc::kInvalidArgument, "checkpoint {} is of model '{}', not '{}'",
                             args.load, info->model, job.model.name));
    }
    done = info->step;
  }
  auto coord = actors::Coordinator::listen(co);
  if (!coord.has_value()) return fail(coord.status());
  // A failure tells the nodes why the job ended (they exit non-zero) before the driver exits.
  const auto stop = [&coord](const Status& why) {
    (*coord)->fail(why);
    return fail(why);
  };
  // With --local-devices this process is also one of the nodes: a node on its own thread (and
  // actor system) that joins through the coordinator's port like any other.
  struct LocalNode {
    actors::Coordinator* coord = nullptr;
    std::thread thread;
    ~LocalNode() {
      if (!thread.joinable()) return;
      coord->shutdown("the driver finished");
      thread.join();
    }
  } local;
  if (args.local_devices > 0) {
    actors::NodeOptions no;
    no.coordinator = fmt::format("{}:{}", co.bind == "0.0.0.0" ? std::string("127.0.0.1") : co.bind,
                                 (*coord)->port());
    no.devices = args.local_devices;
    no.memory_bytes = static_cast<int64_t>(args.local_memory_gib * 1073741824.0);
    no.bind = args.local_bind;
    no.secret = co.secret;
    local.coord = coord->get();
    local.thread = std::thread([no] {
      const Status s = actors::run_node(no);
      // kCancelled: the driver ended the job as failed and says why itself.
      if (!s.is_ok() && s.code() != Errc::kCancelled) {
        fmt::print(stderr, "error: the driver's own node: {}\n", s.to_string());
      }
    });
  }
  // Printed once the driver's own node is on its way, so it usually registers first (node 0).
  fmt::print("coordinator listening on {}:{}, waiting for {} node(s)\n", co.bind, (*coord)->port(),
             co.nodes);
  std::fflush(stdout);
  auto nodes = (*coord)->wait_for_nodes();
  if (!nodes.has_value()) return stop(nodes.status());
  for (const actors::NodeReport& n : *nodes) {
    fmt::print("node {}: {} (pid {}), {} devices, {} each; GPUs: {}\n", n.id, n.host, n.pid,
               n.devices, format_bytes(Bytes(n.memory_bytes)), kernels::describe_gpus(n.gpus));
  }
  auto cluster = actors::cluster_from_nodes(*nodes, *base);
  if (!cluster.has_value()) return stop(cluster.status());
  Expected<planner::Plan> plan = planner::Plan{};
  if (!args.plan.empty()) {
    plan = planner::load_plan(args.plan);
    if (plan.has_value() && plan->cluster.num_devices() != cluster->num_devices()) {
      plan = make_error(Errc::kInvalidArgument, "{} is a plan for {} devices, the nodes bring {}",
                        args.plan, plan->cluster.num_devices(), cluster->num_devices());
    }
  } else {
    plan = train::plan_job(job, *cluster, plan_request(args));
  }
  if (!plan.has_value()) return stop(plan.status());
  print_plan_summary(*plan);
  note_batch_norm(*plan, job);
  job.global_batch = plan->global_batch;
  actors::ClusterJob cj;
  cj.spec = job;
  cj.plan = *plan;
  cj.timeout = std::chrono::milliseconds(args.step_timeout_ms);
  cj.load_dir = args.load;
  cj.time_kernels = args.breakdown;
  if (!args.collectives.empty()) {
    cj.collectives = *runtime::parse_collective_backend(args.collectives);  // CLI checked it
  }
  // GPUs: every node runs its devices on its own GPUs, the meshes' collectives through NCCL.
  if (device == kernels::Device::kCuda) cj.collectives = runtime::CollectiveBackend::kNccl;
  if (Status s = (*coord)->start(cj); !s.is_ok()) return stop(s);
  if (args.metrics_log) args.metrics_log->set_predicted_step_time(plan->step_time);
  auto summary = train::run_session(**coord, session_options(args, job, done + 1));
  if (!summary.has_value()) return stop(summary.status());
  write_metrics_summary(args, *summary);
  print_step_time(*plan, *summary);
  if (args.breakdown) print_breakdown(*summary);
  print_loss_scaling(*summary, job);
  if (!args.save.empty()) fmt::print("checkpoint: {}\n", args.save);
  fmt::print("{}", train::peak_table(*plan, summary->peak_bytes));
  (*coord)->shutdown("training finished");
  return 0;
}

// A planned job on this process's virtual devices: threads, or stage actors.
int run_parallel(const TrainArgs& args, train::JobSpec job, kernels::Device device) {
  std::unique_ptr<actors::ActorRuntime> actor_runtime;
  if (args.runner == "actors") {
    auto rt = actors::ActorRuntime::create();
    if (!rt.has_value()) return fail(rt.status());
    actor_runtime = std::move(*rt);
  }
  Expected<planner::Plan> plan = planner::Plan{};
  if (!args.plan.empty()) {
    // The planner actor loads (and validates) the plan when actors drive the job.
    plan = actor_runtime ? actor_runtime->load_plan(args.plan) : planner::load_plan(args.plan);
    if (plan.has_value()) {
      // The plan's precision unless --precision names one (then they must agree).
      if (!args.precision_given && is_floating(plan->dtype) && plan->dtype != job.precision) {
        job.precision = plan->dtype;
        job.loss_scale.enabled = args.loss_scale == "dynamic" ||
                                 (args.loss_scale == "auto" && job.precision == DType::kF16);
      }
      const Status ok = train::check_plan_for_job(*plan, job, args.batch > 0, args.plan);
      if (!ok.is_ok()) plan = ok;
    }
  } else if (!args.load.empty()) {
    // A checkpoint is checked before planning (its model, its format).
    auto info = runtime::read_checkpoint_info(args.load);
    if (!info.has_value()) return fail(info.status());
    if (info->model != job.model.name) {
      return fail(make_error(Errc::kInvalidArgument, "checkpoint {} is of model '{}', not '{}'",
                             args.load, info->model, job.model.name));
    }
  }
  if (args.plan.empty()) {
    // A checkpoint without a cluster: one virtual device.
    auto cluster = mesh::resolve_cluster(args.cluster.empty() ? "cpu:1x1" : args.cluster);
    if (cluster.has_value() && !args.profile.empty()) {
      cluster = train::with_profile(*cluster, args.profile);
    }
    if (!cluster.has_value()) return fail(cluster.status());
    plan = train::plan_job(job, *cluster, plan_request(args),
                           actor_runtime ? actor_runtime->planner() : train::Planner{});
    if (!plan.has_value()) return fail_run(plan.status());
  }
  if (!plan.has_value()) return fail(plan.status());
  train::LocalJobOptions lo;
  if (device == kernels::Device::kCuda) {
    // Each device of the plan on a GPU of this machine, in device order; NCCL in the meshes.
    const Status fits = train::check_plan_gpus(*plan, kernels::device_inventory());
    if (!fits.is_ok()) return fail(fits);
    if (!args.collectives.empty() && args.collectives != "nccl") {
      return fail(make_error(Errc::kInvalidArgument,
                             "--device cuda runs the collectives of its meshes with NCCL, not {}",
                             args.collectives));
    }
    lo.run.device = kernels::Device::kCuda;
    fmt::print("devices: on the GPUs of this machine ({}), NCCL collectives\n",
               kernels::describe_gpus(kernels::device_inventory().gpus));
  } else if (plan->cluster.device.kind != "cpu") {
    fmt::print("note: the plan is for {} x {} {} devices; they run here as CPU threads\n",
               plan->cluster.hosts, plan->cluster.devices_per_host, plan->cluster.device.kind);
  }
  lo.run.collectives =
      *runtime::parse_collective_backend(device == kernels::Device::kCuda ? std::string("nccl")
                                         : args.collectives.empty() ? std::string("in-process")
                                                                    : args.collectives);
  lo.run.transport = *runtime::parse_transport_kind(args.transport);
  if (!args.schedule.empty()) lo.schedule = *planner::parse_schedule(args.schedule);
  lo.load_dir = args.load;
  lo.run.interpreter.time_kernels = args.breakdown;
  job.global_batch = plan->global_batch;
  // Stage actors (the node of the actor runtime builds the job), or one thread per device.
  std::unique_ptr<actors::ActorRunner> actor_runner;
  std::unique_ptr<train::LocalJob> local;
  actors::JobSummary built;
  if (actor_runtime) {
    auto r = actor_runtime->start(job, *plan, lo);
    if (!r.has_value()) return fail_run(r.status());
    actor_runner = std::move(*r);
    built = actor_runner->summary();
  } else {
    auto l = train::LocalJob::create(job, *plan, lo);
    if (!l.has_value()) return fail_run(l.status());
    local = std::move(*l);
    const runtime::Program& prog = local->run().program();
    built.instructions = local->instructions();
    for (const runtime::StageLayout& s : prog.stages) {
      built.devices += static_cast<int64_t>(s.devices.size());
    }
    built.first_step = local->first_step();
    built.schedule = prog.schedule;
  }
  print_plan_summary(*plan);
  note_batch_norm(*plan, job);
  fmt::print("lowered: {} device programs, {} instructions per step, schedule {}\n", built.devices,
             built.instructions, planner::schedule_name(built.schedule));
  std::fflush(stdout);
  train::StepRunner& runner =
      actor_runner ? static_cast<train::StepRunner&>(*actor_runner) : *local;
  if (args.metrics_log) args.metrics_log->set_predicted_step_time(plan->step_time);
  auto summary = train::run_session(runner, session_options(args, job, built.first_step));
  if (!summary.has_value()) return fail_run(summary.status());
  write_metrics_summary(args, *summary);
  const auto& l = summary->losses;
  fmt::print("done: loss {:.4f} -> {:.4f} in steps {}-{}, {} total\n", l.front(), l.back(),
             summary->first_step, summary->last_step, format_seconds(summary->total_time));
  print_step_time(*plan, *summary);
  if (args.breakdown) print_breakdown(*summary);
  print_loss_scaling(*summary, job);
  if (!args.save.empty()) fmt::print("checkpoint: {}\n", args.save);
  fmt::print("{}", train::peak_table(*plan, summary->peak_bytes));
  return 0;
}

// One device, no plan: the single-device executor, on the CPU or (kCuda) on GPU 0, which also
// saves and resumes checkpoints (the CPU's --save/--load go through run_parallel instead).
int run_single(const TrainArgs& args, const train::JobSpec& job, kernels::Device device) {
  train::SingleDeviceOptions so;
  so.device = device;
  so.gpu = 0;
  so.load_dir = args.load;
  fmt::print("meshpipe train: {} ({}), batch {}, {} steps, {}, {}\n", job.model.name,
             job.model.description, job.batch(), args.steps, job.optimizer.to_string(),
             train::single_device_label(so));
  auto single = train::SingleDeviceJob::create(job, so);
  if (!single.has_value()) return fail(single.status());
  const train::RunInfo i = (*single)->info();
  fmt::print("device: {}\n", i.device);
  fmt::print(
      "training graph: {} layers, {} ops ({} forward, {} backward, {} update), {} per step\n",
      i.layers, i.forward_ops + i.backward_ops + i.update_ops, i.forward_ops, i.backward_ops,
      i.update_ops, format_flops(i.flops_per_step));
  fmt::print("memory: {} parameters = {}, optimizer state {}\n",
             format_count(static_cast<double>(i.parameter_count)), format_bytes(i.parameter_bytes),
             format_bytes(i.optimizer_state_bytes));
  fmt::print("plan: 1 stage, layers 0-{} on 1 device, no sharding\n", i.layers - 1);
  std::fflush(stdout);
  auto summary = train::run_session(**single, session_options(args, job, (*single)->first_step()));
  if (!summary.has_value()) return fail_run(summary.status());
  write_metrics_summary(args, *summary);
  const auto& l = summary->losses;
  int64_t peak = 0;
  for (const auto& [d, bytes] : summary->peak_bytes) peak = std::max(peak, bytes);
  // On a GPU also what its caching allocator holds from the driver.
  const std::string reserved =
      device == kernels::Device::kCuda
          ? fmt::format(", GPU memory reserved {}", format_bytes((*single)->memory().reserved))
          : std::string();
  fmt::print(
      "done: loss {:.4f} -> {:.4f} in {} steps, {} total; {} parameters, persistent {}, "
      "peak {}{}\n",
      l.front(), l.back(), l.size(), format_seconds(summary->total_time),
      format_count(static_cast<double>(i.parameter_count)),
      format_bytes((*single)->persistent_bytes()), format_bytes(Bytes(peak)), reserved);
  print_loss_scaling(*summary, job);
  if (!args.save.empty()) fmt::print("checkpoint: {}\n", args.save);
  return 0;
}

// Learning rates that train each zoo family stably on the synthetic data.
float default_lr(const std::string& family, graph::OptimizerConfig::Kind kind) {
  if (kind == graph::OptimizerConfig::Kind::kSgd) return family == "wresnet" ? 0.05f : 0.1f;
  if (family == "gpt" || family == "moe" || family == "wresnet") return 3e-3f;
  return 1e-3f;
}

// What makes a run more than one device without a plan ("" when nothing does): such runs go
// through the per-device interpreter on virtual devices. A --cluster of one device does not
// (the single-device executor runs it; the cluster only describes the device).
Expected<std::string> planned_by(const TrainArgs& args) {
  if (args.listen >= 0) return std::string("--listen (a job of meshpipe-node processes)");
  if (!args.plan.empty()) return fmt::format("--plan {}", args.plan);
  if (!args.profile.empty()) return std::string("--profile (planning with a measured profile)");
  if (args.breakdown) return std::string("--breakdown (it times the interpreter's work)");
  if (!args.cluster.empty()) {
    MP_ASSIGN_OR_RETURN(const mesh::ClusterSpec cluster, mesh::resolve_cluster(args.cluster));
    if (cluster.num_devices() != 1) {
      return fmt::format("--cluster {} ({} devices)", args.cluster, cluster.num_devices());
    }
  }
  return std::string();
}

// Where the job's kernels run. "cuda" runs a single-device job on GPU 0 through the GPU
// executor, and a planned job (--cluster of several devices, --plan) with each device on a GPU
// of this machine (run_parallel checks there are enough) and NCCL collectives; it needs a CUDA
// build (and NCCL for a plan) and a GPU. "auto" takes the GPU for a run on one device exactly
// when "cuda" would work, else the CPU.
// Returns the error that names what is missing.
Expected<kernels::Device> choose_device(const TrainArgs& args, const train::JobSpec& job) {
  if (args.device == "cpu") return kernels::Device::kCpu;
  const bool want = args.device == "cuda";
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (!inv.cuda_built) {
    if (!want) return kernels::Device::kCpu;
    return make_error(Errc::kUnavailable,
                      "--device cuda: this meshpipe was built without CUDA (configure with "
                      "-DMP_ENABLE_CUDA=ON where the CUDA toolkit is installed); use --device cpu");
  }
  auto planned = planned_by(args);
  if (!planned.has_value()) {
    if (!want) return kernels::Device::kCpu;  // the CPU path reports the bad cluster itself
    return planned.status();
  }
  if (!planned->empty()) {
    if (!want) return kernels::Device::kCpu;  // auto takes a GPU for a run on one device only
    if (!args.profile.empty() || args.breakdown) {
      return make_error(Errc::kUnavailable,
                        "--device cuda with {}: not on GPUs yet (--profile and --breakdown "
                        "measure CPU devices); use --device cpu for this run",
                        *planned);
    }
    if (!comm::nccl_available()) {
      return make_error(Errc::kUnavailable,
                        "--device cuda with {}: this meshpipe was built without NCCL, which "
                        "runs the collectives of GPUs in a mesh; use --device cpu",
                        *planned);
    }
    // The nodes of a --listen job run the devices (each checks it has the GPUs when the job
    // starts); this machine need not have any.
    if (args.listen >= 0) return kernels::Device::kCuda;
  }
  if (inv.gpus.empty()) {
    if (!want) return kernels::Device::kCpu;
    return make_error(Errc::kUnavailable, "--device cuda: no GPU to run on ({}); use --device cpu",
                      inv.summary);
  }
  // Every op kind has a CUDA kernel in a CUDA build; checked anyway, so that a kind added to the
  // CPU backend alone is named here rather than failing at its first step.
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg, graph::models::zoo_training_graph(
                                                   job.model, 1, job.optimizer, job.precision));
  std::set<std::string> missing;
  std::set<graph::OpKind> kinds;
  for (const graph::Op& op : tg.graph.ops()) kinds.insert(op.kind);
  for (graph::OpKind k : kinds) {
    if (kernels::find_kernel(kernels::Device::kCuda, k) == nullptr) {
      missing.insert(std::string(graph::op_kind_name(k)));
    }
  }
  if (missing.empty()) return kernels::Device::kCuda;
  if (!want) return kernels::Device::kCpu;
  std::string list;
  for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
  return make_error(Errc::kUnavailable,
                    "--device cuda: this machine has {}, but the CUDA backend has no kernel "
                    "for {} of the {} op kinds of {}'s training step ({}); use --device cpu",
                    kernels::describe_gpus(inv.gpus), missing.size(), kinds.size(), job.model.name,
                    list);
}

int run_train(const TrainArgs& args) {
  auto spec = resolve_model_args(args.model, args.model_file, args.batch);
  if (!spec.has_value()) return fail(spec.status());
  auto kind = graph::parse_optimizer_kind(args.optimizer);
  if (!kind.has_value()) {
    fmt::print(stderr, "error: {}\n", printable(kind.status().message()));
    return 2;
  }
  train::JobSpec job;
  job.model = *spec;
  job.global_batch = args.batch;
  job.seed = args.seed;
  job.check_finite = args.check_numerics;
  // Every process of a job reads the folder by this path: absolute, not from its own directory.
  if (!args.data.empty()) {
    std::error_code ec;
    job.data_path = std::filesystem::absolute(args.data, ec).lexically_normal().string();
    if (ec) job.data_path = args.data;
  }
  job.val_fraction = args.val_fraction;
  job.precision = *parse_dtype(args.precision);  // checked by CLI::IsMember
  job.loss_scale.enabled =
      args.loss_scale == "dynamic" || (args.loss_scale == "auto" && job.precision == DType::kF16);
  job.loss_scale.initial = args.initial_loss_scale;
  job.loss_scale.interval = args.loss_scale_window;
  job.optimizer.kind = *kind;
  // A given --lr is taken as it is (one that underflows to 0 as a float is refused below, not
  // replaced by the default).
  job.optimizer.lr = args.lr_given ? args.lr : default_lr(spec->family, *kind);
  job.optimizer.weight_decay = args.weight_decay;
  job.schedule.warmup_steps = args.warmup_steps;
  job.schedule.decay_steps = args.decay_steps;
  job.schedule.min_ratio = args.min_lr_ratio;
  job.clip_grad_norm = args.clip_grad_norm;
  job.optimizer.momentum = args.momentum;
  // Checked before anything is planned or built (the batch limit, numbers that did not survive
  // their conversion to float).
  if (Status ok = job.validate(); !ok.is_ok()) return fail(ok);
  auto device = choose_device(args, job);
  if (!device.has_value()) return fail(device.status());
  if (args.val_every > 0 && !train::has_validation_split(job)) {
    return fail(make_error(Errc::kInvalidArgument,
                           "--val-every needs a token file (--data FILE) and a validation share "
                           "(--val-fraction > 0)"));
  }
  if (!args.load.empty()) {
    // A resume continues the data stream it was trained on: the same data, or an error.
    auto info = runtime::read_checkpoint_info(args.load);
    if (!info.has_value()) return fail(info.status());
    auto here = train::data_identity(job.data_path);
    if (!here.has_value()) return fail(here.status());
    if (!info->data.empty() && info->data != *here) {
      return fail(make_error(
          Errc::kInvalidArgument,
          "checkpoint {} was trained on data '{}' ({} samples read); this run "
          "{} (a resume continues the stream it started: give the same --data)",
          args.load, printable(info->data), info->data_samples,
          here->empty() ? "has no --data" : fmt::format("reads '{}'", printable(*here))));
    }
  }
  if (args.listen >= 0) return run_listen(args, job, *device);
  if (args.collectives == "nccl" && *device != kernels::Device::kCuda) {
    return fail(make_error(Errc::kInvalidArgument,
                           "--collectives nccl runs on GPUs: use it with --device cuda"));
  }
  // One GPU without a plan: the single-device executor, checkpoints included.
  if (*device == kernels::Device::kCuda) {
    auto planned = planned_by(args);
    if (planned.has_value() && !planned->empty()) return run_parallel(args, job, *device);
    return run_single(args, job, *device);
  }
  // --breakdown times the interpreter's work: without a cluster, on one virtual device.
  if (!args.cluster.empty() || !args.plan.empty() || !args.save.empty() || !args.load.empty() ||
      !args.profile.empty() || args.breakdown) {
    return run_parallel(args, job, kernels::Device::kCpu);
  }
  return run_single(args, job, kernels::Device::kCpu);
}

// Under a launcher (--launcher): rank 0 becomes the driver (its options filled in from the
// variables, returns -1 to go on), every other rank is replaced by `meshpipe-node` joining it
// (returns only on an error, with the exit code).
int apply_launcher(TrainArgs& args) {
  if (args.launcher == "none") {
    if (args.listen < 0 && (args.local_devices > 0 || !args.secret_file.empty())) {
      return fail(make_error(Errc::kInvalidArgument, "{} needs --listen or --launcher",
                             args.local_devices > 0 ? "--local-devices" : "--secret-file"));
    }
    return -1;
  }
  auto env = actors::read_launch_env(
      args.launcher, [](const char* name) -> const char* { return std::getenv(name); });
  if (!env.has_value()) return fail(env.status());
  if (!env->has_value()) {
    return fail(make_error(Errc::kInvalidArgument,
                           "--launcher {}: no launcher's variables are set (RANK/WORLD_SIZE or "
                           "SLURM_PROCID/SLURM_NTASKS)",
                           args.launcher));
  }
  const actors::LaunchEnv& e = **env;
  auto local = actors::launch_bind_address(e);
  if (!local.has_value()) return fail(local.status());
  const int32_t devices = args.local_devices > 0 ? args.local_devices : 1;
  fmt::print(stderr, "meshpipe: {} rank {} of {}, coordinator {}:{}\n", e.launcher, e.rank,
             e.world_size, e.master_addr, e.port);
  if (e.rank == 0) {
    args.listen = e.port;
    args.nodes = static_cast<int32_t>(e.world_size);
    args.local_devices = devices;
    args.local_bind = *local;
    return -1;
  }
  std::error_code ec;
  const std::filesystem::path node =
      std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "meshpipe-node";
  if (ec || !std::filesystem::exists(node)) {
    return fail(make_error(Errc::kNotFound, "--launcher: rank {} needs meshpipe-node at {}", e.rank,
                           node.string()));
  }
  std::vector<std::string> argv_s = {
      "meshpipe-node",
      "--launcher",
      "none",
      "--coordinator",
      fmt::format("{}:{}", e.master_addr, e.port),
      "--devices",
      std::to_string(devices),
      "--memory-gib",
      fmt::format("{}", args.local_memory_gib),
      "--bind",
      *local,
      "--connect-timeout-ms",
      std::to_string(std::min<int64_t>(args.join_timeout_ms, 3600000))};
  if (!args.secret_file.empty()) {
    argv_s.push_back("--secret-file");
    argv_s.push_back(args.secret_file);
  }
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stderr);
  ::execv(node.c_str(), argv.data());
  return fail(make_error(Errc::kIo, "cannot run {}: {}", node.string(), std::strerror(errno)));
}

}  // namespace

void add_train_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a zoo model or an imported ONNX file (--model-file) on synthetic data or on "
      "arrays (--data), printing loss, step time and throughput per step: on "
      "one device (the CPU, or a GPU: --device), or with --cluster/--plan by a plan on virtual "
      "CPU devices (threads) or, with --device cuda, on this machine's GPUs");
  add_train_options(cmd, *args);
  cmd->callback([args, cmd, &exit_code] {
    args->lr_given = cmd->count("--lr") > 0;
    args->precision_given = cmd->count("--precision") > 0;
    // Ranks other than 0 become nodes here (they write no metrics).
    if (const int rc = apply_launcher(*args); rc >= 0) {
      exit_code = rc;
      return;
    }
    if (!args->metrics.empty()) {
      auto log = train::MetricsLog::open(args->metrics, {{"--data", args->data},
                                                         {"--model-file", args->model_file.file},
                                                         {"--plan", args->plan},
                                                         {"--profile", args->profile},
                                                         {"--cluster", args->cluster}});
      if (!log.has_value()) {
        exit_code = fail(log.status());
        return;
      }
      args->metrics_log = std::make_shared<train::MetricsLog>(std::move(*log));
    }
    exit_code = run_train(*args);
  });
}

}  // namespace meshpipe::cli

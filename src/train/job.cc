// JobSpec, plan_job and LocalJob: a job's plan, and its lowered program on this process.
#include "train/job.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "core/files.h"
#include "graph/models/zoo_training.h"
#include "kernels/device.h"
#include "planner/cost_model.h"
#include "runtime/array_data.h"
#include "runtime/compact_program.h"
#include "runtime/cost_models.h"
#include "runtime/counted_plan.h"
#include "runtime/crc32c.h"
#include "runtime/lower.h"
#include "runtime/program.h"
#include "runtime/token_data.h"
#include "train/model_source.h"

namespace meshpipe::train {

int64_t JobSpec::tokens_per_step() const {
  return batch() * graph::models::tokens_per_sample(model);
}

double LrSchedule::factor(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) {
    return static_cast<double>(std::max<int64_t>(step, 1)) / static_cast<double>(warmup_steps);
  }
  if (decay_steps <= 0) return 1.0;
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) /
                                            static_cast<double>(decay_steps - warmup_steps));
  return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + std::cos(M_PI * progress));
}

Status LrSchedule::validate() const {
  if (warmup_steps < 0 || decay_steps < 0 || (decay_steps > 0 && decay_steps <= warmup_steps) ||
      !(min_ratio >= 0.0 && min_ratio <= 1.0)) {
    return make_error(Errc::kInvalidArgument,
                      "learning-rate schedule: warm-up {} and decay {} steps (decay must end "
                      "after the warm-up), minimum ratio {} (in [0, 1])",
                      warmup_steps, decay_steps, min_ratio);
  }
  return Status::ok();
}

Status JobSpec::validate() const {
  if (global_batch < 0) {
    return make_error(Errc::kInvalidArgument, "the global batch must be >= 1, got {}",
                      global_batch);
  }
  if (global_batch > kMaxGlobalBatch) {
    return make_error(Errc::kOutOfRange,
                      "the global batch of {} is more than the {} samples a job may have (the "
                      "limit keeps tensor sizes and FLOP counts clear of 64-bit overflow)",
                      global_batch, kMaxGlobalBatch);
  }
  if (!is_floating(precision)) {
    return make_error(Errc::kInvalidArgument, "the precision must be f32, f16 or bf16, got {}",
                      dtype_name(precision));
  }
  MP_RETURN_IF_ERROR(loss_scale.validate());
  // The devices clip in float: a norm must survive the conversion (not 0, not infinite).
  if (!(clip_grad_norm >= 0.0 && clip_grad_norm <= std::numeric_limits<float>::max()) ||
      (clip_grad_norm > 0.0 && static_cast<float>(clip_grad_norm) == 0.0f)) {
    return make_error(Errc::kInvalidArgument,
                      "the gradient clipping norm must be 0 (off) or a positive number a float "
                      "holds (at most 3.4e38, not so small that it rounds to 0), got {}",
                      clip_grad_norm);
  }
  MP_RETURN_IF_ERROR(schedule.validate());
  return optimizer.validate();
}

Status check_plan_gpus(const planner::Plan& plan, const kernels::DeviceInventory& inv) {
  int64_t used = 0;
  bool meshes = false;
  for (const planner::StagePlan& st : plan.stages) {
    used += static_cast<int64_t>(st.devices.size());
    meshes = meshes || st.devices.size() > 1;
  }
  const auto gpus = static_cast<int64_t>(inv.gpus.size());
  if (gpus > 0 && (used <= gpus || !meshes)) return Status::ok();
  return make_error(Errc::kUnavailable,
                    "--device cuda: the plan runs {} devices{}, one per GPU, and this machine has "
                    "{} ({}); plan for at most {} devices or use --device cpu",
                    used, meshes ? " in meshes" : "", gpus, inv.summary, gpus);
}

Status check_fits_host_memory(const graph::Graph& g, int64_t devices, std::string_view what) {
  const int64_t available = kernels::host_memory_available();
  if (available <= 0) return Status::ok();  // unknown: nothing to hold it against
  int64_t persistent = 0;
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kParameter || v.role == graph::ValueRole::kOptimizerState) {
      persistent += v.bytes();
    }
  }
  int64_t largest = 0;
  const graph::Op* largest_op = nullptr;
  for (const graph::Op& op : g.ops()) {
    int64_t bytes = 0;
    for (ValueId v : op.inputs) bytes += g.value(v).bytes();
    for (ValueId v : op.outputs) bytes += g.value(v).bytes();
    if (bytes > largest) {
      largest = bytes;
      largest_op = &op;
    }
  }
  // Saturating: a hostile batch must not wrap the sum around.
  const int64_t per_device = persistent > INT64_MAX - largest ? INT64_MAX : persistent + largest;
  const int64_t need = per_device > INT64_MAX / std::max<int64_t>(devices, 1)
                           ? INT64_MAX
                           : per_device * std::max<int64_t>(devices, 1);
  if (need <= available) return Status::ok();
  return make_error(Errc::kResourceExhausted,
                    "{} needs at least {} of memory ({} device(s): parameters and optimizer "
                    "state {} each, and op '{}' alone reads and writes {}), more than the {} "
                    "this machine has available; use a smaller --batch",
                    what, format_bytes(Bytes(need)), devices, format_bytes(Bytes(persistent)),
                    largest_op != nullptr ? largest_op->name : std::string("?"),
                    format_bytes(Bytes(largest)), format_bytes(Bytes(available)));
}

namespace {

bool is_token_file(const JobSpec& job) {
  std::error_code ec;
  return !job.data_path.empty() && !std::filesystem::is_directory(job.data_path, ec);
}

// The training or the validation windows of the job's token file.
Expected<std::unique_ptr<runtime::BatchSource>> open_token_data(const JobSpec& job,
                                                                const graph::Graph& g,
                                                                const std::vector<ValueId>& inputs,
                                                                bool validation) {
  runtime::TokenDataOptions o;
  o.val_fraction = job.val_fraction;
  o.validation = validation;
  MP_ASSIGN_OR_RETURN(std::unique_ptr<runtime::TokenData> t,
                      runtime::TokenData::open(job.data_path, g, inputs, o));
  return std::unique_ptr<runtime::BatchSource>(std::move(t));
}

}  // namespace

bool has_validation_split(const JobSpec& job) {
  return is_token_file(job) && job.val_fraction > 0.0;
}

Expected<std::unique_ptr<runtime::BatchSource>> open_job_data(const JobSpec& job,
                                                              const graph::Graph& g,
                                                              const std::vector<ValueId>& inputs) {
  if (!job.data_path.empty()) {
    if (is_token_file(job)) return open_token_data(job, g, inputs, /*validation=*/false);
    MP_ASSIGN_OR_RETURN(std::unique_ptr<runtime::ArrayData> a,
                        runtime::ArrayData::open(job.data_path, g, inputs));
    return std::unique_ptr<runtime::BatchSource>(std::move(a));
  }
  MP_ASSIGN_OR_RETURN(runtime::SyntheticData d,
                      runtime::SyntheticData::create(g, inputs, job.seed));
  return std::unique_ptr<runtime::BatchSource>(
      std::make_unique<runtime::SyntheticData>(std::move(d)));
}

Expected<std::string> data_identity(const std::string& path) {
  if (path.empty()) return std::string();
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    std::vector<std::string> parts;
    for (const fs::directory_entry& e : fs::directory_iterator(p, ec)) {
      if (e.path().extension() != ".npy") continue;
      parts.push_back(fmt::format("{}:{}", e.path().filename().string(), e.file_size(ec)));
    }
    std::sort(parts.begin(), parts.end());
    return printable(fmt::format("arrays {} {}", p.filename().string(), fmt::join(parts, " ")))
        .substr(0, 4000);
  }
  // The first MiB (without blocking on a FIFO; only a regular file is read).
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "data file '{}' is not a readable regular file",
                      printable(path));
  }
  std::string head(static_cast<size_t>(std::min<int64_t>(st.st_size, int64_t{1} << 20)), '\0');
  size_t have = 0;
  while (have < head.size()) {
    const ssize_t n =
        ::pread(fd.get(), head.data() + have, head.size() - have, static_cast<off_t>(have));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
  }
  head.resize(have);
  return printable(fmt::format("tokens {} {} crc32c={:08x}", p.filename().string(),
                               static_cast<int64_t>(st.st_size),
                               runtime::crc32c(head.data(), head.size())));
}

Expected<std::unique_ptr<runtime::BatchSource>> open_validation_data(
    const JobSpec& job, const graph::Graph& g, const std::vector<ValueId>& inputs) {
  if (!has_validation_split(job)) {
    return make_error(Errc::kInvalidArgument,
                      "validation needs a token file (--data FILE) with a validation share "
                      "(--val-fraction > 0)");
  }
  return open_token_data(job, g, inputs, /*validation=*/true);
}

Expected<double> StepRunner::validate(int64_t) {
  return make_error(Errc::kUnavailable, "this runner cannot run validation passes");
}

std::string job_spec_to_json(const JobSpec& job) {
  Json j = Json::object();
  j["model"] = job.model.name;
  if (const auto* e = std::get_if<graph::models::ExternalConfig>(&job.model.config)) {
    // An imported file: every process reads it again (model_source.h).
    j["model_source"] = Json::parse(e->source);
  }
  j["global_batch"] = job.global_batch;
  j["seed"] = job.seed;
  j["check_finite"] = job.check_finite;
  if (!job.data_path.empty()) {
    j["data"] = job.data_path;
    // What this process reads there, for the others to compare with theirs.
    if (auto id = data_identity(job.data_path); id.has_value()) j["data_identity"] = *id;
  }
  j["val_fraction"] = job.val_fraction;
  if (!job.schedule.constant()) {
    j["lr_schedule"] = {{"warmup_steps", job.schedule.warmup_steps},
                        {"decay_steps", job.schedule.decay_steps},
                        {"min_ratio", job.schedule.min_ratio}};
  }
  if (job.clip_grad_norm > 0.0) j["clip_grad_norm"] = job.clip_grad_norm;
  j["precision"] = std::string(dtype_name(job.precision));
  j["loss_scale"] = {{"enabled", job.loss_scale.enabled},
                     {"initial", job.loss_scale.initial},
                     {"interval", job.loss_scale.interval}};
  const graph::OptimizerConfig& o = job.optimizer;
  j["optimizer"] = {{"kind", o.kind == graph::OptimizerConfig::Kind::kSgd ? "sgd" : "adam"},
                    {"lr", o.lr},
                    {"momentum", o.momentum},
                    {"beta1", o.beta1},
                    {"beta2", o.beta2},
                    {"eps", o.eps},
                    {"weight_decay", o.weight_decay}};
  return j.dump();
}

Expected<JobSpec> job_spec_from_json(const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json root, parse_json(text, "job JSON"));
  const std::string subject = "job field";
  if (!root.is_object()) return make_error(Errc::kInvalidArgument, "job JSON must be an object");
  JsonReader r(root, "", subject);
  JobSpec job;
  std::string model;
  MP_RETURN_IF_ERROR(r.read("model", &model));
  if (const Json* source = r.find_optional("model_source"); source != nullptr) {
    MP_ASSIGN_OR_RETURN(job.model, model_from_source(source->dump()));
    if (job.model.name != model) {
      return r.error("model_source",
                     fmt::format("is the model '{}', not '{}'", job.model.name, model));
    }
  } else {
    MP_ASSIGN_OR_RETURN(job.model, graph::models::find_model(model));
  }
  MP_RETURN_IF_ERROR(r.read("global_batch", &job.global_batch));
  MP_RETURN_IF_ERROR(r.read("seed", &job.seed));
  MP_RETURN_IF_ERROR(r.read("check_finite", &job.check_finite));
  MP_RETURN_IF_ERROR(r.read_optional("data", &job.data_path));
  if (const Json* id = r.find_optional("data_identity"); id != nullptr) {
    // Every process must read the same data: the same name, size and first MiB (token file),
    // or the same .npy names and sizes (folder).
    if (!id->is_string()) return r.error("data_identity", "must be a string");
    MP_ASSIGN_OR_RETURN(const std::string here, data_identity(job.data_path));
    if (here != id->get<std::string>()) {
      return r.error(
          "data_identity",
          fmt::format("the data at {} here is '{}', the driver's is '{}'", printable(job.data_path),
                      printable(here), printable(id->get<std::string>())));
    }
  }
  MP_RETURN_IF_ERROR(r.read_optional("val_fraction", &job.val_fraction));
  MP_RETURN_IF_ERROR(r.read_optional("clip_grad_norm", &job.clip_grad_norm));
  if (const Json* ls = r.find_optional("lr_schedule"); ls != nullptr) {
    if (!ls->is_object()) return r.error("lr_schedule", "must be an object");
    JsonReader rs(*ls, "lr_schedule", subject);
    MP_RETURN_IF_ERROR(rs.read("warmup_steps", &job.schedule.warmup_steps));
    MP_RETURN_IF_ERROR(rs.read("decay_steps", &job.schedule.decay_steps));
    MP_RETURN_IF_ERROR(rs.read("min_ratio", &job.schedule.min_ratio));
    MP_RETURN_IF_ERROR(rs.check_no_unknown_fields());
  }
  if (!(job.val_fraction >= 0.0 && job.val_fraction < 1.0)) {
    return r.error("val_fraction", "must be in [0, 1)");
  }
  std::string precision = "f32";
  MP_RETURN_IF_ERROR(r.read_optional("precision", &precision));
  const std::optional<DType> p = parse_dtype(precision);
  if (!p || !is_floating(*p)) {
    return r.error("precision", fmt::format("'{}' is not f32, f16 or bf16", precision));
  }
  job.precision = *p;
  job.loss_scale.enabled = job.precision == DType::kF16;
  if (const Json* ls = r.find_optional("loss_scale"); ls != nullptr) {
    if (!ls->is_object()) return r.error("loss_scale", "must be an object");
    JsonReader rl(*ls, "loss_scale", subject);
    double initial = job.loss_scale.initial;
    MP_RETURN_IF_ERROR(rl.read("enabled", &job.loss_scale.enabled));
    MP_RETURN_IF_ERROR(rl.read_optional("initial", &initial));
    MP_RETURN_IF_ERROR(rl.read_optional("interval", &job.loss_scale.interval));
    if (!(initial > 0.0 && initial < 3.0e38)) {
      return rl.error("initial", "must be a positive finite f32 number");
    }
    job.loss_scale.initial = static_cast<float>(initial);
    const Status valid = job.loss_scale.validate();
    if (!valid.is_ok()) return rl.error("interval", valid.message());
  }
  const Json* o = nullptr;
  MP_RETURN_IF_ERROR(r.object("optimizer", &o));
  JsonReader ro(*o, "optimizer", subject);
  std::string kind;
  MP_RETURN_IF_ERROR(ro.read("kind", &kind));
  auto parsed = graph::parse_optimizer_kind(kind);
  if (!parsed.has_value()) return ro.error("kind", parsed.status().message());
  job.optimizer.kind = *parsed;
  MP_RETURN_IF_ERROR(ro.read("lr", &job.optimizer.lr));
  MP_RETURN_IF_ERROR(ro.read("momentum", &job.optimizer.momentum));
  MP_RETURN_IF_ERROR(ro.read("beta1", &job.optimizer.beta1));
  MP_RETURN_IF_ERROR(ro.read("beta2", &job.optimizer.beta2));
  MP_RETURN_IF_ERROR(ro.read("eps", &job.optimizer.eps));
  MP_RETURN_IF_ERROR(ro.read("weight_decay", &job.optimizer.weight_decay));
  MP_RETURN_IF_ERROR(ro.check_no_unknown_fields());
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  MP_RETURN_IF_ERROR(job.validate().with_context("job"));
  return job;
}

Expected<planner::Plan> plan_job(const JobSpec& job, const mesh::ClusterSpec& cluster,
                                 const PlanRequest& request, const Planner& planner) {
  MP_RETURN_IF_ERROR(job.validate());
  MP_RETURN_IF_ERROR(cluster.validate());
  const int64_t global = job.batch();
  if (request.micro_batches > 0 && global % request.micro_batches != 0) {
    return make_error(Errc::kInvalidArgument,
                      "the batch of {} does not split into {} micro-batches", global,
                      request.micro_batches);
  }
  planner::PlannerOptions po;
  po.model = job.model.name;
  po.global_batch = global;
  po.micro_batches = request.micro_batches;
  if (request.schedule) po.schedule = *request.schedule;
  po.profile.recompute = request.recompute;
  const graph::models::ModelSpec spec = job.model;
  const graph::OptimizerConfig opt = job.optimizer;
  const DType precision = job.precision;
  po.graph_for_micro_batch = [spec, opt, precision](int64_t micro) -> Expected<graph::Graph> {
    MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                        graph::models::zoo_training_graph(spec, micro, opt, precision));
    return std::move(tg.graph);
  };
  const int64_t first = request.micro_batches > 0 ? global / request.micro_batches : global;
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph g0,
                      graph::models::zoo_training_graph(spec, first, opt, precision));
  if (planner) return planner(g0.graph, cluster, po);
  const auto cost_model = runtime::cost_model_for(cluster);
  const planner::CostModel& cost = *cost_model;
  return runtime::make_counted_plan(g0.graph, cluster, cost, po);
}

Status check_plan_for_job(const planner::Plan& plan, const JobSpec& job, bool explicit_batch,
                          const std::string& what) {
  if (plan.model != job.model.name) {
    return make_error(Errc::kInvalidArgument, "{} is a plan for model '{}', not '{}'", what,
                      plan.model, job.model.name);
  }
  if (plan.dtype != job.precision) {
    return make_error(Errc::kInvalidArgument,
                      "{} is a plan for {} training, the job trains in {} (plan again with "
                      "--precision {}, or train with --precision {})",
                      what, dtype_name(plan.dtype), dtype_name(job.precision),
                      dtype_name(job.precision), dtype_name(plan.dtype));
  }
  if (explicit_batch && plan.global_batch != job.batch()) {
    return make_error(Errc::kInvalidArgument,
                      "the plan is for a global batch of {}, --batch asks for {}",
                      plan.global_batch, job.batch());
  }
  return Status::ok();
}

LocalJob::~LocalJob() = default;

Expected<std::unique_ptr<LocalJob>> LocalJob::create(const JobSpec& spec, const planner::Plan& plan,
                                                     const LocalJobOptions& options) {
  MP_RETURN_IF_ERROR(spec.validate());
  if (!options.load_dir.empty()) {  // a bad checkpoint fails before the devices are built
    MP_ASSIGN_OR_RETURN(runtime::CheckpointInfo info,
                        runtime::read_checkpoint_info(options.load_dir));
    if (info.model != spec.model.name) {
      return make_error(Errc::kInvalidArgument, "checkpoint {} is of model '{}', not '{}'",
                        options.load_dir, info.model, spec.model.name);
    }
  }
  std::unique_ptr<LocalJob> job(new LocalJob());
  job->spec_ = spec;
  job->spec_.global_batch = plan.global_batch;
  job->plan_ = plan;
  MP_ASSIGN_OR_RETURN(
      job->graph_, graph::models::zoo_training_graph(spec.model, plan.micro_batch, spec.optimizer,
                                                     spec.precision));
  MP_ASSIGN_OR_RETURN(
      job->whole_, graph::models::zoo_training_graph(spec.model, plan.global_batch, spec.optimizer,
                                                     spec.precision));
  runtime::LowerOptions lo;
  lo.schedule = options.schedule;
  // Compact form: the templates of each device's tasks, instantiated per micro-batch as the
  // step runs, so the program held does not grow with the micro-batch count.
  MP_ASSIGN_OR_RETURN(runtime::CompactProgram compact,
                      runtime::lower_compact(plan, job->graph_.graph, lo));
  const runtime::Program& program = compact.base;
  job->inputs_ = program.inputs;
  job->micro_batches_ = program.micro_batches;
  job->fingerprint_ = runtime::compact_fingerprint(compact);
  job->instructions_ = compact.instructions();
  runtime::InProcessRunOptions ro = options.run;
  ro.interpreter.check_finite = ro.interpreter.check_finite || spec.check_finite;
  ro.interpreter.loss_scale = spec.loss_scale;
  ro.interpreter.clip_grad_norm = static_cast<float>(spec.clip_grad_norm);
  if (ro.share) {  // this process's devices that have a program
    auto share = std::make_shared<runtime::ProcessShare>(*ro.share);
    share->local_devices.clear();
    for (int32_t d : ro.share->local_devices) {
      if (program.device(d) != nullptr) share->local_devices.push_back(d);
    }
    ro.share = std::move(share);
  }
  // The plan's memory per device, for every device this process runs, against the machine's:
  // a plan for large GPUs run here as CPU threads fails now, not in an allocation.
  const int64_t here = ro.share ? static_cast<int64_t>(ro.share->local_devices.size())
                                : static_cast<int64_t>(program.devices.size());
  const int64_t available = kernels::host_memory_available();
  if (available > 0 && plan.max_memory_per_device > 0 &&
      plan.max_memory_per_device > available / std::max<int64_t>(here, 1)) {
    return make_error(Errc::kResourceExhausted,
                      "the plan needs about {} per device (its prediction) on the {} device(s) "
                      "this process runs, more than the {} this machine has available",
                      format_bytes(Bytes(plan.max_memory_per_device)), here,
                      format_bytes(Bytes(available)));
  }
  MP_ASSIGN_OR_RETURN(job->run_,
                      runtime::InProcessRun::create(std::move(compact), job->graph_.graph, ro));
  MP_RETURN_IF_ERROR(job->run_->initialize(spec.seed));
  if (!options.load_dir.empty()) {
    MP_ASSIGN_OR_RETURN(runtime::CheckpointInfo info,
                        runtime::load_checkpoint(*job->run_, job->graph_.graph, options.load_dir));
    job->first_step_ = info.step + 1;
    // The scale goes on where it was (a checkpoint without one starts from the initial scale).
    if (spec.loss_scale.enabled && info.loss_scale > 0.0f) {
      MP_RETURN_IF_ERROR(job->run_->restore_loss_scale(info.loss_scale, info.loss_scale_good_steps)
                             .with_context(options.load_dir));
    }
  }
  MP_ASSIGN_OR_RETURN(job->data_, open_job_data(spec, job->whole_.graph, job->whole_.inputs));
  job->partial_ = options.run.share != nullptr;
  return job;
}

Expected<std::vector<std::vector<runtime::HostTensor>>> LocalJob::micro_batches(int64_t step) {
  if (step < 1) return make_error(Errc::kInvalidArgument, "step {} is not positive", step);
  // The step's learning rate (every runner of this job asks for the step's batches first).
  run_->set_lr_scale(static_cast<float>(spec_.schedule.factor(step)));
  data_->seek(step - 1);
  MP_ASSIGN_OR_RETURN(auto batch, data_->read_next());
  return runtime::split_micro_batches(whole_.graph, batch, inputs_, micro_batches_);
}

namespace {

// A step of this process's devices as the session sees it; the caller adds the peaks (r's are
// left in place).
StepOutcome step_outcome(runtime::RunStepResult&& r) {
  StepOutcome out;
  out.loss = r.loss;
  out.losses = std::move(r.losses);
  out.seconds = r.seconds;
  out.kernel_seconds = std::move(r.kernel_seconds);
  out.kernels_run = r.kernels_run;
  out.other_seconds = std::move(r.other_seconds);
  out.loss_scale = r.loss_scale;
  out.skipped = r.skipped;
  out.grad_norm = r.grad_norm;
  out.next_loss_scale = r.next_loss_scale;
  out.good_steps = r.good_steps;
  return out;
}

}  // namespace

Expected<StepOutcome> LocalJob::outcome(
    const std::vector<std::pair<int32_t, runtime::DeviceStepResult>>& results,
    double seconds) const {
  MP_ASSIGN_OR_RETURN(runtime::RunStepResult r, run_->combine(results, seconds));
  StepOutcome out = step_outcome(std::move(r));
  for (const auto& [device, result] : results) out.peak_bytes[device] = result.peak_bytes;
  return out;
}

Expected<StepOutcome> LocalJob::run_step(int64_t step) {
  MP_ASSIGN_OR_RETURN(auto mbs, micro_batches(step));
  MP_ASSIGN_OR_RETURN(runtime::RunStepResult r, run_->step(mbs));
  StepOutcome out = step_outcome(std::move(r));
  for (int32_t d : run_->devices()) out.peak_bytes[d] = r.peak_bytes[static_cast<size_t>(d)];
  return out;
}

Expected<std::vector<std::vector<runtime::HostTensor>>> LocalJob::validation_batches(
    int64_t index) {
  if (!val_data_) {
    MP_ASSIGN_OR_RETURN(val_data_, open_validation_data(spec_, whole_.graph, whole_.inputs));
  }
  val_data_->seek(index);
  MP_ASSIGN_OR_RETURN(auto batch, val_data_->read_next());
  return runtime::split_micro_batches(whole_.graph, batch, inputs_, micro_batches_);
}

Expected<double> LocalJob::validate(int64_t index) {
  if (partial_) return StepRunner::validate(index);
  MP_ASSIGN_OR_RETURN(auto mbs, validation_batches(index));
  MP_ASSIGN_OR_RETURN(runtime::RunStepResult r, run_->evaluate(mbs));
  return r.loss;
}

Status LocalJob::save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) {
  return runtime::save_checkpoint(*run_, graph_.graph, dir, info);
}

Expected<std::vector<runtime::SavedTile>> LocalJob::write_tiles(const std::string& partial) {
  return runtime::write_checkpoint_tiles(*run_, graph_.graph, partial);
}

}  // namespace meshpipe::train

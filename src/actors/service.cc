// TrainingService: jobs on disjoint devices of a pool, each on its own thread, followed through
// events (actors/service.h).
#include "actors/service.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <variant>

#include "actors/actor_runtime.h"
#include "core/logging.h"
#include "kernels/device.h"
#include "mesh/cluster.h"
#include "planner/ilp.h"
#include "train/session.h"
#include "train/single_device.h"

namespace meshpipe::actors {

const char* job_event_name(JobEventKind kind) {
  switch (kind) {
    case JobEventKind::kQueued:
      return "queued";
    case JobEventKind::kPlanned:
      return "planned";
    case JobEventKind::kStep:
      return "step";
    case JobEventKind::kValidation:
      return "validation";
    case JobEventKind::kCheckpoint:
      return "checkpoint";
    case JobEventKind::kFinished:
      return "finished";
    case JobEventKind::kFailed:
      return "failed";
    case JobEventKind::kCancelled:
      return "cancelled";
  }
  return "?";
}

Status ServiceOptions::validate() const {
  if (devices < 1 || devices > mesh::kMaxClusterDevices) {
    return make_error(Errc::kInvalidArgument, "the service needs 1 to {} devices, got {}",
                      mesh::kMaxClusterDevices, devices);
  }
  if (step_timeout.count() < 1) {
    return make_error(Errc::kInvalidArgument, "the step timeout must be positive");
  }
  return Status::ok();
}

namespace {

// Whether the model is the program's own graph builder (nothing another process or a stage
// actor's node could rebuild it from).
bool is_program_graph(const train::JobSpec& spec) {
  const auto* ext = std::get_if<graph::models::ExternalConfig>(&spec.model.config);
  return ext != nullptr && ext->source.empty();
}

// "2 stages, 4 micro-batches (1f1b), predicted step 1.2 ms: layers 0-1 on devices 0-1 (1, 2);
// layers 2-3 on devices 2-3 (1, 2)"
std::string describe(const planner::Plan& plan, const std::vector<int32_t>& pool) {
  std::string stages;
  for (const planner::StagePlan& s : plan.stages) {
    std::vector<int32_t> mine;
    for (int32_t d : s.devices) mine.push_back(pool.at(static_cast<size_t>(d)));
    stages += fmt::format("{}layers {}-{} on devices {} {}", stages.empty() ? "" : "; ",
                          s.first_layer, s.last_layer, fmt::join(mine, ","), s.mesh.to_string());
  }
  return fmt::format("{} stage{}, {} micro-batch{} ({}), predicted step {:.3g} ms: {}",
                     plan.stages.size(), plan.stages.size() == 1 ? "" : "s", plan.micro_batches,
                     plan.micro_batches == 1 ? "" : "es", planner::schedule_name(plan.schedule),
                     plan.step_time * 1e3, stages);
}

}  // namespace

struct TrainingService::Impl {
  struct Job {
    int64_t id = 0;
    std::string name;
    int64_t steps = 0;
    ServiceJob job;    // released when the job ends (its plan, the program's graph builder)
    int32_t need = 0;  // devices
    bool actors = true;
    std::atomic<bool> stop{false};
    bool ended = false;
    JobOutcome outcome;
    std::thread thread;
  };

  ServiceOptions options;
  mutable std::mutex mu;
  std::condition_variable changed;
  std::vector<bool> in_use;
  std::map<int64_t, std::shared_ptr<Job>> jobs;
  std::deque<int64_t> waiting;  // queued jobs in submission order: the first takes devices next
  static constexpr size_t kKeepEnded = 1024;  // ended jobs whose outcome wait() still returns
  int64_t next_id = 1;
  bool closing = false;
  int blas_before = 0;  // BLAS's thread count before the service set it (restored after)
  std::mutex event_mu;  // one callback at a time

  void emit(const Job& j, JobEvent e) {
    e.job = j.id;
    e.name = j.name;
    e.total_steps = j.steps;
    if (!options.on_event) return;
    const std::lock_guard<std::mutex> lock(event_mu);
    options.on_event(e);
  }

  // Joins the threads of jobs that have ended and forgets the oldest ended jobs beyond
  // kKeepEnded (their thread is done: finish() is its last step). Under `mu`.
  void reap() {
    size_t ended = 0;
    for (auto& [id, j] : jobs) {
      if (!j->ended) continue;
      ++ended;
      if (j->thread.joinable() && j->thread.get_id() != std::this_thread::get_id()) {
        j->thread.join();
      }
    }
    for (auto it = jobs.begin(); it != jobs.end() && ended > kKeepEnded;) {
      if (it->second->ended && !it->second->thread.joinable()) {
        it = jobs.erase(it);
        --ended;
      } else {
        ++it;
      }
    }
  }

  // Waits for the job's turn and its devices; empty when it was cancelled first.
  std::vector<int32_t> take_devices(Job& j) {
    std::unique_lock<std::mutex> lock(mu);  // submit() queued it
    const auto free_count = [&] {
      return static_cast<int32_t>(std::count(in_use.begin(), in_use.end(), false));
    };
    changed.wait(
        lock, [&] { return j.stop.load() || (waiting.front() == j.id && free_count() >= j.need); });
    waiting.erase(std::find(waiting.begin(), waiting.end(), j.id));
    if (j.stop.load()) {
      changed.notify_all();  // the next in line may go now
      return {};
    }
    std::vector<int32_t> mine;
    for (size_t d = 0; d < in_use.size() && static_cast<int32_t>(mine.size()) < j.need; ++d) {
      if (!in_use[d]) {
        in_use[d] = true;
        mine.push_back(static_cast<int32_t>(d));
      }
    }
    changed.notify_all();
    return mine;
  }

  void give_back(const std::vector<int32_t>& devices) {
    const std::lock_guard<std::mutex> lock(mu);
    for (int32_t d : devices) in_use[static_cast<size_t>(d)] = false;
    changed.notify_all();
  }

  void finish(Job& j, JobOutcome outcome) {
    ServiceJob released;  // destroyed outside the lock (a builder's captures may be large)
    const std::lock_guard<std::mutex> lock(mu);
    j.outcome = std::move(outcome);
    j.ended = true;
    std::swap(released, j.job);
    changed.notify_all();
  }

  // The job's thread: devices, plan, build, steps, events. Whatever throws (the program's
  // callback or graph builder, an allocation) ends the job as failed; the devices go back and
  // wait() returns in every case.
  void run(const std::shared_ptr<Job>& jp) {
    Job& j = *jp;
    std::vector<int32_t> devices;
    JobOutcome out;
    const auto guarded = [&](const std::function<void()>& f) {
      try {
        f();
      } catch (const std::exception& e) {
        out = failed(make_error(Errc::kInternal, "the job threw: {}", e.what()));
      } catch (...) {
        out = failed(make_error(Errc::kInternal, "the job threw an exception"));
      }
    };
    guarded([&] {
      emit(j, JobEvent{.kind = JobEventKind::kQueued});
      devices = take_devices(j);
      out = devices.empty() ? failed(make_error(Errc::kCancelled, "cancelled while queued"))
                            : train_job(j, devices);
    });
    if (!devices.empty()) give_back(devices);
    planner::release_solver_thread();
    JobEvent last{.kind = out.kind, .step = out.last_step};
    if (out.kind == JobEventKind::kFinished) {
      last.loss = out.losses.empty() ? 0.0 : out.losses.back();
    } else {
      last.text = out.status.to_string();
    }
    try {
      emit(j, last);
    } catch (...) {  // the program's callback: the outcome stands
    }
    finish(j, std::move(out));
  }

  JobOutcome failed(Status s, int64_t last_step = 0) {
    const bool cancelled = s.code() == Errc::kCancelled;
    return JobOutcome{.kind = cancelled ? JobEventKind::kCancelled : JobEventKind::kFailed,
                      .status = std::move(s),
                      .last_step = last_step};
  }

  JobOutcome train_job(Job& j, const std::vector<int32_t>& devices) {
    train::JobSpec spec = j.job.spec;
    std::unique_ptr<ActorRuntime> rt;
    if (j.actors) {
      ActorOptions ao;
      ao.step_timeout = options.step_timeout;
      auto r = ActorRuntime::create(ao);
      if (!r.has_value()) return failed(r.status().with_context("starting the job's actors"));
      rt = std::move(*r);
    }
    Expected<planner::Plan> plan = planner::Plan{};
    if (j.job.plan.has_value()) {
      plan = *j.job.plan;
      const Status ok = train::check_plan_for_job(*plan, spec, spec.global_batch > 0, "the plan");
      if (!ok.is_ok()) return failed(ok);
    } else {
      auto cluster = mesh::resolve_cluster(j.job.cluster);  // as checked by submit()
      if (!cluster.has_value()) return failed(cluster.status());
      plan = train::plan_job(spec, *cluster, j.job.request, rt ? rt->planner() : train::Planner{});
      if (!plan.has_value()) return failed(plan.status().with_context("planning"));
    }
    if (j.stop.load()) {
      return failed(make_error(Errc::kCancelled, "cancelled before step 1; nothing saved"));
    }
    emit(j,
         JobEvent{
             .kind = JobEventKind::kPlanned, .devices = devices, .text = describe(*plan, devices)});
    spec.global_batch = plan->global_batch;
    train::LocalJobOptions lo;
    lo.run.timeout = options.step_timeout;
    lo.run.set_blas_threads = false;  // the service's share of the cores, set at create()
    lo.load_dir = j.job.load_dir;
    std::unique_ptr<ActorRunner> actor_runner;
    std::unique_ptr<train::LocalJob> local;
    int64_t first_step = 1;
    if (rt) {
      auto r = rt->start(spec, *plan, lo);
      if (!r.has_value()) return failed(r.status());
      actor_runner = std::move(*r);
      first_step = actor_runner->summary().first_step;
    } else {
      auto l = train::LocalJob::create(spec, *plan, lo);
      if (!l.has_value()) return failed(l.status());
      local = std::move(*l);
      first_step = local->first_step();
    }
    train::StepRunner& runner =
        actor_runner ? static_cast<train::StepRunner&>(*actor_runner) : *local;
    train::SessionOptions so;
    so.first_step = first_step;
    so.steps = j.job.steps;
    so.samples_per_step = spec.samples_per_step();
    so.tokens_per_step = spec.tokens_per_step();
    so.save_dir = j.job.save_dir;
    so.save_every = j.job.save_every;
    so.model = spec.model.name;
    if (auto id = train::data_identity(spec.data_path); id.has_value()) so.data = *id;
    so.seed = spec.seed;
    so.lr = spec.optimizer.lr;
    so.val_every = j.job.val_every;
    so.val_batches = j.job.val_batches;
    so.stop = &j.stop;
    int64_t last_step = 0;
    so.on_step = [&](const train::StepReport& r) {
      last_step = r.step;
      emit(j, JobEvent{.kind = JobEventKind::kStep,
                       .step = r.step,
                       .loss = r.loss,
                       .seconds = r.time.value(),
                       .grad_norm = r.grad_norm});
    };
    so.on_validation = [&](const train::ValidationReport& v) {
      emit(j, JobEvent{.kind = JobEventKind::kValidation, .step = v.step, .loss = v.loss});
    };
    so.on_checkpoint = [&](int64_t step, const std::string& dir) {
      emit(j, JobEvent{.kind = JobEventKind::kCheckpoint, .step = step, .text = dir});
    };
    auto summary = train::run_session(runner, so);
    if (!summary.has_value()) return failed(summary.status(), last_step);
    return JobOutcome{.kind = JobEventKind::kFinished,
                      .status = Status::ok(),
                      .losses = summary->losses,
                      .last_step = summary->last_step};
  }
};

TrainingService::TrainingService(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Expected<std::unique_ptr<TrainingService>> TrainingService::create(ServiceOptions options) {
  MP_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_shared<Impl>();
  impl->in_use.assign(static_cast<size_t>(options.devices), false);
  // BLAS's threads are process-wide: the cores shared out over the pool's devices, whichever
  // jobs run (each job's devices run their own loops on their own thread).
  impl->blas_before =
      kernels::set_blas_threads(std::max(1, kernels::cpu_cores() / options.devices));
  impl->options = std::move(options);
  return std::unique_ptr<TrainingService>(new TrainingService(std::move(impl)));
}

TrainingService::~TrainingService() {
  std::vector<std::shared_ptr<Impl::Job>> all;
  {
    const std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->closing = true;
    for (auto& [id, j] : impl_->jobs) {
      j->stop.store(true);
      all.push_back(j);
    }
    impl_->changed.notify_all();
  }
  for (auto& j : all) {
    if (!j->thread.joinable()) continue;
    if (j->thread.get_id() == std::this_thread::get_id()) {
      // Destroyed from this job's own callback: its thread ends by itself (it holds the
      // service's state, so nothing it touches goes away under it).
      j->thread.detach();
    } else {
      j->thread.join();
    }
  }
  if (impl_->blas_before > 0) kernels::set_blas_threads(impl_->blas_before);
}

Expected<int64_t> TrainingService::submit(ServiceJob job) {
  Impl& m = *impl_;
  MP_RETURN_IF_ERROR(job.spec.validate().with_context("the job"));
  if (job.steps < 1) return make_error(Errc::kInvalidArgument, "the job needs 1 step or more");
  if (job.val_every < 0 || job.val_batches < 1 || job.save_every < 0) {
    return make_error(Errc::kInvalidArgument,
                      "val_every and save_every must be non-negative and val_batches positive");
  }
  if (job.save_every > 0 && job.save_dir.empty()) {
    return make_error(Errc::kInvalidArgument, "save_every needs a save_dir");
  }
  mesh::ClusterSpec cluster;
  if (job.plan.has_value()) {
    // The checks a plan file gets: shapes, device ids, stages that cover the layers.
    MP_RETURN_IF_ERROR(planner::plan_from_json(planner::plan_to_json(*job.plan))
                           .status()
                           .with_context("the job's plan"));
    cluster = job.plan->cluster;
  } else {
    MP_ASSIGN_OR_RETURN(cluster, mesh::resolve_cluster(job.cluster));
  }
  if (cluster.device.kind != "cpu") {
    return make_error(Errc::kInvalidArgument,
                      "the service runs jobs on CPU devices; this job's cluster '{}' is of {} "
                      "devices (train on GPUs with `meshpipe train --device cuda`)",
                      cluster.name, cluster.device.kind);
  }
  const int32_t need = cluster.num_devices();
  if (need > m.options.devices) {
    return make_error(Errc::kResourceExhausted,
                      "the job needs {} devices; the service has {} (ServiceOptions::devices)",
                      need, m.options.devices);
  }
  const bool program_graph = is_program_graph(job.spec);
  if (job.runner == JobRunner::kActors && program_graph) {
    return make_error(Errc::kInvalidArgument,
                      "the job's model is this program's own graph builder, which a stage "
                      "actor's node cannot rebuild: run it with JobRunner::kThreads");
  }
  auto j = std::make_shared<Impl::Job>();
  j->need = need;
  j->actors =
      job.runner == JobRunner::kActors || (job.runner == JobRunner::kAuto && !program_graph);
  const std::lock_guard<std::mutex> lock(m.mu);
  if (m.closing) return make_error(Errc::kCancelled, "the service is shutting down");
  m.reap();
  j->id = m.next_id++;
  if (job.name.empty()) job.name = fmt::format("job {}", j->id);
  j->name = job.name;
  j->steps = job.steps;
  j->job = std::move(job);
  m.jobs[j->id] = j;
  m.waiting.push_back(j->id);  // its place in line is its submission
  try {
    j->thread = std::thread([impl = impl_, j] { impl->run(j); });
  } catch (const std::system_error& e) {
    m.jobs.erase(j->id);
    m.waiting.pop_back();
    return make_error(Errc::kResourceExhausted, "no thread for the job: {}", e.what());
  }
  return j->id;
}

Status TrainingService::cancel(int64_t id) {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->jobs.find(id);
  if (it == impl_->jobs.end()) return make_error(Errc::kNotFound, "no job {} in this service", id);
  it->second->stop.store(true);
  impl_->changed.notify_all();
  return Status::ok();
}

Expected<JobOutcome> TrainingService::wait(int64_t id) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto it = impl_->jobs.find(id);
  if (it == impl_->jobs.end()) return make_error(Errc::kNotFound, "no job {} in this service", id);
  const std::shared_ptr<Impl::Job> j = it->second;
  impl_->changed.wait(lock, [&] { return j->ended; });
  return j->outcome;
}

int32_t TrainingService::free_devices() const {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  return static_cast<int32_t>(std::count(impl_->in_use.begin(), impl_->in_use.end(), false));
}

}  // namespace meshpipe::actors

// ActorRuntime: the planner, mesh-group and stage actors of a training job (CAF 0.17).
#include "actors/actor_runtime.h"

#include <atomic>
#include <caf/all.hpp>
#include <map>
#include <mutex>
#include <optional>

#include "planner/cost_model.h"

CAF_ERROR_CODE_ENUM(meshpipe::Errc, "meshpipe")

namespace meshpipe::actors {

namespace {

using plan_atom = caf::atom_constant<caf::atom("plan")>;
using step_atom = caf::atom_constant<caf::atom("step")>;
using done_atom = caf::atom_constant<caf::atom("done")>;

using MicroBatches = std::vector<std::vector<runtime::HostTensor>>;

// A planning request the planner actor reads by id: a file to load, or a graph to plan.
struct PlanJob {
  std::string path;
  const graph::Graph* graph = nullptr;
  const mesh::ClusterSpec* cluster = nullptr;
  const planner::PlannerOptions* options = nullptr;
  std::optional<planner::Plan> plan;
};

// What ids in messages name: shared by the driver and its actors, filled before the message.
struct Board {
  std::mutex mu;
  std::map<int64_t, PlanJob*> plans;
  runtime::InProcessRun* run = nullptr;
  const MicroBatches* batch = nullptr;
  int64_t step = -1;
  std::map<int32_t, runtime::DeviceStepResult> results;
  std::atomic<int64_t> started{0};
};

caf::error to_caf(const Status& s) { return caf::make_error(s.code(), s.message()); }

Status from_caf(caf::actor_system& sys, const caf::error& e) {
  if (e.category() == caf::atom("meshpipe")) {
    std::string msg;
    if (e.context().match_elements<std::string>()) msg = e.context().get_as<std::string>(0);
    return make_error(static_cast<Errc>(e.code()), "{}", msg);
  }
  return make_error(Errc::kInternal, "actor runtime: {}", sys.render(e));
}

// Runs make_plan for the job a message names (spawned detached: planning takes seconds).
caf::behavior planner_actor(caf::event_based_actor*, std::shared_ptr<Board> board) {
  return {[board](plan_atom, int64_t id) -> caf::result<done_atom, int64_t> {
    PlanJob* job = nullptr;
    {
      std::lock_guard<std::mutex> lock(board->mu);
      auto it = board->plans.find(id);
      if (it != board->plans.end()) job = it->second;
    }
    if (job == nullptr) return to_caf(make_error(Errc::kNotFound, "no planning job {}", id));
    Expected<planner::Plan> p = planner::Plan{};
    if (!job->path.empty()) {
      p = planner::load_plan(job->path);
    } else {
      planner::AnalyticCostModel cost(job->cluster->device);
      p = planner::make_plan(*job->graph, *job->cluster, cost, *job->options);
    }
    if (!p.has_value()) return to_caf(p.status());
    job->plan = std::move(*p);
    return {done_atom::value, id};
  }};
}

// Runs one device's program for the step a message names, on its own (detached) thread.
caf::behavior stage_actor(caf::event_based_actor*, std::shared_ptr<Board> board, int32_t device) {
  return {[board, device](step_atom, int64_t step) -> caf::result<done_atom, int32_t> {
    runtime::InProcessRun* run = nullptr;
    const MicroBatches* batch = nullptr;
    {
      std::lock_guard<std::mutex> lock(board->mu);
      if (board->step != step) {
        return to_caf(make_error(Errc::kInternal,
                                 "stage actor of device {} was asked for step {}, the driver is "
                                 "at step {}",
                                 device, step, board->step));
      }
      run = board->run;
      batch = board->batch;
    }
    auto r = run->run_device(device, *batch);
    if (!r.has_value()) return to_caf(r.status());
    std::lock_guard<std::mutex> lock(board->mu);
    board->results[device] = std::move(*r);
    return {done_atom::value, device};
  }};
}

// Owns one stage's devices: starts their stage actors and reports when all finished a step, or
// the first error.
caf::behavior mesh_group(caf::event_based_actor* self, std::shared_ptr<Board> board, int32_t stage,
                         std::vector<int32_t> devices, std::chrono::milliseconds timeout) {
  auto members = std::make_shared<std::vector<std::pair<int32_t, caf::actor>>>();
  for (int32_t d : devices) {
    members->emplace_back(d, self->spawn<caf::detached + caf::linked>(stage_actor, board, d));
    ++board->started;
  }
  return {[self, members, stage, timeout](step_atom, int64_t step) {
    // Answers once every stage actor has answered: after a failure the others stop at once
    // (the run is aborted), and no device may still be running when the driver hears back.
    auto rp = self->make_response_promise();
    auto pending = std::make_shared<size_t>(members->size());
    auto first_error = std::make_shared<caf::error>();
    auto finish = [rp, pending, first_error, stage]() mutable {
      if (--*pending != 0) return;
      if (*first_error) {
        rp.deliver(*first_error);
      } else {
        rp.deliver(done_atom::value, stage);
      }
    };
    for (const auto& [device, actor] : *members) {
      const int32_t d = device;
      self->request(actor, timeout, step_atom::value, step)
          .then([=](done_atom, int32_t) mutable { finish(); },
                [=](caf::error& e) mutable {
                  caf::error mine =
                      e.category() == caf::atom("meshpipe")
                          ? std::move(e)
                          : to_caf(make_error(Errc::kTimeout,
                                              "stage {}: the stage actor of device {} did not "
                                              "finish step {} in {} ms",
                                              stage, d, step, timeout.count()));
                  // Keep the root cause: a failure over the stops it caused (kUnavailable).
                  const bool stop = mine.code() == static_cast<uint8_t>(Errc::kUnavailable);
                  if (!*first_error ||
                      (first_error->code() == static_cast<uint8_t>(Errc::kUnavailable) && !stop)) {
                    *first_error = std::move(mine);
                  }
                  finish();
                });
    }
    return rp;
  }};
}

}  // namespace

Status ActorOptions::validate() const {
  if (scheduler_threads < 1) {
    return make_error(Errc::kInvalidArgument, "scheduler threads must be >= 1");
  }
  if (step_timeout.count() <= 0 || plan_timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "timeouts must be positive");
  }
  return Status::ok();
}

struct ActorRuntime::Impl {
  ActorOptions options;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<Board> board = std::make_shared<Board>();
  caf::actor planner;
  std::vector<caf::actor> groups;
  uint64_t groups_for = 0;  // InProcessRun::id() of the run the groups serve
  int64_t next_job = 0;
  int64_t next_step = 0;

  Expected<planner::Plan> run_job(PlanJob& job);

  void stop_groups() {
    for (const caf::actor& g : groups) caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
    groups.clear();
    groups_for = 0;
  }

  ~Impl() {
    stop_groups();
    if (planner) caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
    planner = caf::actor();
    sys.reset();  // waits for every actor to finish
  }
};

ActorRuntime::ActorRuntime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ActorRuntime::~ActorRuntime() = default;

Expected<std::unique_ptr<ActorRuntime>> ActorRuntime::create(const ActorOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->cfg.set("scheduler.max-threads", options.scheduler_threads);
  impl->cfg.add_error_category(caf::atom("meshpipe"),
                               [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                                 std::string text(errc_name(static_cast<Errc>(code)));
                                 if (ctx.match_elements<std::string>()) {
                                   text += ": " + ctx.get_as<std::string>(0);
                                 }
                                 return text;
                               });
  impl->sys = std::make_unique<caf::actor_system>(impl->cfg);
  impl->planner = impl->sys->spawn<caf::detached>(planner_actor, impl->board);
  ++impl->board->started;
  return std::unique_ptr<ActorRuntime>(new ActorRuntime(std::move(impl)));
}

int64_t ActorRuntime::actors_started() const { return impl_->board->started.load(); }

Expected<planner::Plan> ActorRuntime::plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                           const planner::PlannerOptions& options) {
  PlanJob job{"", &g, &cluster, &options, std::nullopt};
  return impl_->run_job(job);
}

train::Planner ActorRuntime::planner() {
  return [this](const graph::Graph& g, const mesh::ClusterSpec& cluster,
                const planner::PlannerOptions& options) { return plan(g, cluster, options); };
}

Expected<train::StepOutcome> ActorRunner::run_step(int64_t step) {
  MP_ASSIGN_OR_RETURN(auto mbs, job_.micro_batches(step));
  MP_ASSIGN_OR_RETURN(runtime::RunStepResult r, actors_.step(job_.run(), mbs));
  train::StepOutcome out;
  out.loss = r.loss;
  out.losses = std::move(r.losses);
  out.seconds = r.seconds;
  for (int32_t d : job_.run().devices()) out.peak_bytes[d] = r.peak_bytes[static_cast<size_t>(d)];
  return out;
}

Status ActorRunner::save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) {
  return job_.save_checkpoint(dir, info);
}

Expected<planner::Plan> ActorRuntime::load_plan(const std::string& path) {
  PlanJob job{path, nullptr, nullptr, nullptr, std::nullopt};
  return impl_->run_job(job);
}

Expected<planner::Plan> ActorRuntime::Impl::run_job(PlanJob& job) {
  Impl& m = *this;
  const int64_t id = m.next_job++;
  {
    std::lock_guard<std::mutex> lock(m.board->mu);
    m.board->plans[id] = &job;
  }
  std::optional<Status> failure;
  caf::scoped_actor self{*m.sys};
  self->request(m.planner, m.options.plan_timeout, plan_atom::value, id)
      .receive([&](done_atom, int64_t) {}, [&](caf::error& e) { failure = from_caf(*m.sys, e); });
  {
    std::lock_guard<std::mutex> lock(m.board->mu);
    m.board->plans.erase(id);
  }
  if (failure) return *failure;
  if (!job.plan) return make_error(Errc::kInternal, "the planner actor returned no plan");
  return std::move(*job.plan);
}

Expected<runtime::RunStepResult> ActorRuntime::step(runtime::InProcessRun& run,
                                                    const MicroBatches& micro_batches) {
  Impl& m = *impl_;
  if (m.groups_for != run.id()) {
    m.stop_groups();
    const runtime::Program& prog = run.program();
    for (size_t s = 0; s < prog.stages.size(); ++s) {
      m.groups.push_back(m.sys->spawn(mesh_group, m.board, static_cast<int32_t>(s),
                                      prog.stages[s].devices, m.options.step_timeout));
      ++m.board->started;
    }
    m.groups_for = run.id();
  }
  const int64_t step = m.next_step++;
  {
    std::lock_guard<std::mutex> lock(m.board->mu);
    m.board->run = &run;
    m.board->batch = &micro_batches;
    m.board->step = step;
    m.board->results.clear();
  }
  const auto t0 = std::chrono::steady_clock::now();
  caf::scoped_actor self{*m.sys};
  for (const caf::actor& g : m.groups) self->send(g, step_atom::value, step);
  size_t answered = 0;
  std::optional<Status> failure;
  bool timed_out = false;
  // Wait for every group: after a failure the others stop quickly (the run is aborted), and
  // the root cause is the error that is not such a stop (kUnavailable).
  while (answered < m.groups.size() && !timed_out) {
    self->receive(
        [&](done_atom, int32_t) { ++answered; },
        [&](caf::error& e) {
          ++answered;
          Status s = from_caf(*m.sys, e);
          if (!failure ||
              (failure->code() == Errc::kUnavailable && s.code() != Errc::kUnavailable)) {
            failure = std::move(s);
          }
        },
        caf::after(m.options.step_timeout + std::chrono::seconds(5)) >> [&] { timed_out = true; });
  }
  if (timed_out && !failure) {
    run.abort("step timed out");
    failure =
        make_error(Errc::kTimeout, "step {}: {} of {} mesh groups did not answer in {} ms", step,
                   m.groups.size() - answered, m.groups.size(), m.options.step_timeout.count());
  }
  {
    std::lock_guard<std::mutex> lock(m.board->mu);
    m.board->batch = nullptr;
  }
  if (failure) return *failure;
  std::vector<std::pair<int32_t, runtime::DeviceStepResult>> results;
  {
    std::lock_guard<std::mutex> lock(m.board->mu);
    for (auto& [d, r] : m.board->results) results.emplace_back(d, std::move(r));
  }
  return run.combine(results,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace meshpipe::actors

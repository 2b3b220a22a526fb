// ActorRuntime: the planner actor and the node of one process, and the driver's side of the
// job, step and save messages (CAF 0.17).
#include "actors/actor_runtime.h"

#include <atomic>
#include <caf/all.hpp>
#include <optional>

#include "actors/internal/messages.h"
#include "actors/internal/node.h"
#include "actors/internal/protocol.h"
#include "planner/cost_model.h"
#include "runtime/cost_models.h"
#include "runtime/counted_plan.h"

namespace meshpipe::actors {

namespace {

using namespace internal;  // NOLINT: the protocol's atoms

// A planning request: a file to load, or a graph to plan; the planner actor fills `plan`.
struct PlanRequest {
  std::string path;
  const graph::Graph* graph = nullptr;
  const mesh::ClusterSpec* cluster = nullptr;
  const planner::PlannerOptions* options = nullptr;
  std::optional<planner::Plan> plan;
};
using PlanHandle = std::shared_ptr<PlanRequest>;

}  // namespace
}  // namespace meshpipe::actors

// The request stays in this process (the driver waits for it); it is never serialised.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(meshpipe::actors::PlanHandle)

namespace meshpipe::actors {

namespace {

using planner_actor = caf::typed_actor<caf::replies_to<plan_atom, PlanHandle>::with<done_atom>>;

// Runs make_plan (or load_plan) for the request a message hands over (spawned detached:
// planning takes seconds).
planner_actor::behavior_type planner_behavior(planner_actor::pointer) {
  return {[](plan_atom, const PlanHandle& job) -> caf::result<done_atom> {
    if (!job) return to_caf(make_error(Errc::kInternal, "an empty planning request"));
    Expected<planner::Plan> p = planner::Plan{};
    if (!job->path.empty()) {
      p = planner::load_plan(job->path);
    } else {
      const auto cost = runtime::cost_model_for(*job->cluster);
      p = runtime::make_counted_plan(*job->graph, *job->cluster, *cost, *job->options);
    }
    if (!p.has_value()) return to_caf(p.status());
    job->plan = std::move(*p);
    return done_atom::value;
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
  planner_actor planner;
  node_actor node;
  std::shared_ptr<NodeState> node_state;
  std::atomic<int64_t> started{0};

  Expected<planner::Plan> run_request(const PlanHandle& request) {
    MP_RETURN_IF_ERROR(ask<done_atom>(*sys, caf::actor_cast<caf::actor>(planner),
                                      options.plan_timeout,
                                      caf::make_message(plan_atom::value, request))
                           .status());
    if (!request->plan) return make_error(Errc::kInternal, "the planner actor returned no plan");
    return std::move(*request->plan);
  }

  void stop_node() {
    if (!node) return;
    node_state->end_job();
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    node = node_actor();
  }

  ~Impl() {
    stop_node();
    caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
    planner = planner_actor();
    sys.reset();  // waits for every actor to finish
  }
};

ActorRuntime::ActorRuntime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ActorRuntime::~ActorRuntime() = default;

Expected<std::unique_ptr<ActorRuntime>> ActorRuntime::create(const ActorOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  configure(impl->cfg, options.scheduler_threads, /*network=*/false);
  impl->sys = std::make_unique<caf::actor_system>(impl->cfg);
  impl->planner = impl->sys->spawn<caf::detached>(planner_behavior);
  ++impl->started;
  return std::unique_ptr<ActorRuntime>(new ActorRuntime(std::move(impl)));
}

int64_t ActorRuntime::actors_started() const { return impl_->started.load(); }

Expected<planner::Plan> ActorRuntime::plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                           const planner::PlannerOptions& options) {
  auto request = std::make_shared<PlanRequest>();
  request->graph = &g;
  request->cluster = &cluster;
  request->options = &options;
  return impl_->run_request(request);
}

train::Planner ActorRuntime::planner() {
  return [this](const graph::Graph& g, const mesh::ClusterSpec& cluster,
                const planner::PlannerOptions& options) { return plan(g, cluster, options); };
}

Expected<planner::Plan> ActorRuntime::load_plan(const std::string& path) {
  auto request = std::make_shared<PlanRequest>();
  request->path = path;
  return impl_->run_request(request);
}

Expected<std::unique_ptr<ActorRunner>> ActorRuntime::start(const train::JobSpec& job,
                                                           const planner::Plan& plan,
                                                           const train::LocalJobOptions& options) {
  Impl& m = *impl_;
  m.stop_node();
  auto st = std::make_shared<NodeState>();
  st->name = "";  // the only node: errors need no node name
  st->options = options;
  st->step_timeout = m.options.step_timeout;
  st->started = &m.started;
  m.node_state = st;
  m.node = m.sys->spawn([st](node_actor::pointer self) -> node_actor::behavior_type {
    return node_behavior(self, st, [self](bool, const std::string&) { self->quit(); });
  });
  ++m.started;
  JobMessage msg;
  msg.spec = job;
  msg.plan = plan;
  msg.timeout = options.run.timeout;
  msg.load_dir = options.load_dir;
  msg.time_kernels = options.run.interpreter.time_kernels;
  // Building the devices of a large plan takes a while: as long as a step may.
  MP_ASSIGN_OR_RETURN(std::string reply,
                      ask_text(*m.sys, caf::actor_cast<caf::actor>(m.node), m.options.step_timeout,
                               caf::make_message(job_atom::value, job_message_to_json(msg))));
  MP_ASSIGN_OR_RETURN(const Json j, parse_json(reply, "the job info"));
  MP_ASSIGN_OR_RETURN(JobInfo info, job_info_from_json(j, ""));
  JobSummary summary{info.devices, info.instructions, info.first_step, info.schedule};
  return std::unique_ptr<ActorRunner>(new ActorRunner(*this, summary));
}

Expected<train::StepOutcome> ActorRunner::run_step(int64_t step) {
  ActorRuntime::Impl& m = *rt_.impl_;
  if (!m.node) return make_error(Errc::kInvalidArgument, "no job was started");
  // The node times out a stage actor after the step timeout; the margin only covers the rest.
  auto reply = ask_text(*m.sys, caf::actor_cast<caf::actor>(m.node),
                        m.options.step_timeout + std::chrono::seconds(5),
                        caf::make_message(step_atom::value, step));
  if (!reply.has_value()) {
    m.node_state->abort(reply.status().message());
    return reply.status();
  }
  return merge_step_reports("[" + *reply + "]");
}

Expected<double> ActorRunner::validate(int64_t index) {
  MP_ASSIGN_OR_RETURN(const train::StepOutcome o, run_step(-index - 1));
  return o.loss;
}

Status ActorRunner::save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) {
  ActorRuntime::Impl& m = *rt_.impl_;
  if (!m.node) return make_error(Errc::kInvalidArgument, "no job was started");
  return runtime::save_checkpoint_with(
      dir, info, [&](const std::string& partial) -> Expected<std::vector<runtime::SavedTile>> {
        MP_ASSIGN_OR_RETURN(
            std::string text,
            ask_text(*m.sys, caf::actor_cast<caf::actor>(m.node), m.options.step_timeout,
                     caf::make_message(save_atom::value, partial)));
        return runtime::saved_tiles_from_json(text);
      });
}

}  // namespace meshpipe::actors

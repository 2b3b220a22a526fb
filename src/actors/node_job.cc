// The job, step and save handlers of a node (actors/internal/node.h).
#include <fmt/format.h>

#include <optional>

#include "actors/internal/limits.h"
#include "actors/internal/messages.h"
#include "actors/internal/node.h"

namespace meshpipe::actors::internal {

void NodeState::abort(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.empty()) aborted_ = why;
  if (job) job->run().abort(why);
}

std::string NodeState::abort_reason() {
  std::lock_guard<std::mutex> lock(mu_);
  return aborted_;
}

void NodeState::set_job(std::shared_ptr<train::LocalJob> j) {
  std::lock_guard<std::mutex> lock(mu_);
  job = std::move(j);
  if (job && !aborted_.empty()) job->run().abort(aborted_);
}

void NodeState::end_job() {
  for (const device_runner& g : groups) caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
  groups.clear();
  std::lock_guard<std::mutex> lock(mu_);
  job.reset();
}

namespace {

// `s` with the node's name and step as context (a node in this process has no name).
Status in_step(const NodeState& st, int64_t step, const Status& s) {
  if (st.name.empty()) return s;
  return s.with_context(step < 0 ? fmt::format("{} validation batch {}", st.name, -step - 1)
                                 : fmt::format("{} step {}", st.name, step));
}

// Marks the node busy while a handler (or a step it started) runs.
struct BusyScope {
  explicit BusyScope(std::atomic<bool>& b) : busy(b) { busy = true; }
  ~BusyScope() { busy = false; }
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;
  std::atomic<bool>& busy;
};

// Builds this node's part of the job.
Expected<std::string> start_job(node_actor::pointer self, NodeState& st, const std::string& text) {
  MP_RETURN_IF_ERROR(check_size("the job (its settings and plan)", text.size(), kMaxJobBytes));
  MP_ASSIGN_OR_RETURN(JobMessage msg, job_message_from_json(text));
  train::LocalJobOptions options = st.options;
  options.run.timeout = msg.timeout;
  options.load_dir = msg.load_dir;
  options.run.interpreter.time_kernels = msg.time_kernels;
  if (st.make_share) {
    MP_ASSIGN_OR_RETURN(options.run.share, st.make_share(msg.timeout));
    options.run.collectives = msg.collectives;
    options.run.transport = runtime::TransportKind::kUcx;
  }
  // A GPU job (the driver's --device cuda): this node's devices on its GPUs 0, 1, ..., NCCL in
  // the meshes (across nodes too, its ids exchanged through the coordinator's store).
  if (msg.collectives == runtime::CollectiveBackend::kNccl) {
    options.run.device = kernels::Device::kCuda;
    options.run.collectives = runtime::CollectiveBackend::kNccl;
  }
  st.end_job();
  auto job = train::LocalJob::create(msg.spec, msg.plan, options);
  if (!job.has_value()) {
    if (!msg.load_dir.empty() && st.make_share) {
      return job.status().with_context(
          "building the job (with several nodes the checkpoint must be readable on every node)");
    }
    return job.status();
  }
  std::shared_ptr<train::LocalJob> shared(std::move(*job));
  st.set_job(shared);
  st.groups = spawn_device_groups(self->system(), shared, st.step_timeout, st.started);
  return job_info_to_json(job_info(*shared));
}

// Writes this node's tiles of a checkpoint into `partial` (which the driver created).
Expected<std::string> save_tiles(NodeState& st, const std::string& partial) {
  MP_RETURN_IF_ERROR(check_size("the checkpoint directory", partial.size(), kMaxPathBytes));
  if (!st.job) return make_error(Errc::kInvalidArgument, "a checkpoint before the job started");
  auto tiles = st.job->write_tiles(partial);
  if (!tiles.has_value()) {
    if (tiles.status().code() == Errc::kNotFound && st.make_share) {
      return tiles.status().with_context(
          "with several nodes, --save needs a directory every node sees (a shared file system, "
          "or all nodes on one machine)");
    }
    return tiles.status();
  }
  return runtime::saved_tiles_to_json(*tiles);
}

// Runs step `step` on every mesh group and answers the node's report through `rp`. A negative
// step is validation batch -step - 1: the same program with every update skipped.
void run_step(node_actor::pointer self, std::shared_ptr<NodeState> st, int64_t step,
              caf::typed_response_promise<std::string> rp) {
  const bool validating = step < 0;
  auto batches = validating ? st->job->validation_batches(-step - 1) : st->job->micro_batches(step);
  if (!batches.has_value()) {
    rp.deliver(to_caf(in_step(*st, step, batches.status())));
    return;
  }
  const BatchHandle batch = std::make_shared<const Batches>(std::move(*batches));
  // What the step's answers share until the last one arrives.
  struct Gather {
    std::shared_ptr<NodeState> st;
    caf::typed_response_promise<std::string> rp;
    int64_t step = 0;
    std::chrono::steady_clock::time_point t0;
    size_t pending = 0;
    DeviceResults results;
    std::optional<Status> failure;
    bool validating = false;
    void finish() {
      if (--pending != 0) return;
      st->busy = false;
      if (validating) st->job->run().set_evaluating(false);
      if (failure) {
        st->job->run().abort(failure->message());
        rp.deliver(to_caf(in_step(*st, step, *failure)));
        return;
      }
      std::vector<std::pair<int32_t, runtime::DeviceStepResult>> per_device;
      for (DeviceResult& r : results) per_device.emplace_back(r.device, std::move(r.result));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto outcome = st->job->outcome(per_device, seconds);
      if (!outcome.has_value()) {
        rp.deliver(to_caf(in_step(*st, step, outcome.status())));
        return;
      }
      rp.deliver(step_report_to_json(*outcome));
    }
  };
  auto g = std::make_shared<Gather>();
  g->st = st;
  g->rp = rp;
  g->step = step;
  g->t0 = std::chrono::steady_clock::now();
  g->pending = st->groups.size();
  g->validating = validating;
  st->busy = true;
  // Set before the groups are asked: their stage actors run the devices after these messages.
  if (validating) st->job->run().set_evaluating(true);
  if (st->groups.empty()) {
    g->pending = 1;
    g->finish();
    return;
  }
  for (const device_runner& group : st->groups) {
    // A group answers only once its stage actors have: their timeouts bound the step.
    self->request(group, caf::infinite, run_atom::value, step, batch)
        .then(
            [g](DeviceResults& r) {
              g->results.insert(g->results.end(), r.begin(), r.end());
              g->finish();
            },
            [self, g](caf::error& e) {
              Status s = from_caf(self->system(), e);
              if (!g->failure || is_better_cause(s, *g->failure)) g->failure = std::move(s);
              g->finish();
            });
  }
}

}  // namespace

node_actor::behavior_type node_behavior(node_actor::pointer self, std::shared_ptr<NodeState> st,
                                        std::function<void(bool, const std::string&)> on_shutdown) {
  return {
      [self, st](job_atom, const std::string& text) -> caf::result<std::string> {
        const BusyScope busy(st->busy);
        auto info = start_job(self, *st, text);
        if (!info.has_value()) {
          return to_caf(st->name.empty() ? info.status() : info.status().with_context(st->name));
        }
        return *info;
      },
      [self, st](step_atom, int64_t step) {
        auto rp = self->make_response_promise<std::string>();
        if (!st->job) {
          rp.deliver(to_caf(
              in_step(*st, step, make_error(Errc::kInvalidArgument, "the job has not started"))));
          return rp;
        }
        run_step(self, st, step, rp);
        return rp;
      },
      [st](save_atom, const std::string& partial) -> caf::result<std::string> {
        const BusyScope busy(st->busy);
        auto r = save_tiles(*st, partial);
        if (!r.has_value()) {
          return to_caf(st->name.empty() ? r.status() : r.status().with_context(st->name));
        }
        return *r;
      },
      [on_shutdown](shutdown_atom, bool failed, const std::string& reason) {
        on_shutdown(failed, reason.substr(0, kMaxReasonBytes));
      },
  };
}

}  // namespace meshpipe::actors::internal

// Mesh-group and stage actors: a job's devices in this process (actors/internal/devices.h).
#include "actors/internal/devices.h"

#include <algorithm>
#include <optional>

namespace meshpipe::actors::internal {

namespace {

// One device's program for each step it is asked, on the actor's own (detached) thread.
device_runner::behavior_type stage_actor(device_runner::pointer,
                                         std::shared_ptr<train::LocalJob> job, int32_t device) {
  return {[job, device](run_atom, int64_t, const BatchHandle& batch) -> caf::result<DeviceResults> {
    if (!batch) return to_caf(make_error(Errc::kInternal, "device {}: no batch", device));
    auto r = job->run().run_device(device, *batch);
    if (!r.has_value()) return to_caf(r.status());
    return DeviceResults{{device, std::move(*r)}};
  }};
}

// Owns one stage's devices of this process: answers once every stage actor has answered, so
// no device is still running when the node hears back.
device_runner::behavior_type mesh_group(device_runner::pointer self,
                                        std::shared_ptr<train::LocalJob> job, int32_t stage,
                                        std::vector<int32_t> devices,
                                        std::chrono::milliseconds timeout,
                                        std::atomic<int64_t>* started) {
  auto members = std::make_shared<std::vector<std::pair<int32_t, device_runner>>>();
  for (int32_t d : devices) {
    members->emplace_back(d, self->spawn<caf::detached + caf::linked>(stage_actor, job, d));
    if (started != nullptr) ++*started;
  }
  return {[self, members, stage, timeout](run_atom, int64_t step, const BatchHandle& batch) {
    // What the step's answers share until the last one arrives.
    struct Gather {
      caf::typed_response_promise<DeviceResults> rp;
      size_t pending = 0;
      DeviceResults results;
      std::optional<Status> failure;
      void finish() {
        if (--pending != 0) return;
        if (failure) {
          rp.deliver(to_caf(*failure));
        } else {
          rp.deliver(std::move(results));
        }
      }
    };
    auto g = std::make_shared<Gather>();
    g->rp = self->make_response_promise<DeviceResults>();
    g->pending = members->size();
    for (const auto& [device, actor] : *members) {
      const int32_t d = device;
      self->request(actor, timeout, run_atom::value, step, batch)
          .then(
              [g](DeviceResults& r) {
                g->results.insert(g->results.end(), r.begin(), r.end());
                g->finish();
              },
              [self, g, stage, d, step, timeout](caf::error& e) {
                Status s = e == caf::sec::request_timeout
                               ? make_error(Errc::kTimeout,
                                            "stage {}: the stage actor of device {} did not "
                                            "finish step {} in {} ms",
                                            stage, d, step, timeout.count())
                               : from_caf(self->system(), e);
                if (!g->failure || is_better_cause(s, *g->failure)) g->failure = std::move(s);
                g->finish();
              });
    }
    return g->rp;
  }};
}

}  // namespace

bool is_better_cause(const Status& candidate, const Status& current) {
  return current.code() == Errc::kUnavailable && candidate.code() != Errc::kUnavailable;
}

std::vector<device_runner> spawn_device_groups(caf::actor_system& sys,
                                               std::shared_ptr<train::LocalJob> job,
                                               std::chrono::milliseconds timeout,
                                               std::atomic<int64_t>* started) {
  const std::vector<int32_t> mine = job->run().devices();
  const runtime::Program& program = job->run().program();
  std::vector<device_runner> groups;
  for (size_t s = 0; s < program.stages.size(); ++s) {
    std::vector<int32_t> here;
    for (int32_t d : program.stages[s].devices) {
      if (std::find(mine.begin(), mine.end(), d) != mine.end()) here.push_back(d);
    }
    if (here.empty()) continue;
    groups.push_back(
        sys.spawn(mesh_group, job, static_cast<int32_t>(s), std::move(here), timeout, started));
    if (started != nullptr) ++*started;
  }
  return groups;
}

}  // namespace meshpipe::actors::internal

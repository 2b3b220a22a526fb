// The actors that run a job's devices in one process (private to actors/): one mesh-group actor
// per stage with devices here, which starts one stage actor per device on a thread of its own.
// A step is `run(step, batch)` to every mesh group; each asks its stage actors to run their
// device's program (runtime::InProcessRun::run_device) and answers with all their results, or
// with the root cause when one fails (the run is aborted, so the others stop at once, and their
// "stopped" errors are not the cause). The batch travels as a handle to memory the node owns.
#pragma once

#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "actors/internal/protocol.h"
#include "runtime/host_tensor.h"
#include "runtime/in_process_run.h"
#include "train/job.h"

namespace meshpipe::actors::internal {

/// The micro-batches of one step, read by every stage actor of this process.
using Batches = std::vector<std::vector<runtime::HostTensor>>;
using BatchHandle = std::shared_ptr<const Batches>;

/// One device's answer to a step.
struct DeviceResult {
  int32_t device = -1;
  runtime::DeviceStepResult result;
};
using DeviceResults = std::vector<DeviceResult>;

}  // namespace meshpipe::actors::internal

// Handles and results stay in this process: they are never serialised.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(meshpipe::actors::internal::BatchHandle)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(meshpipe::actors::internal::DeviceResults)

namespace meshpipe::actors::internal {

/// A stage actor (one device) and a mesh-group actor (one stage's devices) answer the same.
using device_runner =
    caf::typed_actor<caf::replies_to<run_atom, int64_t, BatchHandle>::with<DeviceResults>>;

/// Spawns the mesh groups and stage actors of `job`'s devices in this process. The job must
/// outlive them (they hold it). `started` counts every actor spawned.
std::vector<device_runner> spawn_device_groups(caf::actor_system& sys,
                                               std::shared_ptr<train::LocalJob> job,
                                               std::chrono::milliseconds timeout,
                                               std::atomic<int64_t>* started);

/// Of two errors of one step, the one to report: a failure over the stops it caused
/// (kUnavailable).
bool is_better_cause(const Status& candidate, const Status& current);

}  // namespace meshpipe::actors::internal

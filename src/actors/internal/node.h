// A node: the part of a job one process runs, behind the protocol's job, step and save
// messages (private to actors/). The same behaviour serves the node of the in-process actor
// runtime and a `meshpipe-node` process of a multi-process job; the latter adds registration,
// its heartbeat and the job's shared devices (node.cc). Handlers never throw: a malformed
// message is an error answer.
//
//   job(JSON)      -> build the LocalJob (lower the plan, make the devices), spawn its mesh
//                     groups and stage actors; answer the job info (program fingerprint, ...)
//   step(n)        -> the step's batch once, then run(n, batch) to every mesh group; answer
//                     this node's step report, or the root cause of a failure (the run is
//                     aborted first, so every device of the job stops)
//   save(dir, n)   -> write this node's tiles of a checkpoint; answer their list
//   shutdown(failed, reason) -> end (the job finished, or failed)
#pragma once

#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/internal/devices.h"
#include "actors/internal/protocol.h"
#include "runtime/in_process_run.h"
#include "train/job.h"

namespace meshpipe::actors::internal {

/// A node's settings and its job.
struct NodeState {
  std::string name = "node";       ///< for errors ("node 2 step 5: ...")
  train::LocalJobOptions options;  ///< run options of the jobs this node builds
  /// A node of a multi-process job: the share of the job's devices it runs (rendezvous store,
  /// address exchange, its device ids), given the job's timeout. Empty in one process.
  std::function<Expected<std::shared_ptr<runtime::ProcessShare>>(std::chrono::milliseconds)>
      make_share;
  std::chrono::milliseconds step_timeout{120000};  ///< a stage actor that takes longer fails
  std::atomic<int64_t>* started = nullptr;         ///< counts the actors spawned (or null)

  std::shared_ptr<train::LocalJob> job;
  std::vector<device_runner> groups;
  std::atomic<bool> busy{false};  ///< inside a job, step or save

  /// Aborts the job's run (from any thread): its devices leave the step they are in.
  void abort(const std::string& why);
  /// Why the job was aborted ("" when it was not).
  std::string abort_reason();
  /// Installs the built job (an abort that came first applies to it at once).
  void set_job(std::shared_ptr<train::LocalJob> j);
  /// Stops the mesh groups and drops the job.
  void end_job();

 private:
  std::mutex mu_;
  std::string aborted_;
};

/// The behaviour of a node actor: job, step and save as above; shutdown(failed, reason) calls
/// `on_shutdown` (the node in this process just ends; a meshpipe-node also ends its heartbeat,
/// and its process exits non-zero when the job failed).
node_actor::behavior_type node_behavior(
    node_actor::pointer self, std::shared_ptr<NodeState> st,
    std::function<void(bool failed, const std::string& reason)> on_shutdown);

}  // namespace meshpipe::actors::internal

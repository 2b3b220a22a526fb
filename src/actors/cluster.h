// Cluster bootstrap over CAF's middleman (remote actors): a coordinator, published by the
// driver, and one node per machine (`meshpipe-node`). Nodes register (protocol version,
// devices, memory); once all have joined, the driver builds the cluster from their reports,
// plans, and starts the job: every node receives the plan (as its JSON text) and the training
// settings, lowers the same program, and runs its own devices. Gloo groups that span nodes meet
// through a key-value store the coordinator keeps, UCX endpoints connect through addresses it
// gathers and hands out; tensors never pass through it. A step is one message to every node,
// answered with the losses and peak memory of its devices (numbers, as JSON text). A checkpoint
// is one message too: each node writes its own tiles to a directory they all see and answers
// with the list of what it wrote; the driver writes the manifest.
//
// Who may take part: the job's shared secret (actors/secret.h). The coordinator's CAF port is
// on loopback only; the public port is a gate (actors/internal/gate.h) that admits a
// connection only after a challenge-response proving the peer knows the secret, so nothing
// unauthenticated reaches CAF. Behind it, the coordinator answers the driver's requests only
// from the driver's own process, the store and address requests only from registered nodes,
// registers each node once and no more than --nodes of them, and bounds every field a message
// carries (actors/internal/limits.h).
//
// Failures: the coordinator watches every node (CAF monitors the connection): a node that exits
// or loses its connection ends the job with an error naming it and what it was doing; a node
// that stops answering its heartbeat (answered by a small actor of its own, so a long step does
// not silence it) within the liveness bound does too. Nodes watch the coordinator and exit when
// it goes; a node exits non-zero unless the driver ended the job as finished. Messages use CAF's
// built-in types only (atoms, integers, strings).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/device.h"
#include "mesh/cluster.h"
#include "planner/plan.h"
#include "runtime/checkpoint.h"
#include "runtime/in_process_run.h"
#include "train/job.h"
#include "train/step_runner.h"

namespace meshpipe::actors {

/// Nodes and the coordinator must speak the same protocol; a mismatch is refused at
/// registration, naming both versions.
inline constexpr const char* kClusterProtocol = "meshpipe-cluster/2";

/// The meshpipe release this build is (the project version); nodes of another release are
/// refused at registration, since every node lowers the plan itself and must lower it alike.
const char* meshpipe_version();

/// What a node reports when it joins.
struct NodeReport {
  int32_t id = -1;           ///< assigned by the coordinator: the host index in the cluster
  std::string host;          ///< the node's host name
  int64_t pid = 0;           ///< its process id
  int32_t devices = 0;       ///< devices it runs
  int64_t memory_bytes = 0;  ///< memory per device
  /// The GPUs its process found (kernels::device_inventory; at most kMaxNodeGpus reported).
  std::vector<kernels::GpuInfo> gpus;
};

/// GPUs a node may report.
inline constexpr size_t kMaxNodeGpus = 64;

/// Options of the coordinator.
struct CoordinatorOptions {
  std::string bind = "127.0.0.1";  ///< address the gate listens on (CAF itself: loopback only)
  uint16_t port = 0;               ///< 0: any free port (see Coordinator::port)
  /// The job's shared secret (actors/secret.h): every node must prove it knows it.
  std::string secret;
  int32_t nodes = 1;                              ///< nodes the job waits for
  std::chrono::milliseconds join_timeout{60000};  ///< for all nodes to join
  std::chrono::milliseconds step_timeout{60000};  ///< a node that does not answer a step
  /// Every node's heartbeat is pinged this often; one that does not answer within `liveness`
  /// (a stopped or wedged process, even in the middle of a long step) fails the job.
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds liveness{5000};
  Status validate() const;
};

/// What every node needs to build and run the same program (sent as JSON text).
struct ClusterJob {
  train::JobSpec spec;  ///< the model, batch, optimizer and seed
  planner::Plan plan;
  std::chrono::milliseconds timeout{30000};  ///< collectives and transfers inside a step
  /// A checkpoint every node loads its tiles from after initialisation (resharded into this
  /// job's plan); it must be readable on every node (a shared file system, or one machine).
  std::string load_dir;
  bool time_kernels = false;  ///< every node reports where its steps' time goes (--breakdown)
  /// Collectives of the mesh-axis groups that span nodes: UCX (over the devices' UCX endpoints;
  /// the default, measured 15-350x faster than Gloo between pinned processes) or Gloo; not
  /// in-process (refused). Groups inside one node always use shared memory.
  runtime::CollectiveBackend collectives = runtime::CollectiveBackend::kUcx;
};

/// The driver's side: publishes the coordinator and runs the job through it. As a
/// train::StepRunner a step is one message to every node; the seconds reported are the
/// slowest node's.
class Coordinator final : public train::StepRunner {
 public:
  static Expected<std::unique_ptr<Coordinator>> listen(const CoordinatorOptions& options);
  /// Ends the job (as failed, unless shutdown() came first) and waits a little for the nodes
  /// to leave, so that they are told before the connections close.
  ~Coordinator() override;
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  /// The port the coordinator's gate listens on.
  uint16_t port() const;
  /// Connections the gate refused so far (failed or late handshakes, oversized messages).
  int64_t refused_connections() const;
  /// Blocks until every node has joined (or the join timeout passes); ordered by node id.
  Expected<std::vector<NodeReport>> wait_for_nodes();
  /// Sends the job to every node and waits until all have built their devices; an error when
  /// a node lowered another program than node 0 (program fingerprints differ).
  Status start(const ClusterJob& job);
  /// Runs step `step` (1-based) on every node.
  Expected<train::StepOutcome> run_step(int64_t step) override;
  /// Validation batch `index` on every node (a step message for step -index - 1: each node
  /// runs its share of the program with every update skipped).
  Expected<double> validate(int64_t index) override;
  /// Saves a checkpoint of the job as it is now (after step `info.step`): every node writes the
  /// tiles of its devices into DIR's partial directory, which the driver creates and every node
  /// must see (a shared file system, or one machine); the driver then writes the manifest and
  /// renames the directory to `dir`.
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override;
  /// Tells every node the job is over (they exit 0), naming `reason`.
  void shutdown(const std::string& reason);
  /// Tells every node the job failed, or was stopped (kCancelled), naming why; they exit
  /// non-zero.
  void fail(const Status& why);

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The cluster the nodes form: one host per node (node id = host index), `devices_per_host` as
/// they report (all equal, a power of two), device memory the smallest reported, device speed
/// and links from `base` (a preset or a cluster file). Errors name the node that differs.
Expected<mesh::ClusterSpec> cluster_from_nodes(const std::vector<NodeReport>& nodes,
                                               const mesh::ClusterSpec& base);

/// Options of a node.
struct NodeOptions {
  std::string coordinator;  ///< HOST:PORT
  int32_t devices = 1;
  int64_t memory_bytes = int64_t{4} << 30;
  std::string bind = "127.0.0.1";  ///< the address Gloo's TCP device uses
  /// The job's shared secret (actors/secret.h).
  std::string secret;
  /// For reaching the coordinator, proving the secret and joining (a listener that accepts and
  /// stays silent fails the node within it).
  std::chrono::milliseconds connect_timeout{10000};
  std::string protocol = kClusterProtocol;   ///< (tests set another to check the refusal)
  std::string version = meshpipe_version();  ///< (likewise)
  Status validate() const;
};

/// Runs a node until the coordinator ends the job. Returns ok when the driver ended the job as
/// finished, else why the node stopped (coordinator unreachable or gone, authentication or
/// registration refused, the job failed: kCancelled with the driver's reason).
Status run_node(const NodeOptions& options);

}  // namespace meshpipe::actors

// Communicator: collectives among the ranks of one group (the devices along one mesh axis, or a
// whole mesh). Implementations: in-process (threads of one process, shared memory), Gloo (TCP,
// across threads and processes), two levels (hierarchical), over a Transport's messages (UCX
// across processes; transport_communicator.cc), and NCCL on GPU memory (nccl_communicator.h).
// Every rank calls the same collectives in the same order; a call blocks until the group has
// finished it, the group's timeout passes (kTimeout, naming the collective and the ranks still
// missing where known), or the group is aborted (kUnavailable). Nothing hangs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace meshpipe::comm {

/// Collectives of one rank in one group. Buffers are host memory (device memory of the rank's GPU
/// for the NCCL backend, comm/nccl_communicator.h); counts are per rank.
class Communicator {
 public:
  virtual ~Communicator() = default;

  /// This rank (0 .. size()-1) and the group size.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "in-process", "gloo", "hierarchical" (two levels), "transport-ucx" / "transport-in-process",
  /// "nccl".
  virtual std::string backend() const = 0;

  /// In place: data[i] = sum over ranks of data[i] (`count` floats).
  virtual Status all_reduce(float* data, int64_t count) = 0;
  /// out (size() * bytes) = the `bytes` of every rank's `in`, in rank order.
  virtual Status all_gather(const void* in, void* out, int64_t bytes) = 0;
  /// in holds size() chunks of `count` floats; out (`count` floats) = sum over ranks of their
  /// chunk number rank().
  virtual Status reduce_scatter(const float* in, float* out, int64_t count) = 0;
  /// in holds size() chunks of `bytes`; chunk j goes to rank j, and out's chunk i comes from
  /// rank i.
  virtual Status all_to_all(const void* in, void* out, int64_t bytes) = 0;
  /// In place: every rank ends with root's `bytes`.
  virtual Status broadcast(void* data, int64_t bytes, int root) = 0;
  /// Returns once every rank has called it.
  virtual Status barrier() = 0;
  /// Waits for the collectives that returned before completing (an NCCL communicator in
  /// deferred mode, comm/nccl_communicator.h); every other backend completes each call before
  /// it returns.
  virtual Status complete() { return Status::ok(); }
};

/// Creates the communicators of one group whose ranks are threads of this process. Each thread
/// takes its own communicator; the group lives while any communicator does.
class InProcessGroup {
 public:
  /// A group of `size` ranks whose collectives fail with kTimeout after `timeout`.
  static std::shared_ptr<InProcessGroup> create(int size, std::chrono::milliseconds timeout);
  virtual ~InProcessGroup() = default;
  /// The communicator of `rank` (each rank asked for once).
  virtual std::unique_ptr<Communicator> communicator(int rank) = 0;
  /// Wakes every rank blocked in a collective with kUnavailable carrying `reason`; later calls
  /// fail the same way.
  virtual void abort(const std::string& reason) = 0;
};

/// A key-value store for Gloo rendezvous: in one process (threads) or, for ranks in several
/// processes, one the cluster layer provides over its control plane.
class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  /// The value of `key`, waiting until it is set or `timeout` passes (kTimeout naming the key).
  virtual Expected<std::string> get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

/// A RendezvousStore shared by the threads of one process.
std::shared_ptr<RendezvousStore> make_in_process_store();

class Transport;  // comm/transport.h

/// Group ids a transport communicator accepts (its messages carry the id in 15 bits of the tag).
inline constexpr uint32_t kMaxCollectiveGroups = uint32_t{1} << 15;

/// A communicator over the point-to-point messages of a Transport (in-process or UCX; see
/// comm/transport_communicator.cc): rank r is endpoint peers[r] of the endpoint's fabric, this
/// rank's own endpoint is `endpoint` (peers[rank] == endpoint->self()), which the caller keeps
/// alive and uses from the collective's thread only. Its messages carry tags with bit 47 set and
/// `group` (below kMaxCollectiveGroups, distinct per group sharing endpoints) in bits 32-46, so
/// they never match transfers tagged below 2^47. After a failure (timeout, abort) every later
/// call fails.
Expected<std::unique_ptr<Communicator>> make_transport_communicator(
    Transport* endpoint, std::vector<int> peers, int rank, uint32_t group,
    std::chrono::milliseconds timeout);

/// Options of a Gloo communicator.
struct GlooOptions {
  std::string hostname = "127.0.0.1";  ///< interface address the TCP device binds to
  std::chrono::milliseconds timeout{30000};
  std::string prefix = "group";  ///< store key prefix: distinct per group sharing a store
};

/// True when the build includes Gloo (MP_ENABLE_GLOO).
bool gloo_available();

/// Joins a Gloo group as `rank` of `size`; blocks until every rank has joined (rendezvous through
/// `store`) or the timeout passes. kUnavailable when the build lacks Gloo.
Expected<std::unique_ptr<Communicator>> make_gloo_communicator(
    int rank, int size, std::shared_ptr<RendezvousStore> store, const GlooOptions& options);

/// What one rank of a two-level group holds (comm/hierarchical_communicator.cc): a communicator
/// among the group's ranks in its process (`local`, from `local_group`, which a failing leader
/// aborts) and, on the process's first rank only, one among the processes' first ranks
/// (`leaders`, rank = the process's number in the order of first ranks).
struct HierarchyParts {
  std::shared_ptr<InProcessGroup> local_group;
  std::unique_ptr<Communicator> local;
  std::unique_ptr<Communicator> leaders;
};

/// A communicator of a group whose ranks live in several processes (process_of[r]: an id of
/// rank r's process), the same number in each: collectives within each process through `local`,
/// across processes between the leaders only. Errors: uneven processes, parts of the wrong
/// size or rank.
Expected<std::unique_ptr<Communicator>> make_hierarchical_communicator(
    int rank, const std::vector<int>& process_of, HierarchyParts parts);

}  // namespace meshpipe::comm

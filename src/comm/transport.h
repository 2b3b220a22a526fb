// Transport: point-to-point tensor transfers between endpoints (one per device), for activations
// and gradients that cross from one mesh to another. Implementations: in-process (threads of one
// process) and UCX (tag matching over shared memory or TCP, within and across processes).
// Transfers are asynchronous: send and recv return a request at once, and wait() completes it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace meshpipe::comm {

/// The largest tag a transfer may carry: UCX puts the sender's endpoint id in the top 16 bits of
/// its 64-bit tag, so every implementation accepts tags below 2^48 only.
inline constexpr uint64_t kMaxTransportTag = (uint64_t{1} << 48) - 1;

/// A handle to an outstanding send or receive, completed by Transport::wait (which resets `id`
/// to -1). Copies name the same transfer; wait for it once.
struct Request {
  int64_t id = -1;  ///< implementation-defined handle; -1: none (already complete)
};

/// One endpoint's side of the transport. An endpoint is used by one thread at a time.
class Transport {
 public:
  virtual ~Transport() = default;

  /// This endpoint's id, and the number of endpoints in the fabric.
  virtual int self() const = 0;
  virtual int size() const = 0;
  /// "in-process", "ucx".
  virtual std::string backend() const = 0;

  // Tags: a user tag must fit in 48 bits (0 .. kMaxTransportTag). The UCX transport builds its
  // 64-bit wire tag as (sender endpoint id << 48) | tag, so the top 16 bits are taken; send and
  // recv reject a larger tag at once with kInvalidArgument, on every implementation alike.

  /// Starts sending `bytes` from `data` to endpoint `peer` under `tag` (at most
  /// kMaxTransportTag, else kInvalidArgument). The buffer must stay unchanged until the request
  /// completes.
  virtual Expected<Request> send(int peer, uint64_t tag, const void* data, int64_t bytes) = 0;
  /// Starts receiving exactly `bytes` from endpoint `peer` under `tag` (at most
  /// kMaxTransportTag, else kInvalidArgument) into `data`. A message of another size is an
  /// error from wait() (kInvalidArgument naming peer, tag and both sizes where known).
  virtual Expected<Request> recv(int peer, uint64_t tag, void* data, int64_t bytes) = 0;
  /// Waits until the request completes or `timeout` passes (kTimeout naming peer and tag). After
  /// a timeout the request stays outstanding and may be waited for again.
  virtual Status wait(Request& request, std::chrono::milliseconds timeout) = 0;
  /// True when the request has completed (then wait() returns at once).
  virtual bool test(Request& request) = 0;
  /// Gives up an outstanding request (after its wait failed, say): once this returns, no
  /// message lands in a receive's buffer and no send reads its buffer any more (a send that
  /// already left may still arrive). The request is then done (id -1); unknown ones are ignored.
  virtual void cancel(Request& request) = 0;
  /// Makes wait() fail with kUnavailable soon after `*flag` turns true (its owner aborted the
  /// run); the flag must outlive the endpoint. The in-process transport has an abort of its
  /// own (InProcessFabric::abort) and ignores it.
  virtual void set_abort_flag(const std::atomic<bool>* flag) { (void)flag; }
};

/// The endpoints of one process wired to each other in memory.
class InProcessFabric {
 public:
  static std::shared_ptr<InProcessFabric> create(int endpoints);
  virtual ~InProcessFabric() = default;
  /// Endpoint `id` (each asked for once).
  virtual std::unique_ptr<Transport> endpoint(int id) = 0;
  /// Fails every pending and later request with kUnavailable carrying `reason`.
  virtual void abort(const std::string& reason) = 0;
};

/// True when the build includes UCX (MP_ENABLE_UCX).
bool ucx_available();

/// A UCX context for this process and the endpoints it hosts. Endpoints in different processes
/// connect through their worker addresses, exchanged out of band (by the caller).
class UcxContext {
 public:
  /// kUnavailable when the build lacks UCX or UCX fails to initialise (the message says why).
  static Expected<std::shared_ptr<UcxContext>> create();
  virtual ~UcxContext() = default;
  /// Creates endpoint `id` of a fabric of `size` endpoints; its address() must reach every
  /// peer before connect().
  virtual Expected<std::unique_ptr<Transport>> create_endpoint(int id, int size) = 0;
};

/// UCX-specific operations of an endpoint created by UcxContext.
class UcxEndpoint : public Transport {
 public:
  /// This endpoint's worker address (opaque bytes).
  virtual std::string address() const = 0;
  /// Connects to peer `id` at `address`.
  virtual Status connect(int id, const std::string& address) = 0;
};

/// Creates `size` UCX endpoints in this process, all connected to each other (tests, one-process
/// runs). kUnavailable without UCX.
Expected<std::vector<std::unique_ptr<Transport>>> make_ucx_fabric(int size);

}  // namespace meshpipe::comm

// Sockets of the control plane's gate (private to actors/): an owned descriptor, TCP listen and
// connect with deadlines, and the relay that copies bytes between two connected sockets both
// ways (bounded buffers; a BASP frame guard on one direction). Used by gate.cc; no CAF here.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "core/files.h"
#include "core/status.h"

namespace meshpipe::actors::internal {

using Clock = std::chrono::steady_clock;

/// Descriptors are owned by core/files.h's UniqueFd.
using meshpipe::UniqueFd;

/// A non-blocking TCP socket listening on `bind:port` (IPv4 address or host name; port 0: any).
Expected<UniqueFd> listen_tcp(const std::string& bind, uint16_t port, int backlog);
/// The local port of a bound socket.
uint16_t local_port(int fd);
/// "ADDRESS:PORT" of a connected socket's peer ("?" when unknown).
std::string peer_name(int fd);
/// A non-blocking TCP connection to `host:port`, established before `deadline`.
Expected<UniqueFd> connect_tcp(const std::string& host, uint16_t port, Clock::time_point deadline);
/// Starts a non-blocking connection to 127.0.0.1:port (done when writable; see finish_connect).
Expected<UniqueFd> start_loopback_connect(uint16_t port);
/// The outcome of a non-blocking connect once the socket is writable.
Status finish_connect(int fd);
/// Makes `fd` non-blocking, close-on-exec, and (for TCP) sends small writes at once.
void prepare_socket(int fd);
/// Sends or receives exactly `n` bytes on a non-blocking socket before `deadline`; kTimeout
/// when it passes, kUnavailable when the peer closes or fails.
Status send_all(int fd, const void* data, size_t n, Clock::time_point deadline);
Status recv_all(int fd, void* data, size_t n, Clock::time_point deadline);
/// Milliseconds from now to `deadline` for poll(), at least 0 and at most `cap`.
int poll_ms(Clock::time_point deadline, int cap = 1000);

/// Whether the TCP socket connected to this process's 127.0.0.1:`listen_port` from local port
/// `peer_port` belongs to this process (its inode is one of /proc/self/fd's sockets).
bool is_own_connection(uint16_t peer_port, uint16_t listen_port);

/// Follows BASP frames in a byte stream (a 32-byte header whose bytes 4-7 are the payload
/// length, big-endian, then the payload) and refuses a payload longer than `max_bytes`.
class FrameGuard {
 public:
  explicit FrameGuard(uint32_t max_bytes) : max_(max_bytes) {}
  /// Feeds the next bytes of the stream; false when a frame is over the limit.
  bool feed(const char* data, size_t n);
  uint32_t last_length() const { return last_; }
  uint32_t max() const { return max_; }

 private:
  static constexpr size_t kHeaderBytes = 32;
  uint32_t max_;
  unsigned char header_[kHeaderBytes] = {};
  size_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  uint32_t last_ = 0;
};

/// Copies bytes between two connected non-blocking sockets, `a` (the remote peer) and `b` (the
/// local end), both ways, with at most kBufferBytes buffered per direction. An end of stream is
/// passed on as a half-close once its buffer is flushed; the relay is done when both directions
/// ended, or at the first error. With a frame limit, the bytes from `a` must be BASP frames no
/// larger than it.
class Relay {
 public:
  static constexpr size_t kBufferBytes = size_t{256} << 10;
  Relay(UniqueFd a, UniqueFd b, uint32_t max_frame_bytes /*0: no limit*/);
  /// The events to wait for on each side (fd -1 when there are none).
  void fill(pollfd* a, pollfd* b) const;
  /// Moves what can move after poll() returned `a_revents`, `b_revents`.
  void on_events(short a_revents, short b_revents);
  bool done() const { return done_; }
  /// Why the relay stopped early ("" when both sides simply closed).
  const std::string& error() const { return error_; }
  /// Whether it stopped because a frame from `a` was over the limit.
  bool over_limit() const { return over_limit_; }

 private:
  void read_into(int fd, std::string& buf, bool& eof, bool guard);
  void write_from(int fd, std::string& buf);
  void fail(std::string why);

  UniqueFd a_;
  UniqueFd b_;
  std::string ab_;  // read from a, to write to b
  std::string ba_;
  bool a_eof_ = false;
  bool b_eof_ = false;
  bool a_shut_ = false;  // a's write side shut (b ended and ba_ flushed)
  bool b_shut_ = false;
  bool guarded_ = false;
  FrameGuard guard_;
  bool done_ = false;
  bool over_limit_ = false;
  std::string error_;
};

}  // namespace meshpipe::actors::internal

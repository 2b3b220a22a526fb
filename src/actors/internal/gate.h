// The control plane's gate (private to actors/): nothing reaches CAF from the network before it
// has proved it knows the job's secret. CAF 0.17's BASP reads a payload length from an
// unauthenticated header and allocates it, and delivers messages to any actor id a connected
// peer names, so authentication inside actor messages would come too late; the gate sits in
// front of CAF instead.
//
//   node ─ CAF ─► 127.0.0.1:relay ─ GateClient ═══ network ═══ GateServer ─► 127.0.0.1:caf ─ CAF
//                 (accepts one connection,        (the public port: handshake first,
//                  from this process only)         then bytes relayed both ways)
//
// The handshake (fixed sizes, one deadline, HMAC-SHA256 keyed by the secret, compared in
// constant time), on a fresh TCP connection:
//   server → client  kMagic (16 bytes) | Ns (32 random bytes)
//   client → server  kMagic            | Nc (32 random bytes) | HMAC(K, "client" | Ns | Nc)
//   server → client  'A' | HMAC(K, "server" | Ns | Nc)         (the secret matched)
//                    'R' | 32 zero bytes, then close            (it did not)
// Each side proves it knows K over a nonce the other chose, so neither a replayed handshake nor a
// server that only echoes passes. The traffic after it is not encrypted or authenticated per
// message: the gate decides who may connect, a private network keeps others off the wire.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace meshpipe::actors::internal {

inline constexpr std::string_view kGateMagic = "meshpipe-gate/1\n";  // 16 bytes
inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;
inline constexpr size_t kServerHelloBytes = 16 + kNonceBytes;              // 48
inline constexpr size_t kClientProofBytes = 16 + kNonceBytes + kMacBytes;  // 80
inline constexpr size_t kServerReplyBytes = 1 + kMacBytes;                 // 33

using Nonce = std::array<uint8_t, kNonceBytes>;
using Mac = std::array<uint8_t, kMacBytes>;

/// HMAC-SHA256 keyed by `secret` over `label | server_nonce | client_nonce`.
Mac handshake_mac(const std::string& secret, std::string_view label, const Nonce& server_nonce,
                  const Nonce& client_nonce);
/// Whether two MACs are equal, in time that does not depend on where they differ.
bool same_mac(const Mac& a, const Mac& b);
/// A fresh random nonce.
Nonce random_nonce();

/// The gate of the driver: listens on the public address, admits only peers that pass the
/// handshake within the deadline, and relays each admitted connection to CAF's loopback port.
struct GateServerOptions {
  std::string bind = "0.0.0.0";  ///< public address
  uint16_t port = 0;             ///< 0: any free port
  std::string secret;
  uint16_t target_port = 0;  ///< the coordinator's CAF port on 127.0.0.1
  std::chrono::milliseconds handshake_timeout{5000};
  /// Handshakes in progress at once; a new connection beyond it evicts the oldest, so silent
  /// peers cannot hold every slot for long.
  size_t max_pending = 64;
  size_t max_relays = 64;  ///< admitted connections at once (each buffers up to 512 KiB)
  /// The largest BASP frame payload an admitted peer may send to CAF; a larger one closes its
  /// connection before CAF allocates it. (The largest message a node sends is its tile list,
  /// at most 16 MiB: internal/limits.h.)
  uint32_t max_frame_bytes = uint32_t{64} << 20;
};

class GateServer {
 public:
  /// Binds the public port and starts the gate's thread.
  static Expected<std::unique_ptr<GateServer>> start(const GateServerOptions& options);
  /// Stops accepting; relays still open get up to `drain` to finish, then everything closes.
  ~GateServer();
  GateServer(const GateServer&) = delete;
  GateServer& operator=(const GateServer&) = delete;

  uint16_t port() const;
  /// Connections refused so far (failed, late or malformed handshakes; frames over the limit).
  int64_t refused() const;
  /// Waits until no admitted connection is open, or `timeout` passes; false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  explicit GateServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The gate of a node: connects to a driver's gate, passes the handshake within `timeout`, and
/// relays one loopback connection (the node's CAF, which connects to local_port()) to it. The
/// loopback listener admits one connection, and only from a socket of this process.
class GateClient {
 public:
  static Expected<std::unique_ptr<GateClient>> connect(const std::string& host, uint16_t port,
                                                       const std::string& secret,
                                                       std::chrono::milliseconds timeout);
  ~GateClient();  ///< closes both sides
  GateClient(const GateClient&) = delete;
  GateClient& operator=(const GateClient&) = delete;

  /// The loopback port the node's CAF connects to.
  uint16_t local_port() const;

 private:
  struct Impl;
  explicit GateClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshpipe::actors::internal

// The node side of a multi-process job (`meshpipe-node`): pass the driver's gate with the job's
// secret, join the coordinator through the gate's loopback relay, run this process's share of
// the job through the protocol's node behaviour (actors/internal/node.h), answer heartbeats,
// exit when told or when the coordinator goes.
#include "actors/internal/node.h"

#include <unistd.h>

#include <atomic>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <charconv>
#include <cstdlib>

#include "actors/cluster.h"
#include "actors/internal/coordinator.h"
#include "actors/internal/gate.h"
#include "actors/internal/protocol.h"
#include "actors/secret.h"
#include "core/json.h"

namespace meshpipe::actors {

namespace {

using namespace internal;  // NOLINT: the protocol's atoms

// UCX worker addresses are bytes; JSON carries them as hex.
std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

Expected<std::string> from_hex(const std::string& hex) {
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return make_error(Errc::kInvalidArgument, "odd-length hex address");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]);
    const int lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return make_error(Errc::kInvalidArgument, "bad hex address");
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

// Gloo's rendezvous store, kept by the coordinator. Gloo calls it from its own threads.
class CoordinatorStore final : public comm::RendezvousStore {
 public:
  CoordinatorStore(caf::actor_system& sys, coordinator_actor coordinator,
                   std::chrono::milliseconds timeout)
      : sys_(sys), coordinator_(std::move(coordinator)), timeout_(timeout) {}
  void set(const std::string& key, const std::string& value) override {
    // A refused set (a limit) fails the gets of its key on every node, naming why; Gloo's set
    // has no error to return, so this node says it too.
    auto done = ask<done_atom>(sys_, caf::actor_cast<caf::actor>(coordinator_), timeout_,
                               caf::make_message(set_atom::value, key, value));
    if (!done.has_value()) {
      fmt::print(stderr, "node: the coordinator did not store rendezvous key '{}': {}\n",
                 key.substr(0, 64), done.status().message());
      std::fflush(stderr);
    }
  }
  Expected<std::string> get(const std::string& key, std::chrono::milliseconds timeout) override {
    auto value = ask_text(sys_, caf::actor_cast<caf::actor>(coordinator_), timeout,
                          caf::make_message(get_atom::value, key));
    if (!value.has_value()) {
      return value.status().with_context(fmt::format("rendezvous key '{}'", key));
    }
    return value;
  }

 private:
  caf::actor_system& sys_;
  coordinator_actor coordinator_;
  std::chrono::milliseconds timeout_;
};

// The addresses of every device's UCX endpoint, through the coordinator.
Expected<std::map<int32_t, std::string>> exchange_addresses(
    caf::actor_system& sys, const coordinator_actor& coordinator, std::chrono::milliseconds timeout,
    const std::map<int32_t, std::string>& mine) {
  Json m = Json::object();
  for (const auto& [d, a] : mine) m[std::to_string(d)] = to_hex(a);
  auto all = ask_text(sys, caf::actor_cast<caf::actor>(coordinator), timeout,
                      caf::make_message(addr_atom::value, m.dump()));
  if (!all.has_value()) return all.status().with_context("exchanging UCX addresses");
  MP_ASSIGN_OR_RETURN(const Json parsed, parse_json(*all, "the UCX address list"));
  if (!parsed.is_object()) return make_error(Errc::kInternal, "the address list is not an object");
  std::map<int32_t, std::string> out;
  for (const auto& [key, value] : parsed.items()) {
    int32_t device = -1;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), device);
    if (ec != std::errc() || end != key.data() + key.size() || device < 0) {
      return make_error(Errc::kInternal, "the address list names device '{}'", key);
    }
    std::string hex;
    MP_RETURN_IF_ERROR(read_json(value, "address field", key, &hex));
    MP_ASSIGN_OR_RETURN(out[device], from_hex(hex));
  }
  return out;
}

// What a meshpipe-node process keeps besides its job.
struct RemoteNode {
  NodeOptions options;
  coordinator_actor coordinator;
  int32_t id = -1;
  Status result;
  std::atomic<bool> ending{false};  // the node actor has finished; the heartbeat follows
  std::shared_ptr<NodeState> node = std::make_shared<NodeState>();
};

// How long an aborted node waits for its devices to leave the step before it exits anyway: a
// Gloo collective blocked on a peer that stopped cannot be woken from outside (UCX waits and
// in-process groups can), and the node must not outlive its job.
constexpr std::chrono::seconds kAbortGrace{3};

// Answers the coordinator's pings on its own, so a node busy in a long step still shows it is
// alive, and aborts that step when the coordinator says the job failed or disconnects.
heartbeat_actor::behavior_type heartbeat(heartbeat_actor::pointer hb,
                                         std::shared_ptr<RemoteNode> rn) {
  const auto abort = [hb, rn](const std::string& why) {
    rn->node->abort(why);
    hb->delayed_send(hb, kAbortGrace, tick_atom::value);
  };
  hb->monitor(rn->coordinator);
  hb->set_down_handler([rn, abort](caf::down_msg&) {
    abort(fmt::format("node {}: the coordinator disconnected", rn->id));
  });
  return {
      [](ping_atom) -> caf::result<pong_atom> { return pong_atom::value; },
      [abort](abort_atom, const std::string& why) { abort(why); },
      [hb, rn](tick_atom) {
        if (!rn->node->busy) {
          if (rn->ending) hb->quit();
          return;
        }
        fmt::print(stderr,
                   "node {}: the job was aborted ({}) and this node's devices are still inside "
                   "it after {} s (a Gloo collective waits for a peer that stopped); exiting\n",
                   rn->id, rn->node->abort_reason(), kAbortGrace.count());
        std::fflush(stderr);
        std::_Exit(1);
      },
  };
}

node_actor::behavior_type remote_node(node_actor::pointer self, std::shared_ptr<RemoteNode> rn) {
  heartbeat_actor hb = self->spawn(heartbeat, rn);
  const auto finish = [self, hb](Status why, const std::shared_ptr<RemoteNode>& r) {
    r->result = std::move(why);
    r->ending = true;
    if (r->node->busy) {
      // Devices still inside a step: the heartbeat aborts it and, if they have not left it
      // within the grace, ends the process (a Gloo collective cannot be woken).
      self->send(hb, abort_atom::value,
                 r->result.is_ok() ? std::string("the job ended") : r->result.message());
    } else {
      // A normal exit does not travel along links, so the node ends its heartbeat explicitly.
      self->send_exit(hb, caf::exit_reason::user_shutdown);
    }
    r->node->end_job();
    self->quit();
  };
  self->monitor(rn->coordinator);
  self->set_down_handler([rn, finish](caf::down_msg& dm) {
    if (dm.source != rn->coordinator.address()) return;
    finish(make_error(Errc::kUnavailable, "node {}: the coordinator disconnected", rn->id), rn);
  });
  // The job's devices on this node: its id decides which, the coordinator connects them.
  caf::actor_system* sys = &self->system();
  rn->node->make_share =
      [rn,
       sys](std::chrono::milliseconds timeout) -> Expected<std::shared_ptr<runtime::ProcessShare>> {
    auto share = std::make_shared<runtime::ProcessShare>();
    for (int32_t d = rn->id * rn->options.devices; d < (rn->id + 1) * rn->options.devices; ++d) {
      share->local_devices.push_back(d);
    }
    share->store = std::make_shared<CoordinatorStore>(*sys, rn->coordinator, timeout);
    share->host = rn->options.bind;
    coordinator_actor coordinator = rn->coordinator;
    share->exchange = [sys, coordinator, timeout](const std::map<int32_t, std::string>& mine) {
      return exchange_addresses(*sys, coordinator, timeout, mine);
    };
    return share;
  };
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  const Json info = {{"host", std::string(host)},
                     {"pid", static_cast<int64_t>(::getpid())},
                     {"devices", rn->options.devices},
                     {"memory", rn->options.memory_bytes},
                     {"gpus", gpus_to_json(kernels::device_inventory().gpus)},
                     {"version", rn->options.version}};
  self->request(rn->coordinator, rn->options.connect_timeout, register_atom::value,
                rn->options.protocol, info.dump(), hb)
      .then(
          [rn](int32_t id, int32_t total) {
            rn->id = id;
            rn->node->name = fmt::format("node {}", id);
            fmt::print("joined the coordinator as node {} of {}\n", id, total);
            std::fflush(stdout);
          },
          [self, rn, finish](caf::error& e) {
            finish(from_caf(self->system(), e).with_context("the coordinator refused this node"),
                   rn);
          });
  return node_behavior(self, rn->node, [rn, finish](bool failed, const std::string& reason) {
    fmt::print("node {}: exiting ({})\n", rn->id, reason);
    std::fflush(stdout);
    finish(failed ? make_error(Errc::kCancelled, "node {}: the driver ended the job: {}", rn->id,
                               reason)
                  : Status::ok(),
           rn);
  });
}

}  // namespace

Status NodeOptions::validate() const {
  if (devices < 1) return make_error(Errc::kInvalidArgument, "--devices must be >= 1");
  if (secret.size() < kMinSecretBytes) {
    return make_error(Errc::kInvalidArgument,
                      "the coordinator admits only nodes that know the job's secret: give "
                      "--secret-file FILE or set {} (the driver prints it, or writes it with "
                      "--write-secret FILE)",
                      kSecretEnvironment);
  }
  if (connect_timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "the connect timeout must be positive");
  }
  if (memory_bytes <= 0) return make_error(Errc::kInvalidArgument, "memory must be positive");
  const size_t colon = coordinator.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == coordinator.size()) {
    return make_error(Errc::kInvalidArgument, "--coordinator '{}' is not HOST:PORT", coordinator);
  }
  return Status::ok();
}

Status run_node(const NodeOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  const size_t colon = options.coordinator.rfind(':');
  const std::string host = options.coordinator.substr(0, colon);
  const std::string port_text = options.coordinator.substr(colon + 1);
  int port = -1;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port <= 0 ||
      port > 65535) {
    return make_error(Errc::kInvalidArgument, "--coordinator '{}': bad port", options.coordinator);
  }
  // The gate first: nothing of CAF's reaches the driver before the secret is proved. It must
  // outlive the actor system, whose connection it carries.
  const auto deadline = std::chrono::steady_clock::now() + options.connect_timeout;
  MP_ASSIGN_OR_RETURN(std::unique_ptr<GateClient> gate,
                      GateClient::connect(host, static_cast<uint16_t>(port), options.secret,
                                          options.connect_timeout));
  caf::actor_system_config cfg;
  configure(cfg, /*scheduler_threads=*/2, /*network=*/true);
  caf::actor_system sys{cfg};
  // Connects through the relay, within what is left of the connect timeout (CAF's own
  // remote_actor waits forever). A coordinator that publishes another interface is refused.
  const auto left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 deadline - std::chrono::steady_clock::now()),
                             std::chrono::milliseconds(1000));
  auto found = ask<caf::node_id, caf::strong_actor_ptr, std::set<std::string>>(
      sys, caf::actor_cast<caf::actor>(sys.middleman().actor_handle()), left,
      caf::make_message(caf::connect_atom::value, std::string("127.0.0.1"), gate->local_port()));
  if (!found.has_value()) {
    return make_error(found.status().code(), "cannot reach the coordinator at {}: {}",
                      options.coordinator, found.status().message());
  }
  auto& [peer, handle, interface] = *found;
  if (handle == nullptr || !sys.assignable<coordinator_actor>(interface)) {
    return make_error(Errc::kUnavailable,
                      "the coordinator at {} publishes another interface than this node's (run "
                      "the same meshpipe version on every node)",
                      options.coordinator);
  }
  const auto coordinator = caf::actor_cast<coordinator_actor>(handle);
  auto rn = std::make_shared<RemoteNode>();
  rn->options = options;
  rn->coordinator = coordinator;
  rn->node->step_timeout = std::chrono::hours(24);  // the coordinator times steps out
  // Scheduled, not detached: a detached actor that a remote peer has referenced can keep
  // CAF 0.17's shutdown waiting for its thread. Its job handler blocks (building devices) on one
  // of the two scheduler threads; the other, the multiplexer and the store's requests keep the
  // control plane moving. Steps do not block it: the stage actors run on threads of their own.
  sys.spawn(remote_node, rn);
  sys.await_all_actors_done();
  rn->node->end_job();
  return rn->result;
}

}  // namespace meshpipe::actors

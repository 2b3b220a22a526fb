// The control plane's gate: the handshake, the driver's GateServer and the node's GateClient
// (actors/internal/gate.h).
#include "actors/internal/gate.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "actors/internal/relay.h"

namespace meshpipe::actors::internal {

Mac handshake_mac(const std::string& secret, std::string_view label, const Nonce& server_nonce,
                  const Nonce& client_nonce) {
  std::string data(label);
  data.append(reinterpret_cast<const char*>(server_nonce.data()), server_nonce.size());
  data.append(reinterpret_cast<const char*>(client_nonce.data()), client_nonce.size());
  Mac mac{};
  unsigned int len = 0;
  ::HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(), &len);
  return mac;
}

bool same_mac(const Mac& a, const Mac& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Nonce random_nonce() {
  Nonce n{};
  size_t have = 0;
  while (have < n.size()) {
    const ssize_t got = ::getrandom(n.data() + have, n.size() - have, 0);
    if (got > 0) have += static_cast<size_t>(got);
  }
  return n;
}

namespace {

constexpr const char* kClientLabel = "meshpipe-gate/1 client";
constexpr const char* kServerLabel = "meshpipe-gate/1 server";

// A self-pipe that wakes a gate thread out of poll().
struct Waker {
  UniqueFd r;
  UniqueFd w;
  Waker() {
    int fds[2] = {-1, -1};
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0) {
      r.reset(fds[0]);
      w.reset(fds[1]);
    }
  }
  void wake() const {
    const char c = 1;
    [[maybe_unused]] const ssize_t n = ::write(w.get(), &c, 1);
  }
  void drain() const {
    char buf[64];
    while (::read(r.get(), buf, sizeof(buf)) > 0) {
    }
  }
};

}  // namespace

// ------------------------------------------------------------------------------- GateServer

struct GateServer::Impl {
  // One accepted connection: handshake, then connecting to CAF, then relayed.
  struct Conn {
    enum class State { kHandshake, kConnecting, kRelay } state = State::kHandshake;
    UniqueFd client;
    UniqueFd caf;
    std::unique_ptr<Relay> relay;
    Nonce server_nonce{};
    std::array<uint8_t, kClientProofBytes> proof{};
    size_t have = 0;
    Clock::time_point deadline;
    std::string peer;
    bool closed = false;
  };

  GateServerOptions options;
  UniqueFd listener;
  uint16_t port = 0;
  Waker waker;
  std::thread thread;
  std::atomic<bool> draining{false};
  std::atomic<int64_t> refused{0};
  int shown = 0;  // refusals printed (at most kShownRefusals)
  mutable std::mutex mu;
  mutable std::condition_variable idle_cv;
  size_t admitted = 0;  // guarded by mu
  std::vector<std::unique_ptr<Conn>> conns;
  Clock::time_point accept_paused_until;

  static constexpr int kShownRefusals = 20;

  // Counts and reports a refusal (the first kShownRefusals of them), before the peer hears it.
  void note_refusal(const Conn& c, const std::string& why) {
    ++refused;
    if (shown < kShownRefusals) {
      ++shown;
      fmt::print(stderr, "coordinator: refused a connection from {}: {}{}\n", c.peer, why,
                 shown == kShownRefusals ? " (further refusals are counted, not shown)" : "");
      std::fflush(stderr);
    }
  }
  void refuse(Conn& c, const std::string& why) {
    note_refusal(c, why);
    close(c);
  }
  static void close(Conn& c) {
    c.closed = true;
    c.relay.reset();
    c.client.reset();
    c.caf.reset();
  }

  void accept_all() {
    while (true) {
      const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        // Out of descriptors: the rest wait in the backlog, and the listener rests a moment
        // instead of waking poll() at once again.
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
        }
        return;
      }
      prepare_socket(fd);
      auto c = std::make_unique<Conn>();
      c->client.reset(fd);
      c->peer = peer_name(fd);
      size_t handshaking = 0;
      size_t relays = 0;
      Conn* oldest = nullptr;
      for (const auto& o : conns) {
        if (o->closed) continue;
        if (o->state == Conn::State::kHandshake) {
          ++handshaking;
          if (oldest == nullptr || o->deadline < oldest->deadline) oldest = o.get();
        } else {
          ++relays;
        }
      }
      if (relays >= options.max_relays) {
        refuse(*c, fmt::format("{} connections are open already", relays));
        continue;
      }
      if (handshaking >= options.max_pending && oldest != nullptr) {
        refuse(*oldest, fmt::format("its handshake was not done when {} more were waiting",
                                    options.max_pending));
      }
      c->server_nonce = random_nonce();
      std::array<uint8_t, kServerHelloBytes> hello{};
      std::memcpy(hello.data(), kGateMagic.data(), kGateMagic.size());
      std::memcpy(hello.data() + kGateMagic.size(), c->server_nonce.data(), kNonceBytes);
      if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(hello.size())) {
        close(*c);
        continue;
      }
      c->deadline = Clock::now() + options.handshake_timeout;
      conns.push_back(std::move(c));
    }
  }

  void on_handshake(Conn& c) {
    const ssize_t got =
        ::recv(c.client.get(), c.proof.data() + c.have, kClientProofBytes - c.have, 0);
    if (got == 0) return refuse(c, "closed before completing the handshake");
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      return refuse(c, fmt::format("failed during the handshake: {}", std::strerror(errno)));
    }
    c.have += static_cast<size_t>(got);
    // Garbage is turned away at its first wrong byte.
    const size_t magic = std::min(c.have, kGateMagic.size());
    if (std::memcmp(c.proof.data(), kGateMagic.data(), magic) != 0) {
      return refuse(c, "not a meshpipe gate handshake (another protocol, or garbage)");
    }
    if (c.have < kClientProofBytes) return;
    Nonce client_nonce{};
    Mac proof{};
    std::memcpy(client_nonce.data(), c.proof.data() + kGateMagic.size(), kNonceBytes);
    std::memcpy(proof.data(), c.proof.data() + kGateMagic.size() + kNonceBytes, kMacBytes);
    std::array<uint8_t, kServerReplyBytes> reply{};
    if (!same_mac(proof,
                  handshake_mac(options.secret, kClientLabel, c.server_nonce, client_nonce))) {
      note_refusal(c, "authentication failed (it does not know the job's secret)");
      reply[0] = 'R';
      [[maybe_unused]] const ssize_t n =
          ::send(c.client.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
      return close(c);
    }
    reply[0] = 'A';
    const Mac mine = handshake_mac(options.secret, kServerLabel, c.server_nonce, client_nonce);
    std::memcpy(reply.data() + 1, mine.data(), kMacBytes);
    if (::send(c.client.get(), reply.data(), reply.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(reply.size())) {
      return close(c);
    }
    auto caf = start_loopback_connect(options.target_port);
    if (!caf.has_value()) {
      fmt::print(stderr, "coordinator: cannot relay {}: {}\n", c.peer, caf.status().message());
      return close(c);
    }
    c.caf = std::move(*caf);
    c.state = Conn::State::kConnecting;
    c.deadline = Clock::now() + options.handshake_timeout;
  }

  void on_connected(Conn& c) {
    const Status s = finish_connect(c.caf.get());
    if (!s.is_ok()) {
      fmt::print(stderr, "coordinator: cannot relay {}: {}\n", c.peer, s.message());
      return close(c);
    }
    c.relay =
        std::make_unique<Relay>(std::move(c.client), std::move(c.caf), options.max_frame_bytes);
    c.state = Conn::State::kRelay;
  }

  void loop() {
    const Clock::time_point never = Clock::time_point::max();
    Clock::time_point drain_until = never;
    std::vector<pollfd> fds;
    std::vector<std::pair<Conn*, int>> owners;  // the connection of each pollfd, and its role
    while (true) {
      if (draining && drain_until == never) {
        drain_until = Clock::now() + std::chrono::seconds(2);
        listener.reset();
        for (auto& c : conns) {
          if (c->state != Conn::State::kRelay) close(*c);
        }
      }
      fds.clear();
      owners.clear();
      fds.push_back({waker.r.get(), POLLIN, 0});
      owners.emplace_back(nullptr, 0);
      Clock::time_point next = drain_until;
      if (listener.valid() && Clock::now() >= accept_paused_until) {
        fds.push_back({listener.get(), POLLIN, 0});
        owners.emplace_back(nullptr, 1);
      } else if (listener.valid()) {
        next = std::min(next, accept_paused_until);
      }
      for (auto& c : conns) {
        switch (c->state) {
          case Conn::State::kHandshake:
            fds.push_back({c->client.get(), POLLIN, 0});
            owners.emplace_back(c.get(), 0);
            next = std::min(next, c->deadline);
            break;
          case Conn::State::kConnecting:
            fds.push_back({c->caf.get(), POLLOUT, 0});
            owners.emplace_back(c.get(), 0);
            next = std::min(next, c->deadline);
            break;
          case Conn::State::kRelay:
            fds.push_back({});
            fds.push_back({});
            c->relay->fill(&fds[fds.size() - 2], &fds[fds.size() - 1]);
            owners.emplace_back(c.get(), 0);
            owners.emplace_back(c.get(), 1);
            break;
        }
      }
      const int rc = ::poll(fds.data(), fds.size(), next == never ? 1000 : poll_ms(next));
      if (rc < 0 && errno != EINTR) break;
      const Clock::time_point now = Clock::now();
      if ((fds[0].revents & POLLIN) != 0) waker.drain();
      for (size_t i = 1; i < fds.size(); ++i) {
        auto [c, role] = owners[i];
        if (c == nullptr) {
          if ((fds[i].revents & POLLIN) != 0) accept_all();
          continue;
        }
        if (c->closed) continue;
        switch (c->state) {
          case Conn::State::kHandshake:
            if (fds[i].revents != 0) on_handshake(*c);
            break;
          case Conn::State::kConnecting:
            if (fds[i].revents != 0) on_connected(*c);
            break;
          case Conn::State::kRelay:
            if (role == 0) {
              c->relay->on_events(fds[i].revents, fds[i + 1].revents);
              ++i;
              if (c->relay->done()) {
                if (c->relay->over_limit()) {
                  refuse(*c, c->relay->error());
                } else {
                  close(*c);
                }
              }
            }
            break;
        }
      }
      for (auto& c : conns) {
        if (c->closed || c->state == Conn::State::kRelay || now < c->deadline) continue;
        if (c->state == Conn::State::kHandshake) {
          refuse(*c, fmt::format("no handshake within {} ms", options.handshake_timeout.count()));
        } else {
          fmt::print(stderr, "coordinator: cannot relay {}: the coordinator did not accept\n",
                     c->peer);
          close(*c);
        }
      }
      std::erase_if(conns, [](const std::unique_ptr<Conn>& c) { return c->closed; });
      {
        std::lock_guard<std::mutex> lock(mu);
        admitted = 0;
        for (const auto& c : conns) admitted += c->state != Conn::State::kHandshake ? 1 : 0;
      }
      idle_cv.notify_all();
      if (draining && (conns.empty() || Clock::now() >= drain_until)) break;
    }
    conns.clear();
    std::lock_guard<std::mutex> lock(mu);
    admitted = 0;
    idle_cv.notify_all();
  }
};

Expected<std::unique_ptr<GateServer>> GateServer::start(const GateServerOptions& options) {
  if (options.secret.empty()) return make_error(Errc::kInvalidArgument, "the gate needs a secret");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!impl->waker.r.valid()) {
    return make_error(Errc::kIo, "cannot make the gate's wake pipe: {}", std::strerror(errno));
  }
  MP_ASSIGN_OR_RETURN(impl->listener, listen_tcp(options.bind, options.port, /*backlog=*/128));
  impl->port = local_port(impl->listener.get());
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->loop(); });
  return std::unique_ptr<GateServer>(new GateServer(std::move(impl)));
}

GateServer::GateServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GateServer::~GateServer() {
  impl_->draining = true;
  impl_->waker.wake();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t GateServer::port() const { return impl_->port; }

int64_t GateServer::refused() const { return impl_->refused.load(); }

bool GateServer::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->idle_cv.wait_for(lock, timeout, [this] { return impl_->admitted == 0; });
}

// ------------------------------------------------------------------------------- GateClient

struct GateClient::Impl {
  UniqueFd remote;
  UniqueFd listener;
  uint16_t port = 0;
  std::string coordinator;  // HOST:PORT, for messages
  Clock::time_point accept_deadline;
  Waker waker;
  std::atomic<bool> stop{false};
  std::thread thread;

  // Admits the first loopback connection of this process, then relays it to the driver.
  void run() {
    UniqueFd local;
    while (!stop && !local.valid()) {
      pollfd p[2] = {{waker.r.get(), POLLIN, 0}, {listener.get(), POLLIN, 0}};
      const int rc = ::poll(p, 2, poll_ms(accept_deadline));
      if (rc < 0 && errno != EINTR) return;
      if (Clock::now() >= accept_deadline) return;
      if ((p[1].revents & POLLIN) == 0) continue;
      UniqueFd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd.valid()) continue;
      const std::string peer = peer_name(fd.get());
      const size_t colon = peer.rfind(':');
      const auto peer_port =
          static_cast<uint16_t>(std::strtoul(peer.c_str() + colon + 1, nullptr, 10));
      if (!is_own_connection(peer_port, port)) {
        fmt::print(stderr,
                   "node: refused a loopback connection from {} to this node's relay: it is "
                   "not this process's\n",
                   peer);
        continue;
      }
      prepare_socket(fd.get());
      local = std::move(fd);
    }
    listener.reset();
    if (!local.valid()) return;
    Relay relay(std::move(remote), std::move(local), /*max_frame_bytes=*/0);
    while (!stop && !relay.done()) {
      pollfd p[3] = {{waker.r.get(), POLLIN, 0}, {}, {}};
      relay.fill(&p[1], &p[2]);
      const int rc = ::poll(p, 3, 1000);
      if (rc < 0 && errno != EINTR) return;
      relay.on_events(p[1].revents, p[2].revents);
    }
  }
};

Expected<std::unique_ptr<GateClient>> GateClient::connect(const std::string& host, uint16_t port,
                                                          const std::string& secret,
                                                          std::chrono::milliseconds timeout) {
  const std::string where = fmt::format("{}:{}", host, port);
  const Clock::time_point deadline = Clock::now() + timeout;
  // A refused connection is tried again until the deadline: under a launcher (srun, torchrun)
  // every process starts at once, and a node may knock before rank 0's driver listens.
  auto fd = connect_tcp(host, port, deadline);
  while (!fd.has_value() && fd.status().code() == Errc::kUnavailable &&
         Clock::now() + std::chrono::milliseconds(250) < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    fd = connect_tcp(host, port, deadline);
  }
  if (!fd.has_value()) {
    return make_error(fd.status().code(), "cannot reach the coordinator at {}: {}", where,
                      fd.status().message());
  }
  // The peer speaks first: a listener that accepts and stays silent fails here, in time.
  const auto during = [&](const Status& s) {
    if (s.code() == Errc::kTimeout) {
      return make_error(Errc::kTimeout,
                        "the coordinator at {} did not complete the handshake within the "
                        "connect timeout of {} ms (is a meshpipe driver of this version "
                        "listening there?)",
                        where, timeout.count());
    }
    return make_error(Errc::kUnavailable,
                      "the coordinator at {} closed the connection during the handshake ({}); "
                      "is a meshpipe driver of this version listening there?",
                      where, s.message());
  };
  std::array<uint8_t, kServerHelloBytes> hello{};
  if (Status s = recv_all(fd->get(), hello.data(), hello.size(), deadline); !s.is_ok()) {
    return during(s);
  }
  if (std::memcmp(hello.data(), kGateMagic.data(), kGateMagic.size()) != 0) {
    return make_error(Errc::kUnavailable,
                      "the peer at {} does not speak meshpipe's gate protocol (not a meshpipe "
                      "driver, or one of another version)",
                      where);
  }
  Nonce server_nonce{};
  std::memcpy(server_nonce.data(), hello.data() + kGateMagic.size(), kNonceBytes);
  const Nonce client_nonce = random_nonce();
  std::array<uint8_t, kClientProofBytes> proof{};
  std::memcpy(proof.data(), kGateMagic.data(), kGateMagic.size());
  std::memcpy(proof.data() + kGateMagic.size(), client_nonce.data(), kNonceBytes);
  const Mac mine = handshake_mac(secret, kClientLabel, server_nonce, client_nonce);
  std::memcpy(proof.data() + kGateMagic.size() + kNonceBytes, mine.data(), kMacBytes);
  if (Status s = send_all(fd->get(), proof.data(), proof.size(), deadline); !s.is_ok()) {
    return during(s);
  }
  std::array<uint8_t, kServerReplyBytes> reply{};
  if (Status s = recv_all(fd->get(), reply.data(), reply.size(), deadline); !s.is_ok()) {
    return during(s);
  }
  if (reply[0] == 'R') {
    return make_error(Errc::kInvalidArgument,
                      "the coordinator at {} refused this node: authentication failed (the node "
                      "and the driver hold different secrets; give both the same --secret-file "
                      "or MESHPIPE_SECRET)",
                      where);
  }
  Mac theirs{};
  std::memcpy(theirs.data(), reply.data() + 1, kMacBytes);
  if (reply[0] != 'A' ||
      !same_mac(theirs, handshake_mac(secret, kServerLabel, server_nonce, client_nonce))) {
    return make_error(Errc::kUnavailable,
                      "the coordinator at {} did not prove it knows the job's secret: "
                      "authentication failed (another job listening there?)",
                      where);
  }
  auto impl = std::make_unique<Impl>();
  impl->remote = std::move(*fd);
  impl->coordinator = where;
  if (!impl->waker.r.valid()) {
    return make_error(Errc::kIo, "cannot make the relay's wake pipe: {}", std::strerror(errno));
  }
  MP_ASSIGN_OR_RETURN(impl->listener, listen_tcp("127.0.0.1", 0, /*backlog=*/4));
  impl->port = internal::local_port(impl->listener.get());
  // The node's CAF connects right after this returns; it gets at least 10 s to do so.
  impl->accept_deadline = std::max(deadline, Clock::now() + std::chrono::seconds(10));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<GateClient>(new GateClient(std::move(impl)));
}

GateClient::GateClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GateClient::~GateClient() {
  impl_->stop = true;
  impl_->waker.wake();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t GateClient::local_port() const { return impl_->port; }

}  // namespace meshpipe::actors::internal

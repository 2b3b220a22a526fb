// The control plane's gate without CAF: the handshake's MACs, the BASP frame guard, and a
// GateServer in front of an echo server: an admitted client's bytes go through both ways; a
// wrong secret, garbage, a huge frame header and a silent peer are turned away (quickly, and
// without blocking anyone else); a node's relay admits only a connection of its own process.
#include "actors/internal/gate.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <thread>

#include "actors/internal/relay.h"

namespace meshpipe::actors::internal {
namespace {

using std::chrono::milliseconds;

const std::string kSecret = "the-gate-test-secret-0123456789";

// Echoes every byte of each connection it accepts back to it, until the connection closes.
struct EchoServer {
  UniqueFd listener;
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> stop{false};
  EchoServer() {
    auto l = listen_tcp("127.0.0.1", 0, 8);
    REQUIRE(l.has_value());
    listener = std::move(*l);
    port = local_port(listener.get());
    thread = std::thread([this] {
      std::vector<UniqueFd> conns;
      while (!stop) {
        std::vector<pollfd> p = {{listener.get(), POLLIN, 0}};
        for (const UniqueFd& c : conns) p.push_back({c.get(), POLLIN, 0});
        if (::poll(p.data(), p.size(), 50) <= 0) continue;
        if ((p[0].revents & POLLIN) != 0) {
          const int fd = ::accept(listener.get(), nullptr, nullptr);
          if (fd >= 0) conns.emplace_back(fd);
        }
        for (size_t i = 1; i < p.size(); ++i) {
          if (p[i].revents == 0) continue;
          char buf[4096];
          const ssize_t n = ::recv(p[i].fd, buf, sizeof(buf), 0);
          if (n > 0) {
            [[maybe_unused]] const ssize_t m = ::send(p[i].fd, buf, static_cast<size_t>(n), 0);
          } else {
            ::shutdown(p[i].fd, SHUT_RDWR);
          }
        }
      }
    });
  }
  ~EchoServer() {
    stop = true;
    thread.join();
  }
};

// A plain blocking client socket to 127.0.0.1:port.
UniqueFd dial(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

// Reads until the peer closes or `timeout` passes; true when it closed.
bool closed_within(int fd, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  char buf[256];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, poll_ms(deadline, 50)) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

std::unique_ptr<GateServer> start_gate(uint16_t target, milliseconds handshake = milliseconds(5000),
                                       size_t max_pending = 64) {
  GateServerOptions o;
  o.bind = "127.0.0.1";
  o.secret = kSecret;
  o.target_port = target;
  o.handshake_timeout = handshake;
  o.max_pending = max_pending;
  o.max_frame_bytes = 1 << 20;
  auto g = GateServer::start(o);
  REQUIRE(g.has_value());
  return std::move(*g);
}

// Sends `text` through a client's relay and expects it echoed.
void expect_echo(int fd, const std::string& text) {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  REQUIRE(send_all(fd, text.data(), text.size(), deadline).is_ok());
  std::string back(text.size(), '\0');
  REQUIRE(recv_all(fd, back.data(), back.size(), deadline).is_ok());
  CHECK(back == text);
}

TEST_CASE("the handshake's MACs depend on the secret, the label and both nonces", "[actors]") {
  const Nonce a = random_nonce();
  const Nonce b = random_nonce();
  CHECK(a != b);
  const Mac m = handshake_mac("secret-one-0123456789", "client", a, b);
  CHECK(same_mac(m, handshake_mac("secret-one-0123456789", "client", a, b)));
  CHECK_FALSE(same_mac(m, handshake_mac("secret-two-0123456789", "client", a, b)));
  CHECK_FALSE(same_mac(m, handshake_mac("secret-one-0123456789", "server", a, b)));
  CHECK_FALSE(same_mac(m, handshake_mac("secret-one-0123456789", "client", b, a)));
}

TEST_CASE("the frame guard follows BASP frames across reads and refuses an oversized one",
          "[actors]") {
  const auto header = [](uint32_t len) {
    std::string h(32, '\0');
    h[4] = static_cast<char>(len >> 24);
    h[5] = static_cast<char>(len >> 16);
    h[6] = static_cast<char>(len >> 8);
    h[7] = static_cast<char>(len);
    return h;
  };
  FrameGuard g(100);
  const std::string stream =
      header(100) + std::string(100, 'x') + header(0) + header(7) + "1234567";
  for (char c : stream) REQUIRE(g.feed(&c, 1));  // byte by byte
  FrameGuard whole(100);
  CHECK(whole.feed(stream.data(), stream.size()));
  // The 36-byte packet: a header announcing ~4 GB.
  const std::string huge = header(0xFA000000u) + "abcd";
  FrameGuard h(100);
  CHECK_FALSE(h.feed(huge.data(), huge.size()));
  CHECK(h.last_length() == 0xFA000000u);
}

TEST_CASE("a client that knows the secret is relayed both ways", "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port);
  auto client = GateClient::connect("127.0.0.1", gate->port(), kSecret, milliseconds(3000));
  REQUIRE(client.has_value());
  UniqueFd local = dial((*client)->local_port());
  // A BASP-shaped frame (the relay guards what a client sends), then its payload.
  std::string frame(32, '\0');
  frame[7] = 5;
  expect_echo(local.get(), frame + "hello");
  CHECK(gate->refused() == 0);
  local.reset();
  client->reset();
  CHECK(gate->wait_idle(milliseconds(3000)));
}

TEST_CASE("a client with the wrong secret is refused, naming authentication", "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port);
  auto client = GateClient::connect("127.0.0.1", gate->port(), "another-secret-0123456789",
                                    milliseconds(3000));
  REQUIRE_FALSE(client.has_value());
  CHECK(client.status().message().find("authentication failed") != std::string::npos);
  CHECK(gate->refused() == 1);
}

TEST_CASE("garbage and a huge frame header are closed at once, before anything is relayed",
          "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port);
  for (const std::string& junk :
       {std::string("GET / HTTP/1.0\r\n\r\n"),
        std::string("\x01\x00\x00\x00\xfa\x00\x00\x00", 8) + std::string(28, '\0')}) {
    UniqueFd fd = dial(gate->port());
    REQUIRE(::send(fd.get(), junk.data(), junk.size(), 0) == static_cast<ssize_t>(junk.size()));
    CHECK(closed_within(fd.get(), milliseconds(3000)));
  }
  CHECK(gate->refused() == 2);
  // An honest client still gets through.
  auto client = GateClient::connect("127.0.0.1", gate->port(), kSecret, milliseconds(3000));
  REQUIRE(client.has_value());
}

TEST_CASE("a silent peer is dropped at the handshake deadline and blocks no one", "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port, milliseconds(3000));
  UniqueFd silent = dial(gate->port());
  const auto t0 = Clock::now();
  auto client = GateClient::connect("127.0.0.1", gate->port(), kSecret, milliseconds(5000));
  REQUIRE(client.has_value());
  CHECK(Clock::now() - t0 < milliseconds(1500));  // not behind the silent one
  CHECK(closed_within(silent.get(), milliseconds(5000)));
  CHECK(gate->refused() == 1);
}

TEST_CASE("when handshake slots run out the oldest waiting peer makes room", "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port, milliseconds(5000), /*max_pending=*/2);
  UniqueFd first = dial(gate->port());
  std::this_thread::sleep_for(milliseconds(50));
  UniqueFd second = dial(gate->port());
  std::this_thread::sleep_for(milliseconds(50));
  auto client = GateClient::connect("127.0.0.1", gate->port(), kSecret, milliseconds(3000));
  REQUIRE(client.has_value());
  CHECK(closed_within(first.get(), milliseconds(1000)));
}

TEST_CASE("an admitted client's frame over the limit closes its connection", "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port);
  auto client = GateClient::connect("127.0.0.1", gate->port(), kSecret, milliseconds(3000));
  REQUIRE(client.has_value());
  UniqueFd local = dial((*client)->local_port());
  std::string frame(32, '\0');
  frame[4] = 0x10;  // 256 MiB, over the 1 MiB limit of this gate
  REQUIRE(::send(local.get(), frame.data(), frame.size(), 0) == 32);
  CHECK(closed_within(local.get(), milliseconds(2000)));
  // The relay closes both ends as soon as it sees the frame; the gate's loop counts the
  // refusal when it next looks at the relay, so the count may trail the close a little.
  const auto deadline = Clock::now() + milliseconds(2000);
  while (gate->refused() == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  CHECK(gate->refused() == 1);
}

TEST_CASE("a node pointed at a listener that never speaks fails within its timeout", "[actors]") {
  auto l = listen_tcp("127.0.0.1", 0, 8);  // the kernel completes connections; no one answers
  REQUIRE(l.has_value());
  const auto t0 = Clock::now();
  auto client = GateClient::connect("127.0.0.1", local_port(l->get()), kSecret, milliseconds(500));
  REQUIRE_FALSE(client.has_value());
  CHECK(client.status().code() == Errc::kTimeout);
  CHECK(client.status().message().find("within the connect timeout of 500 ms") !=
        std::string::npos);
  CHECK(Clock::now() - t0 < milliseconds(2000));
}

TEST_CASE("a node's relay admits only a connection of its own process", "[actors]") {
  EchoServer echo;
  auto gate = start_gate(echo.port);
  auto client = GateClient::connect("127.0.0.1", gate->port(), kSecret, milliseconds(3000));
  REQUIRE(client.has_value());
  // Another process connects first (bash's /dev/tcp) and finds the connection closed.
  const std::string cmd = fmt::format(
      "exec 3<>/dev/tcp/127.0.0.1/{} && printf x >&3 && ! timeout 2 head -c 1 <&3 | grep -q x",
      (*client)->local_port());
  CHECK(std::system(("bash -c '" + cmd + "'").c_str()) == 0);
  // This process's connection is still admitted and relayed.
  UniqueFd local = dial((*client)->local_port());
  std::string frame(32, '\0');
  expect_echo(local.get(), frame);
}

}  // namespace
}  // namespace meshpipe::actors::internal

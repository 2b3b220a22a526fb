// Cluster bootstrap pieces in one process: registration refuses another protocol version or
// meshpipe release, a wrong or missing secret, and a node beyond --nodes; nodes that never come
// time out with a message; the cluster formed from node reports; bad options are named. Behind
// the gate, an admitted peer that is not the driver cannot steer the job, one that has not
// registered cannot use the store, and the store's limits are named. (Whole jobs across
// processes: tests/apps/cluster_test.sh; hostile peers: tests/robustness/control_plane.sh.)
#include "actors/cluster.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "actors/internal/gate.h"
#include "actors/internal/limits.h"
#include "actors/internal/protocol.h"

namespace meshpipe::actors {
namespace {

const std::string kSecret = "the-cluster-test-secret-0123456789";

CoordinatorOptions coordinator_options(int32_t nodes, int64_t join_ms = 60000) {
  CoordinatorOptions co;
  co.nodes = nodes;
  co.secret = kSecret;
  co.join_timeout = std::chrono::milliseconds(join_ms);
  return co;
}

NodeOptions node_options(const Coordinator& coord) {
  NodeOptions no;
  no.coordinator = fmt::format("127.0.0.1:{}", coord.port());
  no.secret = kSecret;
  return no;
}

TEST_CASE("a node with another protocol version is refused, naming both", "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1, 3000));
  REQUIRE(coord.has_value());
  NodeOptions no = node_options(**coord);
  no.protocol = "meshpipe-cluster/0";
  const Status s = run_node(no);
  REQUIRE_FALSE(s.is_ok());
  INFO(s.to_string());
  CHECK(s.to_string().find(kClusterProtocol) != std::string::npos);
  CHECK(s.to_string().find("meshpipe-cluster/0") != std::string::npos);
  auto nodes = (*coord)->wait_for_nodes();  // the refused node did not join
  REQUIRE_FALSE(nodes.has_value());
  CHECK(nodes.status().code() == Errc::kTimeout);
  CHECK(nodes.status().to_string().find("did not join") != std::string::npos);
}

TEST_CASE("a node of another meshpipe release is refused, naming both", "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1, 2000));
  REQUIRE(coord.has_value());
  NodeOptions no = node_options(**coord);
  no.version = "0.0.1-other";
  const Status s = run_node(no);
  REQUIRE_FALSE(s.is_ok());
  INFO(s.to_string());
  CHECK(s.to_string().find(std::string("meshpipe ") + meshpipe_version()) != std::string::npos);
  CHECK(s.to_string().find("0.0.1-other") != std::string::npos);
  CHECK_FALSE((*coord)->wait_for_nodes().has_value());
}

TEST_CASE("a node joins and exits when the driver ends the job", "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  NodeOptions no = node_options(**coord);
  no.devices = 2;
  Status node_status = make_error(Errc::kInternal, "not run");
  std::thread node([&] { node_status = run_node(no); });
  auto nodes = (*coord)->wait_for_nodes();
  REQUIRE(nodes.has_value());
  REQUIRE(nodes->size() == 1);
  CHECK((*nodes)[0].devices == 2);
  (*coord)->shutdown("test over");
  node.join();
  CHECK(node_status.is_ok());
}

TEST_CASE("a node exits non-zero, with the driver's reason, when the job failed", "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  Status node_status;
  std::thread node([&] { node_status = run_node(node_options(**coord)); });
  REQUIRE((*coord)->wait_for_nodes().has_value());
  (*coord)->fail(make_error(Errc::kTimeout, "a test failure"));
  node.join();
  REQUIRE_FALSE(node_status.is_ok());
  CHECK(node_status.code() == Errc::kCancelled);
  CHECK(node_status.message().find("the job failed: a test failure") != std::string::npos);
}

TEST_CASE("a node with a wrong or no secret is refused before it reaches the coordinator",
          "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1, 1500));
  REQUIRE(coord.has_value());
  NodeOptions no = node_options(**coord);
  no.secret = "not-the-job-secret-0123456789";
  const Status wrong = run_node(no);
  REQUIRE_FALSE(wrong.is_ok());
  CHECK(wrong.message().find("authentication failed") != std::string::npos);
  CHECK((*coord)->refused_connections() == 1);
  no.secret = "";
  const Status none = run_node(no);
  REQUIRE_FALSE(none.is_ok());
  CHECK(none.message().find("MESHPIPE_SECRET") != std::string::npos);
  CHECK_FALSE((*coord)->wait_for_nodes().has_value());  // no one joined
}

TEST_CASE("a node beyond --nodes is refused, and the job keeps its nodes", "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  Status first;
  std::thread node([&] { first = run_node(node_options(**coord)); });
  auto nodes = (*coord)->wait_for_nodes();
  REQUIRE(nodes.has_value());
  const Status extra = run_node(node_options(**coord));
  REQUIRE_FALSE(extra.is_ok());
  CHECK(extra.message().find("already has its 1 nodes") != std::string::npos);
  CHECK(extra.message().find("one too many") != std::string::npos);
  (*coord)->shutdown("test over");
  node.join();
  CHECK(first.is_ok());
}

TEST_CASE("a field over its limit is refused, naming the field and the limit", "[cluster]") {
  CHECK(internal::check_size("the job", internal::kMaxJobBytes, internal::kMaxJobBytes).is_ok());
  const Status s =
      internal::check_size("the job", internal::kMaxJobBytes + 1, internal::kMaxJobBytes);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.message() ==
        "the job has 67108865 bytes, over the control plane's limit of 64 MiB "
        "for it");
  CHECK(internal::limit_text(internal::kMaxReasonBytes) == "16 KiB");
  CHECK(internal::limit_text(internal::kMaxNameBytes) == "256 bytes");
}

TEST_CASE("a coordinator without a secret is refused", "[cluster]") {
  CoordinatorOptions co = coordinator_options(1);
  co.secret = "short";
  auto coord = Coordinator::listen(co);
  REQUIRE_FALSE(coord.has_value());
  CHECK(coord.status().message().find("secret of at least 16 bytes") != std::string::npos);
}

// A peer that knows the secret but is not the driver: a CAF system of its own, connected through
// the gate, asking the coordinator directly (what a forged or confused client would do).
struct AdmittedPeer {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<internal::GateClient> gate;
  caf::actor coordinator;
  explicit AdmittedPeer(uint16_t port) {
    auto g = internal::GateClient::connect("127.0.0.1", port, kSecret, std::chrono::seconds(5));
    REQUIRE(g.has_value());
    gate = std::move(*g);
    internal::configure(cfg, /*scheduler_threads=*/2, /*network=*/true);
    sys = std::make_unique<caf::actor_system>(cfg);
    auto c =
        sys->middleman().remote_actor<internal::coordinator_actor>("127.0.0.1", gate->local_port());
    REQUIRE(c);
    coordinator = caf::actor_cast<caf::actor>(*c);
  }
  ~AdmittedPeer() {
    coordinator = caf::actor();
    sys.reset();
  }
  Expected<std::string> ask(caf::message msg) {
    return internal::ask_text(*sys, coordinator, std::chrono::seconds(5), std::move(msg));
  }
};

TEST_CASE("an admitted peer that is not the driver cannot list, start, save or end the job",
          "[cluster]") {
  using namespace internal;  // NOLINT: the protocol's atoms
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  AdmittedPeer peer((*coord)->port());
  for (const caf::message& m :
       {caf::make_message(nodes_atom::value), caf::make_message(job_atom::value, std::string("{}")),
        caf::make_message(save_atom::value, std::string("/tmp/x"), int64_t{1}),
        caf::make_message(step_atom::value, int64_t{1})}) {
    auto r = peer.ask(m);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().message().find("only the driver may") != std::string::npos);
  }
  auto end = ask<done_atom>(*peer.sys, peer.coordinator, std::chrono::seconds(5),
                            caf::make_message(shutdown_atom::value, true, std::string("forged")));
  REQUIRE_FALSE(end.has_value());
  CHECK(end.status().message().find("only the driver may end the job") != std::string::npos);
  // The store and the address exchange are for registered nodes.
  auto set = ask<done_atom>(*peer.sys, peer.coordinator, std::chrono::seconds(5),
                            caf::make_message(set_atom::value, std::string("k"), std::string("v")));
  REQUIRE_FALSE(set.has_value());
  CHECK(set.status().message().find("only a registered node") != std::string::npos);
  auto get = peer.ask(caf::make_message(get_atom::value, std::string("k")));
  REQUIRE_FALSE(get.has_value());
  CHECK(get.status().message().find("only a registered node") != std::string::npos);
}

TEST_CASE("the store refuses keys and values over their limits, naming them", "[cluster]") {
  using namespace internal;  // NOLINT: the protocol's atoms
  auto coord = Coordinator::listen(coordinator_options(2));
  REQUIRE(coord.has_value());
  AdmittedPeer peer((*coord)->port());
  // Registers the peer's process as a node (a heartbeat of its own answers pings).
  heartbeat_actor hb = peer.sys->spawn([]() -> heartbeat_actor::behavior_type {
    return {[](ping_atom) -> caf::result<pong_atom> { return pong_atom::value; },
            [](abort_atom, const std::string&) {}, [](tick_atom) {}};
  });
  const Json info = {{"host", "peer"},
                     {"pid", 1},
                     {"devices", 1},
                     {"memory", 1 << 30},
                     {"version", meshpipe_version()}};
  auto id = ask<int32_t, int32_t>(
      *peer.sys, peer.coordinator, std::chrono::seconds(5),
      caf::make_message(register_atom::value, std::string(kClusterProtocol), info.dump(), hb));
  REQUIRE(id.has_value());
  auto again = ask<int32_t, int32_t>(
      *peer.sys, peer.coordinator, std::chrono::seconds(5),
      caf::make_message(register_atom::value, std::string(kClusterProtocol), info.dump(), hb));
  REQUIRE_FALSE(again.has_value());
  CHECK(again.status().message().find("registered already") != std::string::npos);
  const auto set = [&](const std::string& k, const std::string& v) {
    return ask<done_atom>(*peer.sys, peer.coordinator, std::chrono::seconds(5),
                          caf::make_message(set_atom::value, k, v));
  };
  REQUIRE(set("group/0", "address").has_value());
  CHECK(*peer.ask(caf::make_message(get_atom::value, std::string("group/0"))) == "address");
  auto long_key = set(std::string(kMaxKeyBytes + 1, 'k'), "v");
  REQUIRE_FALSE(long_key.has_value());
  CHECK(long_key.status().message().find("limit of 1 KiB") != std::string::npos);
  auto big = set("group/1", std::string(kMaxValueBytes + 1, 'v'));
  REQUIRE_FALSE(big.has_value());
  CHECK(big.status().message().find("rendezvous value") != std::string::npos);
  CHECK(big.status().message().find("limit of 1 MiB") != std::string::npos);
  // A get of the refused key fails at once with the reason, instead of waiting.
  auto get = peer.ask(caf::make_message(get_atom::value, std::string("group/1")));
  REQUIRE_FALSE(get.has_value());
  CHECK(get.status().message().find("limit of 1 MiB") != std::string::npos);
  // The store as a whole is bounded: fill it with values just under the limit.
  const std::string value(kMaxValueBytes - 16, 'v');
  Status last;
  for (size_t k = 0; k < kMaxStoreBytes / value.size() + 2 && last.is_ok(); ++k) {
    last = set(fmt::format("fill/{}", k), value).status();
  }
  REQUIRE_FALSE(last.is_ok());
  CHECK(last.message().find("the rendezvous store would hold more than its limit of 64 MiB") !=
        std::string::npos);
  caf::anon_send_exit(hb, caf::exit_reason::user_shutdown);
}

TEST_CASE("a node reports its GPUs; a malformed GPU list is refused naming the field",
          "[cluster]") {
  using namespace internal;  // NOLINT: the protocol's atoms
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  AdmittedPeer peer((*coord)->port());
  heartbeat_actor hb = peer.sys->spawn([]() -> heartbeat_actor::behavior_type {
    return {[](ping_atom) -> caf::result<pong_atom> { return pong_atom::value; },
            [](abort_atom, const std::string&) {}, [](tick_atom) {}};
  });
  const auto report = [&](Json gpus) {
    Json info = {{"host", "peer"},
                 {"pid", 1},
                 {"devices", 1},
                 {"memory", 1 << 30},
                 {"gpus", std::move(gpus)},
                 {"version", meshpipe_version()}};
    return ask<int32_t, int32_t>(
        *peer.sys, peer.coordinator, std::chrono::seconds(5),
        caf::make_message(register_atom::value, std::string(kClusterProtocol), info.dump(), hb));
  };
  const Json h200 = {
      {"name", "NVIDIA H200"}, {"memory", int64_t{150} << 30}, {"major", 9}, {"minor", 0}};
  struct Bad {
    Json gpus;
    std::string says;
  };
  Json unnamed = h200;
  unnamed["name"] = "";
  Json no_memory = h200;
  no_memory["memory"] = 0;
  Json extra = h200;
  extra["colour"] = "green";
  Json many = Json::array();
  for (size_t k = 0; k <= kMaxNodeGpus; ++k) many.push_back(h200);
  for (const Bad& bad : {Bad{Json("H200"), "'gpus' must be an array"},
                         Bad{Json::array({unnamed}), "'gpus[0].name' must be 1 to"},
                         Bad{Json::array({no_memory}), "'gpus[0].memory' must be positive"},
                         Bad{Json::array({extra}), "'gpus[0].colour' is not a known field"},
                         Bad{many, "at most 64"}}) {
    auto r = report(bad.gpus);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.status().message(), Catch::Contains(bad.says));
  }
  REQUIRE(report(Json::array({h200, h200})).has_value());
  auto nodes = (*coord)->wait_for_nodes();
  REQUIRE(nodes.has_value());
  REQUIRE(nodes->size() == 1);
  REQUIRE((*nodes)[0].gpus.size() == 2);
  CHECK((*nodes)[0].gpus[0].name == "NVIDIA H200");
  CHECK((*nodes)[0].gpus[0].memory_bytes == int64_t{150} << 30);
  CHECK((*nodes)[0].gpus[1].major == 9);
  CHECK(kernels::describe_gpus((*nodes)[0].gpus) == "2 x NVIDIA H200 (161.1 GB, sm_90)");
  caf::anon_send_exit(hb, caf::exit_reason::user_shutdown);
}

TEST_CASE("a job with in-process collectives across nodes is refused before it is sent",
          "[cluster]") {
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  ClusterJob job;
  job.collectives = runtime::CollectiveBackend::kInProcess;
  const Status s = (*coord)->start(job);
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK_THAT(s.message(), Catch::Contains("cannot reach across nodes"));
}

TEST_CASE("a GPU job is refused when a node has fewer GPUs than devices", "[cluster]") {
  using namespace internal;  // NOLINT: the protocol's atoms
  auto coord = Coordinator::listen(coordinator_options(1));
  REQUIRE(coord.has_value());
  AdmittedPeer peer((*coord)->port());
  heartbeat_actor hb = peer.sys->spawn([]() -> heartbeat_actor::behavior_type {
    return {[](ping_atom) -> caf::result<pong_atom> { return pong_atom::value; },
            [](abort_atom, const std::string&) {}, [](tick_atom) {}};
  });
  const Json h200 = {
      {"name", "NVIDIA H200"}, {"memory", int64_t{150} << 30}, {"major", 9}, {"minor", 0}};
  Json info = {{"host", "peer"},
               {"pid", 1},
               {"devices", 2},
               {"memory", 1 << 30},
               {"gpus", Json::array({h200})},
               {"version", meshpipe_version()}};
  REQUIRE(ask<int32_t, int32_t>(*peer.sys, peer.coordinator, std::chrono::seconds(5),
                                caf::make_message(register_atom::value,
                                                  std::string(kClusterProtocol), info.dump(), hb))
              .has_value());
  ClusterJob job;
  job.collectives = runtime::CollectiveBackend::kNccl;
  const Status s = (*coord)->start(job);
  CHECK(s.code() == Errc::kUnavailable);
  CHECK_THAT(s.message(), Catch::Contains("runs 2 devices and reports 1 GPU(s)"));
  caf::anon_send_exit(hb, caf::exit_reason::user_shutdown);
}

TEST_CASE("the cluster of the nodes", "[cluster]") {
  auto base = mesh::cluster_preset("cpu");
  REQUIRE(base.has_value());
  std::vector<NodeReport> nodes = {{0, "a", 1, 2, int64_t{4} << 30, {}},
                                   {1, "b", 2, 2, int64_t{2} << 30, {}}};
  auto c = cluster_from_nodes(nodes, *base);
  REQUIRE(c.has_value());
  CHECK(c->hosts == 2);
  CHECK(c->devices_per_host == 2);
  CHECK(c->device.memory.value() == int64_t{2} << 30);
  nodes[1].devices = 4;
  auto bad = cluster_from_nodes(nodes, *base);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().to_string().find("node 1 (b pid 2) runs 4 devices") != std::string::npos);
}

TEST_CASE("bad cluster options are named", "[cluster]") {
  CoordinatorOptions co = coordinator_options(0);
  CHECK_FALSE(Coordinator::listen(co).has_value());
  NodeOptions no;
  no.secret = kSecret;
  no.coordinator = "no-port";
  const Status s = run_node(no);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.to_string().find("not HOST:PORT") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::actors

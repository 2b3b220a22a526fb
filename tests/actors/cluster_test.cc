// Cluster bootstrap pieces in one process: registration refuses another protocol version or
// meshpipe release,
// nodes that never come time out with a message, the cluster formed from node reports, and bad
// options are named. (Whole jobs across processes: tests/apps/cluster_test.sh.)
#include "actors/cluster.h"

#include <catch2/catch.hpp>
#include <thread>

namespace meshpipe::actors {
namespace {

TEST_CASE("a node with another protocol version is refused, naming both", "[cluster]") {
  CoordinatorOptions co;
  co.nodes = 1;
  co.join_timeout = std::chrono::milliseconds(3000);
  auto coord = Coordinator::listen(co);
  REQUIRE(coord.has_value());
  NodeOptions no;
  no.coordinator = fmt::format("127.0.0.1:{}", (*coord)->port());
  no.protocol = "meshpipe-cluster/0";
  const Status s = run_node(no);
  REQUIRE_FALSE(s.is_ok());
  INFO(s.to_string());
  CHECK(s.to_string().find("meshpipe-cluster/1") != std::string::npos);
  CHECK(s.to_string().find("meshpipe-cluster/0") != std::string::npos);
  auto nodes = (*coord)->wait_for_nodes();  // the refused node did not join
  REQUIRE_FALSE(nodes.has_value());
  CHECK(nodes.status().code() == Errc::kTimeout);
  CHECK(nodes.status().to_string().find("did not join") != std::string::npos);
}

TEST_CASE("a node of another meshpipe release is refused, naming both", "[cluster]") {
  CoordinatorOptions co;
  co.nodes = 1;
  co.join_timeout = std::chrono::milliseconds(2000);
  auto coord = Coordinator::listen(co);
  REQUIRE(coord.has_value());
  NodeOptions no;
  no.coordinator = fmt::format("127.0.0.1:{}", (*coord)->port());
  no.version = "0.0.1-other";
  const Status s = run_node(no);
  REQUIRE_FALSE(s.is_ok());
  INFO(s.to_string());
  CHECK(s.to_string().find(std::string("meshpipe ") + meshpipe_version()) != std::string::npos);
  CHECK(s.to_string().find("0.0.1-other") != std::string::npos);
  CHECK_FALSE((*coord)->wait_for_nodes().has_value());
}

TEST_CASE("a node joins and exits when the driver ends the job", "[cluster]") {
  CoordinatorOptions co;
  co.nodes = 1;
  auto coord = Coordinator::listen(co);
  REQUIRE(coord.has_value());
  NodeOptions no;
  no.coordinator = fmt::format("127.0.0.1:{}", (*coord)->port());
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

TEST_CASE("the cluster of the nodes", "[cluster]") {
  auto base = mesh::cluster_preset("cpu");
  REQUIRE(base.has_value());
  std::vector<NodeReport> nodes = {{0, "a", 1, 2, int64_t{4} << 30},
                                   {1, "b", 2, 2, int64_t{2} << 30}};
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
  CoordinatorOptions co;
  co.nodes = 0;
  CHECK_FALSE(Coordinator::listen(co).has_value());
  NodeOptions no;
  no.coordinator = "no-port";
  const Status s = run_node(no);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.to_string().find("not HOST:PORT") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::actors

// Tests of submesh shapes and logical meshes (which link each axis pays for).
#include "mesh/device_mesh.h"

#include <catch2/catch.hpp>
#include <vector>

namespace meshpipe::mesh {
namespace {

ClusterSpec cluster(const char* spec) {
  Expected<ClusterSpec> c = cluster_preset(spec);
  REQUIRE(c.has_value());
  return *c;
}

std::vector<SubmeshShape> shapes(std::initializer_list<SubmeshShape> list) { return list; }

TEST_CASE("submesh shapes of 4 hosts x 8 devices in each space", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:4");
  CHECK(submesh_shapes(c, SubmeshSpace::kPowerOfTwo) ==
        shapes({{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 8}, {4, 8}}));
  CHECK(submesh_shapes(c, SubmeshSpace::kSmallPowerOfTwo) ==
        shapes({{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 8}, {4, 8}}));
  CHECK(submesh_shapes(c, SubmeshSpace::kAll) ==
        shapes({{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 8}, {3, 8}, {4, 8}}));
}

TEST_CASE("the small power-of-two space stops at 4 hosts", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:8");
  CHECK(submesh_shapes(c, SubmeshSpace::kSmallPowerOfTwo) ==
        shapes({{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 8}, {4, 8}}));
  CHECK(submesh_shapes(c, SubmeshSpace::kPowerOfTwo) ==
        shapes({{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 8}, {4, 8}, {8, 8}}));
  CHECK(submesh_shapes(cluster("cpu:1x2"), SubmeshSpace::kAll) == shapes({{1, 1}, {1, 2}}));
}

TEST_CASE("shapes print as tuples", "[mesh]") {
  CHECK(SubmeshShape{1, 4}.to_string() == "(1, 4)");
  CHECK(logical_mesh(2, 4).to_string() == "(2, 4)");
  CHECK(SubmeshShape{2, 8}.num_devices() == 16);
}

TEST_CASE("on two p3 hosts, a (2, 8) mesh crosses hosts on axis 0 only", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:2");
  Expected<LogicalMesh> m = make_logical_mesh(c, {2, 8}, 2, 8);
  REQUIRE(m.has_value());
  // axis 0 groups {i1, 8 + i1} join the two hosts: 8 of them leave each host at once and share
  // its network link (beta = 8 / bandwidth); axis 1 groups are whole hosts.
  CHECK(m->alpha[0] == c.inter_host.latency.value());
  CHECK(m->beta[0] == 8.0 / c.inter_host.bandwidth);
  CHECK(m->alpha[1] == c.intra_host.latency.value());
  CHECK(m->beta[1] == 1.0 / c.intra_host.bandwidth);
}

TEST_CASE("a (16, 1) mesh over two hosts is inter-host on axis 0 and free on axis 1", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:2");
  Expected<LogicalMesh> m = make_logical_mesh(c, {2, 8}, 16, 1);
  REQUIRE(m.has_value());
  CHECK(m->alpha[0] == c.inter_host.latency.value());
  CHECK(m->beta[0] == 1.0 / c.inter_host.bandwidth);
  CHECK(m->alpha[1] == 0.0);
  CHECK(m->beta[1] == 0.0);
}

TEST_CASE("a logical mesh inside one host uses the intra-host link on both axes", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:2");
  Expected<LogicalMesh> m = make_logical_mesh(c, {1, 8}, 2, 4);
  REQUIRE(m.has_value());
  for (int axis = 0; axis < 2; ++axis) {
    CHECK(m->alpha[axis] == c.intra_host.latency.value());
    CHECK(m->beta[axis] == 1.0 / c.intra_host.bandwidth);
  }
  Expected<LogicalMesh> flat = make_logical_mesh(c, {1, 8}, 1, 8);
  REQUIRE(flat.has_value());
  CHECK(flat->alpha[0] == 0.0);
  CHECK(flat->beta[0] == 0.0);
  CHECK(flat->beta[1] == 1.0 / c.intra_host.bandwidth);
}

TEST_CASE("an axis whose groups straddle a host boundary pays the inter-host link", "[mesh]") {
  // 3 hosts x 8 viewed as (8, 3): axis 1 groups {6, 7, 8} and {15, 16, 17} straddle hosts, and
  // host 1 carries both (beta = 2 / bandwidth); the 3 axis-0 groups each span all three hosts.
  const ClusterSpec c = cluster("p3.16xlarge:3");
  Expected<LogicalMesh> m = make_logical_mesh(c, {3, 8}, 8, 3);
  REQUIRE(m.has_value());
  CHECK(m->beta[1] == 2.0 / c.inter_host.bandwidth);
  CHECK(m->beta[0] == 3.0 / c.inter_host.bandwidth);
  // (6, 4): axis 1 groups are half hosts; the 4 axis-0 groups all cross every host.
  Expected<LogicalMesh> halves = make_logical_mesh(c, {3, 8}, 6, 4);
  REQUIRE(halves.has_value());
  CHECK(halves->beta[1] == 1.0 / c.intra_host.bandwidth);
  CHECK(halves->beta[0] == 4.0 / c.inter_host.bandwidth);
}

TEST_CASE("a logical mesh must have the submesh's device count", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:2");
  Expected<LogicalMesh> bad = make_logical_mesh(c, {2, 8}, 4, 8);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().message().find("(4, 8)") != std::string::npos);
  CHECK_FALSE(make_logical_mesh(c, {2, 8}, 0, 16).has_value());
  CHECK_FALSE(make_logical_mesh(c, {4, 8}, 4, 8).has_value());  // only 2 hosts
}

TEST_CASE("logical meshes of a submesh put at most one host's devices on axis 1", "[mesh]") {
  const ClusterSpec c = cluster("p3.16xlarge:2");
  std::vector<std::pair<int64_t, int64_t>> got;
  for (const LogicalMesh& m : logical_meshes(c, {2, 8})) got.emplace_back(m.shape[0], m.shape[1]);
  CHECK(got == std::vector<std::pair<int64_t, int64_t>>{{16, 1}, {8, 2}, {4, 4}, {2, 8}});
  got.clear();
  for (const LogicalMesh& m : logical_meshes(c, {1, 4})) got.emplace_back(m.shape[0], m.shape[1]);
  CHECK(got == std::vector<std::pair<int64_t, int64_t>>{{4, 1}, {2, 2}, {1, 4}});
  got.clear();
  for (const LogicalMesh& m : logical_meshes(c, {3, 8})) {
    got.emplace_back(m.shape[0], m.shape[1]);
  }
  CHECK(got.empty());  // the cluster has only 2 hosts
  const ClusterSpec three = cluster("p3.16xlarge:3");
  got.clear();
  for (const LogicalMesh& m : logical_meshes(three, {3, 8})) {
    got.emplace_back(m.shape[0], m.shape[1]);
  }
  CHECK(got ==
        std::vector<std::pair<int64_t, int64_t>>{{24, 1}, {12, 2}, {8, 3}, {6, 4}, {4, 6}, {3, 8}});
}

TEST_CASE("logical_mesh keeps the alpha and beta it is given", "[mesh]") {
  const LogicalMesh m = logical_mesh(2, 4, 1.0, 2.0, 3.0, 4.0);
  CHECK(m.size(0) == 2);
  CHECK(m.size(1) == 4);
  CHECK(m.num_devices() == 8);
  CHECK(m.alpha[0] == 1.0);
  CHECK(m.beta[0] == 2.0);
  CHECK(m.alpha[1] == 3.0);
  CHECK(m.beta[1] == 4.0);
  const LogicalMesh d = logical_mesh(1, 2);
  CHECK(d.alpha[1] == 1e-5);
  CHECK(d.beta[1] == 1e-9);
}

}  // namespace
}  // namespace meshpipe::mesh

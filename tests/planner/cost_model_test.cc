// Tests of the analytic and profiled cost models.
#include "planner/cost_model.h"

#include <catch2/catch.hpp>

namespace meshpipe::planner {
namespace {

const mesh::DeviceSpec kDevice{"V100", Bytes(int64_t{16} << 30), 15.7e12, 125e12, 900e9};

TEST_CASE("compute time is a roofline: the larger of FLOPs / peak and bytes / bandwidth",
          "[planner]") {
  AnalyticCostModel m(kDevice);
  // 1.25e12 FLOP of f16 matmul at 125 TFLOP/s = 10 ms; 9 GB at 900 GB/s = 10 ms too.
  CHECK(m.compute({Flops(1.25e12), Bytes(0), DType::kF16, true}).value() == Approx(0.01));
  CHECK(m.compute({Flops(0), Bytes(9'000'000'000), DType::kF16, true}).value() == Approx(0.01));
  // Elementwise f16 work runs at the f32 (non-tensor-core) peak: 15.7 GFLOP -> 1 ms.
  CHECK(m.compute({Flops(15.7e9), Bytes(0), DType::kF16, false}).value() == Approx(1e-3));
}

TEST_CASE("analytic collectives follow alpha-beta and resharding sums its steps", "[planner]") {
  AnalyticCostModel m(kDevice);
  const auto mesh = mesh::logical_mesh(4, 2, 10e-6, 1e-9, 1e-6, 1e-10);
  // all-reduce of 1 MB over axis 0 (n = 4): 10us + 1e-9 * 2 * 3/4 * 1e6 + 2e-9 = 1.51 ms + tie.
  CHECK(m.collective(mesh::CollectiveKind::kAllReduce, 1'000'000, mesh, 0).value() ==
        Approx(10e-6 + 1.5e-3 + 2e-9));
  // S0,R -> R,R of a [1000, 250] f32 tensor: one all-gather over axis 0 of the full 1 MB.
  auto r = m.resharding(Shape{1000, 250}, DType::kF32, *mesh::parse_sharding("S0,R"),
                        *mesh::parse_sharding("R,R"), mesh);
  REQUIRE(r.has_value());
  CHECK(r->value() == Approx(10e-6 + 1e-9 * 0.75 * 1e6 + 3e-9));
  auto same = m.resharding(Shape{8, 8}, DType::kF32, *mesh::parse_sharding("S0,S1"),
                           *mesh::parse_sharding("S0,S1"), mesh);
  REQUIRE(same.has_value());
  CHECK(same->value() == 0.0);
}

TEST_CASE("interpolation is linear between points and extrapolates from the nearest two",
          "[planner]") {
  const std::vector<std::pair<double, double>> pts{{0, 1}, {10, 2}, {20, 4}};
  CHECK(interpolate(pts, 5) == Approx(1.5));
  CHECK(interpolate(pts, 15) == Approx(3.0));
  CHECK(interpolate(pts, 30) == Approx(6.0));
  CHECK(interpolate({{100, 2}}, 50) == Approx(1.0));
}

TEST_CASE("a profile database overrides the analytic model where it has data", "[planner]") {
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:2");
  auto db = parse_profile_database(R"({
    "gemm": {"f16": [[0, 0], [1e12, 0.02]]},
    "collectives": [
      {"kind": "all-reduce", "group": 8, "link": "intra", "points": [[0, 1e-5], [1e6, 3e-5]]}
    ]})");
  REQUIRE(db.has_value());
  ProfiledCostModel m(cluster, *db);
  AnalyticCostModel a(cluster.device);
  // Measured GEMM: 5e11 FLOP -> 10 ms (the analytic f16 peak would say 4 ms).
  CHECK(m.compute({Flops(5e11), Bytes(0), DType::kF16, true}).value() == Approx(0.01));
  CHECK(m.compute({Flops(5e11), Bytes(0), DType::kF32, true}).value() ==
        a.compute({Flops(5e11), Bytes(0), DType::kF32, true}).value());
  // One host, 8 devices on axis 1: the intra-host table; all-gather falls back to all-reduce / 2.
  const auto mesh = *mesh::make_logical_mesh(cluster, {1, 8}, 1, 8);
  CHECK(m.collective(mesh::CollectiveKind::kAllReduce, 500'000, mesh, 1).value() == Approx(2e-5));
  CHECK(m.collective(mesh::CollectiveKind::kAllGather, 500'000, mesh, 1).value() == Approx(1e-5));
  // No table for all-to-all: the analytic model answers.
  CHECK(m.collective(mesh::CollectiveKind::kAllToAll, 500'000, mesh, 1).value() ==
        a.collective(mesh::CollectiveKind::kAllToAll, 500'000, mesh, 1).value());
}

TEST_CASE("a bad profile database is rejected with the field named", "[planner]") {
  CHECK(parse_profile_database("{").status().message().find("not valid JSON") != std::string::npos);
  CHECK(parse_profile_database(R"({"gemm": {"f99": [[1, 1]]}})")
            .status()
            .message()
            .find("gemm.f99") != std::string::npos);
  CHECK(parse_profile_database(R"({"collectives": [{"kind": "broadcast", "group": 2,
        "link": "intra", "points": [[1, 1]]}]})")
            .status()
            .message()
            .find("broadcast") != std::string::npos);
  CHECK(parse_profile_database(R"({"collectives": [{"kind": "all-reduce", "group": 2,
        "link": "intra", "points": [[1, -1]]}]})")
            .status()
            .message()
            .find("collectives[0].points") != std::string::npos);
  CHECK(load_profile_database("/nonexistent/profile.json").status().code() == Errc::kIo);
}

}  // namespace
}  // namespace meshpipe::planner

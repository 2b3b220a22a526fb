// Tests of the analytic and profiled cost models.
#include "planner/cost_model.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace meshpipe::planner {
namespace {

const mesh::DeviceSpec kDevice{"V100", Bytes(int64_t{16} << 30), 15.7e12, 125e12, 900e9};

TEST_CASE("compute time is a roofline: the larger of FLOPs / peak and bytes / bandwidth",
          "[planner]") {
  AnalyticCostModel m(kDevice);
  // 1.25e12 FLOP of f16 matmul at 125 TFLOP/s = 10 ms; 9 GB at 900 GB/s = 10 ms too.
  CHECK(m.compute({Flops(1.25e12), Bytes(0), DType::kF16, true, {}, {}}).value() == Approx(0.01));
  CHECK(m.compute({Flops(0), Bytes(9'000'000'000), DType::kF16, true, {}, {}}).value() ==
        Approx(0.01));
  // Elementwise f16 work runs at the f32 (non-tensor-core) peak: 15.7 GFLOP -> 1 ms.
  CHECK(m.compute({Flops(15.7e9), Bytes(0), DType::kF16, false, {}, {}}).value() == Approx(1e-3));
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

TEST_CASE("a measured profile overrides the analytic model where it has data", "[planner]") {
  mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:2");
  auto profile = mesh::parse_device_profile(R"({
    "gemm": {"f16": [[0, 0], [1e12, 0.02]]},
    "collectives": [
      {"kind": "all-reduce", "group": 8, "link": "intra", "points": [[0, 1e-5], [1e6, 3e-5]]}
    ]})");
  REQUIRE(profile.has_value());
  cluster.profile = std::make_shared<const mesh::DeviceProfile>(*profile);
  ProfiledCostModel m(cluster);
  AnalyticCostModel a(cluster.device);
  // Measured GEMM: 5e11 FLOP -> 10 ms (the analytic f16 peak would say 4 ms).
  CHECK(m.compute({Flops(5e11), Bytes(0), DType::kF16, true, {}, {}}).value() == Approx(0.01));
  CHECK(m.compute({Flops(5e11), Bytes(0), DType::kF32, true, {}, {}}).value() ==
        a.compute({Flops(5e11), Bytes(0), DType::kF32, true, {}, {}}).value());
  // One host, 8 devices on axis 1: the intra-host table; all-gather falls back to all-reduce / 2.
  const auto mesh = *mesh::make_logical_mesh(cluster, {1, 8}, 1, 8);
  CHECK(m.collective(mesh::CollectiveKind::kAllReduce, 500'000, mesh, 1).value() == Approx(2e-5));
  CHECK(m.collective(mesh::CollectiveKind::kAllGather, 500'000, mesh, 1).value() == Approx(1e-5));
  // No table for all-to-all: the analytic model answers; nor for transfers.
  CHECK(m.collective(mesh::CollectiveKind::kAllToAll, 500'000, mesh, 1).value() ==
        a.collective(mesh::CollectiveKind::kAllToAll, 500'000, mesh, 1).value());
  CHECK(m.transfer(1'000'000, cluster.inter_host, true).value() == Approx(20e-6 + 1e6 / 3.125e9));
  CHECK(m.concurrency_factor() == 1.0);
}

TEST_CASE("a profile's memory-bound table, overhead, concurrency and transfers price ops",
          "[planner]") {
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
  mesh::DeviceProfile p;
  p.op_overhead_seconds = 5e-6;
  p.concurrency = {{1, 1.0}, {2, 1.5}, {8, 4.5}};  // 4 devices share the cores: 2.5
  p.gemm[DType::kF32] = {{0, 0}, {2e9, 0.1}};
  p.memory_bound[DType::kF32] = {{0, 1e-6}, {1e6, 1e-4}};
  p.transfers[false] = {{0, 2e-5}, {1e6, 1.2e-4}};
  cluster.profile = std::make_shared<const mesh::DeviceProfile>(p);
  ProfiledCostModel m(cluster);
  CHECK(m.concurrency_factor() == Approx(2.5));
  // A 1 GFLOP matmul: 50 ms measured alone, x 2.5 shared, + 5 us.
  CHECK(m.compute({Flops(1e9), Bytes(12'000'000), DType::kF32, true, {}, {}}).value() ==
        Approx(0.05 * 2.5 + 5e-6));
  // An elementwise op moving 0.5 MB: 50.5 us alone, x 2.5, + 5 us; its FLOPs do not matter.
  CHECK(m.compute({Flops(1e9), Bytes(500'000), DType::kF32, false, {}, {}}).value() ==
        Approx(50.5e-6 * 2.5 + 5e-6));
  // A tiny op costs about the overhead.
  CHECK(m.compute({Flops(0), Bytes(0), DType::kF32, false, {}, {}}).value() ==
        Approx(1e-6 * 2.5 + 5e-6));
  CHECK(m.transfer(500'000, cluster.intra_host, false).value() == Approx(7e-5));
  // A kind with a measured factor: the table's time times the factor; other kinds as before.
  p.kind_factors[OpKind::kGelu] = 8.0;
  cluster.profile = std::make_shared<const mesh::DeviceProfile>(p);
  ProfiledCostModel g(cluster);
  CHECK(g.compute({Flops(0), Bytes(500'000), DType::kF32, false, {}, OpKind::kGelu}).value() ==
        Approx(50.5e-6 * 8.0 * 2.5 + 5e-6));
  CHECK(g.compute({Flops(0), Bytes(500'000), DType::kF32, false, {}, OpKind::kAdd}).value() ==
        Approx(50.5e-6 * 2.5 + 5e-6));
  // Fewer devices computing at once: the table there over its value at all 4 (2.5).
  CHECK(m.sharing(1) == Approx(1.0 / 2.5));
  CHECK(m.sharing(2) == Approx(1.5 / 2.5));
  CHECK(m.sharing(3) == Approx(2.0 / 2.5));  // between (2, 1.5) and (8, 4.5)
  CHECK(m.sharing(4) == Approx(1.0));
  CHECK(m.sharing(8) == 1.0);  // never slower than priced
  // A GPU cluster's devices do not share cores: no slowdown.
  mesh::ClusterSpec gpus = *mesh::cluster_preset("p3.16xlarge:1");
  gpus.profile = cluster.profile;
  CHECK(ProfiledCostModel(gpus).concurrency_factor() == 1.0);
  CHECK(ProfiledCostModel(gpus).sharing(1) == 1.0);
  CHECK(AnalyticCostModel(cluster.device).sharing(1) == 1.0);
}

TEST_CASE("a profile's GEMM grid prices a dot by its shape, interpolated in log size",
          "[planner]") {
  mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x1");
  mesh::DeviceProfile p;
  // Rate 1 GFLOP/s at m = 16, 4 GFLOP/s at m = 256, whatever n and k.
  for (double m : {16.0, 256.0}) {
    for (double n : {16.0, 256.0}) {
      for (double k : {16.0, 256.0}) {
        const double rate = m == 16 ? 1e9 : 4e9;
        p.gemm_grid[DType::kF32].push_back({m, n, k, 2 * m * n * k / rate});
      }
    }
  }
  p.gemm[DType::kF32] = {{0, 0}, {1e9, 100.0}};  // far off: the grid must win for dots
  cluster.profile = std::make_shared<const mesh::DeviceProfile>(p);
  ProfiledCostModel model(cluster);
  const auto dot = [&](int64_t b, int64_t m, int64_t n, int64_t k) {
    ComputeWork w{Flops(2.0 * b * m * n * k), Bytes(0), DType::kF32, true, {b, m, n, k}, {}};
    return model.compute(w).value();
  };
  CHECK(dot(1, 16, 16, 16) == Approx(2.0 * 16 * 16 * 16 / 1e9));
  CHECK(dot(1, 256, 100, 30) == Approx(2.0 * 256 * 100 * 30 / 4e9));
  // m = 64 is halfway between 16 and 256 in log2: 2.5 GFLOP/s; a batch of 3 takes 3 times.
  CHECK(dot(3, 64, 16, 16) == Approx(3 * 2.0 * 64 * 16 * 16 / 2.5e9));
  // Beyond the grid: clamped to the nearest rate.
  CHECK(dot(1, 4096, 16, 16) == Approx(2.0 * 4096 * 16 * 16 / 4e9));
  CHECK(dot(1, 2, 16, 16) == Approx(2.0 * 2 * 16 * 16 / 1e9));
  // A conv (no GEMM dims) uses the FLOPs table; an incomplete grid is not used.
  CHECK(model.compute({Flops(1e9), Bytes(0), DType::kF32, true, {}, {}}).value() == Approx(100.0));
  p.gemm_grid[DType::kF32].pop_back();
  cluster.profile = std::make_shared<const mesh::DeviceProfile>(p);
  CHECK(ProfiledCostModel(cluster)
            .compute({Flops(2.0 * 16 * 16 * 16), Bytes(0), DType::kF32, true, {1, 16, 16, 16}, {}})
            .value() == Approx(2.0 * 16 * 16 * 16 / 1e9 * 100.0));
}

}  // namespace
}  // namespace meshpipe::planner

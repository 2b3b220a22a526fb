// Tests of profile_devices (train/device_profiler.h) and of plans priced with a profile.
#include "train/device_profiler.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include "comm/communicator.h"
#include "comm/transport.h"
#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "mesh/cluster.h"
#include "mesh/device_profile.h"
#include "runtime/in_process_run.h"
#include "train/job.h"

namespace meshpipe::train {
namespace {

mesh::ClusterSpec cpu(const std::string& preset) {
  auto c = mesh::cluster_preset(preset);
  REQUIRE(c.has_value());
  return *c;
}

TEST_CASE("a quick profile of a cpu cluster measures every table the cost model reads",
          "[train][profile]") {
  DeviceProfileOptions o;
  o.quick = true;
  std::set<std::string> phases;
  o.progress = [&](const std::string& phase, int64_t done, int64_t total) {
    CHECK(done >= 0);
    CHECK(done <= total);
    phases.insert(phase);
  };
  auto p = profile_devices(cpu("cpu:1x2"), o);
  INFO(p.status().to_string());
  REQUIRE(p.has_value());
  CHECK(phases.size() >= 6);
  CHECK(p->source.find("cpu:1x2") != std::string::npos);
  // GEMMs: a larger one takes longer than the smallest, every time is positive.
  const mesh::ProfileTable& gemm = p->gemm.at(DType::kF32);
  REQUIRE(gemm.size() >= 3);
  for (size_t i = 1; i < gemm.size(); ++i) CHECK(gemm[i].second > 0);
  CHECK(gemm.back().second > gemm[1].second);
  const mesh::ProfileTable& mem = p->memory_bound.at(DType::kF32);
  REQUIRE(mem.size() >= 2);
  CHECK(mem.back().second > mem.front().second);
  // Two devices: a point for two at once, the slowdown positive.
  REQUIRE(p->concurrency.size() == 2);
  CHECK(p->concurrency[1].first == 2.0);
  CHECK(p->concurrency[1].second > 0);
  // Every collective for a group of 2, on both links; transfers on both links.
  for (auto kind : {mesh::CollectiveKind::kAllReduce, mesh::CollectiveKind::kAllGather,
                    mesh::CollectiveKind::kReduceScatter, mesh::CollectiveKind::kAllToAll}) {
    for (bool inter : {false, true}) {
      const auto it = p->collectives.find({kind, 2, inter});
      REQUIRE(it != p->collectives.end());
      CHECK(it->second.size() == 2);
      CHECK(it->second.back().second > 0);
    }
  }
  CHECK(p->transfers.count(false) == 1);
  CHECK(p->transfers.count(true) == 1);
  // The GEMM grid is complete (2 sizes per dim in quick mode); kind factors stay in range.
  CHECK(p->gemm_grid.at(DType::kF32).size() == 8);
  for (const auto& [kind, f] : p->kind_factors) {
    CHECK(f >= 0.05);
    CHECK(f <= 1000.0);
  }
  CHECK(p->op_overhead_seconds >= 0.0);
  CHECK(p->op_overhead_seconds < 1e-3);
  // What it writes reads back the same.
  auto back = mesh::parse_device_profile(mesh::device_profile_to_json(*p));
  REQUIRE(back.has_value());
  CHECK(*back == *p);
}

TEST_CASE("a Gloo or UCX profile measures groups inside a host and across hosts as a job runs them",
          "[train][profile]") {
  // cpu:2x2 with one meshpipe-node per host: a group of 2 inside a host runs in shared memory,
  // across hosts over Gloo (UCX), a group of 4 in two levels; none of 4 fits inside a host.
  const runtime::CollectiveBackend backend =
      GENERATE(runtime::CollectiveBackend::kGloo, runtime::CollectiveBackend::kUcx);
  const std::string name = runtime::collective_backend_name(backend);
  CAPTURE(name);
  if ((backend == runtime::CollectiveBackend::kGloo && !comm::gloo_available()) ||
      (backend == runtime::CollectiveBackend::kUcx && !comm::ucx_available())) {
    WARN("built without " << name);
    return;
  }
  setenv("UCX_NET_DEVICES", "lo", 0);
  DeviceProfileOptions o;
  o.quick = true;
  o.collectives = backend;
  std::set<std::string> phases;
  o.progress = [&](const std::string& phase, int64_t, int64_t) { phases.insert(phase); };
  auto p = profile_devices(cpu("cpu:2x2"), o);
  INFO(p.status().to_string());
  REQUIRE(p.has_value());
  for (auto kind : {mesh::CollectiveKind::kAllReduce, mesh::CollectiveKind::kAllGather,
                    mesh::CollectiveKind::kReduceScatter, mesh::CollectiveKind::kAllToAll}) {
    CHECK(p->collectives.count({kind, 2, false}) == 1);
    CHECK(p->collectives.count({kind, 2, true}) == 1);
    CHECK(p->collectives.count({kind, 4, true}) == 1);
    CHECK(p->collectives.count({kind, 4, false}) == 0);
  }
  CHECK(phases.count("collectives (" + name + ", two levels across hosts)") == 1);
  // Across hosts a collective costs more than none and less than a second.
  for (const auto& [key, table] : p->collectives) {
    for (const auto& [bytes, seconds] : table) {
      CHECK(seconds > 0.0);
      CHECK(seconds < 1.0);
    }
  }
}

TEST_CASE("only cpu clusters can be profiled here", "[train][profile]") {
  DeviceProfileOptions o;
  o.quick = true;
  auto p = profile_devices(cpu("p3.16xlarge:1"), o);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.status().code() == Errc::kInvalidArgument);
  CHECK(p.status().message().find("V100") != std::string::npos);
  CHECK(p.status().message().find("cpu") != std::string::npos);
}

TEST_CASE("a plan priced with a profile pays its op overhead once per op of the step",
          "[train][profile]") {
  // One device, one micro-batch: every op of the training graph runs once per step, so an
  // overhead of h seconds per op adds exactly h x ops to the predicted step.
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  JobSpec job;
  job.model = *spec;
  job.global_batch = 4;
  PlanRequest request;
  request.micro_batches = 1;
  mesh::DeviceProfile base;
  base.gemm[DType::kF32] = {{0, 0}, {1e9, 0.01}};
  base.memory_bound[DType::kF32] = {{0, 1e-6}, {1e8, 0.01}};
  mesh::DeviceProfile slow = base;
  slow.op_overhead_seconds = 1e-4;
  mesh::ClusterSpec a = cpu("cpu:1x1");
  a.profile = std::make_shared<const mesh::DeviceProfile>(base);
  mesh::ClusterSpec b = cpu("cpu:1x1");
  b.profile = std::make_shared<const mesh::DeviceProfile>(slow);
  auto pa = plan_job(job, a, request);
  auto pb = plan_job(job, b, request);
  REQUIRE(pa.has_value());
  REQUIRE(pb.has_value());
  auto tg = graph::models::zoo_training_graph(*spec, 4, job.optimizer);
  REQUIRE(tg.has_value());
  const double ops = static_cast<double>(tg->graph.num_ops());
  CHECK(pb->step_time - pa->step_time == Approx(1e-4 * ops).epsilon(1e-6));
  // The plan keeps the profile it was priced with (simulate and train read it from the file).
  REQUIRE(pb->cluster.profile != nullptr);
  CHECK(*pb->cluster.profile == slow);
}

TEST_CASE("with_profile attaches a profile file and names a bad one", "[train][profile]") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "meshpipe_profile_test";
  std::filesystem::create_directories(dir);
  const std::string good = (dir / "good.json").string();
  const std::string bad = (dir / "bad.json").string();
  std::ofstream(good) << R"({"op_overhead_seconds": 2e-6, "gemm": {"f32": [[0, 0], [1, 1]]}})";
  std::ofstream(bad) << R"({"gemm": {"f32": [[0, -1]]}})";
  auto c = with_profile(cpu("cpu:2x2"), good);
  REQUIRE(c.has_value());
  REQUIRE(c->profile != nullptr);
  CHECK(c->profile->op_overhead_seconds == 2e-6);
  auto e = with_profile(cpu("cpu:2x2"), bad);
  REQUIRE_FALSE(e.has_value());
  CHECK(e.status().message().find("bad.json") != std::string::npos);
  CHECK(e.status().message().find("gemm.f32[0]") != std::string::npos);
  CHECK(with_profile(cpu("cpu:2x2"), (dir / "missing.json").string()).status().code() ==
        Errc::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace meshpipe::train

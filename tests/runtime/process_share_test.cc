// A job whose devices live in several processes: each process runs an InProcessRun for its own
// devices, with Gloo groups that meet through a shared rendezvous store and UCX endpoints that
// connect through exchanged addresses. Two such "processes" (here two runs in one test process,
// each with its own UCX context) train like one device, for a mesh that spans both and for a
// pipeline whose stages sit in different ones.
#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/executor.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;

// The address exchange a control plane performs: every party publishes, all get everything.
class Exchange {
 public:
  explicit Exchange(int parties) : parties_(parties) {}
  Expected<std::map<int32_t, std::string>> publish(const std::map<int32_t, std::string>& mine) {
    std::unique_lock<std::mutex> lock(mu_);
    all_.insert(mine.begin(), mine.end());
    ++published_;
    cv_.notify_all();
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return published_ == parties_; })) {
      return make_error(Errc::kTimeout, "{} of {} processes published", published_, parties_);
    }
    return all_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int32_t, std::string> all_;
  int parties_;
  int published_ = 0;
};

std::vector<double> two_process_losses(const planner::Plan& plan, const graph::Graph& g, int steps,
                                       CollectiveBackend collectives) {
  auto prog = lower(plan, g);
  REQUIRE(prog.has_value());
  auto store = comm::make_in_process_store();
  auto exchange = std::make_shared<Exchange>(2);
  const std::vector<std::vector<int32_t>> split = {{0, 1}, {2, 3}};
  std::vector<std::unique_ptr<InProcessRun>> runs(2);
  std::vector<Status> created(2);
  std::vector<std::thread> threads;
  for (size_t p = 0; p < 2; ++p) {
    threads.emplace_back([&, p] {
      auto share = std::make_shared<ProcessShare>();
      share->local_devices = split[p];
      share->store = store;
      share->exchange = [exchange](const std::map<int32_t, std::string>& mine) {
        return exchange->publish(mine);
      };
      InProcessRunOptions ro;
      ro.collectives = collectives;
      ro.transport = TransportKind::kUcx;
      ro.timeout = std::chrono::milliseconds(20000);
      ro.share = share;
      auto r = InProcessRun::create(*prog, g, ro);
      if (r.has_value()) {
        runs[p] = std::move(*r);
      } else {
        created[p] = r.status();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& s : created) {
    if (!s.is_ok()) FAIL(s.to_string());
  }
  for (auto& r : runs) REQUIRE(r->initialize(5).is_ok());
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", 8);
  auto data = SyntheticData::create(whole.graph, whole.inputs, 5);
  REQUIRE(data.has_value());
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    auto mbs =
        split_micro_batches(whole.graph, data->next_batch(), prog->inputs, prog->micro_batches);
    REQUIRE(mbs.has_value());
    std::vector<std::optional<Expected<RunStepResult>>> res(2);
    std::vector<std::thread> workers;
    for (size_t p = 0; p < 2; ++p) {
      workers.emplace_back([&, p] { res[p] = runs[p]->step(*mbs); });
    }
    for (auto& w : workers) w.join();
    int reporters = 0;
    for (auto& r : res) {
      if (!(*r).has_value()) FAIL((*r).status().to_string());
      if (!(*r)->losses.empty()) {
        losses.push_back((*r)->loss);
        ++reporters;
      }
    }
    CHECK(reporters == 1);  // the process with the loss device
  }
  return losses;
}

TEST_CASE("two processes with Gloo or UCX collectives and UCX transfers train like one device",
          "[process]") {
  const CollectiveBackend collectives = GENERATE(CollectiveBackend::kUcx, CollectiveBackend::kGloo);
  CAPTURE(collective_backend_name(collectives));
  if ((collectives == CollectiveBackend::kGloo && !comm::gloo_available()) ||
      !comm::ucx_available()) {
    WARN("built without Gloo or UCX");
    return;
  }
  setenv("UCX_NET_DEVICES", "lo", 0);
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  planner::AnalyticCostModel cost(cluster->device);
  planner::PlannerOptions po;
  po.clustering.num_layers = 4;
  const auto want = testing::single_device_losses("gpt-tiny", 8, 4, 5, 5);
  SECTION("a (2, 2) mesh spanning both processes") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
    auto plan = planner::grid_plan(tg.graph, *cluster, cost, po, 1, {2, 2, 1, Mode::kFree});
    REQUIRE(plan.has_value());
    const auto got = two_process_losses(*plan, tg.graph, 4, collectives);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(std::abs(got[i] - want[i]) <= 1e-4 * want[i]);
  }
  SECTION("data parallel over 4 devices, 2 in each process (two levels)") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
    auto plan = planner::grid_plan(tg.graph, *cluster, cost, po, 1, {4, 1, 1, Mode::kFree});
    REQUIRE(plan.has_value());
    const auto got = two_process_losses(*plan, tg.graph, 4, collectives);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(std::abs(got[i] - want[i]) <= 1e-4 * want[i]);
  }
  SECTION("a pipeline with one stage in each process") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
    auto plan = planner::grid_plan(tg.graph, *cluster, cost, po, 2, {1, 2, 2, Mode::kFree});
    REQUIRE(plan.has_value());
    REQUIRE(plan->stages[0].devices == std::vector<int32_t>{0, 1});
    const auto got = two_process_losses(*plan, tg.graph, 4, collectives);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(std::abs(got[i] - want[i]) <= 1e-4 * want[i]);
  }
}

TEST_CASE("processes that lower the same plan get the same program fingerprint", "[process]") {
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  planner::AnalyticCostModel cost(cluster->device);
  planner::PlannerOptions po;
  po.clustering.num_layers = 4;
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  auto pipe = planner::grid_plan(tg.graph, *cluster, cost, po, 2, {1, 2, 2, Mode::kFree});
  auto dp = planner::grid_plan(tg.graph, *cluster, cost, po, 2, {4, 1, 1, Mode::kFree});
  REQUIRE(pipe.has_value());
  REQUIRE(dp.has_value());
  auto a = lower(*pipe, tg.graph);
  auto b = lower(*pipe, tg.graph);
  auto c = lower(*dp, tg.graph);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  REQUIRE(c.has_value());
  const uint64_t fa = program_fingerprint(*a);
  CHECK(fa == program_fingerprint(*b));
  CHECK(fa != program_fingerprint(*c));
  // One message tag, one peer, one buffer shape: each is a different program.
  for (int change = 0; change < 3; ++change) {
    Program p = *b;
    bool changed = false;
    for (DeviceProgram& d : p.devices) {
      for (Instruction& ins : d.instructions) {
        if (changed || (change < 2 && ins.code != Opcode::kSend)) continue;
        if (change == 0) ins.tag += 1;
        if (change == 1) ins.peer = (ins.peer + 1) % 4;
        if (change == 2) continue;
        changed = true;
      }
      if (change == 2 && !changed && !d.buffers.empty()) {
        d.buffers[0].dtype = DType::kF16;
        changed = true;
      }
    }
    REQUIRE(changed);
    CHECK(program_fingerprint(p) != fa);
  }
}

TEST_CASE("a share without Gloo and UCX is rejected", "[process]") {
  InProcessRunOptions ro;
  ro.share = std::make_shared<ProcessShare>();
  CHECK_FALSE(ro.validate().is_ok());
}

}  // namespace
}  // namespace meshpipe::runtime

// The actor runtime trains like the thread runner and a single device, plans through the
// planner actor, and turns a failure anywhere into an error at the driver naming device,
// instruction and cause, within seconds and without hanging.
#include "actors/actor_runtime.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "graph/models/zoo.h"
#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/executor.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"
#include "train/job.h"
#include "train/session.h"

namespace meshpipe::actors {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
using runtime::testing::zoo_training_graph;

// 2 stages x (1, 2) devices, 2 micro-batches.
std::optional<planner::Plan> two_stages_of_two(const graph::Graph& g,
                                               const mesh::ClusterSpec& cluster) {
  planner::AnalyticCostModel cost(cluster.device);
  planner::PlannerOptions popt;
  popt.clustering.num_layers = 4;
  auto plan = planner::grid_plan(g, cluster, cost, popt, 2, {1, 2, 2, Mode::kFree});
  if (!plan.has_value()) FAIL(plan.status().to_string());
  return *plan;
}

train::JobSpec gpt_tiny_job(int64_t batch, uint64_t seed) {
  train::JobSpec job;
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  job.model = *spec;
  job.global_batch = batch;
  job.seed = seed;
  return job;
}

// `steps` steps of `job` under `plan`, run by the actor runtime's stage actors.
Expected<train::SessionSummary> train_through_actors(ActorRuntime& rt, const train::JobSpec& job,
                                                     const planner::Plan& plan, int64_t steps,
                                                     const train::LocalJobOptions& lo = {}) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<ActorRunner> runner, rt.start(job, plan, lo));
  train::SessionOptions so;
  so.steps = steps;
  so.samples_per_step = job.samples_per_step();
  so.tokens_per_step = job.tokens_per_step();
  return train::run_session(*runner, so);
}

TEST_CASE("a job planned by the planner actor and run by stage actors equals one device",
          "[actors]") {
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  auto rt = ActorRuntime::create();
  REQUIRE(rt.has_value());
  const train::JobSpec job = gpt_tiny_job(/*batch=*/8, /*seed=*/21);
  auto plan =
      train::plan_job(job, *cluster, {.micro_batches = 2, .schedule = {}}, (*rt)->planner());
  if (!plan.has_value()) FAIL(plan.status().to_string());
  auto summary = train_through_actors(**rt, job, *plan, 6);
  if (!summary.has_value()) FAIL(summary.status().to_string());
  // One planner actor, one node, one mesh group per stage, one stage actor per device.
  int64_t devices = 0;
  for (const auto& s : plan->stages) devices += static_cast<int64_t>(s.devices.size());
  CHECK((*rt)->actors_started() == 2 + static_cast<int64_t>(plan->stages.size()) + devices);
  const auto want = runtime::testing::single_device_losses("gpt-tiny", 8, 6, 21, 21);
  REQUIRE(summary->losses.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i);
    CHECK(std::abs(summary->losses[i] - want[i]) <= 1e-4 * want[i]);
  }
}

TEST_CASE("a forced pipeline runs through mesh-group and stage actors", "[actors]") {
  graph::TrainingGraph tg = zoo_training_graph("gpt-tiny", 4);
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  auto plan = two_stages_of_two(tg.graph, *cluster);
  plan->model = "gpt-tiny";
  auto rt = ActorRuntime::create();
  REQUIRE(rt.has_value());
  auto summary = train_through_actors(**rt, gpt_tiny_job(/*batch=*/0, /*seed=*/9), *plan, 4);
  if (!summary.has_value()) FAIL(summary.status().to_string());
  const auto want = runtime::testing::single_device_losses("gpt-tiny", 8, 4, 9, 9);
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(std::abs(summary->losses[i] - want[i]) <= 1e-4 * want[i]);
  }
}

TEST_CASE("an injected kernel failure reaches the driver as an error within seconds", "[actors]") {
  graph::TrainingGraph tg = zoo_training_graph("gpt-tiny", 4);
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  auto plan = two_stages_of_two(tg.graph, *cluster);
  // The failing op: a backward matmul of the second stage's first device.
  const int32_t victim = plan->stages[1].devices[0];
  auto prog = runtime::lower(*plan, tg.graph);
  REQUIRE(prog.has_value());
  std::string op;
  for (const runtime::LocalOp& l : prog->devices[static_cast<size_t>(victim)].ops) {
    if (l.op.kind == graph::OpKind::kDot && l.op.phase == graph::OpPhase::kBackward) {
      op = l.op.name;
    }
  }
  REQUIRE(!op.empty());
  ActorOptions ao;
  ao.step_timeout = std::chrono::milliseconds(30000);
  auto rt = ActorRuntime::create(ao);
  REQUIRE(rt.has_value());
  train::LocalJobOptions lo;
  lo.run.interpreter.fail_op = op;
  lo.run.fail_device = victim;
  lo.run.timeout = std::chrono::milliseconds(30000);
  plan->model = "gpt-tiny";
  const auto t0 = std::chrono::steady_clock::now();
  auto summary = train_through_actors(**rt, gpt_tiny_job(/*batch=*/0, /*seed=*/1234), *plan, 3, lo);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_FALSE(summary.has_value());
  const std::string msg = summary.status().to_string();
  INFO(msg);
  CHECK(msg.find("injected kernel failure") != std::string::npos);
  CHECK(msg.find(fmt::format("device {} instruction", victim)) != std::string::npos);
  CHECK(msg.find(op) != std::string::npos);
  CHECK(msg.find("step 1") != std::string::npos);
  CHECK(waited < 10.0);  // far below the 30 s timeouts: the others were stopped
}

TEST_CASE("the planner actor reports planning errors", "[actors]") {
  graph::TrainingGraph tg = zoo_training_graph("gpt-tiny", 8);
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  auto rt = ActorRuntime::create();
  REQUIRE(rt.has_value());
  planner::PlannerOptions po;
  po.global_batch = -1;  // not a batch
  auto plan = (*rt)->plan(tg.graph, *cluster, po);
  REQUIRE_FALSE(plan.has_value());
  CHECK(plan.status().code() == Errc::kInvalidArgument);
  po.global_batch = 0;
  po.micro_batches = 1;
  auto ok = (*rt)->plan(tg.graph, *cluster, po);
  REQUIRE(ok.has_value());
  CHECK(ok->stages.size() >= 1);
}

TEST_CASE("the planner actor loads plan files and names what is wrong in them", "[actors]") {
  graph::TrainingGraph tg = zoo_training_graph("gpt-tiny", 8);
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  auto rt = ActorRuntime::create();
  REQUIRE(rt.has_value());
  planner::PlannerOptions po;
  po.micro_batches = 1;
  auto plan = (*rt)->plan(tg.graph, *cluster, po);
  REQUIRE(plan.has_value());
  const std::string path =
      (std::filesystem::temp_directory_path() / "meshpipe_actor_runtime_test_plan.json").string();
  REQUIRE(planner::save_plan(*plan, path).is_ok());
  auto loaded = (*rt)->load_plan(path);
  std::filesystem::remove(path);
  REQUIRE(loaded.has_value());
  CHECK(*loaded == *plan);
  auto missing = (*rt)->load_plan("no/such/plan.json");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().to_string().find("no/such/plan.json") != std::string::npos);
}

TEST_CASE("actor options are validated", "[actors]") {
  ActorOptions o;
  o.scheduler_threads = 0;
  CHECK_FALSE(ActorRuntime::create(o).has_value());
}

}  // namespace
}  // namespace meshpipe::actors

// The parallel run computes the same training as one device: losses of a lowered plan on
// virtual CPU devices (threads, in-process collectives and transport) against the
// single-device Executor on the whole batch (an independent path: no lowering, no sharding,
// no collectives), for forced plans of each kind and for the planner's own choice.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "planner/planner.h"
#include "runtime/executor.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
constexpr uint64_t kSeed = 11;
constexpr uint64_t kDataSeed = 5;

// Adam's first steps divide by |g|, which turns the rounding differences of a reordered sum
// into sign flips of tiny gradient entries; with batch norm's noisy loss landscape that grows
// past 1e-4 within 10 steps, so the convolutional net trains with SGD and momentum.
graph::OptimizerConfig optimizer_for(const std::string& model) {
  graph::OptimizerConfig opt;
  if (model.rfind("wresnet", 0) == 0) {
    opt.kind = graph::OptimizerConfig::Kind::kSgd;
    opt.lr = 0.05f;
    opt.momentum = 0.9f;
  }
  return opt;
}

graph::TrainingGraph training_graph(const std::string& model, int64_t batch) {
  return testing::zoo_training_graph(model, batch, optimizer_for(model));
}

// Losses of `steps` steps of the Executor on the whole batch.
std::vector<double> single_device_losses(const std::string& model, int64_t batch, int steps) {
  return testing::single_device_losses(model, batch, steps, kSeed, kDataSeed, optimizer_for(model));
}

struct Run {
  std::vector<double> losses;
  Program program;
};

// Losses of the plan's lowered program on threads, fed the same whole batches.
Run parallel_losses(const std::string& model, int64_t batch, const planner::Plan& plan,
                    const graph::Graph& g, int steps, const LowerOptions& lo = {},
                    InProcessRunOptions ro = {}) {
  auto prog = lower(plan, g, lo);
  if (!prog.has_value()) FAIL(prog.status().to_string());
  Run out;
  out.program = *prog;
  auto run = InProcessRun::create(std::move(*prog), g, ro);
  if (!run.has_value()) FAIL(run.status().to_string());
  REQUIRE((*run)->initialize(kSeed).is_ok());
  graph::TrainingGraph whole = training_graph(model, batch);
  auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
  REQUIRE(data.has_value());
  for (int s = 0; s < steps; ++s) {
    auto mbs = split_micro_batches(whole.graph, data->next_batch(), out.program.inputs,
                                   out.program.micro_batches);
    REQUIRE(mbs.has_value());
    auto r = (*run)->step(*mbs);
    if (!r.has_value()) FAIL(r.status().to_string());
    out.losses.push_back(r->loss);
  }
  return out;
}

void expect_same(const std::vector<double>& want, const std::vector<double>& got) {
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i << ": single device " << want[i] << ", parallel " << got[i]);
    CHECK(std::abs(want[i] - got[i]) <= 1e-4 * std::abs(want[i]));
  }
}

struct Case {
  const char* name;
  int64_t micro_batches;
  planner::GridConfig grid;
  const char* schedule;
};

const Case kCases[] = {
    {"data parallel (4, 1)", 1, {4, 1, 1, Mode::kReplicated}, ""},
    {"operator parallel (1, 4)", 1, {1, 4, 1, Mode::kFree}, ""},
    {"ZeRO-2 (4, 1)", 1, {4, 1, 1, Mode::kZero2}, ""},
    {"ZeRO-3 (4, 1)", 1, {4, 1, 1, Mode::kZero3}, ""},
    {"2x2 mesh", 1, {2, 2, 1, Mode::kFree}, ""},
    {"pipeline of 2 stages, 1F1B", 2, {1, 1, 2, Mode::kFree}, "1f1b"},
    {"pipeline of 2 stages, GPipe", 2, {1, 1, 2, Mode::kFree}, "gpipe"},
    {"pipeline of 4 stages, 1F1B", 4, {1, 1, 4, Mode::kFree}, "1f1b"},
    {"2 stages x (1, 2)", 2, {1, 2, 2, Mode::kFree}, "1f1b"},
    {"2 stages x (2, 1) data parallel", 2, {2, 1, 2, Mode::kReplicated}, "gpipe"},
};

// A run of `prog`, initialised, and the first whole batch of `model` split into its
// micro-batches.
std::pair<std::unique_ptr<InProcessRun>, std::vector<std::vector<HostTensor>>> started_run(
    Program prog, const graph::Graph& g, const std::string& model, int64_t batch,
    InProcessRunOptions ro = {}) {
  const int64_t m = prog.micro_batches;
  auto run = InProcessRun::create(std::move(prog), g, ro);
  if (!run.has_value()) FAIL(run.status().to_string());
  REQUIRE((*run)->initialize(kSeed).is_ok());
  graph::TrainingGraph whole = training_graph(model, batch);
  auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
  REQUIRE(data.has_value());
  auto mbs = split_micro_batches(whole.graph, data->next_batch(), (*run)->program().inputs, m);
  REQUIRE(mbs.has_value());
  return {std::move(*run), std::move(*mbs)};
}

planner::Plan forced_plan(const graph::Graph& g, int64_t micro_batches,
                          const planner::GridConfig& grid) {
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  planner::AnalyticCostModel cost(cl->device);
  planner::PlannerOptions po;
  po.clustering.num_layers = 4;
  auto p = planner::grid_plan(g, *cl, cost, po, micro_batches, grid);
  if (!p.has_value()) FAIL(p.status().to_string());
  return *p;
}

// With batch norm, statistics are per micro-batch, so a run with M > 1 micro-batches is not
// the whole-batch step: its reference is one device running the same M micro-batches.
bool has_batch_norm(const graph::Graph& g) {
  for (const graph::Op& op : g.ops()) {
    if (op.kind == graph::OpKind::kBatchNorm) return true;
  }
  return false;
}

void check_model(const std::string& model, int64_t batch, int steps) {
  const auto whole_batch = single_device_losses(model, batch, steps);
  for (const Case& c : kCases) {
    SECTION(c.name) {
      std::vector<double> want = whole_batch;
      graph::TrainingGraph one = training_graph(model, batch / c.micro_batches);
      if (c.micro_batches > 1 && has_batch_norm(one.graph)) {
        const planner::Plan p1 = forced_plan(one.graph, c.micro_batches, {1, 1, 1, Mode::kFree});
        want = parallel_losses(model, batch, p1, one.graph, steps).losses;
      }
      graph::TrainingGraph tg = training_graph(model, batch / c.micro_batches);
      const planner::Plan plan = forced_plan(tg.graph, c.micro_batches, c.grid);
      LowerOptions lo;
      if (*c.schedule != '\0') lo.schedule = *planner::parse_schedule(c.schedule);
      const Run got = parallel_losses(model, batch, plan, tg.graph, steps, lo);
      expect_same(want, got.losses);
    }
  }
}

TEST_CASE("gpt-tiny trains the same on 4 virtual devices as on one", "[parallel]") {
  check_model("gpt-tiny", 8, 10);
}

TEST_CASE("wresnet-tiny trains the same on 4 virtual devices as on one", "[parallel]") {
  check_model("wresnet-tiny", 16, 10);
}

TEST_CASE("moe-tiny trains the same on 4 virtual devices as on one", "[parallel]") {
  check_model("moe-tiny", 8, 10);
}

TEST_CASE("the planner's own plan on cpu:1x4 trains like one device", "[parallel]") {
  for (const char* model : {"gpt-tiny", "moe-tiny", "wresnet-tiny"}) {
    INFO(model);
    const int64_t batch = std::string(model) == "wresnet-tiny" ? 16 : 8;
    graph::TrainingGraph tg = training_graph(model, batch);
    auto cl = mesh::cluster_preset("cpu:1x4");
    REQUIRE(cl.has_value());
    planner::AnalyticCostModel cost(cl->device);
    planner::PlannerOptions po;
    po.model = model;
    po.micro_batches = 1;
    auto plan = planner::make_plan(tg.graph, *cl, cost, po);
    if (!plan.has_value()) FAIL(plan.status().to_string());
    const Run got = parallel_losses(model, batch, *plan, tg.graph, 10);
    int32_t used = 0;
    for (const DeviceProgram& d : got.program.devices) used += d.device >= 0 ? 1 : 0;
    CHECK(used >= 2);
    expect_same(single_device_losses(model, batch, 10), got.losses);
  }
}

// All-reduces of one mesh axis in a program, and how many buffers they carry.
std::pair<int64_t, int64_t> all_reduces(const Program& prog) {
  int64_t instructions = 0;
  int64_t buffers = 0;
  for (const DeviceProgram& d : prog.devices) {
    for (const Instruction& ins : d.instructions) {
      if (ins.code != Opcode::kCollective ||
          ins.collective.kind != mesh::CollectiveKind::kAllReduce) {
        continue;
      }
      ++instructions;
      buffers += static_cast<int64_t>(ins.in.size());
    }
  }
  return {instructions, buffers};
}

TEST_CASE("fused gradient all-reduces train like separate ones, in fewer collectives",
          "[parallel]") {
  const auto want = single_device_losses("gpt-tiny", 8, 4);
  graph::TrainingGraph tg = training_graph("gpt-tiny", 8);
  const planner::Plan plan = forced_plan(tg.graph, 1, {4, 1, 1, Mode::kReplicated});
  LowerOptions separate;
  separate.fuse_all_reduce_bytes = 0;
  LowerOptions small;
  small.fuse_all_reduce_bytes = 4096;  // a bucket of at most 4 KiB
  const Run unfused = parallel_losses("gpt-tiny", 8, plan, tg.graph, 4, separate);
  const Run fused = parallel_losses("gpt-tiny", 8, plan, tg.graph, 4);
  const Run bucketed = parallel_losses("gpt-tiny", 8, plan, tg.graph, 4, small);
  expect_same(want, fused.losses);
  expect_same(want, bucketed.losses);
  for (size_t i = 0; i < want.size(); ++i) CHECK(fused.losses[i] == Approx(unfused.losses[i]));
  const auto [n_unfused, b_unfused] = all_reduces(unfused.program);
  const auto [n_fused, b_fused] = all_reduces(fused.program);
  const auto [n_bucketed, b_bucketed] = all_reduces(bucketed.program);
  INFO(n_unfused << " all-reduces unfused, " << n_fused << " fused, " << n_bucketed
                 << " in 4 KiB buckets");
  CHECK(b_unfused == n_unfused);  // one buffer each
  CHECK(b_fused == b_unfused);    // the same buffers, carried by fewer collectives
  CHECK(b_bucketed == b_unfused);
  CHECK(n_fused * 4 < n_unfused);
  CHECK(n_fused < n_bucketed);
  CHECK(n_bucketed < n_unfused);
  for (const DeviceProgram& d : bucketed.program.devices) {
    for (const Instruction& ins : d.instructions) {
      if (ins.code != Opcode::kCollective || ins.in.size() < 2) continue;
      int64_t bytes = 0;
      for (int32_t b : ins.in) bytes += d.buffers[static_cast<size_t>(b)].bytes();
      CHECK(bytes <= 4096);
    }
  }
}

TEST_CASE("a group whose members would fuse differently keeps its all-reduces separate",
          "[parallel]") {
  // One stage on a (2, 1) mesh, three persistent fp32 buffers all-reduced in a row on both
  // devices; on device 1 a SCALE sits between the first two all-reduces when `split`.
  const auto make = [](bool split) {
    Program p;
    StageLayout st;
    st.devices = {0, 1};
    st.mesh.shape[0] = 2;
    p.stages.push_back(st);
    for (int32_t d = 0; d < 2; ++d) {
      DeviceProgram dp;
      dp.device = d;
      dp.coord[0] = d;
      for (int b = 0; b < 3; ++b) {
        dp.buffers.push_back(
            {fmt::format("g{}", b), Shape({16}), DType::kF32, BufferKind::kPersistent});
      }
      for (int32_t b = 0; b < 3; ++b) {
        Instruction ar;
        ar.code = Opcode::kCollective;
        ar.collective.kind = mesh::CollectiveKind::kAllReduce;
        ar.collective.axis = 0;
        ar.in = {b};
        ar.out = {b};
        dp.instructions.push_back(ar);
        if (split && d == 1 && b == 0) {
          Instruction scale;
          scale.code = Opcode::kScale;
          scale.in = {2};
          scale.out = {2};
          scale.factor = 0.5f;
          dp.instructions.push_back(scale);
        }
      }
      p.devices.push_back(std::move(dp));
    }
    return p;
  };
  Program same = make(false);
  fuse_all_reduces(same, int64_t{1} << 20);
  CHECK(same.devices[0].instructions.size() == 1);
  CHECK(same.devices[1].instructions.size() == 1);
  CHECK(same.devices[0].instructions[0].in == std::vector<int32_t>{0, 1, 2});
  CHECK(validate_program(same).is_ok());
  Program differ = make(true);
  fuse_all_reduces(differ, int64_t{1} << 20);
  CHECK(differ.devices[0].instructions.size() == 3);  // device 0 alone could fuse all three
  CHECK(differ.devices[1].instructions.size() == 4);
  CHECK(validate_program(differ).is_ok());
  Program small = make(false);
  fuse_all_reduces(small, 2 * 64);  // two 64-byte buffers per bucket
  CHECK(small.devices[0].instructions.size() == 2);
  CHECK(small.devices[0].instructions[0].in == std::vector<int32_t>{0, 1});
}

TEST_CASE("Gloo or UCX collectives and UCX transport give the same losses", "[parallel]") {
  const CollectiveBackend collectives = GENERATE(CollectiveBackend::kUcx, CollectiveBackend::kGloo);
  CAPTURE(collective_backend_name(collectives));
  if ((collectives == CollectiveBackend::kGloo && !comm::gloo_available()) ||
      !comm::ucx_available()) {
    WARN("built without Gloo or UCX");
    return;
  }
  setenv("UCX_NET_DEVICES", "lo", 0);
  const auto want = single_device_losses("gpt-tiny", 8, 3);
  graph::TrainingGraph tg = training_graph("gpt-tiny", 4);
  const planner::Plan plan = forced_plan(tg.graph, 2, {1, 2, 2, Mode::kFree});
  InProcessRunOptions ro;
  ro.collectives = collectives;
  ro.transport = TransportKind::kUcx;
  const Run got = parallel_losses("gpt-tiny", 8, plan, tg.graph, 3, {}, ro);
  expect_same(want, got.losses);
}

TEST_CASE("an injected kernel failure stops the step with an error naming device and op",
          "[parallel]") {
  graph::TrainingGraph tg = training_graph("gpt-tiny", 4);
  const planner::Plan plan = forced_plan(tg.graph, 2, {1, 2, 2, Mode::kFree});
  auto prog = lower(plan, tg.graph);
  REQUIRE(prog.has_value());
  // A forward op of the first stage on its second device: the other stage waits for its
  // activations and the first stage's other device for a collective; both must stop.
  std::string op;
  for (const LocalOp& l : prog->devices[static_cast<size_t>(plan.stages[0].devices[1])].ops) {
    if (l.op.kind == graph::OpKind::kDot && op.empty()) op = l.op.name;
  }
  REQUIRE(!op.empty());
  InProcessRunOptions ro;
  ro.interpreter.fail_op = op;
  ro.fail_device = plan.stages[0].devices[1];
  ro.timeout = std::chrono::milliseconds(20000);
  auto [run, mbs] = started_run(std::move(*prog), tg.graph, "gpt-tiny", 8, ro);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run->step(mbs);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_FALSE(r.has_value());
  const std::string msg = r.status().to_string();
  INFO(msg);
  CHECK(msg.find("injected kernel failure") != std::string::npos);
  CHECK(msg.find(fmt::format("device {}", plan.stages[0].devices[1])) != std::string::npos);
  CHECK(msg.find(op) != std::string::npos);
  CHECK(waited < 5.0);  // the others were woken, not left to time out (20 s)
  // The run refuses further steps instead of hanging.
  auto again = run->step(mbs);
  REQUIRE_FALSE(again.has_value());
  CHECK(again.status().code() == Errc::kUnavailable);
}

TEST_CASE("a transfer that never arrives times out with an error naming the receive",
          "[parallel]") {
  graph::TrainingGraph tg = training_graph("gpt-tiny", 4);
  const planner::Plan plan = forced_plan(tg.graph, 2, {1, 1, 2, Mode::kFree});
  auto prog = lower(plan, tg.graph);
  REQUIRE(prog.has_value());
  // Drop the first send of the last stage (a gradient going back): the first stage waits for
  // a message that never comes, while the last stage finishes its step.
  DeviceProgram& sender = prog->devices[static_cast<size_t>(plan.stages[1].devices[0])];
  auto it = std::find_if(sender.instructions.begin(), sender.instructions.end(),
                         [](const Instruction& i) { return i.code == Opcode::kSend; });
  REQUIRE(it != sender.instructions.end());
  const uint64_t tag = it->tag;
  sender.instructions.erase(it);
  InProcessRunOptions ro;
  ro.timeout = std::chrono::milliseconds(500);
  auto [run, mbs] = started_run(std::move(*prog), tg.graph, "gpt-tiny", 8, ro);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run->step(mbs);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_FALSE(r.has_value());
  const std::string msg = r.status().to_string();
  INFO(msg);
  CHECK(r.status().code() == Errc::kTimeout);
  // The first stage waits for the missing message; the last stage, in turn, for values of the
  // stuck first stage (its optimizer step counter): whichever wait expires first is reported.
  CHECK(msg.find("instruction") != std::string::npos);
  CHECK(msg.find("did not complete within 500 ms") != std::string::npos);
  const bool first_stage =
      msg.find(fmt::format("device {} ", plan.stages[0].devices[0])) != std::string::npos;
  if (first_stage) CHECK(msg.find(fmt::format("tag {}", tag)) != std::string::npos);
  CHECK(waited < 5.0);
}

TEST_CASE("data of the wrong shape is an error naming the input", "[parallel]") {
  graph::TrainingGraph tg = training_graph("gpt-tiny", 8);
  const planner::Plan plan = forced_plan(tg.graph, 1, {4, 1, 1, Mode::kReplicated});
  auto prog = lower(plan, tg.graph);
  REQUIRE(prog.has_value());
  auto run = InProcessRun::create(std::move(*prog), tg.graph);
  REQUIRE(run.has_value());
  REQUIRE((*run)->initialize(kSeed).is_ok());
  graph::TrainingGraph other = training_graph("gpt-tiny", 4);  // half the batch
  auto data = SyntheticData::create(other.graph, other.inputs, kDataSeed);
  REQUIRE(data.has_value());
  auto mbs = split_micro_batches(other.graph, data->next_batch(), (*run)->program().inputs, 1);
  REQUIRE(mbs.has_value());
  auto r = (*run)->step(*mbs);
  REQUIRE_FALSE(r.has_value());
  const std::string msg = r.status().to_string();
  INFO(msg);
  CHECK(r.status().code() == Errc::kInvalidArgument);
  CHECK(msg.find("has shape [4, 16]") != std::string::npos);
  CHECK(msg.find("load tokens") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::runtime

// InProcessRun on lowered gpt-tiny plans: steps and parameters against the single-device
// Executor, reading tiles back, splitting batches into micro-batches, abort, options validation
// and the names of collective backends and transports.
#include "runtime/in_process_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "kernels/layout.h"
#include "mesh/cluster.h"
#include "mesh/collective_kind.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/compact_program.h"
#include "runtime/executor.h"
#include "runtime/interpreter.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
constexpr uint64_t kSeed = 3;
constexpr uint64_t kDataSeed = 17;

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

Program lowered(const planner::Plan& plan, const graph::Graph& g) {
  auto prog = lower(plan, g);
  if (!prog.has_value()) FAIL(prog.status().to_string());
  return std::move(*prog);
}

std::unique_ptr<InProcessRun> make_run(Program prog, const graph::Graph& g,
                                       InProcessRunOptions options = {}) {
  auto run = InProcessRun::create(std::move(prog), g, options);
  if (!run.has_value()) FAIL(run.status().to_string());
  return std::move(*run);
}

// SGD with momentum: one step moves each parameter by lr x its gradient, so the parallel and
// the single-device parameters agree to rounding (Adam's first step is lr x sign(g), which
// flips on gradients that are zero up to rounding).
graph::OptimizerConfig sgd() {
  graph::OptimizerConfig opt;
  opt.kind = graph::OptimizerConfig::Kind::kSgd;
  opt.lr = 0.1f;
  opt.momentum = 0.9f;
  return opt;
}

TEST_CASE("a lowered gpt-tiny pipeline steps like one device", "[runtime][in_process_run]") {
  // 2 stages of (1, 2) meshes, 2 micro-batches of 4: the whole batch of 8 on one device.
  const std::vector<double> want =
      testing::single_device_losses("gpt-tiny", 8, 2, kSeed, kDataSeed);
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  const planner::Plan plan = forced_plan(tg.graph, 2, {1, 2, 2, Mode::kFree});
  auto run = make_run(lowered(plan, tg.graph), tg.graph);
  REQUIRE(run->initialize(kSeed).is_ok());
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", 8);
  auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
  REQUIRE(data.has_value());
  for (size_t s = 0; s < want.size(); ++s) {
    auto mbs = split_micro_batches(whole.graph, data->next_batch(), run->program().inputs, 2);
    REQUIRE(mbs.has_value());
    auto r = run->step(*mbs);
    if (!r.has_value()) FAIL(r.status().to_string());
    INFO("step " << s << ": single device " << want[s] << ", parallel " << r->loss);
    CHECK(std::abs(r->loss - want[s]) <= 1e-4 * std::abs(want[s]));
    REQUIRE(r->losses.size() == 2);
    CHECK(r->loss == Approx((r->losses[0] + r->losses[1]) / 2));
    REQUIRE(r->peak_bytes.size() == 4);
    for (int64_t b : r->peak_bytes) CHECK(b > 0);  // all four devices are used
  }
}

TEST_CASE("with time_kernels every kernel of the step is timed, by op kind",
          "[runtime][in_process_run]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  const planner::Plan plan = forced_plan(tg.graph, 2, {1, 2, 2, Mode::kFree});
  Program prog = lowered(plan, tg.graph);
  // What the program runs: one kernel per kRun, by kind.
  // Besides: the communicator calls of its collectives (by kind) and the waits for receives.
  int64_t runs = 0;
  std::set<OpKind> kinds;
  std::set<std::string> activities;
  for (const DeviceProgram& dp : prog.devices) {
    const mesh::LogicalMesh& m = prog.stages[static_cast<size_t>(dp.stage)].mesh;
    for (const Instruction& ins : dp.instructions) {
      if (ins.code == Opcode::kCollective && ins.collective.kind != mesh::CollectiveKind::kSlice &&
          m.size(ins.collective.axis) > 1) {
        activities.insert(
            fmt::format("collective {}: communicator", mesh::collective_name(ins.collective.kind)));
      }
      if (ins.code == Opcode::kRecv) activities.insert("wait for receives");
      if (ins.code != Opcode::kRun) continue;
      ++runs;
      kinds.insert(dp.ops[static_cast<size_t>(ins.op)].op.kind);
    }
  }
  REQUIRE(activities.size() >= 2);  // collectives and pipeline receives to account for
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", 8);
  for (bool timed : {false, true}) {
    InProcessRunOptions options;
    options.interpreter.time_kernels = timed;
    auto run = make_run(prog, tg.graph, options);
    REQUIRE(run->initialize(kSeed).is_ok());
    auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
    REQUIRE(data.has_value());
    auto mbs = split_micro_batches(whole.graph, data->next_batch(), run->program().inputs, 2);
    REQUIRE(mbs.has_value());
    auto r = run->step(*mbs);
    if (!r.has_value()) FAIL(r.status().to_string());
    if (!timed) {
      CHECK(r->kernel_seconds.empty());
      CHECK(r->kernels_run == 0);
      CHECK(r->other_seconds.empty());
      continue;
    }
    CHECK(r->kernels_run == runs);
    std::set<OpKind> timed_kinds;
    double total = 0.0;
    for (const auto& [kind, t] : r->kernel_seconds) {
      timed_kinds.insert(kind);
      CHECK(t >= 0.0);
      total += t;
    }
    CHECK(timed_kinds == kinds);
    CHECK(total > 0.0);
    for (const std::string& what : activities) {
      INFO(what);
      CHECK(r->other_seconds.count(what) == 1);
    }
    for (const auto& [what, t] : r->other_seconds) {
      CHECK(t >= 0.0);
      total += t;
    }
    // Four devices' time, each device's within the step's wall time.
    CHECK(total <= 4.0 * r->seconds);
  }
}

TEST_CASE("a compact program runs like the flat one, holding the same templates at any count",
          "[runtime][in_process_run][compact]") {
  // 2 stages of (1, 2) meshes, 12 micro-batches of 2: every device runs its steady-state
  // template for several micro-batches. The flat and the compact run do the same arithmetic in
  // the same order, so losses, peaks and parameters agree exactly.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 2, sgd());
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", 24, sgd());
  const planner::Plan plan = forced_plan(tg.graph, 12, {1, 2, 2, Mode::kFree});
  auto cp = lower_compact(plan, tg.graph);
  if (!cp.has_value()) FAIL(cp.status().to_string());
  int64_t templates = 0;
  for (const CompactCode& c : cp->code) {
    for (const auto& t : c.templates) templates += static_cast<int64_t>(t.size());
  }
  auto flat_run = make_run(lowered(plan, tg.graph), tg.graph);
  auto compact_run = InProcessRun::create(std::move(*cp), tg.graph);
  if (!compact_run.has_value()) FAIL(compact_run.status().to_string());
  InProcessRun& a = *flat_run;
  InProcessRun& b = **compact_run;
  CHECK(b.program().devices.size() == a.program().devices.size());
  REQUIRE(a.initialize(kSeed).is_ok());
  REQUIRE(b.initialize(kSeed).is_ok());
  auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
  REQUIRE(data.has_value());
  for (int s = 0; s < 2; ++s) {
    auto mbs = split_micro_batches(whole.graph, data->next_batch(), a.program().inputs, 12);
    REQUIRE(mbs.has_value());
    auto ra = a.step(*mbs);
    auto rb = b.step(*mbs);
    if (!ra.has_value()) FAIL(ra.status().to_string());
    if (!rb.has_value()) FAIL(rb.status().to_string());
    CHECK(ra->losses == rb->losses);
    CHECK(ra->peak_bytes == rb->peak_bytes);
  }
  for (const InProcessRun::TileView& t : a.persistent_tiles()) {
    auto va = a.read_value(t.tile->value);
    auto vb = b.read_value(t.tile->value);
    REQUIRE(va.has_value());
    REQUIRE(vb.has_value());
    INFO(t.tile->value);
    REQUIRE(va->numel() == vb->numel());
    CHECK(std::equal(va->f32(), va->f32() + va->numel(), vb->f32()));
  }
  // The same plan with four times the micro-batches: the same templates, only more segments.
  planner::Plan more = plan;
  more.micro_batches = 48;
  more.global_batch = 48 * plan.micro_batch;
  auto cp48 = lower_compact(more, tg.graph);
  REQUIRE(cp48.has_value());
  int64_t templates48 = 0;
  for (const CompactCode& c : cp48->code) {
    for (const auto& t : c.templates) templates48 += static_cast<int64_t>(t.size());
  }
  CHECK(templates48 == templates);
  CHECK(cp48->instructions() > 3 * templates48);
  // A compact program that names a buffer class it does not have, or a micro-batch beyond the
  // step, is refused before it runs.
  size_t d = 0;
  while (cp48->base.devices[d].device < 0) ++d;
  CompactProgram bad = *cp48;
  CompactCode& code = bad.code[d];
  for (const Segment& seg : code.segments) {
    if (seg.micro_batch < 0) continue;
    for (Instruction& ins : code.templates[static_cast<size_t>(seg.code)]) {
      if (!ins.out.empty()) {
        ins.out[0] = -static_cast<int32_t>(code.classes.size()) - 1;
        break;
      }
    }
    break;
  }
  auto refused = DeviceInterpreter::create(bad, static_cast<int32_t>(d));
  REQUIRE_FALSE(refused.has_value());
  CHECK_THAT(refused.status().message(), Catch::Contains("names buffer"));
  CompactProgram late = *cp48;
  late.code[d].segments.back().micro_batch = 48;
  auto refused_late = DeviceInterpreter::create(late, static_cast<int32_t>(d));
  REQUIRE_FALSE(refused_late.has_value());
  CHECK_THAT(refused_late.status().message(), Catch::Contains("micro-batch 48 of 48"));
}

// The single-device executor's persistent values after initialisation and after `steps` steps.
std::map<std::string, HostTensor> executor_values(const graph::TrainingGraph& tg, int steps) {
  auto ex = Executor::create(tg.graph);
  REQUIRE(ex.has_value());
  REQUIRE((*ex)->initialize(kSeed).is_ok());
  auto data = SyntheticData::create(tg.graph, tg.inputs, kDataSeed);
  REQUIRE(data.has_value());
  for (int s = 0; s < steps; ++s) REQUIRE((*ex)->run(data->next_batch()).has_value());
  std::map<std::string, HostTensor> out;
  for (int64_t v = 0; v < tg.graph.num_values(); ++v) {
    const graph::Value& val = tg.graph.values()[static_cast<size_t>(v)];
    if (val.role != graph::ValueRole::kParameter && val.role != graph::ValueRole::kOptimizerState) {
      continue;
    }
    auto t = (*ex)->get_value(ValueId(static_cast<int32_t>(v)));
    REQUIRE(t.has_value());
    out.emplace(val.name, std::move(*t));
  }
  return out;
}

// Every persistent value assembled from the tiles persistent_tiles() lists; each element must be
// covered, and replicas must agree.
std::map<std::string, std::vector<float>> assemble(const InProcessRun& run, const graph::Graph& g) {
  std::map<std::string, std::vector<float>> out;
  std::map<std::string, std::vector<int>> covered;
  std::map<std::string, int64_t> disagree;
  for (const InProcessRun::TileView& t : run.persistent_tiles()) {
    Shape full;
    for (const graph::Value& v : g.values()) {
      if (v.name == t.tile->value) full = v.shape;
    }
    REQUIRE(full.rank() == static_cast<int64_t>(t.tile->region.size()));
    auto& values = out[t.tile->value];
    auto& count = covered[t.tile->value];
    values.resize(static_cast<size_t>(full.numel()));
    count.resize(static_cast<size_t>(full.numel()));
    const std::vector<int64_t> strides = full.strides();
    for (int64_t k = 0; k < t.view.numel(); ++k) {
      // Element k of the tile, row-major, at its place in the full tensor.
      int64_t rest = k;
      int64_t at = 0;
      for (int64_t d = full.rank() - 1; d >= 0; --d) {
        const mesh::DimRange& r = t.tile->region[static_cast<size_t>(d)];
        const int64_t extent = r.end - r.begin;
        at += (r.begin + rest % extent) * strides[static_cast<size_t>(d)];
        rest /= extent;
      }
      const float x = t.view.f32()[k];
      if (count[static_cast<size_t>(at)]++ > 0 && values[static_cast<size_t>(at)] != x) {
        ++disagree[t.tile->value];
      }
      values[static_cast<size_t>(at)] = x;
    }
  }
  for (const auto& [name, count] : covered) {
    INFO(name);
    CHECK(std::count(count.begin(), count.end(), 0) == 0);
    CHECK(disagree[name] == 0);  // replicas hold the same values
  }
  return out;
}

void expect_close(const std::vector<float>& got, const HostTensor& want, double tol) {
  REQUIRE(static_cast<int64_t>(got.size()) == want.numel());
  int64_t bad = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    const double w = want.f32()[k];
    if (std::abs(got[k] - w) > tol * (1.0 + std::abs(w))) ++bad;
  }
  CHECK(bad == 0);
}

TEST_CASE("persistent tiles and read_value reassemble the single device's parameters",
          "[runtime][in_process_run]") {
  // One stage on a (2, 2) mesh: parameters split over the tensor-parallel axis and replicated
  // over the data-parallel one.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8, sgd());
  const planner::Plan plan = forced_plan(tg.graph, 1, {2, 2, 1, Mode::kFree});
  auto run = make_run(lowered(plan, tg.graph), tg.graph);
  REQUIRE(run->initialize(kSeed).is_ok());
  const auto initial = executor_values(tg, 0);
  const auto stepped = executor_values(tg, 1);
  REQUIRE(initial.size() > 10);

  bool some_split = false;
  for (const InProcessRun::TileView& t : run->persistent_tiles()) {
    REQUIRE(t.tile != nullptr);
    int64_t n = 1;
    for (const mesh::DimRange& r : t.tile->region) n *= r.end - r.begin;
    CHECK(t.view.numel() == n);
    some_split = some_split || n < initial.at(t.tile->value).numel();
  }
  CHECK(some_split);

  {
    INFO("after initialize");
    const auto tiles = assemble(*run, tg.graph);
    CHECK(tiles.size() == initial.size());
    for (const auto& [name, want] : initial) {
      INFO(name);
      REQUIRE(tiles.count(name) == 1);
      CHECK(tiles.at(name) == want.to_f32_vector());  // exactly: the same initial values
    }
  }

  auto data = SyntheticData::create(tg.graph, tg.inputs, kDataSeed);
  REQUIRE(data.has_value());
  auto mbs = split_micro_batches(tg.graph, data->next_batch(), run->program().inputs, 1);
  REQUIRE(mbs.has_value());
  REQUIRE(run->step(*mbs).has_value());

  INFO("after one step");
  const auto tiles = assemble(*run, tg.graph);
  for (const auto& [name, want] : stepped) {
    INFO(name);
    REQUIRE(tiles.count(name) == 1);
    expect_close(tiles.at(name), want, 1e-5);
    auto whole = run->read_value(name);
    REQUIRE(whole.has_value());
    CHECK(whole->shape() == want.shape());
    CHECK(whole->to_f32_vector() == tiles.at(name));
  }
  auto missing = run->read_value("layer9/no_such_weight");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().code() == Errc::kNotFound);
  CHECK(missing.status().message().find("'layer9/no_such_weight'") != std::string::npos);
}

// A graph with two data inputs: x [6, 2] (f32) and y [6] (i32).
struct TwoInputs {
  graph::Graph g;
  ValueId x;
  ValueId y;
  HostTensor xs = HostTensor::from_f32(Shape{6, 2}, {0, 1, 10, 11, 20, 21, 30, 31, 40, 41, 50, 51});
  HostTensor ys = HostTensor::from_i32(Shape{6}, {5, 4, 3, 2, 1, 0});
  TwoInputs() {
    x = g.add_source("x", Shape{6, 2}, DType::kF32, graph::ValueRole::kInput);
    y = g.add_source("y", Shape{6}, DType::kI32, graph::ValueRole::kInput);
  }
};

TEST_CASE("split_micro_batches splits along dim 0 in order, inputs in the order named",
          "[runtime][in_process_run]") {
  TwoInputs t;
  auto parts = split_micro_batches(t.g, {{t.x, t.xs}, {t.y, t.ys}}, {"y", "x"}, 3);
  REQUIRE(parts.has_value());
  REQUIRE(parts->size() == 3);
  for (size_t mb = 0; mb < 3; ++mb) {
    INFO("micro-batch " << mb);
    REQUIRE((*parts)[mb].size() == 2);
    const HostTensor& y = (*parts)[mb][0];
    const HostTensor& x = (*parts)[mb][1];
    CHECK(y.shape() == Shape{2});
    CHECK(y.dtype() == DType::kI32);
    CHECK(y.to_f32_vector() == std::vector<float>{5.0f - 2 * mb, 4.0f - 2 * mb});
    CHECK(x.shape() == Shape{2, 2});
    const float r = 20.0f * static_cast<float>(mb);
    CHECK(x.to_f32_vector() == std::vector<float>{r, r + 1, r + 10, r + 11});
  }
  auto one = split_micro_batches(t.g, {{t.x, t.xs}}, {"x"}, 1);
  REQUIRE(one.has_value());
  CHECK((*one)[0][0].to_f32_vector() == t.xs.to_f32_vector());
}

TEST_CASE("split_micro_batches names an input that is missing or does not divide",
          "[runtime][in_process_run]") {
  TwoInputs t;
  auto missing = split_micro_batches(t.g, {{t.x, t.xs}}, {"x", "y"}, 2);
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().code() == Errc::kInvalidArgument);
  CHECK(missing.status().message() == "data input 'y' is missing");
  auto uneven = split_micro_batches(t.g, {{t.x, t.xs}, {t.y, t.ys}}, {"x", "y"}, 4);
  REQUIRE_FALSE(uneven.has_value());
  CHECK(uneven.status().code() == Errc::kInvalidArgument);
  CHECK(uneven.status().message() ==
        "data input 'x' of shape [6, 2] does not split into 4 micro-batches");
}

TEST_CASE("split_micro_batches refuses a count of micro-batches below one",
          "[runtime][in_process_run]") {
  // Once -1 sized the result vector as SIZE_MAX (std::length_error) and 0 divided by zero.
  TwoInputs t;
  CHECK_FALSE(split_micro_batches(t.g, {{t.x, t.xs}}, {"x"}, -1).has_value());
  CHECK_FALSE(split_micro_batches(t.g, {{t.x, t.xs}}, {"x"}, 0).has_value());
}

TEST_CASE("abort stops a blocked step and every later one with kUnavailable naming the reason",
          "[runtime][in_process_run]") {
  // A 2-stage pipeline whose last stage drops its first send: the first stage blocks on a
  // receive that never comes (the timeout, 60 s, is far away).
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
  const planner::Plan plan = forced_plan(tg.graph, 1, {1, 1, 2, Mode::kFree});
  Program prog = lowered(plan, tg.graph);
  DeviceProgram& sender = prog.devices[static_cast<size_t>(plan.stages[1].devices[0])];
  auto it = std::find_if(sender.instructions.begin(), sender.instructions.end(),
                         [](const Instruction& i) { return i.code == Opcode::kSend; });
  REQUIRE(it != sender.instructions.end());
  sender.instructions.erase(it);
  InProcessRunOptions ro;
  ro.timeout = std::chrono::milliseconds(60000);
  auto run = make_run(std::move(prog), tg.graph, ro);
  REQUIRE(run->initialize(kSeed).is_ok());
  auto data = SyntheticData::create(tg.graph, tg.inputs, kDataSeed);
  REQUIRE(data.has_value());
  auto mbs = split_micro_batches(tg.graph, data->next_batch(), run->program().inputs, 1);
  REQUIRE(mbs.has_value());

  std::optional<Expected<RunStepResult>> blocked;
  std::thread stepping([&] { blocked = run->step(*mbs); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  run->abort("stopped by the test");
  stepping.join();
  REQUIRE(blocked.has_value());
  REQUIRE_FALSE(blocked->has_value());
  INFO(blocked->status().to_string());
  CHECK(blocked->status().code() == Errc::kUnavailable);
  CHECK(blocked->status().message().find("stopped by the test") != std::string::npos);

  run->abort("a second reason");  // the first reason stays
  auto later = run->step(*mbs);
  REQUIRE_FALSE(later.has_value());
  CHECK(later.status().code() == Errc::kUnavailable);
  CHECK(later.status().message() ==
        "the run stopped after an earlier failure: stopped by the test");
  auto one = run->run_device(plan.stages[0].devices[0], *mbs);
  REQUIRE_FALSE(one.has_value());
  CHECK(one.status().code() == Errc::kUnavailable);
}

TEST_CASE("abort before any step makes the first step fail at once", "[runtime][in_process_run]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
  const planner::Plan plan = forced_plan(tg.graph, 1, {2, 1, 1, Mode::kReplicated});
  auto run = make_run(lowered(plan, tg.graph), tg.graph);
  CHECK(run->devices() == std::vector<int32_t>{0, 1});  // devices 2 and 3 are unused
  REQUIRE(run->initialize(kSeed).is_ok());
  run->abort("shutting down");
  auto data = SyntheticData::create(tg.graph, tg.inputs, kDataSeed);
  REQUIRE(data.has_value());
  auto mbs = split_micro_batches(tg.graph, data->next_batch(), run->program().inputs, 1);
  REQUIRE(mbs.has_value());
  auto r = run->step(*mbs);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().code() == Errc::kUnavailable);
  CHECK(r.status().message() == "the run stopped after an earlier failure: shutting down");
}

TEST_CASE("a step with the wrong number of micro-batches is refused and the run goes on",
          "[runtime][in_process_run]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  const planner::Plan plan = forced_plan(tg.graph, 2, {2, 1, 1, Mode::kReplicated});
  auto run = make_run(lowered(plan, tg.graph), tg.graph);
  REQUIRE(run->initialize(kSeed).is_ok());
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", 8);
  auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
  REQUIRE(data.has_value());
  const auto batch = data->next_batch();
  auto one = split_micro_batches(whole.graph, batch, run->program().inputs, 1);
  REQUIRE(one.has_value());
  auto refused = run->step(*one);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().code() == Errc::kInvalidArgument);
  CHECK(refused.status().message() == "1 micro-batches given, the program has 2");
  auto two = split_micro_batches(whole.graph, batch, run->program().inputs, 2);
  REQUIRE(two.has_value());
  auto r = run->step(*two);
  if (!r.has_value()) FAIL(r.status().to_string());
  const double want = testing::single_device_losses("gpt-tiny", 8, 1, kSeed, kDataSeed)[0];
  CHECK(std::abs(r->loss - want) <= 1e-4 * std::abs(want));
}

TEST_CASE("run options are validated: a process share needs Gloo, UCX, a store and an exchange",
          "[runtime][in_process_run]") {
  InProcessRunOptions ok;
  CHECK(ok.validate().is_ok());

  InProcessRunOptions no_time;
  no_time.timeout = std::chrono::milliseconds(0);
  CHECK(no_time.validate().message() == "timeout must be positive");

  InProcessRunOptions bad_enum;
  bad_enum.collectives = static_cast<CollectiveBackend>(7);
  CHECK(bad_enum.validate().message() == "unknown collective backend 7");
  bad_enum.collectives = CollectiveBackend::kGloo;
  bad_enum.transport = static_cast<TransportKind>(9);
  CHECK(bad_enum.validate().message() == "unknown transport 9");

  auto full = std::make_shared<ProcessShare>();
  full->local_devices = {0};
  full->store = comm::make_in_process_store();
  full->exchange =
      [](const std::map<int32_t, std::string>& mine) -> Expected<std::map<int32_t, std::string>> {
    return mine;
  };
  InProcessRunOptions shared;
  shared.collectives = CollectiveBackend::kGloo;
  shared.transport = TransportKind::kUcx;
  shared.share = full;
  CHECK(shared.validate().is_ok());

  InProcessRunOptions shared_ucx = shared;
  shared_ucx.collectives = CollectiveBackend::kUcx;
  CHECK(shared_ucx.validate().is_ok());
  InProcessRunOptions ucx_without_transport;
  ucx_without_transport.collectives = CollectiveBackend::kUcx;
  CHECK(ucx_without_transport.validate().message() ==
        "UCX collectives run over the UCX transport's endpoints: use the UCX transport with them");

  const std::string why =
      "a run that hosts part of a job's devices needs Gloo, UCX or NCCL collectives, the UCX "
      "transport, a rendezvous store and an address exchange";
  InProcessRunOptions in_process = shared;
  in_process.collectives = CollectiveBackend::kInProcess;
  CHECK(in_process.validate().message() == why);
  InProcessRunOptions local_transport = shared;
  local_transport.transport = TransportKind::kInProcess;
  CHECK(local_transport.validate().message() == why);
  auto no_store = std::make_shared<ProcessShare>(*full);
  no_store->store = nullptr;
  InProcessRunOptions without_store = shared;
  without_store.share = no_store;
  CHECK(without_store.validate().message() == why);
  auto no_exchange = std::make_shared<ProcessShare>(*full);
  no_exchange->exchange = nullptr;
  InProcessRunOptions without_exchange = shared;
  without_exchange.share = no_exchange;
  CHECK(without_exchange.validate().message() == why);

  // create() refuses them before building anything.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
  const planner::Plan plan = forced_plan(tg.graph, 1, {2, 1, 1, Mode::kReplicated});
  auto run = InProcessRun::create(lowered(plan, tg.graph), tg.graph, in_process);
  REQUIRE_FALSE(run.has_value());
  CHECK(run.status().code() == Errc::kInvalidArgument);
  CHECK(run.status().message() == why);
}

TEST_CASE("collective backends and transports parse from and print to their names",
          "[runtime][in_process_run]") {
  CHECK(std::string(collective_backend_name(CollectiveBackend::kInProcess)) == "in-process");
  CHECK(std::string(collective_backend_name(CollectiveBackend::kGloo)) == "gloo");
  CHECK(std::string(collective_backend_name(CollectiveBackend::kUcx)) == "ucx");
  CHECK(std::string(transport_kind_name(TransportKind::kInProcess)) == "in-process");
  CHECK(std::string(transport_kind_name(TransportKind::kUcx)) == "ucx");
  for (CollectiveBackend b :
       {CollectiveBackend::kInProcess, CollectiveBackend::kGloo, CollectiveBackend::kUcx}) {
    auto parsed = parse_collective_backend(collective_backend_name(b));
    REQUIRE(parsed.has_value());
    CHECK(*parsed == b);
  }
  for (TransportKind k : {TransportKind::kInProcess, TransportKind::kUcx}) {
    auto parsed = parse_transport_kind(transport_kind_name(k));
    REQUIRE(parsed.has_value());
    CHECK(*parsed == k);
  }
  CHECK(parse_collective_backend("nccl").value() == CollectiveBackend::kNccl);
  auto mpi = parse_collective_backend("mpi");
  REQUIRE_FALSE(mpi.has_value());
  CHECK(mpi.status().code() == Errc::kInvalidArgument);
  CHECK(mpi.status().message() == "collectives 'mpi' is not in-process, gloo, ucx or nccl");
  auto tcp = parse_transport_kind("tcp");
  REQUIRE_FALSE(tcp.has_value());
  CHECK(tcp.status().message() == "transport 'tcp' is neither in-process nor ucx");
  CHECK_FALSE(parse_collective_backend("Gloo").has_value());  // names are exact
  CHECK_FALSE(parse_transport_kind("").has_value());
}

TEST_CASE("every run has its own non-zero id", "[runtime][in_process_run]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
  const planner::Plan plan = forced_plan(tg.graph, 1, {2, 1, 1, Mode::kReplicated});
  const Program prog = lowered(plan, tg.graph);
  auto a = make_run(prog, tg.graph);
  auto b = make_run(prog, tg.graph);
  CHECK(a->id() != 0);
  CHECK(b->id() != 0);
  CHECK(a->id() != b->id());
  CHECK(program_fingerprint(a->program()) == program_fingerprint(prog));
}

}  // namespace
}  // namespace meshpipe::runtime

// The interpreter's GPU code paths, run on the host (InterpreterOptions::staged_host_memory):
// transfers staged through host copies, accumulation and scaling through the kernel table, half
// sums widened by the convert kernel, the loss read back, persistent tiles through host mirrors
// (initialisation, reading values, checkpoints), a skipped f16 update copied through the memory.
// Every plan kind of gpt-tiny (the planner's and every baseline: data, operator, ZeRO and
// pipeline parallel), f32 and mixed precision, must train exactly as on the host paths: the same
// losses and the same parameters, bit for bit. What this cannot show is the GPU itself (its
// kernels are checked against the CPU's by backend_ops --backend cuda, on a GPU).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "kernels/device.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/checkpoint.h"
#include "runtime/compact_program.h"
#include "runtime/in_process_run.h"
#include "runtime/plan_kinds.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {
namespace {

namespace fs = std::filesystem;

struct Trained {
  std::vector<double> losses;
  std::vector<bool> skipped;
  int64_t side = 0;   // collectives on the side queue, over the steps
  int64_t early = 0;  // of those, launched before their place
  std::map<std::string, std::vector<uint8_t>> state;  // every persistent value's bytes
};

Trained train(const graph::TrainingGraph& tg, const graph::TrainingGraph& whole,
              const planner::Plan& plan, bool staged, int steps, const LossScaleOptions& ls,
              const std::string& checkpoint = "", bool overlap = true,
              std::chrono::microseconds side_delay = std::chrono::microseconds(0)) {
  auto prog = lower_compact(plan, tg.graph, {});
  if (!prog.has_value()) FAIL(prog.status().to_string());
  InProcessRunOptions ro;
  ro.interpreter.staged_host_memory = staged;
  ro.interpreter.loss_scale = ls;
  ro.interpreter.overlap_collectives = overlap;
  ro.interpreter.staged_side_delay = side_delay;
  const std::vector<std::string> inputs = prog->base.inputs;
  const int64_t micro_batches = prog->base.micro_batches;
  auto run = InProcessRun::create(std::move(*prog), tg.graph, ro);
  if (!run.has_value()) FAIL(run.status().to_string());
  REQUIRE((*run)->initialize(7).is_ok());
  auto data = SyntheticData::create(whole.graph, whole.inputs, 3);
  REQUIRE(data.has_value());
  Trained out;
  for (int s = 0; s < steps; ++s) {
    auto mbs = split_micro_batches(whole.graph, data->next_batch(), inputs, micro_batches);
    REQUIRE(mbs.has_value());
    auto r = (*run)->step(*mbs);
    if (!r.has_value()) FAIL(r.status().to_string());
    out.losses.push_back(r->loss);
    out.skipped.push_back(r->skipped);
    out.side += r->side_collectives;
    out.early += r->early_collectives;
  }
  if (!checkpoint.empty()) {  // through the mirrors: saved, zeroed by a fresh run, loaded back
    fs::remove_all(checkpoint);
    REQUIRE(save_checkpoint(**run, tg.graph, checkpoint, {"gpt-tiny", steps, 7}).is_ok());
    REQUIRE((*run)->initialize(99).is_ok());
    auto info = load_checkpoint(**run, tg.graph, checkpoint);
    if (!info.has_value()) FAIL(info.status().to_string());
    fs::remove_all(checkpoint);
  }
  for (const graph::Value& v : tg.graph.values()) {
    if (v.role != graph::ValueRole::kParameter && v.role != graph::ValueRole::kOptimizerState) {
      continue;
    }
    auto t = (*run)->read_value(v.name);
    if (!t.has_value()) FAIL(t.status().to_string());
    const auto* p = static_cast<const uint8_t*>(t->data());
    out.state[v.name].assign(p, p + t->bytes());
  }
  return out;
}

void check_same(const std::string& model, DType precision, const LossScaleOptions& ls, int steps) {
  auto spec = graph::models::find_model(model);
  REQUIRE(spec.has_value());
  const int64_t batch = 8;
  const int64_t micro_batches = 2;
  auto tg = graph::models::zoo_training_graph(*spec, batch / micro_batches,
                                              graph::OptimizerConfig{}, precision);
  REQUIRE(tg.has_value());
  auto whole =
      graph::models::zoo_training_graph(*spec, batch, graph::OptimizerConfig{}, DType::kF32);
  REQUIRE(whole.has_value());
  const auto plans = testing::every_plan_kind(tg->graph, model, micro_batches,
                                              planner::Schedule::k1F1B, planner::Recompute::kAuto,
                                              /*count_baselines=*/false);
  REQUIRE(plans.size() >= 4);
  const std::string ckpt = (fs::temp_directory_path() / "meshpipe_staged_memory_ckpt").string();
  for (const auto& [name, plan] : plans) {
    INFO(model << " " << dtype_name(precision) << ", plan " << name);
    const Trained host = train(*tg, *whole, plan, false, steps, ls);
    const Trained staged = train(*tg, *whole, plan, true, steps, ls, ckpt);
    CHECK(staged.losses == host.losses);
    CHECK(staged.skipped == host.skipped);
    CHECK(staged.state == host.state);
    CHECK(host.losses.back() != host.losses.front());
  }
}

TEST_CASE("the device paths of the interpreter, on host memory, train as the host paths do",
          "[staged_memory]") {
  SECTION("gpt-tiny f32") { check_same("gpt-tiny", DType::kF32, LossScaleOptions{}, 3); }
  SECTION("gpt-tiny bf16 (half activations, half sums widened)") {
    check_same("gpt-tiny", DType::kBF16, LossScaleOptions{}, 2);
  }
  SECTION("gpt-tiny f16 with loss scaling: skipped steps, then updates") {
    LossScaleOptions ls;
    ls.enabled = true;
    ls.initial = 1e30f;  // the first steps overflow
    check_same("gpt-tiny", DType::kF16, ls, 3);
  }
}

// The overlap of gradient synchronisation with the backward pass (overlap_collectives): on
// staged memory a worker thread is the side queue, and it waits 2 ms before each collective, so
// an instruction that touched a gradient before its all-reduce had finished (a missing wait)
// would read the unreduced sum or have its write overwritten. Every plan kind trains bit for
// bit as the host does, and the data-parallel plan's gradient all-reduces run on the side queue
// (in f32 launched inside the last micro-batch's backward pass).
TEST_CASE("gradient all-reduces overlap the backward pass on a side queue, exactly",
          "[staged_memory]") {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  const DType precision = GENERATE(DType::kF32, DType::kBF16);
  INFO("precision " << dtype_name(precision));
  auto tg = graph::models::zoo_training_graph(*spec, 4, graph::OptimizerConfig{}, precision);
  REQUIRE(tg.has_value());
  auto whole = graph::models::zoo_training_graph(*spec, 8, graph::OptimizerConfig{}, DType::kF32);
  REQUIRE(whole.has_value());
  const auto plans = testing::every_plan_kind(tg->graph, "gpt-tiny", 2, planner::Schedule::k1F1B,
                                              planner::Recompute::kAuto, false);
  int64_t early = 0;
  for (const auto& [name, plan] : plans) {
    INFO("plan " << name);
    const Trained host = train(*tg, *whole, plan, false, 2, LossScaleOptions{});
    const Trained overlapped = train(*tg, *whole, plan, true, 2, LossScaleOptions{}, "", true,
                                     std::chrono::microseconds(2000));
    CHECK(overlapped.losses == host.losses);
    CHECK(overlapped.state == host.state);
    CHECK(overlapped.early <= overlapped.side);
    early += overlapped.early;
    if (name == "data parallel") {
      // f32 gradients are synchronised once per step (early); the bf16 ones of this graph per
      // micro-batch in the backward pass, where they are produced.
      CHECK(overlapped.side > 0);
      if (precision == DType::kF32) CHECK(overlapped.early > 0);
      const Trained in_order = train(*tg, *whole, plan, true, 2, LossScaleOptions{}, "", false);
      CHECK(in_order.side == 0);
      CHECK(in_order.losses == host.losses);
    }
  }
  if (precision == DType::kF32) CHECK(early > 0);
}

// A device fails late in the backward pass while the others have collectives on the side queue
// (their worker threads wait in the side group for the failed device's part): the step fails
// naming the cause, the next one is refused, and destroying the run neither hangs nor touches
// freed communicators (the side work is stopped and waited for first).
TEST_CASE("a step that fails while collectives are on the side queue stops cleanly",
          "[staged_memory]") {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  auto tg = graph::models::zoo_training_graph(*spec, 4, graph::OptimizerConfig{}, DType::kF32);
  REQUIRE(tg.has_value());
  auto whole = graph::models::zoo_training_graph(*spec, 8, graph::OptimizerConfig{}, DType::kF32);
  REQUIRE(whole.has_value());
  std::string last_backward;
  for (const graph::Op& op : tg->graph.ops()) {
    // (Not the tied embedding's gradient sum: it runs after the synchronisation, as an add.)
    if (op.phase == graph::OpPhase::kBackward && op.name.find("/grad_acc") == std::string::npos) {
      last_backward = op.name;
    }
  }
  REQUIRE(!last_backward.empty());
  for (const auto& [name, plan] : testing::every_plan_kind(
           tg->graph, "gpt-tiny", 2, planner::Schedule::k1F1B, planner::Recompute::kAuto, false)) {
    if (name != "data parallel") continue;
    REQUIRE(plan.stages[0].devices.size() > 1);
    auto prog = lower_compact(plan, tg->graph, {});
    REQUIRE(prog.has_value());
    const std::vector<std::string> inputs = prog->base.inputs;
    InProcessRunOptions ro;
    ro.timeout = std::chrono::milliseconds(20000);
    ro.interpreter.staged_host_memory = true;
    ro.interpreter.staged_side_delay = std::chrono::microseconds(2000);
    ro.interpreter.fail_op = last_backward;
    ro.fail_device = plan.stages[0].devices[1];
    const auto t0 = std::chrono::steady_clock::now();
    {
      auto run = InProcessRun::create(std::move(*prog), tg->graph, ro);
      REQUIRE(run.has_value());
      REQUIRE((*run)->initialize(7).is_ok());
      auto data = SyntheticData::create(whole->graph, whole->inputs, 3);
      REQUIRE(data.has_value());
      auto mbs = split_micro_batches(whole->graph, data->next_batch(), inputs, 2);
      REQUIRE(mbs.has_value());
      auto r = (*run)->step(*mbs);
      REQUIRE(!r.has_value());
      CHECK_THAT(r.status().message(), Catch::Contains("injected kernel failure"));
      CHECK(!(*run)->step(*mbs).has_value());
    }
    // Stopped by the abort, not by the 20 s timeout.
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
  }
}

TEST_CASE("a staged run refuses nothing the host run accepts, and the options are checked",
          "[staged_memory]") {
  InProcessRunOptions o;
  o.device = kernels::Device::kCuda;
  CHECK(o.validate().message() ==
        "devices on GPUs run their collectives with NCCL, not in-process");
  o.device = kernels::Device::kCpu;
  o.collectives = CollectiveBackend::kNccl;
  CHECK(o.validate().message() == "NCCL collectives need the devices on GPUs");
  o.device = kernels::Device::kCuda;
  CHECK(o.validate().is_ok());
  CHECK(parse_collective_backend("nccl").value() == CollectiveBackend::kNccl);
  CHECK(std::string(collective_backend_name(CollectiveBackend::kNccl)) == "nccl");
}

// On a machine with GPUs (label gpu; without one it WARNs and passes): the interpreter on device
// memory, a pipeline of two single-device stages (sharing GPU 0 when there is one GPU:
// transfers staged through the host) and, with two GPUs or more, data parallel over two GPUs
// (NCCL), trains gpt-tiny as the host does within f32 rounding of the GPU's kernels.
TEST_CASE("GPU interpreter: pipeline and data-parallel plans train gpt-tiny as on the host",
          "[runtime][gpu]") {
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (inv.gpus.empty()) {
    WARN("no GPU, not run: " << inv.summary);
    return;
  }
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  auto tg = graph::models::zoo_training_graph(*spec, 4, graph::OptimizerConfig{}, DType::kF32);
  auto whole = graph::models::zoo_training_graph(*spec, 8, graph::OptimizerConfig{}, DType::kF32);
  REQUIRE(tg.has_value());
  REQUIRE(whole.has_value());
  auto cl = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cl.has_value());
  planner::AnalyticCostModel cost(cl->device);
  planner::PlannerOptions po;
  po.clustering.num_layers = 2;
  std::vector<std::pair<std::string, planner::GridConfig>> grids{{"pipeline", {1, 1, 2}}};
  if (inv.gpus.size() >= 2) grids.push_back({"data parallel", {2, 1, 1}});
  for (const auto& [name, grid] : grids) {
    INFO(name);
    auto plan = planner::grid_plan(tg->graph, *cl, cost, po, 2, grid);
    if (!plan.has_value()) FAIL(plan.status().to_string());
    const auto run_on = [&](kernels::Device device) {
      auto prog = lower_compact(*plan, tg->graph, {});
      REQUIRE(prog.has_value());
      const std::vector<std::string> inputs = prog->base.inputs;
      InProcessRunOptions ro;
      ro.device = device;
      ro.collectives = device == kernels::Device::kCuda ? CollectiveBackend::kNccl
                                                        : CollectiveBackend::kInProcess;
      auto run = InProcessRun::create(std::move(*prog), tg->graph, ro);
      if (!run.has_value()) FAIL(run.status().to_string());
      REQUIRE((*run)->initialize(7).is_ok());
      auto data = SyntheticData::create(whole->graph, whole->inputs, 3);
      REQUIRE(data.has_value());
      std::vector<double> losses;
      for (int s = 0; s < 4; ++s) {
        auto mbs = split_micro_batches(whole->graph, data->next_batch(), inputs, 2);
        REQUIRE(mbs.has_value());
        auto r = (*run)->step(*mbs);
        if (!r.has_value()) FAIL(r.status().to_string());
        losses.push_back(r->loss);
      }
      return losses;
    };
    const std::vector<double> host = run_on(kernels::Device::kCpu);
    const std::vector<double> gpu = run_on(kernels::Device::kCuda);
    for (size_t k = 0; k < host.size(); ++k) {
      INFO("step " << k + 1 << ": host " << host[k] << ", GPU " << gpu[k]);
      CHECK(std::abs(gpu[k] - host[k]) <= 1e-4 * host[k]);
    }
  }
}

}  // namespace
}  // namespace meshpipe::runtime

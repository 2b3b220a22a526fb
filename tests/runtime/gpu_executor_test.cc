// The single-device executor on a GPU (ExecutorOptions::device = kCuda) against the same
// executor on the CPU: gpt-tiny trained for a few steps in f32 and in bf16 mixed precision must
// give the CPU's losses (f32 within 1e-4 relative: both compute in f32, only summation orders
// differ; bf16 within 1e-2: a different f32 sum can round a stored bf16 value the other way),
// with the same buffer plan (peak bytes without the kernels' workspaces, which each backend
// declares for itself). Every case's name contains "GPU", which gives it the ctest label `gpu`
// (src/runtime/CMakeLists.txt); without a GPU each one WARNs and passes (Catch2 2.13 has no skip).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "kernels/device.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {
namespace {

constexpr uint64_t kSeed = 11;
constexpr uint64_t kDataSeed = 5;
constexpr int kSteps = 5;

graph::TrainingGraph training_graph(const std::string& model, int64_t batch, DType precision) {
  auto spec = graph::models::find_model(model);
  REQUIRE(spec.has_value());
  auto tg = graph::models::zoo_training_graph(*spec, batch, graph::OptimizerConfig{}, precision);
  if (!tg.has_value()) FAIL(tg.status().to_string());
  return std::move(*tg);
}

struct Trained {
  std::vector<double> losses;
  MemoryReport memory;
  std::vector<HostTensor> initial;     // the parameters before the first step
  std::vector<HostTensor> parameters;  // after the last step
};

std::vector<HostTensor> parameters(const Executor& ex, const graph::TrainingGraph& tg) {
  std::vector<HostTensor> out;
  for (const graph::ParameterUpdate& p : tg.parameters) {
    auto v = ex.get_value(p.param);
    if (!v.has_value()) FAIL(v.status().to_string());
    out.push_back(std::move(*v));
  }
  return out;
}

Trained train(const std::string& model, DType precision, kernels::Device device) {
  graph::TrainingGraph tg = training_graph(model, 8, precision);
  ExecutorOptions eo;
  eo.device = device;
  auto ex = Executor::create(tg.graph, eo);
  if (!ex.has_value()) FAIL(ex.status().to_string());
  REQUIRE((*ex)->initialize(kSeed).is_ok());
  // The data stream of the f32 graph: the same batches whatever the precision.
  graph::TrainingGraph f32 = training_graph(model, 8, DType::kF32);
  auto data = SyntheticData::create(f32.graph, f32.inputs, kDataSeed);
  REQUIRE(data.has_value());
  Trained t;
  t.initial = parameters(**ex, tg);
  for (int s = 0; s < kSteps; ++s) {
    auto r = (*ex)->run(data->next_batch());
    if (!r.has_value()) FAIL(r.status().to_string());
    t.losses.push_back(r->loss);
  }
  t.memory = (*ex)->memory();
  t.parameters = parameters(**ex, tg);
  return t;
}

bool have_gpu() {
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (inv.cuda_devices > 0) return true;
  WARN("no GPU, not run: " << inv.summary);
  return false;
}

// `rel`: per step loss; `param_rel`: the parameters' distance against how far they moved.
void compare(const Trained& cpu, const Trained& gpu, double rel, double param_rel) {
  REQUIRE(cpu.losses.size() == gpu.losses.size());
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    INFO("step " << i + 1 << ": CPU " << cpu.losses[i] << ", GPU " << gpu.losses[i]);
    CHECK(std::isfinite(gpu.losses[i]));
    CHECK(std::abs(gpu.losses[i] - cpu.losses[i]) <= rel * std::abs(cpu.losses[i]));
  }
  CHECK(gpu.losses.back() < gpu.losses.front());
  // The same buffer plan: the same persistent bytes and the same peak of the values; the
  // workspaces (and so the whole peak) differ between the backends.
  CHECK(gpu.memory.persistent.value() == cpu.memory.persistent.value());
  CHECK(gpu.memory.peak_values.value() == cpu.memory.peak_values.value());
  CHECK(gpu.memory.peak.value() >= gpu.memory.peak_values.value());
  CHECK(gpu.memory.reserved.value() >= gpu.memory.peak.value());
  // The parameters after the last update (the loss alone could hide a wrong update of a
  // parameter it barely depends on): both runs start from the same values, and the distance
  // between their results must be small against the distance the CPU's updates moved them. As
  // a norm over all parameters: Adam divides by the gradient's own size, so an element whose
  // gradient is rounding noise (a sum that cancels) may move differently on the two backends.
  REQUIRE(cpu.parameters.size() == gpu.parameters.size());
  REQUIRE(cpu.initial.size() == gpu.initial.size());
  double moved = 0.0;
  double apart = 0.0;
  for (size_t p = 0; p < cpu.parameters.size(); ++p) {
    const HostTensor& a = cpu.parameters[p];
    const HostTensor& b = gpu.parameters[p];
    REQUIRE(a.numel() == b.numel());
    for (int64_t k = 0; k < a.numel(); ++k) {
      // Initialised by the same function on the host: bit-identical.
      REQUIRE(cpu.initial[p].f32()[k] == gpu.initial[p].f32()[k]);
      const double step = static_cast<double>(a.f32()[k]) - cpu.initial[p].f32()[k];
      const double gap = static_cast<double>(a.f32()[k]) - b.f32()[k];
      moved += step * step;
      apart += gap * gap;
    }
  }
  INFO("parameters: CPU updates moved them " << std::sqrt(moved) << ", GPU and CPU end "
                                             << std::sqrt(apart) << " apart");
  CHECK(moved > 0.0);
  CHECK(std::sqrt(apart) <= param_rel * std::sqrt(moved));
}

TEST_CASE("GPU executor: gpt-tiny in f32 trains as on the CPU", "[runtime][gpu]") {
  if (!have_gpu()) return;
  const Trained cpu = train("gpt-tiny", DType::kF32, kernels::Device::kCpu);
  const Trained gpu = train("gpt-tiny", DType::kF32, kernels::Device::kCuda);
  compare(cpu, gpu, 1e-4, 1e-2);
}

TEST_CASE("GPU executor: gpt-tiny in bf16 mixed precision trains as on the CPU", "[runtime][gpu]") {
  if (!have_gpu()) return;
  const Trained cpu = train("gpt-tiny", DType::kBF16, kernels::Device::kCpu);
  const Trained gpu = train("gpt-tiny", DType::kBF16, kernels::Device::kCuda);
  compare(cpu, gpu, 1e-2, 0.1);
}

TEST_CASE("GPU executor: parameters cross through set_value/get_value, not persistent_view",
          "[runtime][gpu]") {
  if (!have_gpu()) return;
  graph::TrainingGraph tg = training_graph("gpt-tiny", 8, DType::kF32);
  ExecutorOptions eo;
  eo.device = kernels::Device::kCuda;
  auto ex = Executor::create(tg.graph, eo);
  if (!ex.has_value()) FAIL(ex.status().to_string());
  REQUIRE((*ex)->initialize(kSeed).is_ok());
  const ValueId p = tg.parameters.front().param;
  auto view = (*ex)->persistent_view(p);
  REQUIRE_FALSE(view.has_value());
  CHECK(view.status().code() == Errc::kUnavailable);
  auto v = (*ex)->get_value(p);
  REQUIRE(v.has_value());
  for (int64_t k = 0; k < v->numel(); ++k) v->f32()[k] = static_cast<float>(k % 7) - 3.0f;
  REQUIRE((*ex)->set_value(p, *v).is_ok());
  auto back = (*ex)->get_value(p);
  REQUIRE(back.has_value());
  for (int64_t k = 0; k < v->numel(); ++k) REQUIRE(back->f32()[k] == v->f32()[k]);
  // check_finite and profile run on the GPU too (each synchronises per op).
  ExecutorOptions checked = eo;
  checked.check_finite = true;
  checked.profile = true;
  auto ex2 = Executor::create(tg.graph, checked);
  if (!ex2.has_value()) FAIL(ex2.status().to_string());
  REQUIRE((*ex2)->initialize(kSeed).is_ok());
  auto data = SyntheticData::create(tg.graph, tg.inputs, kDataSeed);
  REQUIRE(data.has_value());
  auto r = (*ex2)->run(data->next_batch());
  if (!r.has_value()) FAIL(r.status().to_string());
  CHECK(std::isfinite(r->loss));
  CHECK_FALSE((*ex2)->profile().empty());
  CHECK((*ex2)->gpu_memory_stats().reserved > 0);
}

}  // namespace
}  // namespace meshpipe::runtime

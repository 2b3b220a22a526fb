// Tests of the single-device executor: buffer reuse, in-place updates, errors, determinism.
#include "runtime/executor.h"

#include <catch2/catch.hpp>

#include "graph/builder.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "kernels/device.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {
namespace {

using graph::Builder;
using graph::InitSpec;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("buffers are freed after their last use, so a deep chain needs little memory",
          "[runtime]") {
  // x -> 20 x (tanh) -> sum: each activation is 4 KiB; without reuse the step would hold 84 KiB.
  Builder b;
  ValueId x = b.parameter("x", Shape{32, 32}, InitSpec::normal(1.0f));
  ValueId h = x;
  for (int i = 0; i < 20; ++i) h = b.tanh(h);
  ValueId loss = b.reduce_sum(h, {0, 1});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  auto exec = Executor::create(fg->graph);
  REQUIRE(exec.has_value());
  REQUIRE((*exec)->initialize(7).is_ok());
  auto st = (*exec)->run({});
  REQUIRE(st.has_value());
  // Live at the peak: x (persistent), at most two activations, the scalar loss.
  CHECK(st->peak_bytes.value() <= 3 * 4096 + 64);
  CHECK(st->peak_bytes.value() >= 4096);
  // No op of the chain needs a workspace: the peak is the values' own.
  CHECK((*exec)->memory().peak_values.value() == st->peak_bytes.value());
  CHECK((*exec)->gpu_memory_stats().reserved == 0);  // a CPU executor
}

TEST_CASE("optimizer updates run in place on the parameter buffers", "[runtime]") {
  auto spec = graph::models::find_model("mlp-small");
  REQUIRE(spec.has_value());
  auto fg = graph::models::build_model(*spec);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  auto exec = Executor::create(tg->graph);
  REQUIRE(exec.has_value());
  REQUIRE((*exec)->initialize(1).is_ok());
  auto data = SyntheticData::create(tg->graph, tg->inputs, 3);
  REQUIRE(data.has_value());
  auto st = (*exec)->run(data->next_batch());
  REQUIRE(st.has_value());
  const auto mem = (*exec)->memory();
  // Parameters (3.48M floats) + 2 Adam moments: 3 x 13.9 MB persistent. A copy of the parameters
  // and moments for the updated values would add another 41.8 MB; gradients add at most 13.9 MB.
  const double persistent = static_cast<double>(mem.persistent.value());
  CHECK(persistent == Approx(3.0 * 4.0 * 3480000).epsilon(0.01));
  CHECK(static_cast<double>(st->peak_bytes.value()) < 1.45 * persistent);
}

TEST_CASE("Adam in the training graph matches a hand-computed step", "[runtime]") {
  // loss = sum(w * x) with x = 1: gradient 1 everywhere. One Adam step with lr 0.1:
  // m = 0.1, v = 0.001, mhat = 1, vhat = 1, w' = w - 0.1 * 1 / (1 + 1e-8).
  Builder b;
  ValueId x = b.input("x", Shape{3}, DType::kF32);
  ValueId w = b.parameter("w", Shape{3}, InitSpec::ones());
  ValueId loss = b.reduce_sum(b.mul(w, x), {0});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  graph::OptimizerConfig adam;
  adam.lr = 0.1f;
  auto tg = graph::make_training_graph(std::move(*fg), adam);
  REQUIRE(tg.has_value());
  auto exec = Executor::create(tg->graph);
  REQUIRE(exec.has_value());
  REQUIRE((*exec)->initialize(1).is_ok());
  const HostTensor ones = HostTensor::from_f32(Shape{3}, {1, 1, 1});
  REQUIRE((*exec)->run({{x, ones}}).has_value());
  auto w1 = (*exec)->get_value(w);
  REQUIRE(w1.has_value());
  CHECK(w1->f32()[0] == Approx(0.9).epsilon(1e-6));
  // Second step: m = 0.19, v = 0.001999, mhat = 0.19/0.19 = 1, vhat = 1 -> another -0.1.
  REQUIRE((*exec)->run({{x, ones}}).has_value());
  CHECK((*exec)->get_value(w)->f32()[2] == Approx(0.8).epsilon(1e-6));
}

TEST_CASE("bad inputs are errors that name the value", "[runtime]") {
  Builder b;
  ValueId x = b.input("features", Shape{2, 3}, DType::kF32);
  ValueId w = b.parameter("w", Shape{3, 2}, InitSpec::ones());
  ValueId loss = b.reduce_sum(b.matmul(x, w), {0, 1});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  auto exec = Executor::create(fg->graph);
  REQUIRE(exec.has_value());
  auto missing = (*exec)->run({});
  REQUIRE_FALSE(missing.has_value());
  CHECK(contains(missing.status().message(), "'features' [2, 3] was not given"));
  auto wrong = (*exec)->run({{x, HostTensor(Shape{3, 2}, DType::kF32)}});
  REQUIRE_FALSE(wrong.has_value());
  CHECK(contains(wrong.status().message(), "input 'features' must be [2, 3] f32"));
  CHECK_FALSE((*exec)->set_value(w, HostTensor(Shape{2}, DType::kF32)).is_ok());
  CHECK_FALSE((*exec)->get_value(ValueId(9999)).has_value());
}

TEST_CASE("an f16 graph without master weights is rejected by the executor with advice",
          "[runtime]") {
  auto fg = graph::models::build_model(*graph::models::find_model("gpt-tiny"),
                                       {.batch = 2, .dtype = DType::kF16});
  REQUIRE(fg.has_value());
  auto exec = Executor::create(fg->graph);
  REQUIRE_FALSE(exec.has_value());
  // Parameters in f16 cannot be initialised or updated as such: mixed precision keeps f32
  // masters (graph/mixed_precision.h; `--precision`).
  CHECK(contains(exec.status().message(), "must be f32"));
  CHECK(contains(exec.status().message(), "--precision"));
}

TEST_CASE("non-finite values are reported with the op that produced them", "[runtime]") {
  Builder b;
  ValueId x = b.input("x", Shape{2}, DType::kF32);
  ValueId w = b.parameter("w", Shape{2}, InitSpec::zeros());
  ValueId loss = b.reduce_sum(b.div(x, w, "ratio"), {0});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  ExecutorOptions eo;
  eo.check_finite = true;
  auto exec = Executor::create(fg->graph, eo);
  REQUIRE(exec.has_value());
  REQUIRE((*exec)->initialize(1).is_ok());
  auto st = (*exec)->run({{x, HostTensor::from_f32(Shape{2}, {1, 2})}});
  REQUIRE_FALSE(st.has_value());
  CHECK(contains(st.status().message(), "op 'ratio' (div) wrote a non-finite value"));
}

TEST_CASE("non-finite half-precision outputs are reported too", "[runtime]") {
  // 1e6 overflows f16 (largest finite 65504): the conversion writes Inf, and the check must
  // see it although the value is not f32.
  Builder b;
  ValueId x = b.input("x", Shape{2}, DType::kF32);
  ValueId h = b.convert(x, DType::kF16, "to_half");
  ValueId loss = b.reduce_sum(b.convert(h, DType::kF32, "back"), {0});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  ExecutorOptions eo;
  eo.check_finite = true;
  auto exec = Executor::create(fg->graph, eo);
  REQUIRE(exec.has_value());
  REQUIRE((*exec)->initialize(1).is_ok());
  auto st = (*exec)->run({{x, HostTensor::from_f32(Shape{2}, {1, 1e6f})}});
  REQUIRE_FALSE(st.has_value());
  CHECK(contains(st.status().message(), "op 'to_half' (convert) wrote a non-finite value"));
  CHECK(contains(st.status().message(), "element 1 of output 0"));
}

TEST_CASE("parameter initialisation is deterministic and follows the init spec", "[runtime]") {
  auto fg = graph::models::build_model(*graph::models::find_model("gpt-tiny"));
  REQUIRE(fg.has_value());
  auto a = Executor::create(fg->graph);
  auto c = Executor::create(fg->graph);
  REQUIRE(a.has_value());
  REQUIRE(c.has_value());
  REQUIRE((*a)->initialize(5).is_ok());
  REQUIRE((*c)->initialize(5).is_ok());
  for (ValueId p : fg->graph.values_with_role(graph::ValueRole::kParameter)) {
    const auto& v = fg->graph.value(p);
    auto ta = (*a)->get_value(p);
    auto tc = (*c)->get_value(p);
    REQUIRE(ta.has_value());
    CHECK(ta->to_f32_vector() == tc->to_f32_vector());
    if (v.init.kind == InitSpec::Kind::kNormal && v.shape.numel() >= 1000) {
      double s2 = 0;
      for (float f : ta->to_f32_vector()) s2 += double(f) * f;
      CHECK(std::sqrt(s2 / double(v.shape.numel())) == Approx(v.init.scale).epsilon(0.1));
    }
    if (v.init.kind == InitSpec::Kind::kOnes) CHECK(ta->f32()[0] == 1.0f);
  }
}

// The GPU path itself is tested where there is a GPU (gpu_executor_test.cc, label `gpu`); here
// only that asking for one without it is an error that says why (no silent CPU fallback).
TEST_CASE("a CUDA executor without a CUDA device is refused, naming why", "[runtime]") {
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  Builder b;
  ValueId x = b.parameter("x", Shape{4, 4}, InitSpec::normal(1.0f));
  ValueId loss = b.reduce_sum(b.tanh(x), {0, 1});
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  ExecutorOptions eo;
  eo.device = kernels::Device::kCuda;
  auto exec = Executor::create(fg->graph, eo);
  if (inv.cuda_devices > 0) {  // a GPU machine: it runs there, and reads back like the CPU's
    if (!exec.has_value()) FAIL(exec.status().to_string());
    CHECK((*exec)->device() == kernels::Device::kCuda);
    REQUIRE((*exec)->initialize(3).is_ok());
    auto st = (*exec)->run({});
    REQUIRE(st.has_value());
    auto cpu = Executor::create(fg->graph);
    REQUIRE(cpu.has_value());
    REQUIRE((*cpu)->initialize(3).is_ok());
    auto ref = (*cpu)->run({});
    REQUIRE(ref.has_value());
    CHECK(st->loss == Approx(ref->loss).epsilon(1e-5));
    return;
  }
  REQUIRE_FALSE(exec.has_value());
  CHECK(exec.status().code() == Errc::kUnavailable);
  INFO(exec.status().message());
  CHECK(contains(exec.status().message(), "the GPU executor"));
  CHECK(contains(exec.status().message(), inv.summary));
}

}  // namespace
}  // namespace meshpipe::runtime

// Global-norm gradient clipping (issue 18, item 5; ExecutorOptions/InterpreterOptions
// clip_grad_norm): the squared-norm kernel against a brute-force sum, the clipping factor against
// PyTorch's clip_grad_norm_ formula, the devices' agreement on the norm over the transport, the
// single device against what its own parameter updates imply (plain SGD moves p by -lr * c * g),
// and plans that shard the gradient every way (data, operator, ZeRO-2/3, pipeline, a 2-D mesh)
// against the single device: the same norm every step, and the same parameters after the steps.
// PyTorch itself is the reference of tests/onnx/train_compare_test.sh.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <thread>

#include "comm/transport.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/half.h"
#include "runtime/compact_program.h"
#include "runtime/executor.h"
#include "runtime/grid_plan.h"
#include "runtime/in_process_run.h"
#include "runtime/internal/update_agreement.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
constexpr uint64_t kSeed = 21;
constexpr uint64_t kDataSeed = 8;

TEST_CASE("sum_of_squares adds every floating element's square once, in double", "[grad_clip]") {
  const kernels::KernelContext ctx;
  Rng rng(3);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    HostTensor a(Shape{37, 5}, t);
    HostTensor b(Shape{3}, t);
    double expect = 0.0;
    for (HostTensor* h : {&a, &b}) {
      for (int64_t i = 0; i < h->view().numel(); ++i) {
        float x = static_cast<float>(rng.normal());
        if (t == DType::kF32) {
          h->view().f32()[i] = x;
        } else {
          kernels::round_to_half(&x, static_cast<uint16_t*>(h->data()) + i, 1, t);
        }
        const double back = kernels::element_as_float(h->data(), t, i);  // as stored
        expect += back * back;
      }
    }
    HostTensor ids(Shape{4}, DType::kI32);  // skipped
    std::memset(ids.data(), 0x7f, static_cast<size_t>(ids.bytes()));
    const std::vector<kernels::TensorView> views{a.view(), ids.view(), b.view()};
    auto got = kernels::sum_of_squares(ctx, views);
    REQUIRE(got.has_value());
    INFO(dtype_name(t));
    CHECK(std::abs(*got - expect) <= 1e-12 * expect);
  }
}

TEST_CASE("the clipping factor is clip_grad_norm_'s", "[grad_clip]") {
  CHECK(internal::clip_factor(2.0, 1.0f) == static_cast<float>(1.0 / (2.0 + 1e-6)));
  CHECK(internal::clip_factor(0.5, 1.0f) == 1.0f);  // below the limit: untouched
  CHECK(internal::clip_factor(1e6, 0.0f) == 1.0f);  // off
  CHECK(internal::clip_factor(std::numeric_limits<double>::infinity(), 1.0f) == 1.0f);
}

TEST_CASE("the devices of a program agree on the global norm over the transport", "[grad_clip]") {
  // Three devices (ids 0, 2, 5; the lowest gathers) hold gradients of squares 9, 16 and 0: the
  // norm is 5. Under a loss scale of 4 the gradients are 4x: the unscaled norm is still 5.
  Program program;
  program.devices.resize(6);
  for (size_t d = 0; d < 6; ++d) program.devices[d].device = -1;
  for (int32_t d : {0, 2, 5}) program.devices[static_cast<size_t>(d)].device = d;
  for (float scale : {1.0f, 4.0f}) {
    auto fabric = comm::InProcessFabric::create(6);
    std::vector<std::unique_ptr<comm::Transport>> ends;
    for (int e = 0; e < 6; ++e) ends.push_back(fabric->endpoint(e));
    const int32_t ids[3] = {0, 2, 5};
    const float values[3] = {3.0f, 4.0f, 0.0f};
    std::vector<double> norms(3, -2.0);
    std::vector<float> grad_scales(3, 0.0f);
    std::vector<std::thread> threads;
    for (int k = 0; k < 3; ++k) {
      threads.emplace_back([&, k] {
        LossScaleOptions ls;
        ls.enabled = scale != 1.0f;
        ls.initial = scale;
        internal::UpdateAgreement a(ls, 2.0f, program, program.devices[static_cast<size_t>(ids[k])],
                                    nullptr);
        a.begin_step();
        HostTensor g(Shape{1}, DType::kF32);
        g.view().f32()[0] = values[k] * scale;
        const kernels::TensorView v = g.view();
        if (!a.add_squares(kernels::KernelContext{}, std::span<const kernels::TensorView>(&v, 1))
                 .is_ok() ||
            !a.agree(ends[static_cast<size_t>(ids[k])].get(), std::chrono::milliseconds(10000))
                 .is_ok()) {
          return;
        }
        norms[static_cast<size_t>(k)] = a.grad_norm();
        // An optimizer update reads g * clip / scale.
        LocalOp l;
        l.op.kind = OpKind::kSgdUpdate;
        Instruction ins;
        ins.phase = Phase::kUpdate;
        OpAttrs scratch;
        const OpAttrs* attrs = a.attrs_for(ins, l, scratch);
        if (attrs != nullptr) grad_scales[static_cast<size_t>(k)] = attrs->grad_scale;
      });
    }
    for (auto& t : threads) t.join();
    INFO("scale " << scale);
    for (int k = 0; k < 3; ++k) {
      CHECK(norms[static_cast<size_t>(k)] == Approx(5.0).epsilon(1e-12));
      CHECK(grad_scales[static_cast<size_t>(k)] ==
            Approx(2.0 / (5.0 + 1e-6) / scale).epsilon(1e-6));
    }
  }
}

// ---- training ----

graph::TrainingGraph gpt(int64_t batch, const graph::OptimizerConfig& opt) {
  return testing::zoo_training_graph("gpt-tiny", batch, opt);
}

graph::OptimizerConfig plain_sgd() {
  graph::OptimizerConfig o;
  o.kind = graph::OptimizerConfig::Kind::kSgd;
  o.lr = 0.5f;
  return o;
}

using Params = std::map<std::string, std::vector<float>>;

Params params_of(const graph::Graph& g,
                 const std::function<HostTensor(ValueId, const std::string&)>& read) {
  Params out;
  for (int64_t i = 0; i < g.num_values(); ++i) {
    const graph::Value& v = g.value(ValueId(static_cast<int32_t>(i)));
    if (v.role != graph::ValueRole::kParameter) continue;
    HostTensor t = read(ValueId(static_cast<int32_t>(i)), v.name);
    const float* p = t.view().f32();
    out[v.name].assign(p, p + t.view().numel());
  }
  return out;
}

struct Run {
  std::vector<double> norms;
  Params before, after;
};

Run one_device(int steps, float clip, const graph::OptimizerConfig& opt) {
  graph::TrainingGraph tg = gpt(8, opt);
  ExecutorOptions eo;
  eo.clip_grad_norm = clip;
  auto ex = Executor::create(tg.graph, eo);
  if (!ex.has_value()) FAIL(ex.status().to_string());
  REQUIRE((*ex)->initialize(kSeed).is_ok());
  auto data = SyntheticData::create(tg.graph, tg.inputs, kDataSeed);
  REQUIRE(data.has_value());
  const auto read = [&](ValueId id, const std::string&) {
    auto v = (*ex)->get_value(id);
    REQUIRE(v.has_value());
    return std::move(*v);
  };
  Run out;
  out.before = params_of(tg.graph, read);
  for (int s = 0; s < steps; ++s) {
    auto r = (*ex)->run(data->next_batch());
    if (!r.has_value()) FAIL(r.status().to_string());
    out.norms.push_back(r->grad_norm);
  }
  out.after = params_of(tg.graph, read);
  return out;
}

// `compact`: the program in compact form (templates per micro-batch, as train::LocalJob runs
// it); `scale` > 0: loss scaling at that fixed scale (the norm is of the unscaled gradients).
Run parallel(int steps, float clip, const graph::OptimizerConfig& opt, const char* cluster,
             int64_t micro_batches, const planner::GridConfig& grid, bool compact = false,
             float scale = 0.0f) {
  graph::TrainingGraph tg = gpt(8 / micro_batches, opt);
  const planner::Plan plan = testing::grid_plan(tg.graph, micro_batches, grid, 4, cluster);
  InProcessRunOptions ro;
  ro.interpreter.clip_grad_norm = clip;
  if (scale > 0.0f) {
    ro.interpreter.loss_scale.enabled = true;
    ro.interpreter.loss_scale.initial = scale;
  }
  Program program;
  Expected<std::unique_ptr<InProcessRun>> run = make_error(Errc::kInternal, "not created");
  if (compact) {
    auto cp = lower_compact(plan, tg.graph);
    if (!cp.has_value()) FAIL(cp.status().to_string());
    program = cp->base;
    run = InProcessRun::create(std::move(*cp), tg.graph, ro);
  } else {
    program = testing::lowered(plan, tg.graph);
    run = InProcessRun::create(program, tg.graph, ro);
  }
  if (!run.has_value()) FAIL(run.status().to_string());
  REQUIRE((*run)->initialize(kSeed).is_ok());
  graph::TrainingGraph whole = gpt(8, opt);
  auto data = SyntheticData::create(whole.graph, whole.inputs, kDataSeed);
  REQUIRE(data.has_value());
  const auto read = [&](ValueId, const std::string& name) {
    auto v = (*run)->read_value(name);
    if (!v.has_value()) FAIL(v.status().to_string());
    return std::move(*v);
  };
  Run out;
  out.before = params_of(tg.graph, read);
  for (int s = 0; s < steps; ++s) {
    auto mbs =
        split_micro_batches(whole.graph, data->next_batch(), program.inputs, program.micro_batches);
    REQUIRE(mbs.has_value());
    auto r = (*run)->step(*mbs);
    if (!r.has_value()) FAIL(r.status().to_string());
    out.norms.push_back(r->grad_norm);
  }
  out.after = params_of(tg.graph, read);
  return out;
}

double distance(const Params& a, const Params& b) {
  double s = 0.0;
  for (const auto& [name, x] : a) {
    const std::vector<float>& y = b.at(name);
    REQUIRE(x.size() == y.size());
    for (size_t i = 0; i < x.size(); ++i) s += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  }
  return std::sqrt(s);
}

TEST_CASE("one device: plain SGD moves the parameters by -lr * clip * g", "[grad_clip]") {
  // Without clipping one SGD step moves the parameters by lr * g: its length over lr is the
  // gradient's norm, which the clipped run must report, and the clipped step must be the
  // unclipped one times max / (norm + 1e-6).
  const graph::OptimizerConfig sgd = plain_sgd();
  const Run free = one_device(1, 0.0f, sgd);
  const Run clipped = one_device(1, 0.25f, sgd);
  const double norm = distance(free.after, free.before) / sgd.lr;
  CHECK(free.norms[0] == -1.0);  // off reports no norm
  CHECK(clipped.norms[0] == Approx(norm).epsilon(1e-5));
  REQUIRE(norm > 0.25);  // the clipping is active
  const double factor = 0.25 / (norm + 1e-6);
  double worst = 0.0;
  for (const auto& [name, p0] : free.before) {
    for (size_t i = 0; i < p0.size(); ++i) {
      const double step_free = double(free.after.at(name)[i]) - p0[i];
      const double step_clip = double(clipped.after.at(name)[i]) - p0[i];
      worst = std::max(worst, std::abs(step_clip - factor * step_free));
    }
  }
  CHECK(worst < 1e-6);
  // A limit above the norm changes nothing.
  const Run loose = one_device(1, static_cast<float>(norm * 2), sgd);
  CHECK(distance(loose.after, free.after) == 0.0);
}

TEST_CASE("parallel plans: the global norm counts every gradient element once", "[grad_clip]") {
  struct Case {
    const char* name;
    const char* cluster;
    int64_t micro_batches;
    planner::GridConfig grid;
    bool compact = false;
    float scale = 0.0f;
  };
  const Case cases[] = {
      {"data parallel (4, 1)", "cpu:1x4", 1, {4, 1, 1, Mode::kReplicated}},
      {"operator parallel (1, 4)", "cpu:1x4", 1, {1, 4, 1, Mode::kFree}},
      {"ZeRO-2 (4, 1)", "cpu:1x4", 1, {4, 1, 1, Mode::kZero2}},
      {"ZeRO-3 (2, 2)", "cpu:1x4", 1, {2, 2, 1, Mode::kZero3}},
      {"pipeline of 2 stages of (2, 1)", "cpu:1x4", 2, {2, 1, 2, Mode::kFree}},
      {"pipeline of 2 stages of (1, 2), 2x2 cluster", "cpu:2x2", 2, {1, 2, 2, Mode::kFree}},
      // As train::LocalJob runs a plan (compact templates), with loss scaling's exchange too: a
      // power-of-two scale leaves the unscaled norm and the update exact.
      {"compact pipeline of (2, 1) stages, loss scale 1024",
       "cpu:1x4",
       4,
       {2, 1, 2, Mode::kFree},
       true,
       1024.0f},
      {"compact ZeRO-3 (4, 1), loss scale 64", "cpu:1x4", 1, {4, 1, 1, Mode::kZero3}, true, 64.0f},
  };
  graph::OptimizerConfig adam;  // Adam with weight decay: what GPT training clips
  adam.weight_decay = 0.1f;
  const Run ref = one_device(3, 0.3f, adam);
  REQUIRE(ref.norms[0] > 0.3);
  for (const Case& c : cases) {
    INFO(c.name);
    const Run r = parallel(3, 0.3f, adam, c.cluster, c.micro_batches, c.grid, c.compact, c.scale);
    for (size_t s = 0; s < ref.norms.size(); ++s) {
      INFO("step " << s + 1);
      CHECK(r.norms[s] == Approx(ref.norms[s]).epsilon(1e-5));
    }
    CHECK(distance(r.after, ref.after) < 1e-5 * distance(ref.after, ref.before) + 1e-6);
  }
}

}  // namespace
}  // namespace meshpipe::runtime

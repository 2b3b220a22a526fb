// Every op of the tiny zoo models under every strategy of a (2, 2) mesh: the four devices run
// their LocalOp on tiles of real inputs, and the tiles, with partial sums added over their mesh
// axes, reassemble the output of the same op run whole (the single-device reference). Batch
// norms whose batch is split synchronise through collectives inside the op; the parallel
// training tests cover them (wresnet-tiny, data parallel).
#include "runtime/local_op.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <set>

#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "kernels/backend.h"
#include "kernels/layout.h"
#include "planner/cost_model.h"
#include "planner/strategy.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"
#include "shard/iteration_space.h"

namespace meshpipe::runtime {
namespace {

const kernels::KernelContext kCtx;

std::vector<int64_t> begins(const std::vector<mesh::DimRange>& r) {
  std::vector<int64_t> b;
  for (const auto& x : r) b.push_back(x.begin);
  return b;
}

// Runs `op` whole or as device (i0, i1)'s LocalOp on the tiles of `full` inputs.
std::vector<HostTensor> run(const graph::Op& op, const std::vector<Shape>& in_shapes,
                            const std::vector<Shape>& out_shapes,
                            const std::vector<HostTensor>& inputs, const graph::Graph& g,
                            int64_t row_offset, int64_t id_offset, float scale) {
  std::vector<kernels::TensorView> in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    kernels::TensorView v = inputs[i].view();
    v.shape = in_shapes[i];
    v.strides = v.shape.strides();
    in.push_back(v);
  }
  std::vector<HostTensor> outs;
  for (size_t o = 0; o < out_shapes.size(); ++o) {
    outs.emplace_back(out_shapes[o], g.value(op.outputs[o]).dtype);
  }
  std::vector<kernels::TensorView> out;
  for (HostTensor& t : outs) out.push_back(t.view());
  const int64_t ws =
      kernels::kernel_workspace_bytes(kernels::Device::kCpu, op.kind, in_shapes, op.attrs);
  HostTensor wst(Shape{std::max<int64_t>((ws + 3) / 4, 1)}, DType::kF32);
  kernels::KernelArgs args;
  args.ctx = &kCtx;
  args.in = in;
  args.out = out;
  args.workspace = wst.view();
  args.attrs = &op.attrs;
  args.row_offset = row_offset;
  args.id_offset = id_offset;
  const Status s = kernels::run_kernel(kernels::Device::kCpu, op.kind, args);
  REQUIRE(s.is_ok());
  if (scale != 1.0f) {
    for (int64_t k = 0; k < outs[0].numel(); ++k) outs[0].f32()[k] *= scale;
  }
  return outs;
}

void check_graph(const std::string& model, int64_t batch, int& checked) {
  const graph::TrainingGraph tg = testing::zoo_training_graph(model, batch);
  const graph::Graph& g = tg.graph;
  // Real values of every tensor from one single-device step.
  ExecutorOptions eo;
  for (int64_t v = 0; v < g.num_values(); ++v) eo.retain.push_back(ValueId(int32_t(v)));
  auto ex = Executor::create(g, eo);
  REQUIRE(ex.has_value());
  REQUIRE((*ex)->initialize(3).is_ok());
  auto data = SyntheticData::create(g, tg.inputs, 4);
  REQUIRE(data.has_value());
  REQUIRE((*ex)->run(data->next_batch()).has_value());

  const mesh::LogicalMesh m = mesh::logical_mesh(2, 2);
  planner::AnalyticCostModel cost(mesh::cluster_preset("cpu:1x4")->device);
  const planner::StrategyContext ctx{&g, &m, &cost};
  std::set<std::string> seen;
  for (const graph::Op& op : g.ops()) {
    if (op.phase == graph::OpPhase::kUpdate) continue;  // elementwise; see parallel_test
    std::string key = std::string(graph::op_kind_name(op.kind));
    for (ValueId v : op.inputs) key += g.value(v).shape.to_string();
    if (!seen.insert(key).second) continue;
    std::vector<HostTensor> full;
    for (ValueId v : op.inputs) {
      auto t = (*ex)->get_value(v);
      REQUIRE(t.has_value());
      full.push_back(std::move(*t));
    }
    std::vector<Shape> in_shapes;
    std::vector<Shape> out_shapes;
    for (ValueId v : op.inputs) in_shapes.push_back(g.value(v).shape);
    for (ValueId v : op.outputs) out_shapes.push_back(g.value(v).shape);
    const auto want = run(op, in_shapes, out_shapes, full, g, 0, 0, 1.0f);
    auto strategies = planner::enumerate_strategies(ctx, op, true);
    REQUIRE(strategies.has_value());
    for (const planner::Strategy& s : *strategies) {
      std::vector<std::vector<HostTensor>> got(4);
      std::vector<LocalOp> locals;
      bool synced = false;
      for (int64_t d = 0; d < 4; ++d) {
        auto l = make_local_op(g, op, s, m, d / 2, d % 2);
        REQUIRE(l.has_value());
        synced = synced || l->sync_axes != 0;
        std::vector<HostTensor> tiles;
        for (size_t i = 0; i < op.inputs.size(); ++i) {
          HostTensor t(l->inputs[i], full[i].dtype());
          const auto r = mesh::tile_ranges(in_shapes[i], s.inputs[i], m, d / 2, d % 2);
          kernels::copy_box(kCtx, full[i].view(), begins(r), t.view(),
                            std::vector<int64_t>(r.size(), 0), l->inputs[i].dims());
          tiles.push_back(std::move(t));
        }
        if (l->sync_axes == 0) {
          got[size_t(d)] = run(l->op, l->inputs, l->outputs, tiles, g, l->row_offset, l->id_offset,
                               l->output_scale);
        }
        locals.push_back(std::move(*l));
      }
      if (synced) continue;
      for (size_t o = 0; o < op.outputs.size(); ++o) {
        const graph::Value& ov = g.value(op.outputs[o]);
        if (ov.dtype != DType::kF32) continue;
        mesh::ShardingSpec spec = locals[0].computed_specs[o];
        for (const auto& r : s.resolutions) {
          if (r.output == o) spec.partial = uint8_t(spec.partial | (1u << r.axis));
        }
        // Add each device's tile once per partial group; replicas must agree.
        HostTensor sum(ov.shape, DType::kF32);
        std::fill(sum.f32(), sum.f32() + sum.numel(), 0.0f);
        const uint8_t used = spec.used_axes();
        for (int64_t d = 0; d < 4; ++d) {
          const int64_t c[2] = {d / 2, d % 2};
          bool representative = true;
          for (int a = 0; a < 2; ++a) {
            if ((used & (1u << a)) == 0 && c[a] != 0) representative = false;
          }
          if (!representative) continue;
          const auto r = mesh::tile_ranges(ov.shape, spec, m, c[0], c[1]);
          HostTensor placed(ov.shape, DType::kF32);
          std::fill(placed.f32(), placed.f32() + placed.numel(), 0.0f);
          kernels::copy_box(kCtx, got[size_t(d)][o].view(), std::vector<int64_t>(r.size(), 0),
                            placed.view(), begins(r), got[size_t(d)][o].shape().dims());
          for (int64_t k = 0; k < sum.numel(); ++k) sum.f32()[k] += placed.f32()[k];
        }
        double err = 0.0;
        double scale = 1e-6;
        for (int64_t k = 0; k < sum.numel(); ++k) {
          err = std::max(err, double(std::abs(sum.f32()[k] - want[o].f32()[k])));
          scale = std::max(scale, double(std::abs(want[o].f32()[k])));
        }
        INFO(model << ": op '" << op.name << "' (" << graph::op_kind_name(op.kind) << ") strategy "
                   << s.name << " output " << o << ": max error " << err << " of " << scale);
        CHECK(err <= 1e-4 * scale);
        ++checked;
      }
    }
  }
}

TEST_CASE("every op under every (2, 2) strategy reassembles the whole op's output", "[local_op]") {
  int checked = 0;
  check_graph("gpt-tiny", 4, checked);
  check_graph("moe-tiny", 4, checked);
  check_graph("wresnet-tiny", 4, checked);
  CHECK(checked > 500);
  WARN(checked << " (op, strategy, output) combinations checked");
}

}  // namespace
}  // namespace meshpipe::runtime

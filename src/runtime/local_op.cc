// make_local_op: tile shapes, rewritten attributes and per-device corrections of a sharded op.
#include "runtime/local_op.h"

#include "graph/autodiff.h"
#include "kernels/backend.h"

namespace meshpipe::runtime {

using graph::OpKind;
using mesh::DimSharding;

namespace {

// Mesh-axis mask of a dim sharding.
uint8_t axes_of(DimSharding d) {
  uint8_t m = 0;
  for (int a : mesh::dim_axes(d)) m = static_cast<uint8_t>(m | (1u << a));
  return m;
}

}  // namespace

Expected<LocalOp> make_local_op(const graph::Graph& g, const graph::Op& op,
                                const shard::ShardedOp& strategy, const mesh::LogicalMesh& mesh,
                                int64_t i0, int64_t i1, kernels::Device backend) {
  const auto fail = [&](const Status& s) {
    return s.with_context(fmt::format("op '{}' ({})", op.name, op_kind_name(op.kind)));
  };
  if (strategy.inputs.size() != op.inputs.size() || strategy.outputs.size() != op.outputs.size()) {
    return fail(make_error(
        Errc::kInternal, "strategy has {} inputs and {} outputs, op has {} and {}",
        strategy.inputs.size(), strategy.outputs.size(), op.inputs.size(), op.outputs.size()));
  }
  LocalOp l;
  l.op = op;
  l.loss_seed = graph::is_loss_seed(op);
  for (size_t i = 0; i < op.inputs.size(); ++i) {
    const graph::Value& v = g.value(op.inputs[i]);
    const Status ok = mesh::validate_sharding(v.shape, strategy.inputs[i], mesh);
    if (!ok.is_ok()) return fail(ok.with_context(fmt::format("input '{}'", v.name)));
    l.inputs.push_back(mesh::tile_shape(v.shape, strategy.inputs[i], mesh));
  }
  for (size_t o = 0; o < op.outputs.size(); ++o) {
    mesh::ShardingSpec spec = strategy.outputs[o];
    for (const shard::OutputResolution& r : strategy.resolutions) {
      if (r.output == o && r.kind == mesh::CollectiveKind::kReduceScatter) {
        spec.dims[static_cast<size_t>(r.dim)] = DimSharding::kR;
      }
    }
    const graph::Value& v = g.value(op.outputs[o]);
    const Status ok = mesh::validate_sharding(v.shape, spec, mesh);
    if (!ok.is_ok()) return fail(ok.with_context(fmt::format("output '{}'", v.name)));
    l.outputs.push_back(mesh::tile_shape(v.shape, spec, mesh));
    l.computed_specs.push_back(std::move(spec));
  }

  // Every shape attribute is the shape of output 0 (reshape, broadcast, constant, pad and the
  // gradients that rebuild an input's shape): the device builds its tile of it.
  if (!op.outputs.empty() && op.attrs.shape.rank() > 0 &&
      op.attrs.shape == g.value(op.outputs[0]).shape) {
    l.op.attrs.shape = l.outputs[0];
  }
  const auto range = [&](ValueId v, const mesh::ShardingSpec& spec, int64_t dim) {
    return mesh::tile_ranges(g.value(v).shape, spec, mesh, i0, i1)[static_cast<size_t>(dim)];
  };
  switch (op.kind) {
    case OpKind::kSoftmax:
      if (op.attrs.causal) {
        const int64_t rank = g.value(op.inputs[0]).shape.rank();
        l.row_offset = range(op.inputs[0], strategy.inputs[0], rank - 2).begin;
      }
      break;
    case OpKind::kEmbedding:
      l.id_offset = range(op.inputs[0], strategy.inputs[0], 0).begin;
      break;
    case OpKind::kEmbeddingGrad:
      l.id_offset = range(op.outputs[0], l.computed_specs[0], 0).begin;
      break;
    case OpKind::kCrossEntropy:
    case OpKind::kCrossEntropyGrad: {
      // The kernel divides by its local positions; the mean is over all positions.
      const Shape& full = g.value(op.inputs[0]).shape;
      l.output_scale = static_cast<float>(static_cast<double>(l.inputs[0].numel()) /
                                          static_cast<double>(full.numel()));
      break;
    }
    case OpKind::kReduceMean: {
      const Shape& full = g.value(op.inputs[0]).shape;
      double local = 1.0;
      double global = 1.0;
      for (int64_t axis : op.attrs.axes) {
        local *= static_cast<double>(l.inputs[0][axis]);
        global *= static_cast<double>(full[axis]);
      }
      l.output_scale = static_cast<float>(local / global);
      break;
    }
    case OpKind::kBatchNorm:
    case OpKind::kBatchNormGrad: {
      const size_t x = op.kind == OpKind::kBatchNorm ? 0 : 1;
      const Shape& full = g.value(op.inputs[x]).shape;
      l.sync_axes = axes_of(strategy.inputs[x].dims[0]);
      l.sync_count = static_cast<double>(full.numel() / full[1]);
      break;
    }
    default:
      break;
  }
  l.workspace_bytes = kernels::kernel_workspace_bytes(backend, l.op.kind, l.inputs, l.op.attrs);
  l.work = strategy.work;
  return l;
}

}  // namespace meshpipe::runtime

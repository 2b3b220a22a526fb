// Layout text, and shard_op: the specs, resolutions and work an op's layout implies.
#include "shard/op_layout.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "graph/cost.h"

namespace meshpipe::shard {

using mesh::DimSharding;
using mesh::ShardingSpec;

ShardingSpec spec_of(const std::vector<int>& map, const std::vector<DimSharding>& iter) {
  ShardingSpec s;
  for (int it : map) s.dims.push_back(it < 0 ? DimSharding::kR : iter[static_cast<size_t>(it)]);
  return s;
}

uint8_t axes_mask(DimSharding d) {
  uint8_t m = 0;
  for (int a : mesh::dim_axes(d)) m |= static_cast<uint8_t>(1u << a);
  return m;
}

std::string layout_to_string(const OpLayout& layout) {
  std::vector<std::string> dims;
  for (DimSharding d : layout.iter) dims.emplace_back(mesh::dim_sharding_name(d));
  std::string text = dims.empty() ? "scalar" : fmt::format("{}", fmt::join(dims, ","));
  if (layout.resolution == PartialResolution::kReduceScatter) text += " reduce-scatter";
  if (layout.zero_axis >= 0) text += fmt::format(" zero-axis {}", layout.zero_axis);
  return text;
}

Expected<OpLayout> parse_layout(const std::string& text) {
  OpLayout layout;
  std::string rest = text;
  const auto bad = [&]() {
    return make_error(Errc::kInvalidArgument,
                      "bad op layout '{}': expected iteration dims such as 'S0,R,S1', optionally "
                      "followed by ' reduce-scatter' and ' zero-axis <0|1>'",
                      text);
  };
  const std::string zero = " zero-axis ";
  if (const size_t z = rest.find(zero); z != std::string::npos) {
    const std::string axis = rest.substr(z + zero.size());
    if (axis != "0" && axis != "1") return bad();
    layout.zero_axis = axis == "0" ? 0 : 1;
    rest = rest.substr(0, z);
  }
  const std::string rs = " reduce-scatter";
  if (rest.size() >= rs.size() && rest.compare(rest.size() - rs.size(), rs.size(), rs) == 0) {
    layout.resolution = PartialResolution::kReduceScatter;
    rest = rest.substr(0, rest.size() - rs.size());
  }
  if (rest == "scalar") return layout;
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t comma = std::min(rest.find(',', start), rest.size());
    const std::string tok = rest.substr(start, comma - start);
    DimSharding d = DimSharding::kR;
    if (!mesh::parse_dim_sharding(tok, &d)) return bad();
    layout.iter.push_back(d);
    start = comma + 1;
  }
  return layout;
}

Expected<ShardedOp> shard_op(const graph::Graph& g, const graph::Op& op, const IterSpace& space,
                             const mesh::LogicalMesh& m, std::vector<DimSharding> iter,
                             PartialResolution resolution) {
  if (iter.size() != space.sizes.size()) {
    return make_error(Errc::kInvalidArgument, "the layout has {} iteration dims, the op {}",
                      iter.size(), space.sizes.size());
  }
  uint8_t used = 0;
  int64_t split = 1;
  for (size_t it = 0; it < iter.size(); ++it) {
    if (iter[it] == DimSharding::kR) continue;
    if (!space.splittable[it]) {
      return make_error(Errc::kInvalidArgument, "iteration dim {} cannot be split",
                        space.labels[it]);
    }
    const int64_t shards = mesh::num_shards(iter[it], m);
    if (space.sizes[it] % shards != 0) {
      return make_error(Errc::kInvalidArgument,
                        "iteration dim {} of size {} is not divisible "
                        "by {}",
                        space.labels[it], space.sizes[it], shards);
    }
    const uint8_t mask = axes_mask(iter[it]);
    if ((used & mask) != 0) {
      return make_error(Errc::kInvalidArgument,
                        "iteration dim {} uses a mesh axis another dim already uses",
                        space.labels[it]);
    }
    used |= mask;
    split *= shards;
  }

  ShardedOp s;
  s.iter = iter;
  s.resolution = resolution;
  int64_t traffic = 0;
  for (size_t i = 0; i < space.inputs.size(); ++i) {
    s.inputs.push_back(spec_of(space.inputs[i], iter));
    const graph::Value& v = g.value(op.inputs[i]);
    traffic += mesh::tile_bytes(v.shape, dtype_size(v.dtype), s.inputs.back(), m);
  }
  for (size_t o = 0; o < space.outputs.size(); ++o) {
    ShardingSpec out = spec_of(space.outputs[o], iter);
    const graph::Value& v = g.value(op.outputs[o]);
    // Mesh axes that split a reduction dim of this output leave partial sums.
    for (size_t it = 0; it < iter.size(); ++it) {
      if (iter[it] == DimSharding::kR || !space.is_reduction_for(static_cast<int>(it), o)) continue;
      for (int axis : mesh::dim_axes(iter[it])) {
        const int64_t bytes = mesh::tile_bytes(v.shape, dtype_size(v.dtype), out, m);
        int64_t scatter_dim = -1;
        if (resolution == PartialResolution::kReduceScatter) {
          for (int64_t d = 0; d < v.shape.rank() && scatter_dim < 0; ++d) {
            if (out.dims[static_cast<size_t>(d)] == DimSharding::kR &&
                (out.used_axes() & (1u << axis)) == 0 && v.shape[d] % m.size(axis) == 0) {
              scatter_dim = d;
            }
          }
        }
        s.resolves_partial_sums = true;
        if (scatter_dim >= 0) {
          out.dims[static_cast<size_t>(scatter_dim)] =
              axis == 0 ? DimSharding::kS0 : DimSharding::kS1;
          s.resolutions.push_back(
              {o, mesh::CollectiveKind::kReduceScatter, axis, scatter_dim, bytes});
        } else {
          s.resolutions.push_back({o, mesh::CollectiveKind::kAllReduce, axis, -1, bytes});
        }
      }
    }
    const int64_t out_bytes = mesh::tile_bytes(v.shape, dtype_size(v.dtype), out, m);
    s.output_bytes += out_bytes;
    traffic += out_bytes;
    s.outputs.push_back(std::move(out));
  }
  s.work.flops = Flops(graph::op_flops(g, op).value() / static_cast<double>(split));
  s.work.bytes = Bytes(traffic);
  s.work.dtype = op.outputs.empty() ? DType::kF32 : g.value(op.outputs[0]).dtype;
  s.work.kind = op.kind;
  s.work.is_matmul = op.kind == graph::OpKind::kDot || op.kind == graph::OpKind::kConv2d ||
                     op.kind == graph::OpKind::kConv2dGradInput ||
                     op.kind == graph::OpKind::kConv2dGradFilter;
  if (op.kind == graph::OpKind::kDot && space.inputs.size() == 2 && space.outputs.size() == 1) {
    // Each iteration dim's local extent goes to the GEMM dim its role gives: in both operands and
    // the result a batch dim, in one operand and the result a free (m or n) dim, in both
    // operands only the contraction.
    GemmDims d{1, 1, 1, 1};
    const auto has = [](const std::vector<int>& dims, int it) {
      return std::find(dims.begin(), dims.end(), it) != dims.end();
    };
    for (size_t it = 0; it < space.sizes.size(); ++it) {
      const int i = static_cast<int>(it);
      const int64_t local = space.sizes[it] / mesh::num_shards(iter[it], m);
      const bool a = has(space.inputs[0], i);
      const bool b = has(space.inputs[1], i);
      const bool o = has(space.outputs[0], i);
      if (a && b && o) {
        d.batch *= local;
      } else if (a && o) {
        d.m *= local;
      } else if (b && o) {
        d.n *= local;
      } else if (a && b) {
        d.k *= local;
      }
    }
    s.work.gemm = d;
  }
  return s;
}

Expected<ShardedOp> shard_op(const graph::Graph& g, const graph::Op& op,
                             const mesh::LogicalMesh& mesh, const OpLayout& layout) {
  const auto fail = [&](const Status& st) {
    return st.with_context(fmt::format("op '{}' with layout '{}' on mesh {}", op.name,
                                       layout_to_string(layout), mesh.to_string()));
  };
  auto space = iteration_space(g, op);
  if (!space.has_value()) return fail(space.status());
  auto s = shard_op(g, op, *space, mesh, layout.iter, layout.resolution);
  if (!s.has_value()) return fail(s.status());
  s->zero_axis = layout.zero_axis;
  return s;
}

}  // namespace meshpipe::shard

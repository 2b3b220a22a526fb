// Strategy construction from iteration-dim assignments.
#include "planner/strategy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "graph/cost.h"

namespace meshpipe::planner {

using mesh::DimSharding;
using mesh::ShardingSpec;

namespace {

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

std::string strategy_name(const Strategy& s, const std::vector<std::string>& comm) {
  std::vector<std::string> ins;
  for (const ShardingSpec& i : s.inputs) ins.push_back(i.to_string());
  std::string name = s.outputs.empty() ? "" : s.outputs[0].to_string();
  name += " = " + fmt::format("{}", fmt::join(ins, " x "));
  if (!comm.empty()) name += fmt::format(" | {}", fmt::join(comm, ", "));
  return name;
}

}  // namespace

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
    const bool found = mesh::parse_dim_sharding(tok, &d);
    if (found) layout.iter.push_back(d);
    if (!found) return bad();
    start = comma + 1;
  }
  return layout;
}

Expected<Strategy> make_strategy(const StrategyContext& ctx, const graph::Op& op,
                                 const IterSpace& space, std::vector<DimSharding> iter,
                                 PartialResolution resolution) {
  const graph::Graph& g = *ctx.graph;
  const mesh::LogicalMesh& m = *ctx.mesh;
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
      return make_error(Errc::kInvalidArgument, "a mesh axis is used twice");
    }
    used |= mask;
    split *= shards;
  }

  Strategy s;
  s.iter = iter;
  s.resolution = resolution;
  int64_t traffic = 0;
  for (size_t i = 0; i < space.inputs.size(); ++i) {
    s.inputs.push_back(spec_of(space.inputs[i], iter));
    const graph::Value& v = g.value(op.inputs[i]);
    traffic += mesh::tile_bytes(v.shape, dtype_size(v.dtype), s.inputs.back(), m);
  }
  std::vector<std::string> comm;
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
          s.communication +=
              ctx.cost->collective(mesh::CollectiveKind::kReduceScatter, bytes, m, axis).value();
          out.dims[static_cast<size_t>(scatter_dim)] =
              axis == 0 ? DimSharding::kS0 : DimSharding::kS1;
          comm.push_back(fmt::format("reduce-scatter@{} dim {}", axis, scatter_dim));
          s.resolutions.push_back({o, mesh::CollectiveKind::kReduceScatter, axis, scatter_dim});
        } else {
          s.communication +=
              ctx.cost->collective(mesh::CollectiveKind::kAllReduce, bytes, m, axis).value();
          comm.push_back(fmt::format("all-reduce@{}", axis));
          s.resolutions.push_back({o, mesh::CollectiveKind::kAllReduce, axis, -1});
        }
      }
    }
    const int64_t out_bytes = mesh::tile_bytes(v.shape, dtype_size(v.dtype), out, m);
    s.memory += static_cast<double>(out_bytes);
    traffic += out_bytes;
    s.outputs.push_back(std::move(out));
  }
  ComputeWork work;
  work.flops = Flops(graph::op_flops(g, op).value() / static_cast<double>(split));
  work.bytes = Bytes(traffic);
  work.dtype = op.outputs.empty() ? DType::kF32 : g.value(op.outputs[0]).dtype;
  work.is_matmul = op.kind == graph::OpKind::kDot || op.kind == graph::OpKind::kConv2d ||
                   op.kind == graph::OpKind::kConv2dGradInput ||
                   op.kind == graph::OpKind::kConv2dGradFilter;
  s.compute = ctx.cost->compute(work).value();
  s.name = strategy_name(s, comm);
  return s;
}

namespace {

// Every assignment of the mesh axes (of size > 1) to splittable iteration dims, replicated last.
std::vector<std::vector<DimSharding>> assignments(const IterSpace& space,
                                                  const mesh::LogicalMesh& m) {
  const size_t n = space.sizes.size();
  const bool use0 = m.size(0) > 1;
  const bool use1 = m.size(1) > 1;
  std::vector<std::vector<DimSharding>> out;
  const int none = -1;
  for (int a0 = 0; a0 <= static_cast<int>(n); ++a0) {
    const int d0 = a0 == static_cast<int>(n) ? none : a0;
    if (d0 != none && (!use0 || !space.splittable[static_cast<size_t>(d0)])) continue;
    for (int a1 = 0; a1 <= static_cast<int>(n); ++a1) {
      const int d1 = a1 == static_cast<int>(n) ? none : a1;
      if (d1 != none && (!use1 || !space.splittable[static_cast<size_t>(d1)])) continue;
      std::vector<DimSharding> iter(n, DimSharding::kR);
      if (d0 != none && d0 == d1) {
        iter[static_cast<size_t>(d0)] = DimSharding::kS01;
      } else {
        if (d0 != none) iter[static_cast<size_t>(d0)] = DimSharding::kS0;
        if (d1 != none) iter[static_cast<size_t>(d1)] = DimSharding::kS1;
      }
      out.push_back(std::move(iter));
    }
  }
  return out;
}

}  // namespace

Expected<std::vector<Strategy>> enumerate_strategies(const StrategyContext& ctx,
                                                     const graph::Op& op, bool reduce_scatter) {
  MP_ASSIGN_OR_RETURN(IterSpace space, iteration_space(*ctx.graph, op));
  std::vector<Strategy> out;
  for (const auto& iter : assignments(space, *ctx.mesh)) {
    auto s = make_strategy(ctx, op, space, iter);
    if (!s.has_value()) continue;
    const bool has_partial = s->resolves_partial_sums;
    out.push_back(std::move(*s));
    if (reduce_scatter && has_partial) {
      auto rs = make_strategy(ctx, op, space, iter, PartialResolution::kReduceScatter);
      if (rs.has_value() && rs->name != out.back().name) out.push_back(std::move(*rs));
    }
  }
  if (out.empty()) {
    return make_error(Errc::kInfeasible, "op '{}' ({}) has no valid sharding strategy on mesh {}",
                      op.name, op_kind_name(op.kind), ctx.mesh->to_string());
  }
  return out;
}

std::vector<Strategy> enumerate_source_strategies(const StrategyContext& ctx, ValueId value) {
  const graph::Value& v = ctx.graph->value(value);
  const IterSpace space = source_space(v.shape);
  std::vector<Strategy> out;
  for (const auto& iter : assignments(space, *ctx.mesh)) {
    Strategy s;
    s.iter = iter;
    ShardingSpec spec = spec_of(space.outputs[0], iter);
    if (!mesh::validate_sharding(v.shape, spec, *ctx.mesh).is_ok()) continue;
    s.memory = static_cast<double>(mesh::tile_bytes(v.shape, dtype_size(v.dtype), spec, *ctx.mesh));
    s.name = spec.to_string();
    s.outputs.push_back(std::move(spec));
    out.push_back(std::move(s));
  }
  return out;
}

Expected<Strategy> follow_strategy(const StrategyContext& ctx, const graph::Op& op,
                                   const IterSpace& space, size_t input, const ShardingSpec& spec) {
  std::vector<DimSharding> iter(space.sizes.size(), DimSharding::kR);
  const auto& map = space.inputs[input];
  uint8_t used = 0;
  for (size_t d = 0; d < map.size() && d < spec.dims.size(); ++d) {
    const int it = map[d];
    const DimSharding ds = spec.dims[d];
    if (it < 0 || ds == DimSharding::kR || !space.splittable[static_cast<size_t>(it)]) continue;
    const uint8_t mask = axes_mask(ds);
    if ((used & mask) != 0 || iter[static_cast<size_t>(it)] != DimSharding::kR) continue;
    if (space.sizes[static_cast<size_t>(it)] % mesh::num_shards(ds, *ctx.mesh) != 0) continue;
    iter[static_cast<size_t>(it)] = ds;
    used |= mask;
  }
  MP_ASSIGN_OR_RETURN(Strategy s, make_strategy(ctx, op, space, std::move(iter)));
  if (!(s.inputs[input] == spec)) {
    const graph::Value& v = ctx.graph->value(op.inputs[input]);
    MP_ASSIGN_OR_RETURN(Seconds extra,
                        ctx.cost->resharding(v.shape, v.dtype, spec, s.inputs[input], *ctx.mesh));
    s.communication += extra.value();
    s.name += fmt::format(" (from {})", spec.to_string());
  }
  return s;
}

}  // namespace meshpipe::planner

// Strategy construction from iteration-dim assignments.
#include "planner/strategy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "graph/cost.h"

namespace meshpipe::planner {

using mesh::DimSharding;
using mesh::ShardingSpec;

namespace {

using shard::axes_mask;
using shard::spec_of;

std::string strategy_name(const Strategy& s, const std::vector<std::string>& comm) {
  std::vector<std::string> ins;
  for (const ShardingSpec& i : s.inputs) ins.push_back(i.to_string());
  std::string name = s.outputs.empty() ? "" : s.outputs[0].to_string();
  name += " = " + fmt::format("{}", fmt::join(ins, " x "));
  if (!comm.empty()) name += fmt::format(" | {}", fmt::join(comm, ", "));
  return name;
}

}  // namespace

Expected<Strategy> make_strategy(const StrategyContext& ctx, const graph::Op& op,
                                 const IterSpace& space, std::vector<DimSharding> iter,
                                 PartialResolution resolution) {
  MP_ASSIGN_OR_RETURN(shard::ShardedOp sharded, shard::shard_op(*ctx.graph, op, space, *ctx.mesh,
                                                                std::move(iter), resolution));
  Strategy s;
  static_cast<shard::ShardedOp&>(s) = std::move(sharded);
  std::vector<std::string> comm;
  for (const OutputResolution& r : s.resolutions) {
    s.communication += ctx.cost->collective(r.kind, r.bytes, *ctx.mesh, r.axis).value();
    if (r.kind == mesh::CollectiveKind::kReduceScatter) {
      comm.push_back(fmt::format("reduce-scatter@{} dim {}", r.axis, r.dim));
    } else {
      comm.push_back(fmt::format("all-reduce@{}", r.axis));
    }
  }
  s.memory = static_cast<double>(s.output_bytes);
  s.compute = ctx.cost->compute(s.work).value();
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

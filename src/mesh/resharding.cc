// Resharding decomposition: partial sums first, then per-dim gathers, slices and all-to-alls,
// each step costed by the alpha-beta model of docs/algorithms.md §1.4.
#include "mesh/resharding.h"

#include <fmt/format.h>

#include <optional>

#include "core/check.h"

namespace meshpipe::mesh {
namespace {

using Axes = std::vector<int>;

// A partial decomposition: the steps so far and their summed cost.
struct Seq {
  std::vector<CollectiveStep> steps;
  double cost = 0.0;
};

struct Ctx {
  const Shape& shape;
  int64_t dtype_bytes;
  const LogicalMesh& mesh;
  const ShardingSpec& to;
};

bool is_prefix(const Axes& a, const Axes& b) {
  if (a.size() > b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

Axes axes_of(const ShardingSpec& spec, size_t d) { return dim_axes(spec.dims[d]); }

bool is_free(const ShardingSpec& spec, int axis) { return ((spec.used_axes() >> axis) & 1u) == 0; }

int64_t bytes_of(const Ctx& ctx, const ShardingSpec& spec) {
  return tile_bytes(ctx.shape, ctx.dtype_bytes, spec, ctx.mesh);
}

// Current tile length of dim d.
int64_t tile_len(const Ctx& ctx, const ShardingSpec& spec, size_t d) {
  return ctx.shape[static_cast<int64_t>(d)] / num_shards(spec.dims[d], ctx.mesh);
}

// Appends `step` (costed here) and moves `cur` to its `after`.
void push(const Ctx& ctx, CollectiveStep step, ShardingSpec* cur, Seq* seq) {
  step.cost = collective_cost(step.kind, step.bytes, ctx.mesh, step.axis);
  seq->cost += step.cost.value();
  *cur = step.after;
  seq->steps.push_back(std::move(step));
}

// Phase 1. A partial axis a that `to` keeps stays. Otherwise, when dim d's current axes plus a
// are a prefix of its target axes (so a is the next split `to` wants on d), one reduce-scatter
// along d; else an all-reduce. Reduce-scatters go first (repeatedly: one can enable another),
// so that all-reduces move smaller tiles.
void resolve_partials(const Ctx& ctx, ShardingSpec* cur, Seq* seq) {
  bool progress = true;
  while (progress) {
    progress = false;
    for (int a = 0; a < 2 && !progress; ++a) {
      if (((cur->partial >> a) & 1u) == 0 || ((ctx.to.partial >> a) & 1u) != 0) continue;
      for (size_t d = 0; d < cur->dims.size(); ++d) {
        Axes grown = axes_of(*cur, d);
        grown.push_back(a);
        if (!is_prefix(grown, axes_of(ctx.to, d))) continue;
        if (tile_len(ctx, *cur, d) % ctx.mesh.size(a) != 0) continue;
        ShardingSpec after = *cur;
        after.dims[d] = dim_sharding_of(grown);
        after.partial = static_cast<uint8_t>(after.partial & ~(1u << a));
        push(ctx,
             {.kind = CollectiveKind::kReduceScatter,
              .axis = a,
              .dim = static_cast<int64_t>(d),
              .bytes = bytes_of(ctx, *cur),
              .after = after,
              .cost = {}},
             cur, seq);
        progress = true;
        break;
      }
    }
  }
  for (int a = 0; a < 2; ++a) {
    if (((cur->partial >> a) & 1u) == 0 || ((ctx.to.partial >> a) & 1u) != 0) continue;
    ShardingSpec after = *cur;
    after.partial = static_cast<uint8_t>(after.partial & ~(1u << a));
    push(ctx,
         {.kind = CollectiveKind::kAllReduce,
          .axis = a,
          .bytes = bytes_of(ctx, *cur),
          .after = after,
          .cost = {}},
         cur, seq);
  }
}

// The dim whose current axes are a prefix of its target and whose next target axis is `axis`;
// -1 when none.
int64_t dim_wanting(const ShardingSpec& cur, const ShardingSpec& to, int axis) {
  for (size_t d = 0; d < cur.dims.size(); ++d) {
    const Axes c = axes_of(cur, d);
    const Axes t = axes_of(to, d);
    if (is_prefix(c, t) && c.size() < t.size() && t[c.size()] == axis) {
      return static_cast<int64_t>(d);
    }
  }
  return -1;
}

// Slices every dim that has no axis left to gather and whose next target axis is free. Slices
// cost nothing and shrink the tiles later collectives move, so they go as early as possible.
void apply_free_slices(const Ctx& ctx, ShardingSpec* cur, Seq* seq) {
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t d = 0; d < cur->dims.size(); ++d) {
      Axes c = axes_of(*cur, d);
      const Axes t = axes_of(ctx.to, d);
      if (!is_prefix(c, t) || c.size() == t.size() || !is_free(*cur, t[c.size()])) continue;
      const int a = t[c.size()];
      c.push_back(a);
      ShardingSpec after = *cur;
      after.dims[d] = dim_sharding_of(c);
      push(ctx,
           {.kind = CollectiveKind::kSlice,
            .axis = a,
            .dim = static_cast<int64_t>(d),
            .after = after,
            .cost = {}},
           cur, seq);
      progress = true;
    }
  }
}

// Takes the innermost axis a off dim s: an all-to-all straight into the dim that wants a next,
// when there is one and that costs less than an all-gather (plus the free slice after it).
void move_out(const Ctx& ctx, size_t s, ShardingSpec* cur, Seq* seq) {
  Axes c = axes_of(*cur, s);
  const int a = c.back();
  c.pop_back();
  ShardingSpec gathered = *cur;
  gathered.dims[s] = dim_sharding_of(c);
  const int64_t gather_bytes = bytes_of(ctx, gathered);
  const int64_t d = dim_wanting(gathered, ctx.to, a);
  if (d >= 0 && tile_len(ctx, gathered, static_cast<size_t>(d)) % ctx.mesh.size(a) == 0) {
    const int64_t a2a_bytes = bytes_of(ctx, *cur);
    const double a2a = collective_cost(CollectiveKind::kAllToAll, a2a_bytes, ctx.mesh, a).value();
    const double ag =
        collective_cost(CollectiveKind::kAllGather, gather_bytes, ctx.mesh, a).value();
    if (a2a < ag) {
      ShardingSpec after = gathered;
      Axes grown = axes_of(after, static_cast<size_t>(d));
      grown.push_back(a);
      after.dims[static_cast<size_t>(d)] = dim_sharding_of(grown);
      push(ctx,
           {.kind = CollectiveKind::kAllToAll,
            .axis = a,
            .dim = static_cast<int64_t>(s),
            .split_dim = d,
            .bytes = a2a_bytes,
            .after = after,
            .cost = {}},
           cur, seq);
      return;
    }
  }
  push(ctx,
       {.kind = CollectiveKind::kAllGather,
        .axis = a,
        .dim = static_cast<int64_t>(s),
        .bytes = gather_bytes,
        .after = gathered,
        .cost = {}},
       cur, seq);
}

// Phase 2 from `cur` to ctx.to. When several dims still have axes to gather, every order is
// tried (at most two gathers exist, one per mesh axis) and the cheapest kept; ties keep the
// lower dim first.
Seq complete(const Ctx& ctx, ShardingSpec cur) {
  Seq seq;
  apply_free_slices(ctx, &cur, &seq);
  std::optional<Seq> best;
  for (size_t s = 0; s < cur.dims.size(); ++s) {
    if (is_prefix(axes_of(cur, s), axes_of(ctx.to, s))) continue;
    Seq branch = seq;
    ShardingSpec next = cur;
    move_out(ctx, s, &next, &branch);
    Seq rest = complete(ctx, next);
    for (CollectiveStep& step : rest.steps) branch.steps.push_back(std::move(step));
    branch.cost += rest.cost;
    if (!best || branch.cost < best->cost) best = std::move(branch);
  }
  return best ? std::move(*best) : seq;
}

}  // namespace

std::string collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::kAllGather:
      return "all-gather";
    case CollectiveKind::kReduceScatter:
      return "reduce-scatter";
    case CollectiveKind::kAllReduce:
      return "all-reduce";
    case CollectiveKind::kAllToAll:
      return "all-to-all";
    case CollectiveKind::kSlice:
      return "slice";
  }
  return "?";
}

Seconds collective_cost(CollectiveKind kind, int64_t bytes, const LogicalMesh& mesh, int axis) {
  const double n = static_cast<double>(mesh.size(axis));
  if (mesh.size(axis) <= 1 || kind == CollectiveKind::kSlice) return Seconds(0.0);
  const double b = static_cast<double>(bytes);
  const double alpha = mesh.alpha[axis];
  const double beta = mesh.beta[axis];
  switch (kind) {
    case CollectiveKind::kAllGather:
      return Seconds(alpha + beta * (n - 1) / n * b + 3e-9);
    case CollectiveKind::kAllReduce:
      return Seconds(alpha + beta * 2 * (n - 1) / n * b + 2e-9);
    case CollectiveKind::kReduceScatter:
      return Seconds(alpha + beta * (n - 1) / n * b + 1e-9);
    case CollectiveKind::kAllToAll:
      return Seconds(alpha + beta * (n - 1) / (n * n) * b * (n / 2) + 1e-9);
    case CollectiveKind::kSlice:
      break;
  }
  return Seconds(0.0);
}

std::string ReshardingPlan::to_string() const {
  if (steps.empty()) return "no-op";
  std::string out;
  for (const CollectiveStep& s : steps) {
    if (!out.empty()) out += " -> ";
    if (s.kind == CollectiveKind::kAllReduce) {
      out += fmt::format("all-reduce(axis {})", s.axis);
    } else if (s.kind == CollectiveKind::kAllToAll) {
      out += fmt::format("all-to-all(axis {}, dim {}, split dim {})", s.axis, s.dim, s.split_dim);
    } else {
      out += fmt::format("{}(axis {}, dim {})", collective_name(s.kind), s.axis, s.dim);
    }
  }
  return out;
}

Expected<ReshardingPlan> plan_resharding(const Shape& shape, DType dtype, const ShardingSpec& from,
                                         const ShardingSpec& to, const LogicalMesh& mesh) {
  Status valid = validate_sharding(shape, from, mesh);
  if (!valid.is_ok()) return valid.with_context("resharding source");
  valid = validate_sharding(shape, to, mesh);
  if (!valid.is_ok()) return valid.with_context("resharding target");
  const uint8_t created = static_cast<uint8_t>(to.partial & ~from.partial);
  if (created != 0) {
    return make_error(Errc::kInvalidArgument,
                      "resharding '{}' -> '{}' would create partial sums over mesh axis {}",
                      from.to_string(), to.to_string(), (created & 1u) != 0 ? 0 : 1);
  }
  ReshardingPlan plan;
  if (from == to) return plan;
  const Ctx ctx{shape, dtype_size(dtype), mesh, to};
  ShardingSpec cur = from;
  Seq seq;
  resolve_partials(ctx, &cur, &seq);
  Seq rest = complete(ctx, cur);
  for (CollectiveStep& step : rest.steps) seq.steps.push_back(std::move(step));
  MP_CHECK(seq.steps.empty() ? cur == to : seq.steps.back().after == to)
      << "resharding " << from.to_string() << " -> " << to.to_string() << " did not reach it";
  plan.steps = std::move(seq.steps);
  for (const CollectiveStep& s : plan.steps) plan.cost += s.cost;
  return plan;
}

}  // namespace meshpipe::mesh

// build_plan: placement of chosen stages on devices, pricing of their transfers, and the Plan.
#include "planner/build_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/rng.h"
#include "graph/cost.h"
#include "planner/sharding_cache.h"

namespace meshpipe::planner {

int64_t graph_micro_batch(const graph::Graph& g) {
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kInput && v.shape.rank() > 0) return v.shape[0];
  }
  return 1;
}

std::string graph_fingerprint(const graph::Graph& g) {
  return fmt::format("{:016x}", hash_name(stage_fingerprint(g, -1, -1).text));
}

double model_flops_per_micro_batch(const graph::Graph& g) {
  const graph::GraphCost c = graph::graph_cost(g);
  return c.forward.value() + c.backward.value();
}

Expected<Plan> build_plan(const graph::Graph& g, const LayerClustering& clustering,
                          const StageProfiler& profiler, const std::vector<StageChoice>& stages,
                          const mesh::ClusterSpec& cluster, const BuildPlanOptions& options) {
  const int64_t micro_batches = options.micro_batches;
  Plan plan;
  plan.model = options.model;
  plan.graph_fingerprint = graph_fingerprint(g);
  plan.dtype = DType::kF32;
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kParameter) {
      plan.dtype = v.dtype;
      break;
    }
  }
  // Mixed precision (f32 master weights): the half type the masters are converted to.
  for (const graph::Op& op : g.ops()) {
    if (op.kind == graph::OpKind::kConvert && op.phase == graph::OpPhase::kForward &&
        (op.attrs.dtype == DType::kF16 || op.attrs.dtype == DType::kBF16)) {
      plan.dtype = op.attrs.dtype;
      break;
    }
  }
  plan.micro_batch = graph_micro_batch(g);
  plan.micro_batches = micro_batches;
  plan.global_batch = plan.micro_batch * micro_batches;
  plan.schedule = options.schedule;
  plan.cluster = cluster;
  plan.num_layers = clustering.num_layers;
  plan.op_layers = clustering.op_layer;

  // Placement: largest submeshes first; whole hosts for multi-host or full-host submeshes, the
  // rest packed left to right inside a host.
  const int32_t per_host = cluster.devices_per_host;
  std::vector<int32_t> next_free(static_cast<size_t>(cluster.hosts), 0);
  std::vector<size_t> order(stages.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return profiler.submeshes()[static_cast<size_t>(stages[a].submesh)].num_devices() >
           profiler.submeshes()[static_cast<size_t>(stages[b].submesh)].num_devices();
  });
  std::vector<std::vector<int32_t>> devices(stages.size());
  for (size_t k : order) {
    const mesh::SubmeshShape s = profiler.submeshes()[static_cast<size_t>(stages[k].submesh)];
    bool placed = false;
    if (s.hosts > 1 || s.devices_per_host == per_host) {
      for (int32_t h = 0; h + s.hosts <= cluster.hosts && !placed; ++h) {
        bool free = true;
        for (int32_t x = h; x < h + s.hosts; ++x) free = free && next_free[size_t(x)] == 0;
        if (!free) continue;
        for (int32_t x = h; x < h + s.hosts; ++x) {
          for (int32_t d = 0; d < per_host; ++d) devices[k].push_back(x * per_host + d);
          next_free[size_t(x)] = per_host;
        }
        placed = true;
      }
    } else {
      for (int32_t h = 0; h < cluster.hosts && !placed; ++h) {
        if (next_free[size_t(h)] + s.devices_per_host > per_host) continue;
        for (int32_t d = 0; d < s.devices_per_host; ++d) {
          devices[k].push_back(h * per_host + next_free[size_t(h)] + d);
        }
        next_free[size_t(h)] += s.devices_per_host;
        placed = true;
      }
    }
    if (!placed) {
      return make_error(Errc::kInfeasible, "cannot place stage {} on submesh {} of cluster {}", k,
                        s.to_string(), cluster.name);
    }
  }

  // Which stage runs each unit.
  const graph::Graph& ug = profiler.unit_graph();
  const auto ug_name = [&](ValueId v) { return ug.value(v).name; };
  std::map<int32_t, size_t> stage_of_unit;
  for (size_t k = 0; k < stages.size(); ++k) {
    for (int32_t l = stages[k].first_layer; l <= stages[k].last_layer; ++l) {
      for (int32_t u : profiler.units_of_layer(l)) stage_of_unit[u] = k;
    }
  }
  const auto spec_in_stage = [&](size_t k, ValueId v) -> Expected<mesh::ShardingSpec> {
    const StageChoice& a = stages[k];
    for (int32_t l = a.first_layer; l <= a.last_layer; ++l) {
      for (int32_t u : profiler.units_of_layer(l)) {
        const auto& specs = profiler.unit(u, a.submesh, a.config).plan.specs;
        auto it = specs.find(v);
        if (it != specs.end()) return it->second;
      }
    }
    return make_error(Errc::kInternal, "stage {} has no spec for '{}'", k, ug_name(v));
  };
  const auto host_of = [&](int32_t device) { return device / per_host; };
  const auto one_host = [&](size_t a, size_t b) {
    std::set<int32_t> hosts;
    for (int32_t d : devices[a]) hosts.insert(host_of(d));
    for (int32_t d : devices[b]) hosts.insert(host_of(d));
    return hosts.size() == 1;
  };

  // Each stage's time in the fill and drain (StageCost::fill; its transfers added below).
  std::vector<double> fill;
  for (size_t k = 0; k < stages.size(); ++k) {
    const StageChoice& a = stages[k];
    StagePlan sp;
    sp.first_layer = a.first_layer;
    sp.last_layer = a.last_layer;
    sp.submesh = profiler.submeshes()[static_cast<size_t>(a.submesh)];
    sp.devices = devices[k];
    sp.mesh = profiler.configs(a.submesh)[static_cast<size_t>(a.config)].mesh;
    sp.recompute = profiler.configs(a.submesh)[static_cast<size_t>(a.config)].recompute;
    const StageCost sc = profiler.stage(a.first_layer, a.last_layer, a.submesh, a.config);
    sp.time = sc.work;
    fill.push_back(sc.fill - sc.transfer);
    sp.memory = sc.memory;
    sp.in_flight = stage_in_flight(options.schedule, k, stages.size(), micro_batches);
    sp.memory.peak = stage_peak(sc, sp.in_flight, micro_batches, options.schedule);
    for (int32_t l = a.first_layer; l <= a.last_layer; ++l) {
      for (int32_t u : profiler.units_of_layer(l)) {
        const ShardingPlan& up = profiler.unit(u, a.submesh, a.config).plan;
        for (const auto& [v, spec] : up.specs) sp.value_specs.emplace(ug.value(v).name, spec);
        for (const OpDecision& d : up.ops) {
          sp.op_strategies[ug.op(d.op).name] = d.strategy;
          sp.op_layouts[ug.op(d.op).name] = d.layout;
        }
      }
    }
    plan.stages.push_back(std::move(sp));
  }

  // Cross-stage transfers on their actual links (each byte crosses once: local all-gather).
  std::set<std::pair<int32_t, size_t>> seen;
  std::vector<double> entering(plan.stages.size(), 0.0);
  for (const graph::Op& op : ug.ops()) {
    auto to = stage_of_unit.find(op.layer);
    if (to == stage_of_unit.end()) continue;
    for (ValueId v : op.inputs) {
      const graph::Value& val = ug.value(v);
      if (!val.producer.is_valid()) continue;
      auto from = stage_of_unit.find(ug.op(val.producer).layer);
      if (from == stage_of_unit.end() || from->second == to->second) continue;
      if (!seen.insert({v.value(), to->second}).second) continue;
      const mesh::LinkSpec& link =
          one_host(from->second, to->second) ? cluster.intra_host : cluster.inter_host;
      CrossStageTransfer t;
      t.value = val.name;
      t.from_stage = static_cast<int32_t>(from->second);
      t.to_stage = static_cast<int32_t>(to->second);
      MP_ASSIGN_OR_RETURN(t.from_spec, spec_in_stage(from->second, v));
      MP_ASSIGN_OR_RETURN(t.to_spec, spec_in_stage(to->second, v));
      t.bytes = val.bytes();
      t.seconds = profiler.cost_model()
                      .transfer(t.bytes, link, !one_host(from->second, to->second))
                      .value();
      // A parameter gradient (e.g. of a tied embedding) is summed locally and sent once per step.
      if (profiler.is_parameter_gradient(v)) t.seconds /= static_cast<double>(micro_batches);
      entering[to->second] += t.seconds;
      fill[to->second] += t.seconds;
      plan.transfers.push_back(std::move(t));
    }
  }
  // Asynchronous sends overlap the stage's work in the steady state (StageCost::time).
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    plan.stages[k].time = std::max(plan.stages[k].time, entering[k]);
  }

  double sum = 0.0;
  double max = 0.0;
  double device_time = 0.0;  // sum over stages of devices x time
  double used = 0.0;         // devices of the stages
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    const StagePlan& sp = plan.stages[k];
    sum += fill[k];
    max = std::max(max, sp.time);
    device_time += static_cast<double>(sp.devices.size()) * sp.time;
    used += static_cast<double>(sp.devices.size());
    plan.max_memory_per_device = std::max(plan.max_memory_per_device, sp.memory.peak);
  }
  // Unequal stages leave the slowest less crowded (steady_scale's utilisation).
  const double utilisation = max > 0 && used > 0 ? device_time / (used * max) : 1.0;
  plan.step_time =
      sum + static_cast<double>(micro_batches - 1) *
                steady_scale(profiler.cost_model(), cluster.num_devices(),
                             static_cast<int32_t>(plan.stages.size()), micro_batches, utilisation) *
                max;
  const double flops = model_flops_per_micro_batch(g) * static_cast<double>(micro_batches);
  plan.tflops_per_device =
      plan.step_time > 0 ? flops / (plan.step_time * cluster.num_devices()) / 1e12 : 0.0;
  MP_RETURN_IF_ERROR(plan.validate());
  return plan;
}

}  // namespace meshpipe::planner

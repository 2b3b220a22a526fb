// Tests of planner/stage_costs.h: profiling units and their layers, the cost of a stage as the
// sum of its units plus the tensors entering it (recomputed here from the unit graph), the
// memory rule behind max_succ_stages, the DP input, the logical spaces, option checks and the
// memory-level ladder.
#include "planner/stage_costs.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <set>

#include "graph/models/gpt.h"
#include "graph/models/mlp.h"
#include "graph/training_graph.h"
#include "mesh/cluster.h"
#include "mesh/device_profile.h"
#include "planner/cost_model.h"

namespace meshpipe::planner {
namespace {

constexpr int64_t kMicroBatches = 4;

graph::Graph mlp() {
  auto fg = graph::models::build_mlp(graph::models::MlpConfig{16, 32, 3, 8}, 8, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(tg->graph);
}

// An MLP of 3 hidden layers clustered into 3 layers on a cluster like cpu:1x4 (with the device
// memory given), profiled with a single memory level.
struct Profiled {
  graph::Graph g = mlp();
  mesh::ClusterSpec cluster;
  std::unique_ptr<AnalyticCostModel> cost;
  ShardingCache cache;
  graph::Graph clustered;
  std::unique_ptr<StageProfiler> profiler;
};

std::unique_ptr<Profiled> profile(int64_t memory_bytes, LogicalSpace space,
                                  const std::string& preset = "cpu:1x4",
                                  Recompute recompute = Recompute::kOff) {
  auto p = std::make_unique<Profiled>();
  p->cluster = *mesh::cluster_preset(preset);
  if (memory_bytes > 0) p->cluster.device.memory = Bytes(memory_bytes);
  p->cost = std::make_unique<AnalyticCostModel>(p->cluster.device);
  ClusteringOptions co;
  co.num_layers = 3;
  auto c = cluster_layers(p->g, co);
  REQUIRE(c.has_value());
  p->clustered = apply_clustering(p->g, *c);
  std::vector<int32_t> blocks;
  for (const graph::Op& op : p->g.ops()) blocks.push_back(op.layer);
  StageProfileOptions o;
  o.micro_batches = kMicroBatches;
  o.recompute = recompute;  // kOff by default: most tests count (mesh, level) configs
  o.memory_levels = 1;
  o.logical_space = space;
  p->profiler =
      std::make_unique<StageProfiler>(p->clustered, blocks, p->cluster, *p->cost, o, p->cache);
  const Status s = p->profiler->profile();
  INFO(s.to_string());
  REQUIRE(s.is_ok());
  return p;
}

const Profiled& base() {
  static const std::unique_ptr<Profiled> p =
      profile(0, LogicalSpace::kSingleNodeModelParallel, "cpu:2x2");
  return *p;
}

// Units of layers i..j: from the first unit of layer i to the last of layer j.
std::pair<int32_t, int32_t> unit_range(const StageProfiler& p, int32_t i, int32_t j) {
  return {p.units_of_layer(i).front(), p.units_of_layer(j).back()};
}

// The stage's cost recomputed: its work is its units' times; its transfer each value produced
// in a unit outside the stage and read inside it (once per reading unit) at latency + bytes /
// bandwidth, divided by the micro-batches for parameter gradients (sent once per step); its
// steady-state time the larger of the two (the sends overlap the work), its fill their sum.
// Units meet in the canonical layout, so nothing is added between units of one stage.
struct Want {
  double time = 0.0;
  double work = 0.0;
  double transfer = 0.0;
  StageMemory memory;
  bool feasible = true;
};

Want expected_stage(const StageProfiler& p, int32_t i, int32_t j, int32_t m, int32_t c,
                    const mesh::LinkSpec& link) {
  Want e;
  const auto [u0, u1] = unit_range(p, i, j);
  for (int32_t u = u0; u <= u1; ++u) {
    const UnitProfile& up = p.unit(u, m, c);
    if (!up.feasible) e.feasible = false;
    e.work += up.time;
    e.memory.persistent += up.persistent;
    if (kMicroBatches > 1) e.memory.gradients += up.gradients;
    e.memory.stash += up.stash;  // at least: tensors received or sent for the backward add more
    if (u == u1) e.memory.working = up.working;  // at least the last unit's (its backward is first)
  }
  const graph::Graph& ug = p.unit_graph();
  std::set<std::pair<int32_t, int32_t>> seen;
  for (const graph::Op& op : ug.ops()) {
    for (ValueId v : op.inputs) {
      const graph::Value& val = ug.value(v);
      if (!val.producer.is_valid()) continue;
      const int32_t from = ug.op(val.producer).layer;
      const int32_t to = op.layer;
      if (from == to || !seen.insert({v.value(), to}).second) continue;
      if (to < u0 || to > u1 || (from >= u0 && from <= u1)) continue;
      double t = link.latency.value() + static_cast<double>(val.bytes()) / link.bandwidth;
      if (p.is_parameter_gradient(v)) t /= static_cast<double>(kMicroBatches);
      e.transfer += t;
    }
  }
  e.time = std::max(e.work, e.transfer);
  return e;
}

TEST_CASE("every unit belongs to one clustered layer, in forward order", "[planner][stage_costs]") {
  const Profiled& b = base();
  const StageProfiler& p = *b.profiler;
  REQUIRE(p.num_layers() == 3);
  int32_t next = 0;
  for (int32_t l = 0; l < p.num_layers(); ++l) {
    INFO("layer " << l);
    REQUIRE_FALSE(p.units_of_layer(l).empty());
    for (int32_t u : p.units_of_layer(l)) CHECK(u == next++);  // consecutive, ascending
  }
  // The unit graph is the clustered graph re-tagged: a forward op's unit lies in its layer.
  const graph::Graph& ug = p.unit_graph();
  REQUIRE(ug.num_ops() == b.clustered.num_ops());
  for (int64_t i = 0; i < ug.num_ops(); ++i) {
    const graph::Op& op = ug.ops()[static_cast<size_t>(i)];
    const int32_t layer = b.clustered.ops()[static_cast<size_t>(i)].layer;
    const auto& units = p.units_of_layer(layer);
    INFO(op.name);
    CHECK(op.name == b.clustered.ops()[static_cast<size_t>(i)].name);
    CHECK(std::find(units.begin(), units.end(), op.layer) != units.end());
  }
}

TEST_CASE("a stage costs its units plus the tensors entering it, on the given link",
          "[planner][stage_costs]") {
  const Profiled& b = base();
  const StageProfiler& p = *b.profiler;
  int checked = 0;
  int with_transfer = 0;
  for (const mesh::LinkSpec& link : {b.cluster.intra_host, b.cluster.inter_host}) {
    for (int32_t i = 0; i < p.num_layers(); ++i) {
      for (int32_t j = i; j < p.num_layers(); ++j) {
        for (int32_t m = 0; m < static_cast<int32_t>(p.submeshes().size()); ++m) {
          for (int32_t c = 0; c < static_cast<int32_t>(p.configs(m).size()); ++c) {
            INFO("layers " << i << ".." << j << " submesh " << m << " config " << c);
            const StageCost s = p.stage(i, j, m, c, link);
            const Want e = expected_stage(p, i, j, m, c, link);
            REQUIRE(e.feasible);
            CHECK(s.time == Approx(e.time).epsilon(1e-12));
            CHECK(s.work == Approx(e.work).epsilon(1e-12));
            CHECK(s.fill == Approx(e.work + e.transfer).epsilon(1e-12));
            CHECK(s.transfer == Approx(e.transfer).epsilon(1e-12));
            // Memory: the sum of the units' persistent bytes and accumulators, at least their
            // stash and the last unit's working set, and the peak is the sum of the parts.
            CHECK(s.memory.persistent == e.memory.persistent);
            CHECK(s.memory.gradients == e.memory.gradients);
            CHECK(s.memory.stash >= e.memory.stash);
            CHECK(s.memory.working >= e.memory.working);
            CHECK(s.memory.peak ==
                  s.memory.persistent + s.memory.gradients + s.memory.working + s.memory.stash);
            // The whole model takes nothing from other stages; later stages do.
            if (i == 0 && j == p.num_layers() - 1) CHECK(s.transfer == 0.0);
            if (s.transfer > 0) ++with_transfer;
            ++checked;
          }
        }
      }
    }
  }
  CHECK(checked > 20);
  CHECK(with_transfer > 0);
  // Without a link, a multi-host cluster prices entering tensors on the network.
  const StageCost dflt = p.stage(1, 2, 0, 0);
  CHECK(dflt.time == Approx(p.stage(1, 2, 0, 0, b.cluster.inter_host).time).epsilon(1e-12));
  CHECK(dflt.transfer > p.stage(1, 2, 0, 0, b.cluster.intra_host).transfer);
}

TEST_CASE("a config past the submesh's list costs infinity", "[planner][stage_costs]") {
  const StageProfiler& p = *base().profiler;
  const int32_t m = p.submesh_index({1, 1});
  REQUIRE(m >= 0);
  CHECK(p.configs(m).size() == 1);  // one device: one mesh, one level
  CHECK(std::isinf(p.stage(0, 0, m, 1).time));
  CHECK(p.submesh_index({3, 3}) == -1);
}

TEST_CASE("the DP input holds every stage's cost and successor bound", "[planner][stage_costs]") {
  const Profiled& b = base();
  const StageProfiler& p = *b.profiler;
  const StageDpInput in = p.dp_input(b.cluster.intra_host);
  REQUIRE(in.validate().is_ok());
  CHECK(in.num_layers == 3);
  CHECK(in.num_devices == 4);
  CHECK(in.micro_batches == kMicroBatches);
  REQUIRE(in.submesh_devices.size() == p.submeshes().size());
  for (size_t m = 0; m < p.submeshes().size(); ++m) {
    CHECK(in.submesh_devices[m] == p.submeshes()[m].num_devices());
  }
  for (int32_t i = 0; i < 3; ++i) {
    for (int32_t j = 0; j < 3; ++j) {
      for (int32_t m = 0; m < in.num_submeshes(); ++m) {
        for (int32_t c = 0; c < in.num_configs; ++c) {
          const size_t k = in.index(i, j, m, c);
          if (j < i) {
            CHECK(std::isinf(in.cost[k]));
            continue;
          }
          const StageCost s = p.stage(i, j, m, c, b.cluster.intra_host);
          CHECK(in.cost[k] == s.time);
          CHECK(in.max_succ_stages[k] == s.max_succ_stages);
        }
      }
    }
  }
}

TEST_CASE("max_succ_stages: the stage holds that many + 1 micro-batches and no more",
          "[planner][stage_costs]") {
  // Measure the whole model on one device, then give the device just enough memory (at 90%) for
  // the fixed part and 3.5 stashes: 3 micro-batches fit, so 2 more stages may follow.
  const auto probe = profile(0, LogicalSpace::kSingleNodeModelParallel);
  const int32_t one = probe->profiler->submesh_index({1, 1});
  REQUIRE(one >= 0);
  const StageCost whole = probe->profiler->stage(0, 2, one, 0);
  const double fixed =
      static_cast<double>(whole.memory.persistent + whole.memory.gradients + whole.memory.working);
  const double stash = static_cast<double>(whole.memory.stash);
  REQUIRE(stash > 0);
  REQUIRE(whole.max_succ_stages > 100);  // 4 GiB: plenty

  const auto tight = profile(static_cast<int64_t>(std::ceil((fixed + 3.5 * stash) / 0.9)),
                             LogicalSpace::kSingleNodeModelParallel);
  const StageCost s = tight->profiler->stage(0, 2, one, 0);
  CHECK(s.memory == whole.memory);  // memory figures do not depend on the device's size
  CHECK(s.max_succ_stages == 2);
  // The rule in general, on every stage of the tight cluster.
  const double avail = 0.9 * static_cast<double>(tight->cluster.device.memory.value());
  const StageProfiler& p = *tight->profiler;
  for (int32_t i = 0; i < 3; ++i) {
    for (int32_t j = i; j < 3; ++j) {
      for (int32_t m = 0; m < static_cast<int32_t>(p.submeshes().size()); ++m) {
        for (int32_t c = 0; c < static_cast<int32_t>(p.configs(m).size()); ++c) {
          const StageCost t = p.stage(i, j, m, c);
          const double f =
              static_cast<double>(t.memory.persistent + t.memory.gradients + t.memory.working);
          const double st = static_cast<double>(t.memory.stash);
          INFO("layers " << i << ".." << j << " submesh " << m << " config " << c << ": succ "
                         << t.max_succ_stages);
          if (t.max_succ_stages < 0) {
            CHECK(f + st > avail);
          } else if (st > 0 && t.max_succ_stages < (1 << 20)) {
            CHECK(f + (t.max_succ_stages + 1) * st <= avail);
            CHECK(f + (t.max_succ_stages + 2) * st > avail);
          }
        }
      }
    }
  }
  // With room for half a stash, the stage does not fit even alone.
  const auto tiny = profile(static_cast<int64_t>((fixed + 0.5 * stash) / 0.9),
                            LogicalSpace::kSingleNodeModelParallel);
  CHECK(tiny->profiler->stage(0, 2, one, 0).max_succ_stages == -1);
}

TEST_CASE("logical spaces: data parallel only (D, 1), model parallel only (1, D)",
          "[planner][stage_costs]") {
  for (LogicalSpace space : {LogicalSpace::kDataParallelOnly, LogicalSpace::kModelParallelOnly,
                             LogicalSpace::kSingleNodeModelParallel}) {
    const auto p = profile(0, space);
    const StageProfiler& prof = *p->profiler;
    // cpu:1x4, powers of two: (1, 1), (1, 2), (1, 4).
    REQUIRE(prof.submeshes() == std::vector<mesh::SubmeshShape>{{1, 1}, {1, 2}, {1, 4}});
    const int32_t four = prof.submesh_index({1, 4});
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const StageConfig& c : prof.configs(four)) {
      CHECK(c.level == 0);  // memory_levels = 1
      shapes.push_back({c.mesh.shape[0], c.mesh.shape[1]});
    }
    using Shapes = std::vector<std::pair<int64_t, int64_t>>;
    if (space == LogicalSpace::kDataParallelOnly) CHECK(shapes == Shapes{{4, 1}});
    if (space == LogicalSpace::kModelParallelOnly) CHECK(shapes == Shapes{{1, 4}});
    if (space == LogicalSpace::kSingleNodeModelParallel) {
      CHECK(shapes == Shapes{{4, 1}, {2, 2}, {1, 4}});
    }
  }
}

TEST_CASE("parameter gradients are marked: they cross stages once per step",
          "[planner][stage_costs]") {
  const StageProfiler& p = *base().profiler;
  const graph::Graph& ug = p.unit_graph();
  int updates = 0;
  for (const graph::Op& op : ug.ops()) {
    if (op.kind == graph::OpKind::kAdamUpdate) {
      ++updates;
      CHECK(p.is_parameter_gradient(op.inputs[1]));        // the gradient
      CHECK_FALSE(p.is_parameter_gradient(op.inputs[0]));  // the parameter itself
    }
    if (op.phase == graph::OpPhase::kForward) {
      for (ValueId out : op.outputs) CHECK_FALSE(p.is_parameter_gradient(out));
    }
  }
  CHECK(updates == 8);  // w and b of 3 hidden layers and the head
}

TEST_CASE("profile options are checked before profiling", "[planner][stage_costs]") {
  StageProfileOptions o;
  CHECK(o.validate().is_ok());
  o.micro_batches = 0;
  CHECK(o.validate().message() == "micro_batches must be >= 1, got 0");
  o = StageProfileOptions{};
  o.memory_fraction = 0.0;
  CHECK(o.validate().message() == "memory_fraction must be in (0, 1], got 0");
  o.memory_fraction = 1.5;
  CHECK(o.validate().code() == Errc::kInvalidArgument);
  o = StageProfileOptions{};
  o.level_time_limit_seconds = 0.0;
  CHECK(o.validate().message() == "level_time_limit_seconds must be > 0");

  // profile() refuses bad options.
  const graph::Graph g = mlp();
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x2");
  AnalyticCostModel cost(cluster.device);
  ShardingCache cache;
  StageProfileOptions bad;
  bad.micro_batches = -3;
  std::vector<int32_t> blocks;
  for (const graph::Op& op : g.ops()) blocks.push_back(op.layer);
  StageProfiler p(g, blocks, cluster, cost, bad, cache);
  CHECK(p.profile().message() == "micro_batches must be >= 1, got -3");
}

TEST_CASE("recomputing configs repeat the forward and stash only what later units read",
          "[planner][stage_costs]") {
  const auto on = profile(0, LogicalSpace::kSingleNodeModelParallel, "cpu:1x4", Recompute::kAuto);
  const StageProfiler& p = *on->profiler;
  int compared = 0;
  for (int32_t m = 0; m < static_cast<int32_t>(p.submeshes().size()); ++m) {
    const auto& configs = p.configs(m);
    const size_t half = configs.size() / 2;
    REQUIRE(configs.size() == 2 * half);  // every (mesh, level) once without, once with
    for (size_t c = 0; c < half; ++c) {
      const StageConfig& a = configs[c];
      const StageConfig& b = configs[c + half];
      REQUIRE_FALSE(a.recompute);
      REQUIRE(b.recompute);
      CHECK(a.mesh.shape[0] == b.mesh.shape[0]);
      CHECK(a.level == b.level);
      for (int32_t u = 0; u < 3; ++u) {
        const UnitProfile& x = p.unit(u, m, static_cast<int32_t>(c));
        const UnitProfile& y = p.unit(u, m, static_cast<int32_t>(c + half));
        if (!x.feasible) continue;
        INFO("unit " << u << " submesh " << m << " config " << c);
        CHECK(x.forward_time > 0);
        CHECK(x.forward_time < x.time);
        CHECK(y.time == Approx(x.time + x.forward_time).epsilon(1e-12));
        // (Its memory comes from the intra-op pass's scan of the recomputing unit; the memory
        // model test holds it against measured runs.)
        CHECK(y.stash == x.plan.recompute_stash_memory.value());
        CHECK(y.persistent == x.persistent);
        ++compared;
      }
      // The whole model in one stage: recomputing keeps less per micro-batch, costs more time.
      const StageCost sa = p.stage(0, 2, m, static_cast<int32_t>(c));
      const StageCost sb = p.stage(0, 2, m, static_cast<int32_t>(c + half));
      if (std::isfinite(sa.time)) {
        CHECK(sb.memory.stash < sa.memory.stash);
        CHECK(sb.time > sa.time);
      }
    }
  }
  CHECK(compared > 0);
  // Forced on: the configs without recomputation are not offered.
  const auto forced = profile(0, LogicalSpace::kSingleNodeModelParallel, "cpu:1x4", Recompute::kOn);
  const StageProfiler& q = *forced->profiler;
  for (int32_t m = 0; m < static_cast<int32_t>(q.submeshes().size()); ++m) {
    for (int32_t c = 0; c < static_cast<int32_t>(q.configs(m).size()); ++c) {
      if (!q.configs(m)[size_t(c)].recompute) CHECK(std::isinf(q.stage(0, 2, m, c).time));
    }
  }
}
TEST_CASE("the steady scale of a pipeline on shared cores follows its busy slots",
          "[planner][stage_costs]") {
  mesh::ClusterSpec cpu = *mesh::cluster_preset("cpu:1x4");
  mesh::DeviceProfile p;
  // Two devices computing at once run at full speed (2 cores), four at half: sharing(b) =
  // c(b) / c(4) = 0.5 for b = 1, 2, 0.75 for 3, 1 for 4.
  p.concurrency = {{1, 1.0}, {2, 1.0}, {4, 2.0}};
  cpu.profile = std::make_shared<const mesh::DeviceProfile>(p);
  const ProfiledCostModel shared(cpu);
  // 4 stages of 1 device, 4 micro-batches: 7 slots with 1, 2, 3, 4, 3, 2, 1 busy -> sum of
  // sharing 4.5; the fill (4 x 0.5) taken out, over B - 1 = 3.
  CHECK(steady_scale(shared, 4, 4, 4) == Approx(2.5 / 3.0));
  // 2 stages of 2 devices: slots with 2, 4, 4, 4, 2 busy: (0.5 + 3 + 0.5 - 2 x 0.5) / 3 = 1.
  CHECK(steady_scale(shared, 4, 2, 4) == Approx(1.0));
  // 4 stages, 2 micro-batches: busy 1, 2, 2, 2, 1 -> (0.5 x 5 - 4 x 0.5) / 1 = 0.5.
  CHECK(steady_scale(shared, 4, 4, 2) == Approx(0.5));
  // Unequal stages, the others at half the slowest's pace: busy devices 1, 1, 1.5, 2, 1.5, 1, 1
  // (at least one stage's), all at sharing 0.5 -> (3.5 - 2) / 3; at full utilisation as above.
  CHECK(steady_scale(shared, 4, 4, 4, 0.5) == Approx(0.5));
  CHECK(steady_scale(shared, 4, 4, 4, 1.0) == Approx(2.5 / 3.0));
  // 2 stages of 2 devices, the other stage a quarter as busy: 2, 2.5, 2.5, 2.5, 2 devices ->
  // sharing 0.5, 0.625 x 3, 0.5 -> (2.875 - 1) / 3.
  CHECK(steady_scale(shared, 4, 2, 4, 0.625) == Approx(1.875 / 3.0));
  // One stage, one micro-batch, or devices that do not share cores: 1.
  CHECK(steady_scale(shared, 4, 1, 8) == 1.0);
  CHECK(steady_scale(shared, 4, 4, 1) == 1.0);
  CHECK(steady_scale(AnalyticCostModel(cpu.device), 4, 4, 4) == 1.0);
}

TEST_CASE("the budget ladder never falls back on the ZeRO level's slower, larger layouts",
          "[planner][stage_costs]") {
  // A GPT with a tied embedding on 4 devices with many micro-batches, under device memories at
  // which the whole model does not fit one stage (so the leaner levels are solved). Level 1 (the
  // fastest layouts with ZeRO's allowed) can be slower and larger than level 0 for a unit; a
  // budget level (>= 2) whose budget cannot be met must then keep a plan of the ladder, never one
  // both slower and larger than level 0's.
  auto fg =
      graph::models::build_gpt(graph::models::GptConfig{32, 64, 2, 4, 2048, 4}, 2, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  const graph::Graph g = std::move(tg->graph);
  std::vector<int32_t> blocks;
  for (const graph::Op& op : g.ops()) blocks.push_back(op.layer);
  ClusteringOptions co;
  co.num_layers = 2;
  auto clustering = cluster_layers(g, co);
  REQUIRE(clustering.has_value());
  const graph::Graph clustered = apply_clustering(g, *clustering);
  int dominated = 0;
  for (const int64_t kib : {400, 600, 900, 1400}) {
    mesh::ClusterSpec cluster = *mesh::cluster_preset("cpu:1x4");
    cluster.device.memory = Bytes(kib * 1024);
    const AnalyticCostModel cost(cluster.device);
    ShardingCache cache;
    StageProfileOptions o;
    o.micro_batches = 64;
    o.memory_levels = 4;
    o.threads = 1;
    StageProfiler p(clustered, blocks, cluster, cost, o, cache);
    const Status s = p.profile();
    INFO(s.to_string());
    REQUIRE(s.is_ok());
    for (int32_t m = 0; m < static_cast<int32_t>(p.submeshes().size()); ++m) {
      const auto& configs = p.configs(m);
      for (size_t c = 0; c < configs.size(); ++c) {
        if (configs[c].recompute || configs[c].level < 1) continue;
        const int32_t c0 = static_cast<int32_t>(c) - configs[c].level;
        for (int32_t u = 0; u <= p.units_of_layer(p.num_layers() - 1).back(); ++u) {
          const UnitProfile& base = p.unit(u, m, c0);
          const UnitProfile& at = p.unit(u, m, static_cast<int32_t>(c));
          if (!base.feasible || !at.feasible) continue;
          const bool worse = at.time > base.time * (1 + 1e-9) &&
                             at.plan.peak_memory.value() > base.plan.peak_memory.value();
          INFO("memory " << kib << " KiB, submesh " << m << ", config " << c << " (level "
                         << configs[c].level << "), unit " << u << ": " << at.time << " s, "
                         << at.plan.peak_memory.value() << " B against level 0's " << base.time
                         << " s, " << base.plan.peak_memory.value() << " B");
          if (configs[c].level == 1) {
            dominated += worse ? 1 : 0;
          } else {
            CHECK_FALSE(worse);
          }
        }
      }
    }
  }
  CHECK(dominated > 0);  // the case arises: level 1 slower and larger for some unit
}

}  // namespace
}  // namespace meshpipe::planner

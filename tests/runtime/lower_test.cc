// lower() and stage_schedule() on small plans of the tiny zoo models: the programs' structure
// against what the plan says (devices, stages, schedule, gradient accumulation and averaging,
// transfers, persistent tiles, gradient synchronisation) and errors (synchronised batch norm:
// lower_batch_norm_test.cc).
#include "runtime/lower.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <tuple>

#include "comm/transport.h"
#include "graph/autodiff.h"
#include "runtime/grid_plan.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
using Task = std::pair<Phase, int32_t>;
constexpr Phase F = Phase::kForward;
constexpr Phase B = Phase::kBackward;

using testing::grid_plan;
using testing::lowered;

bool is_update(graph::OpKind k) {
  return k == graph::OpKind::kSgdUpdate || k == graph::OpKind::kSgdMomentumUpdate ||
         k == graph::OpKind::kAdamUpdate;
}

// The stage the plan puts op i on.
int32_t stage_of(const planner::Plan& plan, size_t i) {
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    if (plan.op_layers[i] >= plan.stages[s].first_layer &&
        plan.op_layers[i] <= plan.stages[s].last_layer) {
      return static_cast<int32_t>(s);
    }
  }
  return -1;
}

// Optimizer updates per stage (each reads one parameter gradient).
std::vector<int64_t> updates_per_stage(const planner::Plan& plan, const graph::Graph& g) {
  std::vector<int64_t> n(plan.stages.size(), 0);
  for (size_t i = 0; i < static_cast<size_t>(g.num_ops()); ++i) {
    if (is_update(g.ops()[i].kind)) ++n[static_cast<size_t>(stage_of(plan, i))];
  }
  return n;
}

// Accumulators per stage with several micro-batches: one per update's gradient, except that a
// gradient summed from two pieces (graph::gradient_piece_sums) has one per piece, on the
// stage that makes it; and the pieces added per stage (on the sum's stage).
std::pair<std::vector<int64_t>, std::vector<int64_t>> accumulators_per_stage(
    const planner::Plan& plan, const graph::Graph& g) {
  std::vector<int64_t> acc = updates_per_stage(plan, g);
  std::vector<int64_t> added(plan.stages.size(), 0);
  for (OpId sum : graph::gradient_piece_sums(g)) {
    const size_t i = sum.index();
    const graph::Op& op = g.ops()[i];
    const size_t s = static_cast<size_t>(stage_of(plan, i));
    --acc[s];
    ++added[s];
    for (ValueId in : op.inputs) {
      ++acc[static_cast<size_t>(stage_of(plan, g.value(in).producer.index()))];
    }
  }
  return {acc, added};
}

// The tasks of a device's program: (phase, micro-batch) of its forward and backward RUNs, with
// repeats collapsed.
std::vector<Task> tasks_of(const DeviceProgram& dp) {
  std::vector<Task> out;
  for (const Instruction& ins : dp.instructions) {
    if (ins.code != Opcode::kRun || (ins.phase != F && ins.phase != B)) continue;
    const Task t{ins.phase, ins.micro_batch};
    if (out.empty() || out.back() != t) out.push_back(t);
  }
  return out;
}

std::string describe(const std::vector<Task>& tasks) {
  std::string s;
  for (const Task& t : tasks) s += fmt::format("{}{} ", t.first == F ? 'F' : 'B', t.second);
  return s;
}

// 3 stages x 4 micro-batches, per stage.
const std::vector<std::vector<Task>> kGPipe3x4 = {
    {{F, 0}, {F, 1}, {F, 2}, {F, 3}, {B, 0}, {B, 1}, {B, 2}, {B, 3}},
    {{F, 0}, {F, 1}, {F, 2}, {F, 3}, {B, 0}, {B, 1}, {B, 2}, {B, 3}},
    {{F, 0}, {F, 1}, {F, 2}, {F, 3}, {B, 0}, {B, 1}, {B, 2}, {B, 3}},
};
const std::vector<std::vector<Task>> k1F1B3x4 = {
    {{F, 0}, {F, 1}, {F, 2}, {B, 0}, {F, 3}, {B, 1}, {B, 2}, {B, 3}},
    {{F, 0}, {F, 1}, {B, 0}, {F, 2}, {B, 1}, {F, 3}, {B, 2}, {B, 3}},
    {{F, 0}, {B, 0}, {F, 1}, {B, 1}, {F, 2}, {B, 2}, {F, 3}, {B, 3}},
};

TEST_CASE("stage_schedule runs GPipe as every forward, then every backward", "[runtime][lower]") {
  for (int32_t s = 0; s < 3; ++s) {
    INFO("stage " << s);
    CHECK(stage_schedule(planner::Schedule::kGPipe, s, 3, 4) == kGPipe3x4[size_t(s)]);
  }
  CHECK(stage_schedule(planner::Schedule::kGPipe, 0, 1, 1) == std::vector<Task>{{F, 0}, {B, 0}});
}

TEST_CASE("stage_schedule warms 1F1B stage s of n up with n-s-1 forwards, then alternates",
          "[runtime][lower]") {
  for (int32_t s = 0; s < 3; ++s) {
    INFO("stage " << s);
    CHECK(stage_schedule(planner::Schedule::k1F1B, s, 3, 4) == k1F1B3x4[size_t(s)]);
  }
  // More stages than micro-batches: the warm-up stops at the micro-batches there are.
  CHECK(stage_schedule(planner::Schedule::k1F1B, 0, 4, 2) ==
        std::vector<Task>{{F, 0}, {F, 1}, {B, 0}, {B, 1}});
  CHECK(stage_schedule(planner::Schedule::k1F1B, 2, 4, 2) ==
        std::vector<Task>{{F, 0}, {F, 1}, {B, 0}, {B, 1}});
  CHECK(stage_schedule(planner::Schedule::k1F1B, 3, 4, 2) ==
        std::vector<Task>{{F, 0}, {B, 0}, {F, 1}, {B, 1}});
}

TEST_CASE("every schedule runs each task once, a backward after its forward, within its memory",
          "[runtime][lower]") {
  for (planner::Schedule sched : {planner::Schedule::kGPipe, planner::Schedule::k1F1B}) {
    for (int32_t n = 1; n <= 5; ++n) {
      for (int32_t m = 1; m <= 6; ++m) {
        for (int32_t s = 0; s < n; ++s) {
          const std::vector<Task> tasks = stage_schedule(sched, s, n, m);
          INFO(planner::schedule_name(sched) << " stage " << s << " of " << n << ", " << m
                                             << " micro-batches: " << describe(tasks));
          REQUIRE(tasks.size() == static_cast<size_t>(2 * m));
          std::vector<int> forward_at(size_t(m), -1);
          std::vector<int> backward_at(size_t(m), -1);
          int32_t next_f = 0;
          int32_t next_b = 0;
          int in_flight = 0;
          int most = 0;
          for (size_t k = 0; k < tasks.size(); ++k) {
            const auto [phase, mb] = tasks[k];
            if (phase == F) {
              CHECK(mb == next_f++);  // forwards in order
              forward_at[size_t(mb)] = static_cast<int>(k);
              most = std::max(most, ++in_flight);
            } else {
              CHECK(mb == next_b++);  // backwards in order
              backward_at[size_t(mb)] = static_cast<int>(k);
              --in_flight;
            }
          }
          for (int32_t mb = 0; mb < m; ++mb)
            CHECK(forward_at[size_t(mb)] < backward_at[size_t(mb)]);
          // GPipe stashes every micro-batch; 1F1B at most min(n - s, m) (planner/plan.h).
          CHECK(most == (sched == planner::Schedule::kGPipe ? m : std::min(n - s, m)));
        }
      }
    }
  }
}

TEST_CASE("lowering gives each used device one program with its plan's stage and mesh position",
          "[runtime][lower]") {
  struct Case {
    const char* name;
    int64_t micro_batches;
    planner::GridConfig grid;
  };
  const Case cases[] = {
      {"2 stages of (2, 1)", 2, {2, 1, 2, Mode::kFree}},
      {"one stage of (1, 2), devices 2 and 3 unused", 1, {1, 2, 1, Mode::kFree}},
      {"3 stages of (1, 1), device 3 unused", 4, {1, 1, 3, Mode::kFree}},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8 / c.micro_batches);
    const planner::Plan plan = grid_plan(tg.graph, c.micro_batches, c.grid);
    const Program prog = lowered(plan, tg.graph);
    CHECK(prog.model == plan.model);
    CHECK(prog.micro_batches == c.micro_batches);
    CHECK(prog.schedule == plan.schedule);
    REQUIRE(prog.devices.size() == 4);  // the cluster's devices
    REQUIRE(prog.stages.size() == plan.stages.size());
    std::set<int32_t> used;
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      const planner::StagePlan& sp = plan.stages[s];
      CHECK(prog.stages[s].devices == sp.devices);
      CHECK(prog.stages[s].mesh == sp.mesh);
      for (size_t k = 0; k < sp.devices.size(); ++k) {
        const int32_t d = sp.devices[k];
        INFO("stage " << s << " device " << d);
        used.insert(d);
        const DeviceProgram* dp = prog.device(d);
        REQUIRE(dp != nullptr);
        CHECK(dp->device == d);
        CHECK(dp->stage == static_cast<int32_t>(s));
        CHECK(dp->coord[0] == static_cast<int64_t>(k) / sp.mesh.size(1));
        CHECK(dp->coord[1] == static_cast<int64_t>(k) % sp.mesh.size(1));
        CHECK(!dp->instructions.empty());
        CHECK(dp->ops.size() > 0);
      }
    }
    for (int32_t d = 0; d < 4; ++d) {
      if (used.count(d) == 0) CHECK(prog.device(d) == nullptr);
    }
    // The loss is reported by the first device of the stage that computes it: the last.
    CHECK(prog.loss_device == plan.stages.back().devices[0]);
    // Data inputs: the graph's, in id order, whole micro-batches.
    std::vector<std::string> names;
    std::vector<Shape> shapes;
    for (ValueId v : tg.graph.values_with_role(graph::ValueRole::kInput)) {
      names.push_back(tg.graph.value(v).name);
      shapes.push_back(tg.graph.value(v).shape);
    }
    CHECK(prog.inputs == names);
    CHECK(prog.input_shapes == shapes);
    CHECK(validate_program(prog).is_ok());
  }
}

TEST_CASE("each stage's tasks follow stage_schedule for GPipe and 1F1B", "[runtime][lower]") {
  // 3 stages x 4 micro-batches of 2.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 2);
  const planner::Plan plan = grid_plan(tg.graph, 4, {1, 1, 3, Mode::kFree});
  REQUIRE(plan.stages.size() == 3);
  for (planner::Schedule sched : {planner::Schedule::kGPipe, planner::Schedule::k1F1B}) {
    LowerOptions o;
    o.schedule = sched;
    const Program prog = lowered(plan, tg.graph, o);
    CHECK(prog.schedule == sched);
    const auto& want = sched == planner::Schedule::kGPipe ? kGPipe3x4 : k1F1B3x4;
    for (size_t s = 0; s < 3; ++s) {
      const std::vector<Task> got = tasks_of(*prog.device(plan.stages[s].devices[0]));
      INFO(planner::schedule_name(sched) << " stage " << s << ": " << describe(got));
      CHECK(got == want[s]);
    }
  }
}

// Follows buffer b through the grad-sync collectives after instruction `from` (a fused one
// carries it at the same position of `in` and `out`) to the kScale that averages it.
const Instruction* average_of(const DeviceProgram& dp, int32_t b, size_t from) {
  for (size_t i = from + 1; i < dp.instructions.size(); ++i) {
    const Instruction& ins = dp.instructions[i];
    if (ins.phase != Phase::kGradSync) continue;
    if (ins.code == Opcode::kCollective) {
      for (size_t k = 0; k < ins.in.size(); ++k) {
        if (ins.in[k] == b) {
          b = ins.out[k];
          break;
        }
      }
    } else if (ins.code == Opcode::kScale && ins.in == std::vector<int32_t>{b}) {
      return &ins;
    }
  }
  return nullptr;
}

void check_accumulation(const planner::Plan& plan, const graph::Graph& g, const Program& prog) {
  const int64_t m = plan.micro_batches;
  const std::vector<int64_t> updates = updates_per_stage(plan, g);
  const auto expected = accumulators_per_stage(plan, g);
  // A tied weight's piece made on another stage (the LM head's part of the embedding's
  // gradient) is accumulated there like a gradient, sent once per step and added into the
  // synchronised sum in the update phase: one accumulator more on the stage that makes it, one
  // addition on the stage that updates it.
  std::map<int32_t, std::pair<int64_t, int64_t>> per_stage;  // stage -> (accumulators, additions)
  for (const DeviceProgram& dp : prog.devices) {
    if (dp.device < 0) continue;
    INFO("device " << dp.device << " (stage " << dp.stage << ")");
    // Accumulator buffer -> its accumulations, in program order.
    std::map<int32_t, std::vector<size_t>> acc;
    size_t scales = 0;
    int64_t additions = 0;
    for (size_t i = 0; i < dp.instructions.size(); ++i) {
      const Instruction& ins = dp.instructions[i];
      if (ins.code == Opcode::kAccumulate && ins.phase == Phase::kUpdate) {
        CHECK_FALSE(ins.first);
        ++additions;
      } else if (ins.code == Opcode::kAccumulate) {
        acc[ins.out[0]].push_back(i);
      }
      if (ins.code == Opcode::kScale) ++scales;
    }
    per_stage[dp.stage] = {static_cast<int64_t>(acc.size()), additions};
    if (m == 1) {
      CHECK(acc.empty());
      CHECK(scales == 0);
      continue;
    }
    CHECK(static_cast<int64_t>(acc.size()) == expected.first[static_cast<size_t>(dp.stage)]);
    CHECK(additions == expected.second[static_cast<size_t>(dp.stage)]);
    CHECK(scales == acc.size());
    for (const auto& [b, at] : acc) {
      INFO("accumulator '" << dp.buffers[static_cast<size_t>(b)].name << "'");
      REQUIRE(static_cast<int64_t>(at.size()) == m);
      for (size_t k = 0; k < at.size(); ++k) {
        const Instruction& ins = dp.instructions[at[k]];
        CHECK(ins.micro_batch == static_cast<int32_t>(k));
        CHECK(ins.first == (k == 0));
        CHECK(ins.phase == Phase::kBackward);
      }
      const Instruction* avg = average_of(dp, b, at.back());
      REQUIRE(avg != nullptr);
      CHECK(avg->factor == 1.0f / static_cast<float>(m));
    }
  }
  if (m == 1) return;
  int64_t accumulators = 0;
  int64_t additions = 0;
  int64_t total_updates = 0;
  for (const auto& [stage, counts] : per_stage) {
    accumulators += counts.first;
    additions += counts.second;
    total_updates += updates[static_cast<size_t>(stage)];
  }
  CHECK(accumulators == total_updates + additions);
}

TEST_CASE("with M micro-batches each gradient is accumulated M times, then averaged by 1/M",
          "[runtime][lower]") {
  SECTION("3-stage pipeline, 4 micro-batches") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 2);
    const planner::Plan plan = grid_plan(tg.graph, 4, {1, 1, 3, Mode::kFree});
    check_accumulation(plan, tg.graph, lowered(plan, tg.graph));
  }
  SECTION("data parallel (4, 1), 2 micro-batches: averaged after the all-reduce") {
    graph::TrainingGraph tg = testing::zoo_training_graph("mlp-tiny", 8);
    const planner::Plan plan = grid_plan(tg.graph, 2, {4, 1, 1, Mode::kReplicated}, 2);
    check_accumulation(plan, tg.graph, lowered(plan, tg.graph));
  }
  SECTION("one micro-batch: nothing to accumulate or average") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
    const planner::Plan plan = grid_plan(tg.graph, 1, {1, 2, 2, Mode::kFree});
    check_accumulation(plan, tg.graph, lowered(plan, tg.graph));
  }
}

struct Transfer {
  int32_t from = 0;
  int32_t to = 0;
  uint64_t tag = 0;
  int64_t bytes = 0;
  int32_t micro_batch = -1;
  Phase phase = Phase::kForward;
  std::string what;
};

std::vector<Transfer> transfers(const Program& prog, Opcode code) {
  std::vector<Transfer> out;
  for (const DeviceProgram& dp : prog.devices) {
    if (dp.device < 0) continue;
    for (const Instruction& ins : dp.instructions) {
      if (ins.code != code) continue;
      const int32_t b = code == Opcode::kSend ? ins.in[0] : ins.out[0];
      Transfer t;
      t.from = code == Opcode::kSend ? dp.device : ins.peer;
      t.to = code == Opcode::kSend ? ins.peer : dp.device;
      t.tag = ins.tag;
      t.bytes = dp.buffers[static_cast<size_t>(b)].bytes();
      t.micro_batch = ins.micro_batch;
      t.phase = ins.phase;
      t.what = ins.what;
      out.push_back(t);
    }
  }
  return out;
}

TEST_CASE("a tied weight's gradient piece from another stage crosses once per step",
          "[runtime][lower]") {
  // gpt-tiny's LM head reads the token embedding: with the head on the last stage and the
  // embedding on the first, the head's part of the embedding's gradient is accumulated on the
  // last stage and sent once per step, not once per micro-batch.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 2);
  const planner::Plan plan = grid_plan(tg.graph, 4, {1, 1, 3, Mode::kFree});
  const Program prog = lowered(plan, tg.graph);
  const int32_t last = plan.stages.back().devices[0];
  const int32_t first = plan.stages.front().devices[0];
  int64_t piece_sends = 0;
  for (const Transfer& t : transfers(prog, Opcode::kSend)) {
    if (t.from != last || t.to != first) continue;
    INFO(t.what << " micro-batch " << t.micro_batch);
    CHECK(t.micro_batch == -1);  // the only traffic from the last stage to the first
    CHECK(t.phase == Phase::kGradSync);
    ++piece_sends;
  }
  CHECK(piece_sends >= 1);
  int64_t additions = 0;
  for (const DeviceProgram& dp : prog.devices) {
    if (dp.device != first) continue;
    for (const Instruction& ins : dp.instructions) {
      if (ins.code == Opcode::kAccumulate && ins.phase == Phase::kUpdate) ++additions;
    }
  }
  CHECK(additions == 1);  // into the embedding's gradient, before its update
}

void check_transfers(const planner::Plan& plan, const graph::Graph& g, const Program& prog) {
  const std::vector<Transfer> sends = transfers(prog, Opcode::kSend);
  const std::vector<Transfer> recvs = transfers(prog, Opcode::kRecv);
  REQUIRE(!sends.empty());
  // (from, to, tag) -> (bytes, micro-batch), on each side.
  using Key = std::tuple<int32_t, int32_t, uint64_t>;
  std::map<Key, std::pair<int64_t, int32_t>> sent;
  std::map<Key, std::pair<int64_t, int32_t>> received;
  for (const Transfer& t : sends) {
    CHECK(sent.emplace(Key{t.from, t.to, t.tag}, std::make_pair(t.bytes, t.micro_batch)).second);
  }
  for (const Transfer& t : recvs) {
    CHECK(
        received.emplace(Key{t.from, t.to, t.tag}, std::make_pair(t.bytes, t.micro_batch)).second);
  }
  CHECK(sent == received);  // every send has its receive: same peers, tag, bytes, micro-batch
  for (const Transfer& t : sends) {
    INFO(t.what << " (tag " << t.tag << ")");
    const int32_t from = prog.device(t.from)->stage;
    const int32_t to = prog.device(t.to)->stage;
    CHECK(from != to);  // only values that cross stages travel
    CHECK(t.bytes > 0);
    CHECK(t.tag <= comm::kMaxTransportTag);
    CHECK(static_cast<int32_t>((t.tag >> 16) & 0xffff) == t.micro_batch + 1);
    if (t.phase == Phase::kForward) CHECK(to > from);
    if (t.phase == Phase::kBackward) CHECK(to < from);
  }
  // Each transfer the plan lists crosses whole, each byte once: per micro-batch (or once per
  // step), its sends add up to the full tensor.
  for (const planner::CrossStageTransfer& x : plan.transfers) {
    INFO("transfer of " << x.value << " from stage " << x.from_stage << " to " << x.to_stage);
    std::map<int32_t, int64_t> bytes;  // micro-batch -> bytes sent
    std::set<int32_t> receivers;
    for (const Transfer& t : sends) {
      if (t.what.rfind("send " + x.value + " #", 0) != 0 &&
          t.what.rfind("send " + x.value + " -> ", 0) != 0) {
        continue;
      }
      CHECK(prog.device(t.from)->stage == x.from_stage);
      CHECK(prog.device(t.to)->stage == x.to_stage);
      bytes[t.micro_batch] += t.bytes;
      receivers.insert(t.to);
    }
    REQUIRE(!bytes.empty());
    const size_t per_step = bytes.count(-1);
    CHECK(bytes.size() == (per_step == 1 ? 1 : static_cast<size_t>(plan.micro_batches)));
    // A scalar cannot be split over the receivers: each gets its own copy.
    int64_t copies = 1;
    const graph::Value* v = nullptr;
    for (const graph::Value& val : g.values()) {
      if (val.name == x.value) v = &val;
    }
    REQUIRE(v != nullptr);
    if (v->shape.rank() == 0) copies = static_cast<int64_t>(receivers.size());
    for (const auto& [mb, total] : bytes) {
      INFO("micro-batch " << mb);
      CHECK(total == x.bytes * copies);
    }
  }
}

TEST_CASE("sends and receives pair up across stages and carry each transfer once",
          "[runtime][lower]") {
  SECTION("3 stages of one device, 4 micro-batches") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 2);
    const planner::Plan plan = grid_plan(tg.graph, 4, {1, 1, 3, Mode::kFree});
    check_transfers(plan, tg.graph, lowered(plan, tg.graph));
  }
  SECTION("2 stages of (1, 2), 2 micro-batches: pieces from both senders") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
    const planner::Plan plan = grid_plan(tg.graph, 2, {1, 2, 2, Mode::kFree});
    const Program prog = lowered(plan, tg.graph);
    check_transfers(plan, tg.graph, prog);
    std::set<int32_t> senders;
    for (const Transfer& t : transfers(prog, Opcode::kSend)) {
      if (t.phase == Phase::kForward) senders.insert(t.from);
    }
    CHECK(senders == std::set<int32_t>{0, 1});  // the load is balanced over stage 0
  }
}

// Per stage, each persistent value's tiles: every device holds one, and every element of the
// value is held by the same number of devices (its replicas), so that the distinct tiles
// partition it. Returns value -> replicas.
std::map<std::string, int64_t> check_tiles(const planner::Plan& plan, const graph::Graph& g,
                                           const Program& prog) {
  std::map<std::string, int32_t> owner;
  std::map<std::string, std::vector<int64_t>> held;  // value -> count per element
  for (const DeviceProgram& dp : prog.devices) {
    if (dp.device < 0) continue;
    std::set<std::string> here;
    for (const PersistentTile& t : dp.persistent) {
      INFO("device " << dp.device << " tile of " << t.value);
      CHECK(here.insert(t.value).second);  // one tile per value and device
      CHECK(owner.emplace(t.value, dp.stage).first->second == dp.stage);  // one owner stage
      const graph::Value* v = nullptr;
      for (const graph::Value& x : g.values()) {
        if (x.name == t.value) v = &x;
      }
      REQUIRE(v != nullptr);
      const BufferDesc& buf = dp.buffers[static_cast<size_t>(t.buffer)];
      CHECK(buf.kind == BufferKind::kPersistent);
      CHECK(buf.dtype == v->dtype);
      REQUIRE(t.region.size() == static_cast<size_t>(v->shape.rank()));
      std::vector<int64_t> extent;
      for (const mesh::DimRange& r : t.region) extent.push_back(r.end - r.begin);
      CHECK(buf.shape == Shape(extent));
      auto& count = held[t.value];
      count.resize(static_cast<size_t>(v->shape.numel()), 0);
      // Every element of the region, as a row-major index of the whole value.
      const std::vector<int64_t> strides = v->shape.strides();
      const int64_t n = Shape(extent).numel();
      for (int64_t k = 0; k < n; ++k) {
        int64_t rest = k;
        int64_t at = 0;
        for (int64_t d = v->shape.rank() - 1; d >= 0; --d) {
          const int64_t e = extent[static_cast<size_t>(d)];
          at += (t.region[static_cast<size_t>(d)].begin + rest % e) * strides[size_t(d)];
          rest /= e;
        }
        ++count[static_cast<size_t>(at)];
      }
    }
    CHECK(here.size() == dp.persistent.size());
  }
  // Every parameter and optimizer state has tiles.
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kParameter || v.role == graph::ValueRole::kOptimizerState) {
      INFO(v.name);
      CHECK(owner.count(v.name) == 1);
    }
  }
  std::map<std::string, int64_t> replicas;
  for (const auto& [name, count] : held) {
    INFO(name);
    const int64_t stage_devices =
        static_cast<int64_t>(plan.stages[static_cast<size_t>(owner.at(name))].devices.size());
    const int64_t r = count.front();
    CHECK(r >= 1);
    CHECK(std::all_of(count.begin(), count.end(), [&](int64_t c) { return c == r; }));
    CHECK(stage_devices % r == 0);
    replicas[name] = r;
  }
  return replicas;
}

TEST_CASE("persistent tiles cover each parameter and state exactly once per replica group",
          "[runtime][lower]") {
  SECTION("data parallel (4, 1): every device holds everything") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
    const planner::Plan plan = grid_plan(tg.graph, 1, {4, 1, 1, Mode::kReplicated});
    for (const auto& [name, r] : check_tiles(plan, tg.graph, lowered(plan, tg.graph))) {
      INFO(name);
      CHECK(r == 4);
    }
  }
  SECTION("ZeRO-3 (4, 1): split values are held once") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
    const planner::Plan plan = grid_plan(tg.graph, 1, {4, 1, 1, Mode::kZero3});
    const auto replicas = check_tiles(plan, tg.graph, lowered(plan, tg.graph));
    int64_t once = 0;
    for (const auto& [name, r] : replicas) once += r == 1 ? 1 : 0;
    CHECK(once * 2 > static_cast<int64_t>(replicas.size()));  // most of them
    CHECK(replicas.at("layer0/mlp/w1") == 1);
  }
  SECTION("(2, 2) mesh and a 2-stage pipeline") {
    graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
    for (planner::GridConfig grid :
         {planner::GridConfig{2, 2, 1, Mode::kFree}, planner::GridConfig{1, 2, 2, Mode::kFree}}) {
      INFO("dp " << grid.dp << " tp " << grid.tp << " pp " << grid.pp);
      const planner::Plan plan = grid_plan(tg.graph, 2, grid);
      check_tiles(plan, tg.graph, lowered(plan, tg.graph));
    }
  }
}

// Gradient all-reduces of device 0 by phase: (backward, grad-sync) instruction counts, and the
// bytes of every buffer the grad-sync ones carry.
struct GradSync {
  int64_t backward = 0;
  int64_t grad_sync = 0;
  std::multiset<int64_t> bytes;
};

GradSync all_reduces(const Program& prog) {
  GradSync out;
  const DeviceProgram& dp = *prog.device(0);
  for (const Instruction& ins : dp.instructions) {
    if (ins.code != Opcode::kCollective ||
        ins.collective.kind != mesh::CollectiveKind::kAllReduce) {
      continue;
    }
    if (ins.phase == Phase::kBackward) ++out.backward;
    if (ins.phase != Phase::kGradSync) continue;
    ++out.grad_sync;
    CHECK(ins.micro_batch == -1);
    CHECK(ins.collective.axis == 0);
    for (int32_t b : ins.in) out.bytes.insert(dp.buffers[static_cast<size_t>(b)].bytes());
  }
  return out;
}

std::multiset<int64_t> parameter_bytes(const graph::Graph& g) {
  std::multiset<int64_t> out;
  for (const graph::Value& v : g.values()) {
    if (v.role == graph::ValueRole::kParameter) out.insert(v.bytes());
  }
  return out;
}

TEST_CASE(
    "a data-parallel plan all-reduces each gradient once per step, after the last "
    "micro-batch",
    "[runtime][lower]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("mlp-tiny", 8);
  const planner::Plan plan = grid_plan(tg.graph, 2, {4, 1, 1, Mode::kReplicated}, 2);
  const std::multiset<int64_t> params = parameter_bytes(tg.graph);
  REQUIRE(params.size() == 6);
  LowerOptions unfused;
  unfused.fuse_all_reduce_bytes = 0;
  const Program deferred = lowered(plan, tg.graph, unfused);
  const GradSync d = all_reduces(deferred);
  CHECK(d.backward == 0);
  CHECK(d.grad_sync == 6);
  CHECK(d.bytes == params);  // one all-reduce per parameter gradient, whole
  // None before the last accumulation.
  const DeviceProgram& dp = *deferred.device(0);
  size_t last_acc = 0;
  size_t first_sync = dp.instructions.size();
  for (size_t i = 0; i < dp.instructions.size(); ++i) {
    const Instruction& ins = dp.instructions[i];
    if (ins.code == Opcode::kAccumulate) last_acc = i;
    if (ins.phase == Phase::kGradSync && ins.code == Opcode::kCollective) {
      first_sync = std::min(first_sync, i);
    }
  }
  CHECK(last_acc < first_sync);

  LowerOptions eager = unfused;
  eager.defer_grad_sync = false;
  const GradSync e = all_reduces(lowered(plan, tg.graph, eager));
  CHECK(e.backward == 6 * 2);  // every micro-batch's gradients
  CHECK(e.grad_sync == 0);
}

TEST_CASE("fuse_all_reduces packs a data-parallel gradient synchronisation", "[runtime][lower]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("mlp-tiny", 16);
  const planner::Plan plan = grid_plan(tg.graph, 1, {4, 1, 1, Mode::kReplicated}, 2);
  const std::multiset<int64_t> params = parameter_bytes(tg.graph);
  const GradSync fused = all_reduces(lowered(plan, tg.graph));
  CHECK(fused.grad_sync == 1);
  CHECK(fused.bytes == params);
  // Buckets of at most 4 KiB: layer1/w (4 KiB) fills one, the rest share.
  LowerOptions small;
  small.fuse_all_reduce_bytes = 4096;
  const Program bucketed = lowered(plan, tg.graph, small);
  const GradSync b = all_reduces(bucketed);
  CHECK(b.bytes == params);
  CHECK(b.grad_sync > 1);
  CHECK(b.grad_sync < 6);
  for (const Instruction& ins : bucketed.device(0)->instructions) {
    if (ins.phase != Phase::kGradSync || ins.in.size() < 2) continue;
    int64_t bytes = 0;
    for (int32_t x : ins.in) bytes += bucketed.device(0)->buffers[size_t(x)].bytes();
    CHECK(bytes <= 4096);
  }
  CHECK(validate_program(bucketed).is_ok());
}

TEST_CASE("with several micro-batches a data-parallel gradient synchronisation is still fused",
          "[runtime][lower]") {
  // LowerOptions: "the gradient synchronisation after the last micro-batch" runs as one
  // all-reduce of a packed buffer. grad_sync emits every gradient's all-reduce before the
  // averages (it once put each kScale right after its all-reduce, so none fused).
  graph::TrainingGraph tg = testing::zoo_training_graph("mlp-tiny", 8);
  const planner::Plan plan = grid_plan(tg.graph, 2, {4, 1, 1, Mode::kReplicated}, 2);
  const GradSync fused = all_reduces(lowered(plan, tg.graph));
  CHECK(fused.grad_sync == 1);  // once 6: one per gradient
}

TEST_CASE("a data-parallel plan defers the tied embedding's gradient all-reduce too",
          "[runtime][lower]") {
  // README step 5: parameter gradients are "summed locally, then resolved once after the last
  // micro-batch". gpt-tiny ties the embedding to the head: the gradient of embed/wte is the sum
  // (embed/wte/grad_acc0) of the head's and the embedding's pieces. The pieces are accumulated
  // and all-reduced once per step, then added (runtime/lower.cc find_deferred_sums). The head's
  // piece comes out of its dot in wte's layout (graph/ops/matmul.cc rhs_grad_in_place): were it
  // a transpose of another product, the transpose would read its input resolved, an all-reduce
  // in every micro-batch's backward.
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 4);
  const planner::Plan plan = grid_plan(tg.graph, 2, {4, 1, 1, Mode::kReplicated});
  LowerOptions unfused;
  unfused.fuse_all_reduce_bytes = 0;
  const GradSync g = all_reduces(lowered(plan, tg.graph, unfused));
  CHECK(g.backward == 0);  // was 2: head/logits/grad_rhs, per micro-batch
}

TEST_CASE("lowering refuses another graph's plan, a missing op layout and an impossible one",
          "[runtime][lower]") {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8);
  const planner::Plan plan = grid_plan(tg.graph, 1, {4, 1, 1, Mode::kReplicated});
  REQUIRE(!plan.graph_fingerprint.empty());

  SECTION("a plan made for another graph") {
    graph::TrainingGraph other = testing::zoo_training_graph("gpt-tiny", 4);
    auto r = lower(plan, other.graph);
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().code() == Errc::kInvalidArgument);
    CHECK(r.status().message().find("another training graph") != std::string::npos);
    CHECK(r.status().message().find(plan.graph_fingerprint) != std::string::npos);
  }
  SECTION("an op without a layout") {
    planner::Plan p = plan;
    const std::string op = tg.graph.ops()[3].name;
    REQUIRE(p.stages[0].op_layouts.erase(op) == 1);
    auto r = lower(p, tg.graph);
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().code() == Errc::kInvalidArgument);
    CHECK(r.status().message().find(fmt::format("stage 0 has no layout for op '{}'", op)) !=
          std::string::npos);
  }
  SECTION("a layout the op cannot take") {
    // A dot with mesh axis 0 on two of its iteration dims.
    planner::Plan p = plan;
    std::string op;
    for (const graph::Op& o : tg.graph.ops()) {
      if (o.kind == graph::OpKind::kDot && op.empty()) op = o.name;
    }
    shard::OpLayout& layout = p.stages[0].op_layouts.at(op);
    REQUIRE(layout.iter.size() >= 2);
    for (mesh::DimSharding& d : layout.iter) d = mesh::DimSharding::kS0;
    auto r = lower(p, tg.graph);
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().code() == Errc::kInvalidArgument);
    CHECK(r.status().message().find(
              fmt::format("op '{}' with layout '{}'", op, shard::layout_to_string(layout))) !=
          std::string::npos);
    CHECK(r.status().message().find("uses a mesh axis another dim already uses") !=
          std::string::npos);
  }
  SECTION("negative fusion bytes") {
    LowerOptions o;
    o.fuse_all_reduce_bytes = -1;
    auto r = lower(plan, tg.graph, o);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().message() == "fuse_all_reduce_bytes must be >= 0");
  }
}

}  // namespace
}  // namespace meshpipe::runtime

// lower_batch_norm.cc through lower(): a batch norm whose batch is split over a mesh axis lowers
// to its pieces (sums, all-reduces of the per-channel statistics over the split axes, apply)
// with the global N * H * W, and a plan that does not split it keeps the whole op.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "runtime/grid_plan.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;

using testing::grid_plan;
using testing::lowered;

graph::OptimizerConfig sgd_momentum() {
  graph::OptimizerConfig opt;
  opt.kind = graph::OptimizerConfig::Kind::kSgd;
  opt.lr = 0.05f;
  opt.momentum = 0.9f;
  return opt;
}

// The instructions of `dp` from `i` on, kFree skipped.
std::vector<const Instruction*> from(const DeviceProgram& dp, size_t i, size_t n) {
  std::vector<const Instruction*> out;
  for (; i < dp.instructions.size() && out.size() < n; ++i) {
    if (dp.instructions[i].code != Opcode::kFree) out.push_back(&dp.instructions[i]);
  }
  return out;
}

// True when the instructions are all-reduces along axis 0 that carry exactly `buffers`.
bool all_reduce_of(const std::vector<const Instruction*>& ins, std::set<int32_t> buffers) {
  for (const Instruction* i : ins) {
    if (i->code != Opcode::kCollective || i->collective.kind != mesh::CollectiveKind::kAllReduce ||
        i->collective.axis != 0 || i->in != i->out) {
      return false;
    }
    for (int32_t b : i->in) {
      if (buffers.erase(b) != 1) return false;
    }
  }
  return buffers.empty();
}

TEST_CASE("a batch norm whose batch is split lowers to pieces with all-reduces between them",
          "[runtime][lower]") {
  // wresnet-tiny, data parallel over 4 devices: every batch norm splits its batch of 16.
  graph::TrainingGraph tg = testing::zoo_training_graph("wresnet-tiny", 16, sgd_momentum());
  const planner::Plan plan = grid_plan(tg.graph, 1, {4, 1, 1, Mode::kReplicated});
  const Program prog = lowered(plan, tg.graph);
  std::map<std::string, double> count;  // batch norm -> global N * H * W
  int64_t norms = 0;
  int64_t grads = 0;
  for (const graph::Op& op : tg.graph.ops()) {
    if (op.kind == graph::OpKind::kBatchNorm || op.kind == graph::OpKind::kBatchNormGrad) {
      const Shape& x =
          tg.graph.value(op.inputs[op.kind == graph::OpKind::kBatchNorm ? 0 : 1]).shape;
      count[op.name] = static_cast<double>(x[0] * x[2] * x[3]);
      (op.kind == graph::OpKind::kBatchNorm ? norms : grads) += 1;
    }
  }
  REQUIRE(norms > 0);
  REQUIRE(grads == norms);
  for (const DeviceProgram& dp : prog.devices) {
    if (dp.device < 0) continue;
    INFO("device " << dp.device);
    std::map<graph::OpKind, int64_t> pieces;
    for (size_t i = 0; i < dp.instructions.size(); ++i) {
      const Instruction& ins = dp.instructions[i];
      if (ins.code != Opcode::kRun) continue;
      const LocalOp& l = dp.ops[static_cast<size_t>(ins.op)];
      ++pieces[l.op.kind];
      INFO(ins.what);
      switch (l.op.kind) {
        case graph::OpKind::kBatchNormSums: {
          // sums -> all-reduce(sums) -> statistics(x, sums) -> all-reduce(sq) -> apply
          CHECK(l.op.attrs.count == count.at(l.op.name));
          const auto next = from(dp, i + 1, 4);
          REQUIRE(next.size() == 4);
          CHECK(all_reduce_of({next[0]}, {ins.out[0]}));
          const LocalOp& stats = dp.ops[static_cast<size_t>(next[1]->op)];
          CHECK(stats.op.kind == graph::OpKind::kBatchNormStats);
          CHECK(next[1]->in == std::vector<int32_t>{ins.in[0], ins.out[0]});
          CHECK(all_reduce_of({next[2]}, {next[1]->out[1]}));
          const LocalOp& apply = dp.ops[static_cast<size_t>(next[3]->op)];
          CHECK(apply.op.kind == graph::OpKind::kBatchNormApply);
          CHECK(apply.op.attrs.count == count.at(l.op.name));
          CHECK(next[3]->in[0] == ins.in[0]);
          CHECK(next[3]->in[1] == next[1]->out[0]);  // mean
          CHECK(next[3]->in[2] == next[1]->out[1]);  // all-reduced square sums
          break;
        }
        case graph::OpKind::kBatchNormGradSums: {
          // (dgamma, dbeta) -> all-reduced (maybe fused) -> apply
          CHECK(l.op.attrs.count == count.at(l.op.name));
          const auto next = from(dp, i + 1, 3);
          REQUIRE(next.size() >= 2);
          const bool fused = next[0]->in.size() == 2;
          const std::vector<const Instruction*> reduces(next.begin(),
                                                        next.begin() + (fused ? 1 : 2));
          CHECK(all_reduce_of(reduces, {ins.out[0], ins.out[1]}));
          const Instruction* apply = next[fused ? 1 : 2];
          REQUIRE(apply->code == Opcode::kRun);
          CHECK(dp.ops[static_cast<size_t>(apply->op)].op.kind ==
                graph::OpKind::kBatchNormGradApply);
          CHECK(apply->in.size() == 7);
          CHECK(apply->in[5] == ins.out[0]);
          CHECK(apply->in[6] == ins.out[1]);
          break;
        }
        default:
          break;
      }
    }
    CHECK(pieces[graph::OpKind::kBatchNorm] == 0);
    CHECK(pieces[graph::OpKind::kBatchNormGrad] == 0);
    CHECK(pieces[graph::OpKind::kBatchNormSums] == norms);
    CHECK(pieces[graph::OpKind::kBatchNormStats] == norms);
    CHECK(pieces[graph::OpKind::kBatchNormApply] == norms);
    CHECK(pieces[graph::OpKind::kBatchNormGradSums] == grads);
    CHECK(pieces[graph::OpKind::kBatchNormGradApply] == grads);
  }

  // On one device nothing is split: the batch norms stay whole.
  const planner::Plan one = grid_plan(tg.graph, 1, {1, 1, 1, Mode::kFree});
  const Program whole = lowered(one, tg.graph);
  int64_t whole_norms = 0;
  for (const LocalOp& l : whole.device(0)->ops) {
    CHECK(!op_kind_info(l.op.kind).lowering_only);
    whole_norms += l.op.kind == graph::OpKind::kBatchNorm ? 1 : 0;
  }
  CHECK(whole_norms == norms);
}

}  // namespace
}  // namespace meshpipe::runtime

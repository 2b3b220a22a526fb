// Operator clustering: hand-computed cuts on a matmul chain (FLOP balance against a narrow
// tensor), GPT blocks kept whole, backward/update ops following their forward op, option errors.
#include "planner/layer_clustering.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cctype>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "graph/builder.h"
#include "graph/cost.h"
#include "graph/models/gpt.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"

namespace meshpipe::planner {
namespace {

using graph::Builder;
using graph::InitSpec;
using graph::ValueRole;

// A chain x -> matmul -> relu -> matmul -> relu ... with batch 4, f32; widths[0] is the width
// of the input x, widths[i] that of matmul i's output. A layer's cost counts only the matmuls
// (2 * 4 * K * N FLOPs each); the relus are free. Cutting before forward op s moves only the
// output of op s-1 into the next layer (the weights are parameters and do not count).
graph::Graph matmul_chain(const std::vector<int64_t>& widths) {
  Builder b;
  ValueId x = b.input("x", Shape{4, widths[0]}, DType::kF32);
  for (size_t i = 1; i < widths.size(); ++i) {
    ValueId w = b.parameter(fmt::format("w{}", i), Shape{widths[i - 1], widths[i]},
                            InitSpec::normal(0.02f));
    x = b.relu(b.matmul(x, w, fmt::format("m{}", i)), fmt::format("a{}", i));
  }
  REQUIRE(b.status().is_ok());
  return b.graph();
}

// Six matmuls with a bottleneck of width 2 after the third:
//
//   fwd op  op   shape   FLOPs  heavy prefix  out bytes
//   0       m1   [4,8]    128    128          128     (x = input [4,2], 32 B)
//   1       a1   [4,8]      0    128          128
//   2       m2   [4,8]    512    640          128
//   3       a2   [4,8]      0    640          128
//   4       m3   [4,2]    128    768           32     narrow
//   5       a3   [4,2]      0    768           32     narrow
//   6       m4   [4,8]    128    896          128
//   7       a4   [4,8]      0    896          128
//   8       m5   [4,8]    512   1408          128
//   9       a5   [4,8]      0   1408          128
//   10      m6   [4,8]    512   1920          128
//   11      a6   [4,8]      0   1920          128
//
// Total 1920 FLOPs; for L = 2 the mean is 960, and layer 0 reads x (32 B).
graph::Graph bottleneck_chain() { return matmul_chain({2, 8, 8, 2, 8, 8, 8}); }

// The forward op index where each layer starts.
std::vector<int32_t> layer_starts(const graph::Graph& g, const LayerClustering& c) {
  std::vector<int32_t> starts;
  int32_t fwd = 0;
  int32_t previous = -1;
  for (int64_t i = 0; i < g.num_ops(); ++i) {
    if (g.ops()[static_cast<size_t>(i)].phase != graph::OpPhase::kForward) continue;
    if (c.op_layer[static_cast<size_t>(i)] != previous) starts.push_back(fwd);
    previous = c.op_layer[static_cast<size_t>(i)];
    ++fwd;
  }
  return starts;
}

// Block index N of an op named "layerN/..." (or "grad/layerN/..." etc.), -1 for other names.
int block_of(const std::string& name) {
  const size_t at = name.find("layer");
  if (at == std::string::npos || (at > 0 && name[at - 1] != '/')) return -1;
  size_t end = at + 5;
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == at + 5 || end >= name.size() || name[end] != '/') return -1;
  return std::stoi(name.substr(at + 5, end - at - 5));
}

graph::TrainingGraph gpt_training_graph(int64_t blocks) {
  // Vocabulary 64 keeps the head (2 H V = 4096 FLOPs per token) small next to a block
  // (24 H^2 + 4 S H = 26624 per token), so balanced layers are whole pairs of blocks.
  const graph::models::GptConfig config{/*seq_len=*/16, /*hidden=*/32,
                                        blocks,         /*heads=*/4,
                                        /*vocab=*/64,   /*ffn_mult=*/4};
  auto fg = graph::models::build_gpt(config, /*batch=*/2, DType::kF32);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  return std::move(*tg);
}

// Blocks of `blocks_per_layer` consecutive GPT blocks share a layer; the embedding joins the
// first and the head the last; every backward/update op shares its forward op's layer.
void check_gpt_blocks(const graph::Graph& g, const LayerClustering& c, int blocks_per_layer) {
  const int32_t last = c.num_layers - 1;
  for (int64_t i = 0; i < g.num_ops(); ++i) {
    const graph::Op& op = g.ops()[static_cast<size_t>(i)];
    const int32_t layer = c.op_layer[static_cast<size_t>(i)];
    INFO(op.name << " (" << graph::op_phase_name(op.phase) << ") in layer " << layer);
    const int block = block_of(op.name);
    if (op.phase == graph::OpPhase::kForward) {
      if (block >= 0) CHECK(layer == block / blocks_per_layer);
      if (op.name.starts_with("embed/")) CHECK(layer == 0);
      if (op.name.starts_with("head/")) CHECK(layer == last);
    } else if (op.forward.is_valid()) {
      // Backward and update ops follow their forward op's block. (A "<value>/grad_acc" op sums
      // the gradient contributions of a value's readers and follows the reader, so the
      // gradient of a value crossing a cut is summed in the reading layer and sent once.)
      CHECK(layer == c.op_layer[op.forward.index()]);
      const int forward_block = block_of(g.op(op.forward).name);
      if (forward_block >= 0) CHECK(layer == forward_block / blocks_per_layer);
      if (block >= 0 && op.phase == graph::OpPhase::kUpdate) {
        CHECK(layer == block / blocks_per_layer);
      }
    }
  }
}

TEST_CASE("FLOP balance picks the cut when every cut crosses an equally wide tensor", "[planner]") {
  // Four [8,8] matmuls on x [4,8]: every tensor, x included, is 128 B, so max C = 128 and
  // sum C = 256 for every cut. Prefix FLOPs by cut s: s = 1, 2: 512; s = 3, 4: 1024;
  // s = 5, 6: 1536 (the bound is 1.5 * 1024 = 1536, so all are feasible). Squared deviations
  // from 1024: s = 3, 4: 0; the others 2 * 512^2. s = 3 (before a2) and s = 4 (after a2) tie;
  // the later cut wins, keeping a2 with its matmul. Two matmuls per layer: minimum 1.
  const graph::Graph g = matmul_chain({8, 8, 8, 8, 8});
  ClusteringOptions o;
  o.num_layers = 2;
  o.min_heavy_ops = 1;
  auto c = cluster_layers(g, o);
  REQUIRE(c.has_value());
  CHECK(c->num_layers == 2);
  CHECK(layer_starts(g, *c) == std::vector<int32_t>{0, 4});
  CHECK(c->layer_flops == std::vector<double>{1024, 1024});
  CHECK(c->input_bytes == std::vector<double>{128, 128});
  CHECK(c->op_layer == std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1, 1});
}

TEST_CASE("the communication term moves the cut to a narrow tensor within the FLOP bound",
          "[planner]") {
  const graph::Graph g = bottleneck_chain();
  // eps = 0.5: each layer <= 1.5 * 960 = 1440, so the heavy prefix must lie in [480, 1440]:
  // s = 3 .. 10. FLOPs alone would choose s = 7 or 8 (896, closest to 960), crossing 128 B.
  // s = 5 (after m3) and s = 6 (after a3) cross a [4,2] tensor of 32 B: max C =
  // max(32 (x), 32) = 32 < 128. They tie in everything (768 | 1152); the later, s = 6, wins.
  // Both layers hold 3 matmuls, meeting the default heavy-op minimum.
  ClusteringOptions o;
  o.num_layers = 2;
  auto c = cluster_layers(g, o);
  REQUIRE(c.has_value());
  CHECK(layer_starts(g, *c) == std::vector<int32_t>{0, 6});
  CHECK(c->layer_flops == std::vector<double>{768, 1152});
  CHECK(c->input_bytes == std::vector<double>{32, 32});
}

TEST_CASE("a tight FLOP bound overrides the narrow cut and relaxes the heavy-op minimum",
          "[planner]") {
  const graph::Graph g = bottleneck_chain();
  // eps = 0.1: each layer <= 1.1 * 960 = 1056, so the prefix must lie in [864, 1056]: only
  // s = 7 and 8 (896 | 1024), both crossing 128 B; the later, s = 8, wins. Layer 1 then holds
  // 2 matmuls, so no split meets the default minimum of 3 and it is relaxed to 1.
  ClusteringOptions o;
  o.num_layers = 2;
  o.eps = 0.1;
  auto c = cluster_layers(g, o);
  REQUIRE(c.has_value());
  CHECK(layer_starts(g, *c) == std::vector<int32_t>{0, 8});
  CHECK(c->layer_flops == std::vector<double>{896, 1024});
  CHECK(c->input_bytes == std::vector<double>{32, 128});
}

TEST_CASE("a heavy-op minimum that no split meets is relaxed", "[planner]") {
  const graph::Graph g = bottleneck_chain();
  // 4 layers of >= 3 matmuls would need 12; the minimum drops to 1, then every layer holds at
  // least one matmul and at most 1.5 * 1920 / 4 = 720 FLOPs (m5 and m6 apart).
  ClusteringOptions o;
  o.num_layers = 4;
  auto c = cluster_layers(g, o);
  REQUIRE(c.has_value());
  CHECK(c->num_layers == 4);
  for (double f : c->layer_flops) CHECK(f <= 720.0);
  std::vector<int> dots(4, 0);
  for (int64_t i = 0; i < g.num_ops(); ++i) {
    if (g.ops()[static_cast<size_t>(i)].kind == graph::OpKind::kDot) {
      ++dots[static_cast<size_t>(c->op_layer[static_cast<size_t>(i)])];
    }
  }
  for (int d : dots) CHECK(d >= 1);
}

TEST_CASE("ops without a forward link take the layer of the op before them", "[planner]") {
  graph::Graph g = bottleneck_chain();  // split {0, 6} at L = 2 (see above)
  graph::OpAttrs fill;
  fill.shape = Shape{4, 8};
  auto seed = g.add_op(graph::OpKind::kConstant, "seed", {}, fill, 0, graph::OpPhase::kBackward,
                       ValueRole::kGradient);
  REQUIRE(seed.has_value());
  // Follows m1 (forward op 0, layer 0) through its link.
  auto linked = g.add_op(graph::OpKind::kScale, "linked", {g.op(*seed).outputs[0]}, {}, 0,
                         graph::OpPhase::kBackward, ValueRole::kGradient, OpId(0));
  REQUIRE(linked.has_value());
  auto after = g.add_op(graph::OpKind::kConstant, "after", {}, fill, 0, graph::OpPhase::kBackward,
                        ValueRole::kGradient);
  REQUIRE(after.has_value());
  ClusteringOptions o;
  o.num_layers = 2;
  auto c = cluster_layers(g, o);
  REQUIRE(c.has_value());
  CHECK(c->op_layer[seed->index()] == 1);    // after a6, in layer 1
  CHECK(c->op_layer[linked->index()] == 0);  // m1's layer
  CHECK(c->op_layer[after->index()] == 0);   // after "linked"
}

TEST_CASE("more layers than forward ops is an error", "[planner]") {
  const graph::Graph g = bottleneck_chain();
  ClusteringOptions o;
  o.num_layers = 13;
  auto c = cluster_layers(g, o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.status().code() == Errc::kInvalidArgument);
  // One op per layer fits at eps = 5 (bound 6 * 1920 / 12 = 960 >= 512) once the heavy-op
  // minimum is relaxed to 0 (the relus hold none).
  o.num_layers = 12;
  o.eps = 5.0;
  c = cluster_layers(g, o);
  REQUIRE(c.has_value());
  CHECK(c->op_layer == std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
}

TEST_CASE("clustering options reject a negative eps and bad counts", "[planner]") {
  ClusteringOptions o;
  CHECK(o.validate().is_ok());
  o.eps = -0.1;
  CHECK(o.validate().code() == Errc::kInvalidArgument);
  CHECK(cluster_layers(bottleneck_chain(), o).status().code() == Errc::kInvalidArgument);
  o = ClusteringOptions{};
  o.num_layers = -1;
  CHECK_FALSE(o.validate().is_ok());
  o = ClusteringOptions{};
  o.max_layers = 0;
  CHECK_FALSE(o.validate().is_ok());
  o = ClusteringOptions{};
  o.min_heavy_ops = -1;
  CHECK_FALSE(o.validate().is_ok());
}

TEST_CASE("an infeasible FLOP bound is reported, not fatal", "[planner]") {
  // eps = 0: both layers must hold exactly 960 FLOPs, and no heavy prefix equals 960.
  ClusteringOptions o;
  o.num_layers = 2;
  o.eps = 0.0;
  auto c = cluster_layers(bottleneck_chain(), o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.status().code() == Errc::kInfeasible);
}

TEST_CASE("search mode returns the largest feasible layer count up to max_layers", "[planner]") {
  // The chain has 6 matmuls: with >= 3 per layer at most 2 layers, and 2 are feasible.
  ClusteringOptions o;
  auto c = cluster_layers(bottleneck_chain(), o);
  REQUIRE(c.has_value());
  CHECK(c->num_layers == 2);

  // GPT with 6 blocks (8 dots each): capped by max_layers = 4, and every layer fits the bound.
  const graph::TrainingGraph tg = gpt_training_graph(6);
  o.max_layers = 4;
  c = cluster_layers(tg.graph, o);
  REQUIRE(c.has_value());
  CHECK(c->num_layers == 4);
  double total = 0.0;
  for (double f : c->layer_flops) total += f;
  for (double f : c->layer_flops) CHECK(f <= 1.5 * total / 4 * (1 + 1e-9));
  std::vector<int> dots(4, 0);
  for (int64_t i = 0; i < tg.graph.num_ops(); ++i) {
    const graph::Op& op = tg.graph.ops()[static_cast<size_t>(i)];
    if (op.phase == graph::OpPhase::kForward && op.kind == graph::OpKind::kDot) {
      ++dots[static_cast<size_t>(c->op_layer[static_cast<size_t>(i)])];
    }
  }
  for (int d : dots) CHECK(d >= 3);
}

TEST_CASE("search mode falls back to two layers when L = 3 is infeasible and more are wider",
          "[planner]") {
  // Every tensor is [1, 8] f32 (32 B) and every matmul 2 * 8 * 8 = 128 FLOPs (512 in all):
  //
  //   fwd op  0: a0 = mm(x)   1: u = tanh(x)   2: a1 = mm(a0)   3: c = add(a1, u)
  //           4: a2 = mm(c)   5: mm(a2)
  //
  // eps = 0: each of L layers holds exactly 512 / L FLOPs.
  //   L = 4: one matmul per layer; u is made before op 2 and read by op 3, so some layer reads
  //          two tensors (a0 and u, x and a0, or a1 and u): widest cut 64 B.
  //   L = 3: 170.7 FLOPs per layer holds one matmul, and there are four: infeasible.
  //   L = 2: ops 0..3 | 4..5, each layer reading one tensor (x, c): widest cut 32 B.
  // The rule (the largest L no wider than L = 2) gives 2; L = 4 is wider.
  Builder b;
  const auto w = [&](const char* name) {
    return b.parameter(name, Shape{8, 8}, InitSpec::normal(0.02f));
  };
  const ValueId x = b.input("x", Shape{1, 8}, DType::kF32);
  const ValueId a0 = b.matmul(x, w("w0"), "a0");
  const ValueId u = b.tanh(x, "u");
  const ValueId a1 = b.matmul(a0, w("w1"), "a1");
  const ValueId c = b.add(a1, u, "c");
  const ValueId a2 = b.matmul(c, w("w2"), "a2");
  b.matmul(a2, w("w3"), "out");
  REQUIRE(b.status().is_ok());
  const graph::Graph g = b.graph();

  ClusteringOptions o;
  o.eps = 0.0;
  o.min_heavy_ops = 1;
  o.max_layers = 4;
  o.num_layers = 4;
  auto fixed = cluster_layers(g, o);
  REQUIRE(fixed.has_value());
  CHECK(*std::max_element(fixed->input_bytes.begin(), fixed->input_bytes.end()) == 64);
  o.num_layers = 3;
  CHECK(cluster_layers(g, o).status().code() == Errc::kInfeasible);

  o.num_layers = 0;  // search
  auto found = cluster_layers(g, o);
  REQUIRE(found.has_value());
  CHECK(found->num_layers == 2);
  CHECK(layer_starts(g, *found) == std::vector<int32_t>{0, 4});
  CHECK(found->input_bytes == std::vector<double>{32, 32});
}

// A random forward graph of matmuls, relus and residual adds (all ops forward, so the forward
// index is the op index), from a fixed seed.
graph::Graph random_graph(std::mt19937& rng, int num_ops) {
  Builder b;
  std::vector<ValueId> values{
      b.input("x", Shape{2, 1 + static_cast<int64_t>(rng() % 4)}, DType::kF32)};
  for (int i = 0; i < num_ops; ++i) {
    const ValueId x = values.back();
    const int64_t width = b.shape(x)[1];
    const unsigned kind = rng() % 3;
    ValueId earlier;
    for (ValueId v : values) {
      if (b.shape(v) == b.shape(x) && v != x && rng() % 2 == 0) earlier = v;
    }
    if (kind == 2 && earlier.is_valid()) {
      values.push_back(b.add(x, earlier));
    } else if (kind == 1) {
      values.push_back(b.relu(x));
    } else {
      const int64_t out = 1 + static_cast<int64_t>(rng() % 4);
      values.push_back(b.matmul(
          x, b.parameter(fmt::format("w{}", i), Shape{width, out}, InitSpec::normal(0.02f))));
    }
  }
  REQUIRE(b.status().is_ok());
  return b.graph();
}

// Exhaustive search over every split of a random_graph into `layers` layers: the smallest
// largest communication into a layer over the admissible splits, -1 when there is none.
int64_t brute_force_max_bytes(const graph::Graph& g, int layers, double eps, int min_heavy) {
  const int n = static_cast<int>(g.num_ops());
  std::vector<double> flops(static_cast<size_t>(n));
  std::vector<int> heavy(static_cast<size_t>(n));
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    const graph::Op& op = g.ops()[static_cast<size_t>(i)];
    heavy[static_cast<size_t>(i)] = op.kind == graph::OpKind::kDot ? 1 : 0;
    flops[static_cast<size_t>(i)] =
        heavy[static_cast<size_t>(i)] ? graph::op_flops(g, op).value() : 0.0;
    total += flops[static_cast<size_t>(i)];
  }
  const double bound = (1 + eps) * total / layers * (1 + 1e-9);
  int64_t best = -1;
  // Cuts are a bitmask over positions 1..n-1 with layers - 1 bits set.
  for (uint32_t mask = 0; mask < (1u << (n - 1)); ++mask) {
    if (std::popcount(mask) != layers - 1) continue;
    std::vector<int> starts{0};
    for (int s = 1; s < n; ++s) {
      if (mask & (1u << (s - 1))) starts.push_back(s);
    }
    starts.push_back(n);
    int64_t worst = 0;
    bool ok = true;
    for (size_t q = 0; q + 1 < starts.size() && ok; ++q) {
      double f = 0.0;
      int h = 0;
      std::set<int32_t> read;
      for (int i = starts[q]; i < starts[q + 1]; ++i) {
        f += flops[static_cast<size_t>(i)];
        h += heavy[static_cast<size_t>(i)];
        for (ValueId v : g.ops()[static_cast<size_t>(i)].inputs) {
          const graph::Value& value = g.value(v);
          if (value.role == ValueRole::kParameter) continue;
          if (!value.producer.is_valid() || value.producer.value() < starts[q]) {
            read.insert(v.value());
          }
        }
      }
      int64_t bytes = 0;
      for (int32_t v : read) bytes += g.value(ValueId(v)).bytes();
      ok = f <= bound && h >= min_heavy;
      worst = std::max(worst, bytes);
    }
    if (ok && (best < 0 || worst < best)) best = worst;
  }
  return best;
}

TEST_CASE("the DP's worst layer input equals brute force on small random graphs", "[planner]") {
  std::mt19937 rng(20240611);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 4 + static_cast<int>(rng() % 9);
    const graph::Graph g = random_graph(rng, n);
    ClusteringOptions o;
    o.num_layers = 1 + static_cast<int32_t>(rng() % 4);
    o.eps = std::vector<double>{0.0, 0.3, 1.0, 3.0}[rng() % 4];
    o.min_heavy_ops = static_cast<int32_t>(rng() % 2);
    INFO("trial " << trial << ": " << n << " ops, L " << o.num_layers << ", eps " << o.eps
                  << ", min heavy " << o.min_heavy_ops);
    int64_t expected = brute_force_max_bytes(g, o.num_layers, o.eps, o.min_heavy_ops);
    if (expected < 0 && o.min_heavy_ops > 0) {
      expected = brute_force_max_bytes(g, o.num_layers, o.eps, 0);  // relaxed
    }
    auto c = cluster_layers(g, o);
    if (expected < 0) {
      CHECK(c.status().code() == Errc::kInfeasible);
      continue;
    }
    REQUIRE(c.has_value());
    CHECK(*std::max_element(c->input_bytes.begin(), c->input_bytes.end()) ==
          static_cast<double>(expected));
  }
}

TEST_CASE("gpt-tiny clusters into one layer per block", "[planner]") {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  auto fg = graph::models::build_model(*spec);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), graph::OptimizerConfig{});
  REQUIRE(tg.has_value());
  ClusteringOptions o;
  o.num_layers = 2;
  auto c = cluster_layers(tg->graph, o);
  REQUIRE(c.has_value());
  check_gpt_blocks(tg->graph, *c, /*blocks_per_layer=*/1);
}

TEST_CASE("a 6-block GPT in 3 layers cuts at block boundaries, 2 blocks per layer", "[planner]") {
  const graph::TrainingGraph tg = gpt_training_graph(6);
  ClusteringOptions o;
  o.num_layers = 3;
  auto c = cluster_layers(tg.graph, o);
  REQUIRE(c.has_value());
  REQUIRE(c->num_layers == 3);
  check_gpt_blocks(tg.graph, *c, /*blocks_per_layer=*/2);

  // Layer 0 reads the tokens; layer 1 one [B, S, H] = [2, 16, 32] f32 tensor; layer 2 that
  // tensor plus the labels ([2, 16] i32).
  CHECK(c->input_bytes == std::vector<double>{2 * 16 * 4, 2 * 16 * 32 * 4, 4096 + 2 * 16 * 4});
  double total = 0.0;
  for (double f : c->layer_flops) total += f;
  for (double f : c->layer_flops) CHECK(f <= 1.5 * total / 3);

  const graph::Graph g = apply_clustering(tg.graph, *c);
  REQUIRE(g.validate().is_ok());
  CHECK(g.num_layers() == 3);
  REQUIRE(g.num_ops() == tg.graph.num_ops());
  REQUIRE(g.num_values() == tg.graph.num_values());
  for (int64_t i = 0; i < g.num_ops(); ++i) {
    const graph::Op& a = tg.graph.ops()[static_cast<size_t>(i)];
    const graph::Op& b = g.ops()[static_cast<size_t>(i)];
    CHECK(b.layer == c->op_layer[static_cast<size_t>(i)]);
    CHECK((a.kind == b.kind && a.name == b.name && a.inputs == b.inputs && a.outputs == b.outputs &&
           a.attrs == b.attrs && a.phase == b.phase && a.forward == b.forward));
  }
  CHECK(g.outputs() == tg.graph.outputs());
  CHECK(g.aliases().size() == tg.graph.aliases().size());
}

TEST_CASE("clustering is deterministic", "[planner]") {
  const graph::TrainingGraph tg = gpt_training_graph(6);
  ClusteringOptions o;
  o.num_layers = 3;
  auto a = cluster_layers(tg.graph, o);
  auto b = cluster_layers(tg.graph, o);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(a->op_layer == b->op_layer);
  CHECK(a->layer_flops == b->layer_flops);
  CHECK(a->input_bytes == b->input_bytes);
}

TEST_CASE("gpt-39b's forward graph clusters into 16 layers", "[planner]") {
  auto spec = graph::models::find_model("gpt-39b");
  REQUIRE(spec.has_value());
  graph::models::BuildOptions build;
  build.batch = 1;
  build.dtype = DType::kF16;
  auto fg = graph::models::build_model(*spec, build);
  REQUIRE(fg.has_value());
  ClusteringOptions o;
  o.num_layers = 16;
  auto c = cluster_layers(fg->graph, o);
  REQUIRE(c.has_value());
  CHECK(c->num_layers == 16);
  double total = 0.0;
  for (double f : c->layer_flops) total += f;
  for (double f : c->layer_flops) CHECK(f <= 1.5 * total / 16 * (1 + 1e-9));
  // Every cut crosses one [1, 1024, 8192] f16 tensor; layer 0 reads the tokens ([1, 1024] i32)
  // and the last layer also the labels.
  const double hidden_bytes = 1024.0 * 8192 * 2;
  CHECK(c->input_bytes.front() == 4096);
  for (size_t q = 1; q + 1 < c->input_bytes.size(); ++q) CHECK(c->input_bytes[q] == hidden_bytes);
  CHECK(c->input_bytes.back() == hidden_bytes + 4096);
}

}  // namespace
}  // namespace meshpipe::planner

// Known-answer tests of FLOP and byte counts, worked by hand in the comments.
#include "graph/cost.h"

#include <catch2/catch.hpp>

#include "graph/builder.h"
#include "graph/training_graph.h"

namespace meshpipe::graph {
namespace {

TEST_CASE("dot and conv FLOPs count two per multiply-add", "[graph]") {
  Builder b;
  ValueId x = b.input("x", Shape{4, 8, 16}, DType::kF32);
  ValueId w = b.parameter("w", Shape{16, 32}, InitSpec::zeros());
  ValueId y = b.matmul(x, w, "mm");
  ValueId img = b.input("img", Shape{2, 3, 10, 10}, DType::kF32);
  ValueId k = b.parameter("k", Shape{5, 3, 3, 3}, InitSpec::zeros());
  ValueId c = b.conv2d(img, k, Window2d{3, 3, 2, 2, 1, 1}, "conv");
  REQUIRE(b.status().is_ok());
  const Graph& g = b.graph();
  // matmul: m = 4*8 = 32 rows, k = 16, n = 32 -> 2 * 32 * 16 * 32 = 32768.
  CHECK(op_flops(g, g.op(g.value(y).producer)).value() == 32768.0);
  // Bytes: x 512 floats + w 512 + y 1024 = 2048 floats = 8192 bytes.
  CHECK(op_bytes(g, g.op(g.value(y).producer)).value() == 8192);
  // conv: output [2, 5, 5, 5] = 250 elements, each 3*3*3 = 27 multiply-adds -> 13500.
  CHECK(op_flops(g, g.op(g.value(c).producer)).value() == 13500.0);
}

TEST_CASE("graph cost splits FLOPs by phase and sums parameter and state bytes", "[graph]") {
  Builder b;
  ValueId x = b.input("x", Shape{2, 4}, DType::kF32);
  ValueId w = b.parameter("w", Shape{4, 3}, InitSpec::zeros());
  ValueId loss = b.reduce_sum(b.matmul(x, w, "mm"), {0, 1}, "loss");
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());
  auto tg = make_training_graph(std::move(*fg), OptimizerConfig{});
  REQUIRE(tg.has_value());
  const GraphCost c = graph_cost(tg->graph);
  // Forward: matmul 2*2*4*3 = 48, reduce_sum reads 6 elements -> 54.
  CHECK(c.forward.value() == 54.0);
  // Backward: only dw = x^T dy (x needs no gradient): 48 FLOPs; broadcasts count 0.
  CHECK(c.backward.value() == 48.0);
  // Update: Adam 12 per parameter element (12 * 12 = 144); the step increment scale 1.
  CHECK(c.update.value() == 145.0);
  CHECK(c.parameter_count == 12);
  CHECK(c.parameter_bytes.value() == 48);
  // Two moments of 12 floats and one step counter: 25 floats.
  CHECK(c.optimizer_state_bytes.value() == 100);
  CHECK(parameter_count(tg->graph) == 12);
}

}  // namespace
}  // namespace meshpipe::graph

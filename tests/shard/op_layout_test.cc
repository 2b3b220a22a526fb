// Tests of shard/op_layout.h: the layout text and its parse errors, and shard_op on
// hand-computed cases (input and output specs, partial-sum resolutions and their bytes, invalid
// assignments, and the per-device OpWork).
#include "shard/op_layout.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "graph/builder.h"
#include "graph/cost.h"

namespace meshpipe::shard {
namespace {

using graph::Builder;
using graph::InitSpec;
using mesh::CollectiveKind;
using mesh::DimSharding;
using mesh::ShardingSpec;

ShardingSpec spec(const std::string& text) {
  auto s = mesh::parse_sharding(text);
  REQUIRE(s.has_value());
  return *s;
}

OpLayout layout(const std::string& text) {
  auto l = parse_layout(text);
  INFO(text << ": " << l.status().to_string());
  REQUIRE(l.has_value());
  return *l;
}

// A graph holding one op; `out` is its first output.
struct OneOp {
  graph::Graph g;
  ValueId out;
  const graph::Op& op() const { return g.op(g.value(out).producer); }
};

// Batched dot lhs [B, M, K] x rhs [B, K, N] -> [B, M, N]: iteration dims b0, m0, n0, k0.
OneOp batched_dot(int64_t b, int64_t m, int64_t k, int64_t n) {
  Builder bld;
  ValueId lhs = bld.parameter("lhs", Shape{b, m, k}, InitSpec::zeros());
  ValueId rhs = bld.parameter("rhs", Shape{b, k, n}, InitSpec::zeros());
  OneOp o;
  o.out = bld.dot(lhs, rhs, DotDims{{0}, {0}, {2}, {1}}, "bmm");
  o.g = bld.graph();
  REQUIRE(o.out.is_valid());
  return o;
}

// The (2, 4) mesh of the examples: axis 0 has 2 devices, axis 1 has 4.
const mesh::LogicalMesh kMesh = mesh::logical_mesh(2, 4);

Expected<ShardedOp> shard(const OneOp& o, const std::string& text) {
  return shard_op(o.g, o.op(), kMesh, layout(text));
}

TEST_CASE("layout text: iteration dims, then reduce-scatter, then the zero axis",
          "[shard][layout]") {
  OpLayout l;
  l.iter = {DimSharding::kS0, DimSharding::kR, DimSharding::kS1};
  CHECK(layout_to_string(l) == "S0,R,S1");
  l.resolution = PartialResolution::kReduceScatter;
  CHECK(layout_to_string(l) == "S0,R,S1 reduce-scatter");
  l.zero_axis = 1;
  CHECK(layout_to_string(l) == "S0,R,S1 reduce-scatter zero-axis 1");
  l.resolution = PartialResolution::kAllReduce;
  l.zero_axis = 0;
  CHECK(layout_to_string(l) == "S0,R,S1 zero-axis 0");
  CHECK(layout_to_string(OpLayout{}) == "scalar");
  CHECK(layout_to_string(OpLayout{{DimSharding::kS01, DimSharding::kS10}, {}, -1}) == "S01,S10");
}

TEST_CASE("every layout survives a text round trip", "[shard][layout]") {
  const std::vector<std::vector<DimSharding>> iters = {
      {},
      {DimSharding::kR},
      {DimSharding::kS0, DimSharding::kR, DimSharding::kS1},
      {DimSharding::kS01, DimSharding::kR, DimSharding::kS10, DimSharding::kR},
  };
  int checked = 0;
  for (const auto& iter : iters) {
    for (PartialResolution res :
         {PartialResolution::kAllReduce, PartialResolution::kReduceScatter}) {
      for (int zero : {-1, 0, 1}) {
        const OpLayout l{iter, res, zero};
        const std::string text = layout_to_string(l);
        INFO(text);
        auto back = parse_layout(text);
        REQUIRE(back.has_value());
        CHECK(*back == l);
        ++checked;
      }
    }
  }
  CHECK(checked == 24);
}

TEST_CASE("malformed layout text is an error quoting it", "[shard][layout]") {
  for (const char* bad : {"", "S2", "S0,", ",S0", "S0,,R", "s0", "S0, R", "S0 zero-axis 2",
                          "S0 zero-axis", "S0 zero-axis 01", "S0 reduce", "reduce-scatter",
                          " reduce-scatter", "S0 zero-axis 1 reduce-scatter", "scalar,R"}) {
    INFO("'" << bad << "'");
    auto r = parse_layout(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == Errc::kInvalidArgument);
    CHECK(r.status().message() ==
          "bad op layout '" + std::string(bad) +
              "': expected iteration dims such as 'S0,R,S1', optionally followed by ' "
              "reduce-scatter' and ' zero-axis <0|1>'");
  }
}

TEST_CASE("axes_mask and spec_of translate dim shardings", "[shard][layout]") {
  CHECK(axes_mask(DimSharding::kR) == 0);
  CHECK(axes_mask(DimSharding::kS0) == 1);
  CHECK(axes_mask(DimSharding::kS1) == 2);
  CHECK(axes_mask(DimSharding::kS01) == 3);
  CHECK(axes_mask(DimSharding::kS10) == 3);
  const std::vector<DimSharding> iter{DimSharding::kS0, DimSharding::kS1, DimSharding::kR};
  CHECK(spec_of({2, -1, 0}, iter) == spec("R,R,S0"));
  CHECK(spec_of({1, 0}, iter) == spec("S1,S0"));
  CHECK(spec_of({}, iter).dims.empty());  // a scalar
}

TEST_CASE("a dot with no reduction dim split needs no collective", "[shard][layout]") {
  // [2, 8, 16] x [2, 16, 12]; layout b=S0, m=R, n=S1, k=R on the (2, 4) mesh.
  const OneOp o = batched_dot(2, 8, 16, 12);
  auto s = shard(o, "S0,R,S1,R");
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  REQUIRE(s->inputs.size() == 2);
  CHECK(s->inputs[0] == spec("S0,R,R"));   // lhs [b, m, k]
  CHECK(s->inputs[1] == spec("S0,R,S1"));  // rhs [b, k, n]
  REQUIRE(s->outputs.size() == 1);
  CHECK(s->outputs[0] == spec("S0,R,S1"));  // out [b, m, n]
  CHECK(s->resolutions.empty());
  CHECK_FALSE(s->resolves_partial_sums);
  // Tiles: out [1, 8, 3] f32 = 96 bytes.
  CHECK(s->output_bytes == 96);
  // FLOPs 2 * b m n k = 2 * 2 * 8 * 12 * 16 = 6144, over 2 * 4 = 8 devices: 768.
  CHECK(graph::op_flops(o.g, o.op()).value() == 6144.0);
  CHECK(s->work.flops.value() == 768.0);
  // Bytes: lhs tile [1, 8, 16] = 512, rhs tile [1, 16, 3] = 192, out tile 96: 800.
  CHECK(s->work.bytes.value() == 800);
  CHECK(s->work.dtype == DType::kF32);
  CHECK(s->work.is_matmul);
  // The per-device GEMM: batch 2 / 2, m 8, n 12 / 4, k 16.
  CHECK(s->work.gemm == GemmDims{1, 8, 3, 16});
  CHECK(s->layout() == layout("S0,R,S1,R"));
}

TEST_CASE("a dot's per-device GEMM dims follow its layout; other ops have none",
          "[shard][layout]") {
  const OneOp o = batched_dot(2, 8, 16, 12);
  // k split over axis 1 (4): the local contraction is 4 long.
  auto s = shard(o, "S0,R,R,S1");
  REQUIRE(s.has_value());
  CHECK(s->work.gemm == GemmDims{1, 8, 12, 4});
  // Nothing split: the whole product.
  auto whole = shard(o, "R,R,R,R");
  REQUIRE(whole.has_value());
  CHECK(whole->work.gemm == GemmDims{2, 8, 12, 16});
  CHECK(whole->work.gemm.known());
  // FLOPs agree with the dims.
  CHECK(whole->work.flops.value() == 2.0 * 2 * 8 * 12 * 16);
}

TEST_CASE("a split contracting dim leaves partial sums resolved by an all-reduce",
          "[shard][layout]") {
  // k split over axis 1: out S0,R,R holds partial sums over axis 1.
  const OneOp o = batched_dot(2, 8, 16, 12);
  auto s = shard(o, "S0,R,R,S1");
  REQUIRE(s.has_value());
  CHECK(s->inputs[0] == spec("S0,R,S1"));
  CHECK(s->inputs[1] == spec("S0,S1,R"));
  CHECK(s->outputs[0] == spec("S0,R,R"));  // resolved: no partial mask left
  CHECK(s->resolves_partial_sums);
  REQUIRE(s->resolutions.size() == 1);
  const OutputResolution& r = s->resolutions[0];
  CHECK(r.output == 0);
  CHECK(r.kind == CollectiveKind::kAllReduce);
  CHECK(r.axis == 1);
  CHECK(r.dim == -1);
  // The all-reduced buffer is the output tile [1, 8, 12] f32 = 384 bytes.
  CHECK(r.bytes == 384);
  CHECK(s->output_bytes == 384);
  // lhs tile [1, 8, 4] = 128, rhs tile [1, 4, 12] = 192, out 384: 704. FLOPs 6144 / 8.
  CHECK(s->work.bytes.value() == 704);
  CHECK(s->work.flops.value() == 768.0);
}

TEST_CASE("reduce-scatter splits the sum along the first free divisible output dim",
          "[shard][layout]") {
  SECTION("dim 1 (8 rows) divides by axis 1's 4 devices") {
    const OneOp o = batched_dot(2, 8, 16, 12);
    auto s = shard(o, "S0,R,R,S1 reduce-scatter");
    REQUIRE(s.has_value());
    REQUIRE(s->resolutions.size() == 1);
    CHECK(s->resolutions[0].kind == CollectiveKind::kReduceScatter);
    CHECK(s->resolutions[0].axis == 1);
    CHECK(s->resolutions[0].dim == 1);
    CHECK(s->resolutions[0].bytes == 384);    // the input of the reduce-scatter: [1, 8, 12]
    CHECK(s->outputs[0] == spec("S0,S1,R"));  // each device keeps [1, 2, 12]
    CHECK(s->output_bytes == 96);
    CHECK(s->work.bytes.value() == 128 + 192 + 96);
    CHECK(s->resolution == PartialResolution::kReduceScatter);
  }
  SECTION("dim 1 (6 rows) does not divide by 4, dim 2 (12) does") {
    const OneOp o = batched_dot(2, 6, 16, 12);
    auto s = shard(o, "S0,R,R,S1 reduce-scatter");
    REQUIRE(s.has_value());
    REQUIRE(s->resolutions.size() == 1);
    CHECK(s->resolutions[0].dim == 2);
    CHECK(s->outputs[0] == spec("S0,R,S1"));
  }
  SECTION("no free dim divides: an all-reduce after all") {
    const OneOp o = batched_dot(2, 6, 16, 6);
    auto s = shard(o, "S0,R,R,S1 reduce-scatter");
    REQUIRE(s.has_value());
    REQUIRE(s->resolutions.size() == 1);
    CHECK(s->resolutions[0].kind == CollectiveKind::kAllReduce);
    CHECK(s->resolutions[0].dim == -1);
    CHECK(s->outputs[0] == spec("S0,R,R"));
  }
  SECTION("a reduction over both axes resolves axis by axis") {
    // k = 16 split over S01 (8 chunks). Axis 0 (2 devices) scatters dim 0 (2) of the whole
    // [2, 8, 12] tile (768 bytes); axis 1 (4) then scatters dim 1 (8) of [1, 8, 12] (384).
    const OneOp o = batched_dot(2, 8, 16, 12);
    auto s = shard(o, "R,R,R,S01 reduce-scatter");
    REQUIRE(s.has_value());
    REQUIRE(s->resolutions.size() == 2);
    CHECK(s->resolutions[0].kind == CollectiveKind::kReduceScatter);
    CHECK(s->resolutions[0].axis == 0);
    CHECK(s->resolutions[0].dim == 0);
    CHECK(s->resolutions[0].bytes == 768);
    CHECK(s->resolutions[1].axis == 1);
    CHECK(s->resolutions[1].dim == 1);
    CHECK(s->resolutions[1].bytes == 384);
    CHECK(s->outputs[0] == spec("S0,S1,R"));
    // With all-reduce instead, two all-reduces of the whole tile.
    auto ar = shard(o, "R,R,R,S01");
    REQUIRE(ar.has_value());
    REQUIRE(ar->resolutions.size() == 2);
    CHECK(ar->resolutions[0].kind == CollectiveKind::kAllReduce);
    CHECK(ar->resolutions[1].kind == CollectiveKind::kAllReduce);
    CHECK(ar->resolutions[0].bytes == 768);
    CHECK(ar->resolutions[1].bytes == 768);
    CHECK(ar->outputs[0] == spec("R,R,R"));
  }
}

TEST_CASE("invalid assignments are errors naming the dim, the op, the layout and the mesh",
          "[shard][layout]") {
  const OneOp o = batched_dot(2, 8, 16, 12);
  SECTION("indivisible") {
    // b = 2 over axis 1's 4 devices.
    auto s = shard(o, "S1,R,R,R");
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().code() == Errc::kInvalidArgument);
    CHECK(s.status().message() ==
          "op 'bmm' with layout 'S1,R,R,R' on mesh (2, 4): iteration dim b0 of size 2 is not "
          "divisible by 4");
    // S01 splits n = 12 into 8.
    CHECK(shard(o, "R,R,S01,R")
              .status()
              .message()
              .find("iteration dim n0 of size 12 is not "
                    "divisible by 8") != std::string::npos);
  }
  SECTION("a mesh axis used twice") {
    auto s = shard(o, "S0,R,R,S0");
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().message() ==
          "op 'bmm' with layout 'S0,R,R,S0' on mesh (2, 4): iteration dim k0 uses a mesh axis "
          "another dim already uses");
    CHECK_FALSE(shard(o, "R,S01,S1,R").has_value());
  }
  SECTION("the wrong number of iteration dims") {
    CHECK(shard(o, "S0,R,S1").status().message() ==
          "op 'bmm' with layout 'S0,R,S1' on mesh (2, 4): the layout has 3 iteration dims, the "
          "op 4");
  }
  SECTION("an unsplittable dim") {
    Builder b;
    ValueId x = b.parameter("x", Shape{4, 8}, InitSpec::zeros());
    OneOp sm;
    sm.out = b.softmax(x, 1, false, "sm");
    sm.g = b.graph();
    auto s = shard(sm, "R,S1");
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().message() ==
          "op 'sm' with layout 'R,S1' on mesh (2, 4): iteration dim d1 cannot be split");
    auto rows = shard(sm, "S0,R");
    REQUIRE(rows.has_value());
    CHECK(rows->outputs[0] == spec("S0,R"));
  }
}

TEST_CASE("Adam's scalar step arrives whole, every state follows the parameter",
          "[shard][layout]") {
  Builder b;
  ValueId p = b.parameter("p", Shape{4, 8}, InitSpec::zeros());
  ValueId g = b.parameter("g", Shape{4, 8}, InitSpec::zeros());
  ValueId m = b.parameter("m", Shape{4, 8}, InitSpec::zeros());
  ValueId v = b.parameter("v", Shape{4, 8}, InitSpec::zeros());
  ValueId step = b.parameter("step", Shape{}, InitSpec::ones());
  OpAttrs a;
  a.lr = 1e-3f;
  const auto outs = b.op(graph::OpKind::kAdamUpdate, {p, g, m, v, step}, a, "adam");
  REQUIRE(outs.size() == 3);
  OneOp o;
  o.out = outs[0];
  o.g = b.graph();
  auto s = shard_op(o.g, o.op(), kMesh, layout("S0,S1 zero-axis 0"));
  REQUIRE(s.has_value());
  REQUIRE(s->inputs.size() == 5);
  for (size_t i = 0; i < 4; ++i) CHECK(s->inputs[i] == spec("S0,S1"));
  CHECK(s->inputs[4] == spec("scalar"));
  REQUIRE(s->outputs.size() == 3);
  for (const ShardingSpec& out : s->outputs) CHECK(out == spec("S0,S1"));
  CHECK(s->zero_axis == 0);
  CHECK(s->layout() == layout("S0,S1 zero-axis 0"));
  CHECK_FALSE(s->work.is_matmul);
  // 12 FLOPs per element x 32 elements / 8 devices = 48.
  CHECK(s->work.flops.value() == 48.0);
  // Four [2, 2] f32 input tiles (16 bytes each), the 4-byte step, three 16-byte outputs.
  CHECK(s->work.bytes.value() == 4 * 16 + 4 + 3 * 16);
  CHECK(s->output_bytes == 48);
}

TEST_CASE("an embedding split over the vocabulary all-reduces its rows", "[shard][layout]") {
  // table [V=16, H=8], ids [4, 2] -> [4, 2, 8]; dims i0, i1, h, v. v over axis 1 (4 shards).
  Builder b;
  ValueId table = b.parameter("table", Shape{16, 8}, InitSpec::zeros());
  ValueId ids = b.input("ids", Shape{4, 2}, DType::kI32);
  OneOp o;
  o.out = b.embedding(table, ids, "emb");
  o.g = b.graph();
  auto s = shard(o, "S0,R,R,S1");
  REQUIRE(s.has_value());
  CHECK(s->inputs[0] == spec("S1,R"));  // table rows split
  CHECK(s->inputs[1] == spec("S0,R"));
  CHECK(s->outputs[0] == spec("S0,R,R"));
  REQUIRE(s->resolutions.size() == 1);
  CHECK(s->resolutions[0].axis == 1);
  CHECK(s->resolutions[0].bytes == 2 * 2 * 8 * 4);  // out tile [2, 2, 8] f32
  CHECK_FALSE(s->work.is_matmul);
}

TEST_CASE("a convolution's work counts as a matmul and splits its FLOPs", "[shard][layout]") {
  // x [4, 2, 6, 6] * w [8, 2, 3, 3], pad 1 -> [4, 8, 6, 6]; dims n, c, k.
  Builder b;
  ValueId x = b.input("x", Shape{4, 2, 6, 6}, DType::kF32);
  ValueId w = b.parameter("w", Shape{8, 2, 3, 3}, InitSpec::zeros());
  OneOp o;
  o.out = b.conv2d(x, w, Window2d{3, 3, 1, 1, 1, 1}, "conv");
  o.g = b.graph();
  auto s = shard(o, "S0,R,S1");
  REQUIRE(s.has_value());
  CHECK(s->inputs[0] == spec("S0,R,R,R"));
  CHECK(s->inputs[1] == spec("S1,R,R,R"));
  CHECK(s->outputs[0] == spec("S0,S1,R,R"));
  CHECK(s->work.is_matmul);
  // FLOPs 2 * out elements (4*8*6*6 = 1152) * C*R*S (18) = 41472, over 8 devices: 5184.
  CHECK(s->work.flops.value() == 5184.0);
  // x tile [2, 2, 6, 6] = 576 bytes, w tile [2, 2, 3, 3] = 144, y tile [2, 2, 6, 6] = 576.
  CHECK(s->work.bytes.value() == 576 + 144 + 576);
}

TEST_CASE("the 'mesh axis used twice' error names the dim", "[shard]") {
  // Like the other invalid-assignment errors ("iteration dim b0 ...").
  const OneOp o = batched_dot(2, 8, 16, 12);
  auto s = shard(o, "S0,R,R,S0");
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().message().find("k0") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::shard

// Tests of the model zoo: parameter counts against the published formulas, FLOPs against
// Alpa's throughput formula, layer tags.
#include <catch2/catch.hpp>

#include "graph/cost.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"

namespace meshpipe::graph::models {
namespace {

TEST_CASE(
    "every zoo model builds and its parameter count is the formula plus the documented "
    "gap",
    "[graph]") {
  for (const ModelSpec& spec : model_zoo()) {
    INFO(spec.name);
    auto g = build_model(spec);
    REQUIRE(g.has_value());
    const int64_t exact = parameter_count(g->graph);
    CHECK(exact == formula_parameter_count(spec) + formula_parameter_gap(spec));
    // The gap is small: under 1% for every Alpa-sized model (not the test and CPU-benchmark
    // sizes, whose position embeddings weigh more).
    if (spec.name.find("tiny") == std::string::npos &&
        spec.name.find("-cpu") == std::string::npos && spec.family != "mlp") {
      CHECK(static_cast<double>(formula_parameter_gap(spec)) < 0.01 * static_cast<double>(exact));
    }
  }
}

TEST_CASE("Alpa's GPT formula gives the published sizes", "[graph]") {
  // compute_gpt_parameter_count(24, 2048, 51200) for GPT-1.3B, worked by hand:
  // per layer 2048*6145 + 2048*2049 + 2048*8193 + 8192*2049 + 8192 = 50,354,176;
  // 24 layers = 1,208,500,224; + 51200*2049 = 104,908,800 -> 1,313,409,024.
  auto spec = find_model("gpt-1.3b");
  REQUIRE(spec.has_value());
  CHECK(formula_parameter_count(*spec) == 1313409024);
  // Wide-ResNet sizes land on their names (250M ... 13B).
  CHECK(formula_parameter_count(*find_model("wresnet-250m")) / 1000000 == 254);
  CHECK(formula_parameter_count(*find_model("wresnet-13b")) / 100000000 == 126);
}

TEST_CASE("GPT training FLOPs of the dots equal Alpa's formula with factor 72", "[graph]") {
  // Alpa/Megatron without recomputation: 72 B S H^2 L (1 + S/(6H)) + 6 B S H V.
  auto spec = find_model("gpt-125m");
  REQUIRE(spec.has_value());
  const int64_t batch = 2;
  auto fg = build_model(*spec, {.batch = batch, .dtype = DType::kF32});
  REQUIRE(fg.has_value());
  auto tg = make_training_graph(std::move(*fg), OptimizerConfig{});
  REQUIRE(tg.has_value());
  double dot_flops = 0;
  for (const Op& op : tg->graph.ops()) {
    if (op.kind == OpKind::kDot) dot_flops += op_flops(tg->graph, op).value();
  }
  const auto& c = std::get<GptConfig>(spec->config);
  const double b = static_cast<double>(batch);
  const double s = static_cast<double>(c.seq_len);
  const double h = static_cast<double>(c.hidden);
  const double l = static_cast<double>(c.layers);
  const double v = static_cast<double>(c.vocab);
  const double alpa = 72.0 * b * s * h * h * l * (1.0 + s / (6.0 * h)) + 6.0 * b * s * h * v;
  CHECK(dot_flops == Approx(alpa).epsilon(1e-12));
}

TEST_CASE("each transformer block is one layer and backward ops keep the tags", "[graph]") {
  auto fg = build_model(*find_model("gpt-tiny"));
  REQUIRE(fg.has_value());
  CHECK(fg->graph.num_layers() == 2);
  auto tg = make_training_graph(std::move(*fg), OptimizerConfig{});
  REQUIRE(tg.has_value());
  CHECK(tg->graph.num_layers() == 2);
  int per_layer[2] = {0, 0};
  for (const Op& op : tg->graph.ops()) {
    if (op.phase == OpPhase::kBackward) per_layer[op.layer]++;
  }
  CHECK(per_layer[0] > 10);
  CHECK(per_layer[1] > 10);
  auto wr = build_model(*find_model("wresnet-250m"));
  REQUIRE(wr.has_value());
  CHECK(wr->graph.num_layers() == 16);  // 3 + 4 + 6 + 3 bottleneck blocks
}

TEST_CASE("bad model configurations are errors, not crashes", "[graph]") {
  CHECK_FALSE(find_model("gpt-9000").has_value());
  CHECK(find_model("gpt-9000").status().message().find("gpt-tiny") != std::string::npos);
  GptConfig g{16, 30, 2, 4, 64, 4};
  CHECK(build_gpt(g, 2, DType::kF32).status().message().find("not divisible by 4 heads") !=
        std::string::npos);
  MoeConfig m{16, 32, 2, 4, 64, 4, 7, 2, 2};
  CHECK(build_moe(m, 1, DType::kF32).status().message().find("expert group size 7") !=
        std::string::npos);
  CHECK_FALSE(build_model(*find_model("mlp-tiny"), {.batch = -3, .dtype = {}}).has_value());
}

}  // namespace
}  // namespace meshpipe::graph::models

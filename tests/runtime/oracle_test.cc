// PyTorch oracle: the same GPT, MoE and Wide-ResNet models with the same weights and inputs as
// tests/oracle/torch_models.py; loss and every parameter gradient must agree to a relative
// error below 1e-4 (float32 here against PyTorch float64; typical errors are ~1e-6).
//
// Reference files come from tests/oracle/generate.py: the committed copies in tests/data/, or
// the directory in MP_ORACLE_DIR (the `oracle` ctest label regenerates them there).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "graph/autodiff.h"
#include "graph/models/zoo.h"
#include "runtime/executor.h"

namespace meshpipe::runtime {
namespace {

using nlohmann::json;

json load_case(const std::string& name) {
  const char* dir = std::getenv("MP_ORACLE_DIR");
  const std::string path =
      std::string(dir != nullptr ? dir : MP_TEST_DATA_DIR) + "/oracle_" + name + ".json";
  std::ifstream in(path);
  INFO("reading " << path);
  REQUIRE(in.good());
  return json::parse(in);
}

HostTensor tensor_of(const json& j) {
  Shape shape(j.at("shape").get<std::vector<int64_t>>());
  if (j.at("dtype") == "i32")
    return HostTensor::from_i32(shape, j.at("data").get<std::vector<int32_t>>());
  return HostTensor::from_f32(shape, j.at("data").get<std::vector<float>>());
}

// ||a - b|| / max(||b||, 1e-4 sqrt(n)). The floor matters for gradients that are zero in exact
// arithmetic, such as the key bias (softmax is invariant to a per-row shift): PyTorch returns
// ~1e-17 there and float32 ~1e-9, so they are compared as absolute values instead (the other
// gradients here have elements of 1e-3 to 1, far above the floor).
double relative_error(const HostTensor& a, const HostTensor& b) {
  double num = 0;
  double den = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    num += (a.at(i) - b.at(i)) * (a.at(i) - b.at(i));
    den += b.at(i) * b.at(i);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-4 * std::sqrt(double(b.numel())));
}

Expected<graph::ForwardGraph> build(const json& c) {
  const json& k = c.at("config");
  const int64_t batch = c.at("batch");
  const std::string family = c.at("family");
  if (family == "gpt") {
    graph::models::GptConfig g{k.at("seq_len"), k.at("hidden"), k.at("layers"),
                               k.at("heads"),   k.at("vocab"),  k.at("ffn_mult")};
    return graph::models::build_gpt(g, batch, DType::kF32);
  }
  if (family == "moe") {
    graph::models::MoeConfig m{k.at("seq_len"),    k.at("hidden"),   k.at("layers"),
                               k.at("heads"),      k.at("vocab"),    k.at("experts"),
                               k.at("group_size"), k.at("ffn_mult"), k.at("top_k")};
    return graph::models::build_moe(m, batch, DType::kF32);
  }
  graph::models::WideResNetConfig w;
  w.image_size = k.at("image_size");
  w.channels = k.at("channels");
  w.width_factor = k.at("width_factor");
  w.stage_sizes = k.at("stage_sizes").get<std::vector<int64_t>>();
  w.num_classes = k.at("num_classes");
  w.in_channels = k.at("in_channels");
  return graph::models::build_wide_resnet(w, batch, DType::kF32);
}

void compare_with_pytorch(const std::string& name) {
  const json c = load_case(name);
  auto fg = build(c);
  REQUIRE(fg.has_value());
  graph::Graph g = fg->graph;
  auto grads = graph::append_backward(g, fg->loss);
  REQUIRE(grads.has_value());
  ExecutorOptions eo;
  for (const auto& [p, gv] : *grads) eo.retain.push_back(gv);
  auto exec = Executor::create(g, eo);
  REQUIRE(exec.has_value());

  // Same parameter set on both sides, loaded by name.
  std::map<std::string, ValueId> params;
  for (ValueId p : g.values_with_role(graph::ValueRole::kParameter)) params[g.value(p).name] = p;
  REQUIRE(params.size() == c.at("params").size());
  for (const auto& [pname, pj] : c.at("params").items()) {
    INFO("parameter " << pname);
    REQUIRE(params.count(pname) == 1);
    REQUIRE((*exec)->set_value(params.at(pname), tensor_of(pj)).is_ok());
  }
  std::vector<std::pair<ValueId, HostTensor>> inputs;
  for (ValueId in : fg->inputs) {
    inputs.emplace_back(in, tensor_of(c.at("inputs").at(g.value(in).name)));
  }
  auto st = (*exec)->run(inputs);
  REQUIRE(st.has_value());
  const double ref_loss = c.at("loss");
  CHECK(std::fabs(st->loss - ref_loss) / std::fabs(ref_loss) < 1e-4);
  double worst = 0;
  for (const auto& [pname, gj] : c.at("grads").items()) {
    INFO(name << " gradient of " << pname);
    REQUIRE(grads->count(params.at(pname)) == 1);
    auto mine = (*exec)->get_value(grads->at(params.at(pname)));
    REQUIRE(mine.has_value());
    const double err = relative_error(*mine, tensor_of(gj));
    worst = std::max(worst, err);
    CHECK(err < 1e-4);
  }
  WARN(name << ": loss " << st->loss << " vs PyTorch " << ref_loss
            << ", worst gradient relative error " << worst);
}

TEST_CASE("GPT loss and gradients match PyTorch", "[runtime][oracle]") {
  compare_with_pytorch("gpt");
}

TEST_CASE("MoE loss and gradients match PyTorch, gating with capacity drops included",
          "[runtime][oracle]") {
  compare_with_pytorch("moe");
}

TEST_CASE("Wide-ResNet loss and gradients match PyTorch", "[runtime][oracle]") {
  compare_with_pytorch("wresnet");
}

}  // namespace
}  // namespace meshpipe::runtime

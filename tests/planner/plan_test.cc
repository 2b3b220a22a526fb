// Tests of Plan: validation, the versioned JSON form (exact round trip, stable text, field-named
// errors for every corruption, no crash on any input) and plan files.
#include "planner/plan.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace meshpipe::planner {
namespace {

using Json = nlohmann::ordered_json;

const std::string kGoldenFile = std::string(MP_TEST_DATA_DIR) + "/plan_p3_two_hosts.json";

mesh::LogicalMesh make_mesh(const mesh::ClusterSpec& c, const mesh::SubmeshShape& s, int64_t d0,
                            int64_t d1) {
  Expected<mesh::LogicalMesh> m = mesh::make_logical_mesh(c, s, d0, d1);
  REQUIRE(m.has_value());
  return *m;
}

std::vector<int32_t> device_range(int32_t first, int32_t count) {
  std::vector<int32_t> d;
  for (int32_t i = 0; i < count; ++i) d.push_back(first + i);
  return d;
}

mesh::ShardingSpec spec(const std::string& text) {
  Expected<mesh::ShardingSpec> s = mesh::parse_sharding(text);
  REQUIRE(s.has_value());
  return *s;
}

shard::OpLayout layout(const std::string& text) {
  Expected<shard::OpLayout> l = shard::parse_layout(text);
  REQUIRE(l.has_value());
  return *l;
}

// Three stages of a six-layer model on p3.16xlarge:2 (16 V100s):
//   stage 0: layers 0-1, host 0 devices 0-3, logical (2, 2)
//   stage 1: layers 2-3, host 0 devices 4-7, logical (1, 4)
//   stage 2: layers 4-5, host 1 devices 8-15, logical (2, 4)
// with doubles that have no short decimal form and integers beyond 2^53.
Plan test_plan() {
  Expected<mesh::ClusterSpec> cluster = mesh::cluster_preset("p3.16xlarge:2");
  REQUIRE(cluster.has_value());
  Plan p;
  p.model = "gpt-test \"quoted\" \\ \xc3\xa9";  // a quote, a backslash and a UTF-8 e-acute
  p.graph_fingerprint = "9f86d081884c7d65";
  p.dtype = DType::kF16;
  p.global_batch = 1024;
  p.micro_batch = 32;
  p.micro_batches = 32;
  p.schedule = Schedule::k1F1B;
  p.cluster = *cluster;
  p.num_layers = 6;
  p.op_layers = {0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 5};

  const mesh::SubmeshShape quarter{/*hosts=*/1, /*devices_per_host=*/4};
  const mesh::SubmeshShape host{/*hosts=*/1, /*devices_per_host=*/8};
  StagePlan s0;
  s0.first_layer = 0;
  s0.last_layer = 1;
  s0.submesh = quarter;
  s0.devices = device_range(/*first=*/0, /*count=*/4);
  s0.mesh = make_mesh(p.cluster, quarter, 2, 2);
  s0.time = 1.0 / 3.0;
  s0.in_flight = 3;
  s0.memory = {int64_t{1} << 40, (int64_t{1} << 53) + 1, 123456789, int64_t{3} << 41};
  s0.memory.gradients = int64_t{5} << 30;
  s0.value_specs = {{"x", spec("S0,R")},
                    {"layer0/w", spec("R,S1")},
                    {"", spec("R")},
                    {"a\"b\nc", spec("S01,R | P1")}};
  s0.op_strategies = {{"layer0/dot", "S0 x S1"}, {"layer1/relu", "follow"}};
  s0.op_layouts = {{"layer0/dot", layout("S0,R,S1 reduce-scatter")},
                   {"layer1/relu", layout("S01,R")},
                   {"layer1/update", layout("R,R zero-axis 1")},
                   {"layer1/step", layout("scalar")}};
  StagePlan s1;
  s1.first_layer = 2;
  s1.last_layer = 3;
  s1.submesh = quarter;
  s1.devices = device_range(/*first=*/4, /*count=*/4);
  s1.mesh = make_mesh(p.cluster, quarter, 1, 4);
  s1.time = 0.1 + 0.2;
  s1.in_flight = 2;
  s1.memory = {std::numeric_limits<int64_t>::max(), 0, 1, std::numeric_limits<int64_t>::max()};
  s1.value_specs = {{"layer2/h", spec("R,S1")}};
  StagePlan s2;
  s2.first_layer = 4;
  s2.last_layer = 5;
  s2.submesh = host;
  s2.devices = device_range(/*first=*/8, /*count=*/8);
  s2.mesh = make_mesh(p.cluster, host, 2, 4);
  s2.time = 1e-300;
  s2.in_flight = 1;
  s2.memory = {7, 11, 13, 42};
  s2.op_strategies = {{"layer5/loss", "S0"}};
  p.stages = {s0, s1, s2};

  p.transfers = {
      {"layer1/out", 0, 1, spec("S0,R"), spec("R,S1"), (int64_t{1} << 53) + 3, 2.0 / 3.0},
      {"layer3/out", 1, 2, spec("R,S1"), spec("S0,R"), 4096, 5e-324},
      {"layer4/grad", 2, 1, spec("S0,R"), spec("scalar"), 4096, 0.1 + 0.7}};
  p.step_time = 0.1 + 0.2 + 1e-17;
  p.tflops_per_device = 1.0 / 7.0;
  p.max_memory_per_device = int64_t{3} << 41;
  p.times = {1e-300,
             2.5e-7,
             std::sqrt(2.0),
             std::numeric_limits<double>::max(),
             std::numeric_limits<int64_t>::max(),
             9007199254740993};
  return p;
}

// The error message of loading `text`, which must fail.
std::string load_error(const std::string& text) {
  Expected<Plan> p = plan_from_json(text);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.status().code() == Errc::kInvalidArgument);
  return p.status().message();
}

// The test plan's JSON text after `edit`.
std::string edited_json(const std::function<void(Json&)>& edit) {
  Json j = Json::parse(plan_to_json(test_plan()));
  edit(j);
  return j.dump(2);
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

TEST_CASE("the test plan is valid", "[planner][plan]") {
  const Status s = test_plan().validate();
  INFO(s.to_string());
  CHECK(s.is_ok());
}

TEST_CASE("a plan survives a JSON round trip exactly", "[planner][plan]") {
  const Plan p = test_plan();
  Expected<Plan> q = plan_from_json(plan_to_json(p));
  INFO(q.status().to_string());
  REQUIRE(q.has_value());
  CHECK(*q == p);
  // == on doubles is exact; check the bits too for the awkward ones.
  CHECK(same_bits(q->stages[0].time, 1.0 / 3.0));
  CHECK(same_bits(q->stages[1].time, 0.1 + 0.2));
  CHECK(same_bits(q->stages[2].time, 1e-300));
  CHECK(same_bits(q->transfers[1].seconds, 5e-324));
  CHECK(same_bits(q->times.total, std::numeric_limits<double>::max()));
  CHECK(q->stages[0].memory.stash == (int64_t{1} << 53) + 1);
  CHECK(q->times.intra_op_solves == std::numeric_limits<int64_t>::max());
  CHECK(q->stages[0].value_specs.size() == 4);
  CHECK(q->stages[0].value_specs.at("").to_string() == "R");
  CHECK(q->stages[0].value_specs.at("a\"b\nc").to_string() == "S01,R | P1");
  CHECK(q->cluster == p.cluster);
  CHECK(q->stages[2].mesh == p.stages[2].mesh);
}

TEST_CASE("plan JSON text is deterministic, pretty-printed and in header order",
          "[planner][plan]") {
  const std::string a = plan_to_json(test_plan());
  const std::string b = plan_to_json(test_plan());
  CHECK(a == b);
  CHECK(a.starts_with("{\n  \"version\": 2,\n  \"model\": "));
  // Integers stay integers: 2^53 + 1 is written digit for digit.
  CHECK(a.find("9007199254740993") != std::string::npos);
  Expected<Plan> q = plan_from_json(a);
  REQUIRE(q.has_value());
  CHECK(plan_to_json(*q) == a);

  const Json j = Json::parse(a);
  std::vector<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.push_back(key);
  CHECK(keys == std::vector<std::string>{"version", "model", "graph_fingerprint", "dtype",
                                         "global_batch", "micro_batch", "micro_batches", "schedule",
                                         "cluster", "num_layers", "op_layers", "stages",
                                         "transfers", "step_time", "tflops_per_device",
                                         "max_memory_per_device", "times"});
  CHECK(j["cluster"].is_object());
  CHECK(j["stages"][2]["mesh"]["shape"] == Json::array({2, 4}));
}

TEST_CASE("deleting any required field is rejected naming the field", "[planner][plan]") {
  // (JSON pointer of an object, its path in error messages)
  const std::vector<std::pair<std::string, std::string>> objects = {
      {"", ""},
      {"/stages/0", "stages[0]"},
      {"/stages/0/submesh", "stages[0].submesh"},
      {"/stages/0/mesh", "stages[0].mesh"},
      {"/stages/0/memory", "stages[0].memory"},
      {"/transfers/0", "transfers[0]"},
      {"/times", "times"}};
  const Json full = Json::parse(plan_to_json(test_plan()));
  size_t deletions = 0;
  for (const auto& [pointer, prefix] : objects) {
    const Json::json_pointer ptr(pointer);
    for (const auto& [key, value] : full.at(ptr).items()) {
      Json j = full;
      j.at(ptr).erase(key);
      const std::string path = prefix.empty() ? key : prefix + "." + key;
      INFO("deleted " << path);
      if (path == "stages[0].memory.gradients") {  // optional: plans saved before it load as 0
        auto p = plan_from_json(j.dump(2));
        REQUIRE(p.has_value());
        CHECK(p->stages[0].memory.gradients == 0);
        continue;
      }
      CHECK(load_error(j.dump(2)) == "plan field '" + path + "' is missing");
      ++deletions;
    }
  }
  CHECK(deletions == 17 + 11 + 2 + 3 + 4 + 7 + 6);
}

TEST_CASE("a field of the wrong type is rejected naming the field", "[planner][plan]") {
  struct Case {
    std::string pointer;
    Json value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"/micro_batches", "32", "plan field 'micro_batches' must be an integer"},
      {"/micro_batches", 32.5, "plan field 'micro_batches' must be an integer"},
      {"/global_batch", 1e30, "plan field 'global_batch' must be an integer"},
      {"/global_batch", 18446744073709551615ull,
       "plan field 'global_batch' must be an integer that fits in 64 bits"},
      {"/num_layers", int64_t{1} << 40, "plan field 'num_layers' must be an integer that fits"},
      {"/model", 3, "plan field 'model' must be a string"},
      {"/schedule", nullptr, "plan field 'schedule' must be a string"},
      {"/cluster", "p3.16xlarge:2", "plan field 'cluster' must be an object"},
      {"/op_layers", 3, "plan field 'op_layers' must be an array"},
      {"/op_layers/2", "0", "plan field 'op_layers[2]' must be an integer"},
      {"/stages", Json::object(), "plan field 'stages' must be an array"},
      {"/stages/1", Json::array(), "plan field 'stages[1]' must be an object"},
      {"/stages/1/submesh", Json::array({1, 4}),
       "plan field 'stages[1].submesh' must be an object"},
      {"/stages/1/submesh/hosts", true, "plan field 'stages[1].submesh.hosts' must be an integer"},
      {"/stages/0/devices/2", "x", "plan field 'stages[0].devices[2]' must be an integer"},
      {"/stages/0/mesh/shape", Json::array({2}),
       "plan field 'stages[0].mesh.shape' must be an array of 2 elements"},
      {"/stages/0/mesh/alpha/1", "0", "plan field 'stages[0].mesh.alpha[1]' must be a number"},
      {"/stages/0/time", "fast", "plan field 'stages[0].time' must be a number"},
      {"/stages/0/memory/peak", 1.5, "plan field 'stages[0].memory.peak' must be an integer"},
      {"/stages/0/value_specs/x", 1, "plan field 'stages[0].value_specs.x' must be a string"},
      {"/stages/0/op_strategies", Json::array(),
       "plan field 'stages[0].op_strategies' must be an object"},
      {"/transfers", "none", "plan field 'transfers' must be an array"},
      {"/transfers/1/bytes", -1.5, "plan field 'transfers[1].bytes' must be an integer"},
      {"/times/total", nullptr, "plan field 'times.total' must be a number"},
      {"/times/intra_op_reused", 0.5, "plan field 'times.intra_op_reused' must be an integer"},
  };
  for (const Case& c : cases) {
    INFO(c.pointer << " = " << c.value.dump());
    const std::string text =
        edited_json([&](Json& j) { j[Json::json_pointer(c.pointer)] = c.value; });
    CHECK_THAT(load_error(text), Catch::StartsWith(c.message));
  }
}

TEST_CASE("a malformed op layout is rejected naming the stage and op", "[planner][plan]") {
  const std::string e =
      load_error(edited_json([](Json& j) { j["stages"][0]["op_layouts"]["layer0/dot"] = "S7"; }));
  CHECK_THAT(e, Catch::Contains("stages[0].op_layouts['layer0/dot']"));
  CHECK_THAT(e, Catch::Contains("bad op layout 'S7'"));
}

TEST_CASE("a malformed spec, dtype or schedule is rejected naming the field", "[planner][plan]") {
  CHECK_THAT(load_error(edited_json([](Json& j) { j["stages"][0]["value_specs"]["x"] = "S0R"; })),
             Catch::StartsWith("plan field 'stages[0].value_specs['x']' sharding 'S0R'"));
  CHECK_THAT(load_error(edited_json([](Json& j) { j["transfers"][1]["to_spec"] = "S2,R"; })),
             Catch::StartsWith("plan field 'transfers[1].to_spec' sharding 'S2,R'"));
  CHECK(load_error(edited_json([](Json& j) { j["dtype"] = "f8"; })) ==
        "plan field 'dtype' 'f8' is not a dtype");
  CHECK(load_error(edited_json([](Json& j) { j["schedule"] = "zero-bubble"; })) ==
        "plan field 'schedule' must be \"1f1b\" or \"gpipe\", not \"zero-bubble\"");
}

TEST_CASE("an unknown field is rejected naming it", "[planner][plan]") {
  CHECK(load_error(edited_json([](Json& j) { j["colour"] = "red"; })) ==
        "plan field 'colour' is not a known field");
  CHECK(load_error(edited_json([](Json& j) { j["stages"][1]["mesh"]["gamma"] = 1; })) ==
        "plan field 'stages[1].mesh.gamma' is not a known field");
}

TEST_CASE("a bad embedded cluster is rejected with the cluster's own field", "[planner][plan]") {
  const std::string e = load_error(edited_json([](Json& j) { j["cluster"].erase("hosts"); }));
  CHECK_THAT(e, Catch::StartsWith("plan field 'cluster'"));
  CHECK_THAT(e, Catch::Contains("'hosts' is missing"));
}

TEST_CASE("a plan of another version is rejected naming both versions", "[planner][plan]") {
  const std::string e = load_error(edited_json([](Json& j) { j["version"] = 1; }));
  CHECK(e == "plan field 'version': version 1 is not supported (this build reads version 2)");
  // The version is checked first: a version-3 file with other fields is still reported as such.
  const std::string e2 = load_error(R"({"version": 3, "layout": []})");
  CHECK_THAT(e2, Catch::Contains("version 3 is not supported"));
  Plan p = test_plan();
  p.version = 3;
  CHECK_THAT(p.validate().message(), Catch::StartsWith("version: version 3"));
}

TEST_CASE("semantically broken plans are rejected naming the field", "[planner][plan]") {
  struct Case {
    std::string name;
    std::function<void(Plan&)> edit;
    std::string path;  // the field the error must name
    std::string what;  // and a phrase of its explanation
  };
  const std::vector<Case> cases = {
      {"overlapping stage ranges", [](Plan& p) { p.stages[1].first_layer = 1; },
       "stages[1].first_layer", "must be 2"},
      {"a gap between stages", [](Plan& p) { p.stages[1].first_layer = 3; },
       "stages[1].first_layer", "without gaps"},
      {"a first stage after layer 0", [](Plan& p) { p.stages[0].first_layer = 1; },
       "stages[0].first_layer", "must be 0"},
      {"layers left over at the end", [](Plan& p) { p.num_layers = 7; }, "stages[2].last_layer",
       "must end at layer 6"},
      {"a stage ending before it starts",
       [](Plan& p) {
         p.stages[1].last_layer = 1;
         p.stages[2].first_layer = 2;
       },
       "stages[1].last_layer", "before first_layer"},
      {"no stages", [](Plan& p) { p.stages.clear(); }, "stages", "at least one stage"},
      {"a duplicate device", [](Plan& p) { p.stages[1].devices[2] = 3; }, "stages[1].devices",
       "device 3 is also used by stages[0]"},
      {"a device outside the cluster", [](Plan& p) { p.stages[2].devices[7] = 17; },
       "stages[2].devices", "device 17 is outside the cluster's 16"},
      {"a negative device", [](Plan& p) { p.stages[0].devices[0] = -1; }, "stages[0].devices",
       "device -1 is outside"},
      {"fewer devices than the submesh", [](Plan& p) { p.stages[0].devices.pop_back(); },
       "stages[0].devices", "3 devices but the submesh (1, 4) has 4"},
      {"a submesh larger than a host", [](Plan& p) { p.stages[0].submesh.devices_per_host = 16; },
       "stages[0].submesh.devices_per_host", "cluster's 8"},
      {"a logical mesh of the wrong size", [](Plan& p) { p.stages[1].mesh.shape[0] = 2; },
       "stages[1].mesh.shape", "has 8 devices but the stage has 4"},
      {"a zero logical axis", [](Plan& p) { p.stages[1].mesh.shape[1] = 0; },
       "stages[1].mesh.shape[1]", "between 1 and"},
      {"a negative beta", [](Plan& p) { p.stages[2].mesh.beta[0] = -1e-9; },
       "stages[2].mesh.beta[0]", "non-negative"},
      {"micro-batches that do not make the batch", [](Plan& p) { p.micro_batches = 31; },
       "micro_batches", "31 micro-batches of 32 do not make the global batch of 1024"},
      {"an overflowing batch product",
       [](Plan& p) { p.micro_batch = std::numeric_limits<int64_t>::max(); }, "micro_batches",
       "do not make"},
      {"more micro-batches than a plan may have",
       [](Plan& p) {
         p.micro_batches = kMaxMicroBatches + 1;
         p.micro_batch = 1;
         p.global_batch = kMaxMicroBatches + 1;
       },
       "micro_batches", "more than the 4096 a plan may have"},
      {"a global batch beyond the limit",
       [](Plan& p) {
         p.micro_batches = 2;
         p.micro_batch = kMaxGlobalBatch;
         p.global_batch = 2 * kMaxGlobalBatch;
       },
       "global_batch", "more than the 1048576 a plan may have"},
      {"a zero micro-batch", [](Plan& p) { p.micro_batch = 0; }, "micro_batch", "positive"},
      {"a transfer to a missing stage", [](Plan& p) { p.transfers[0].to_stage = 3; },
       "transfers[0].to_stage", "stage 3 does not exist"},
      {"a transfer from a negative stage", [](Plan& p) { p.transfers[2].from_stage = -1; },
       "transfers[2].from_stage", "stage -1 does not exist"},
      {"a transfer within one stage", [](Plan& p) { p.transfers[1].to_stage = 1; },
       "transfers[1].to_stage", "both ends are stage 1"},
      {"a negative transfer size", [](Plan& p) { p.transfers[1].bytes = -4; }, "transfers[1].bytes",
       "non-negative"},
      {"an unknown schedule", [](Plan& p) { p.schedule = static_cast<Schedule>(7); }, "schedule",
       "must be \"1f1b\" or \"gpipe\""},
      {"an op in a missing layer", [](Plan& p) { p.op_layers[3] = 6; }, "op_layers[3]",
       "layer 6 is outside 0..5"},
      {"an op in a negative layer", [](Plan& p) { p.op_layers[0] = -1; }, "op_layers[0]",
       "outside"},
      {"negative stage memory", [](Plan& p) { p.stages[0].memory.peak = -1; },
       "stages[0].memory.peak", "non-negative"},
      {"a negative stage time", [](Plan& p) { p.stages[1].time = -0.5; }, "stages[1].time",
       "non-negative"},
      {"a zero in-flight count", [](Plan& p) { p.stages[2].in_flight = 0; }, "stages[2].in_flight",
       "positive"},
      {"a negative step time", [](Plan& p) { p.step_time = -1.0; }, "step_time", "non-negative"},
      {"a negative maximum memory", [](Plan& p) { p.max_memory_per_device = -8; },
       "max_memory_per_device", "non-negative"},
      {"a negative planning time", [](Plan& p) { p.times.stage_dp = -1e-3; }, "times.stage_dp",
       "non-negative"},
      {"an invalid cluster", [](Plan& p) { p.cluster.devices_per_host = 3; }, "cluster",
       "power of two"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Plan p = test_plan();
    c.edit(p);
    const Status direct = p.validate();
    REQUIRE_FALSE(direct.is_ok());
    CHECK(direct.code() == Errc::kInvalidArgument);
    CHECK_THAT(direct.message(), Catch::StartsWith(c.path + ": "));
    CHECK_THAT(direct.message(), Catch::Contains(c.what));
    // The same plan written out and read back is rejected by the same check.
    const std::string loaded = load_error(plan_to_json(p));
    CHECK_THAT(loaded, Catch::Contains(c.path));
    CHECK_THAT(loaded, Catch::Contains(c.what));
  }
}

TEST_CASE("non-finite and non-UTF-8 values are rejected, and writing them does not throw",
          "[planner][plan]") {
  Plan p = test_plan();
  p.step_time = std::nan("");
  CHECK_THAT(p.validate().message(), Catch::StartsWith("step_time: "));
  // JSON has no NaN: it is written as null, which fails to load naming the field.
  CHECK(load_error(plan_to_json(p)) == "plan field 'step_time' must be a number");

  Plan q = test_plan();
  q.stages[1].time = std::numeric_limits<double>::infinity();
  CHECK_THAT(q.validate().message(), Catch::StartsWith("stages[1].time: "));

  Plan r = test_plan();
  r.transfers[0].value = "bad \xff byte";
  CHECK(r.validate().message() == "transfers[0].value: is not valid UTF-8");
  std::string text;
  CHECK_NOTHROW(text = plan_to_json(r));
  CHECK_FALSE(text.empty());
}

TEST_CASE("malformed JSON text is rejected without a crash", "[planner][plan]") {
  const std::vector<std::string> texts = {"",
                                          "{",
                                          "}",
                                          "[]",
                                          "null",
                                          "1",
                                          "\"plan\"",
                                          "not json",
                                          "{\"version\": 1,}",
                                          "{\"version\": 1 \"model\": \"x\"}",
                                          "\xff\xfe"};
  for (const std::string& t : texts) {
    INFO(t);
    Expected<Plan> p = plan_from_json(t);
    CHECK_FALSE(p.has_value());
  }
  CHECK_THAT(load_error("{"), Catch::StartsWith("plan JSON is malformed"));
  CHECK(load_error("[]") == "plan JSON must be an object");
}

TEST_CASE("truncated plan text returns an error at every cut point", "[planner][plan]") {
  const std::string text = plan_to_json(test_plan());
  size_t rejected = 0;
  for (size_t cut = 0; cut < text.size(); ++cut) {
    Expected<Plan> p = plan_from_json(text.substr(0, cut));
    if (!p.has_value()) ++rejected;
  }
  CHECK(rejected == text.size());
}

TEST_CASE("randomly corrupted plan text is rejected or loads a valid plan", "[planner][plan]") {
  const std::string text = plan_to_json(test_plan());
  const std::string alphabet = "{}[]\",:.-+eE0123456789 \n\\tfnulxyz\xff";
  std::mt19937 rng(/*seed=*/20240611);
  std::uniform_int_distribution<size_t> pos(0, text.size() - 1);
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> edits(1, 3);
  int loaded = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string t = text;
    for (int e = edits(rng); e > 0; --e) {
      const size_t at = pos(rng);
      switch (rng() % 3) {
        case 0:
          t[at] = alphabet[pick(rng)];
          break;
        case 1:
          t.erase(at, 1);
          break;
        default:
          t.insert(at, 1, alphabet[pick(rng)]);
          break;
      }
    }
    // An exception escaping plan_from_json fails the test case.
    Expected<Plan> p = plan_from_json(t);
    if (p.has_value()) {
      ++loaded;
      CHECK(p->validate().is_ok());
      CHECK(plan_from_json(plan_to_json(*p)).value() == *p);
    } else {
      CHECK_FALSE(p.status().message().empty());
    }
  }
  // Most edits break the text; some (a digit in a spec string, a space) leave a valid plan.
  CHECK(loaded < 3000);
}

TEST_CASE("a plan saved to a file loads back equal", "[planner][plan]") {
  const Plan p = test_plan();
  const std::string path =
      (std::filesystem::temp_directory_path() / "meshpipe_plan_test_save.json").string();
  REQUIRE(save_plan(p, path).is_ok());
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str() == plan_to_json(p) + "\n");
  Expected<Plan> q = load_plan(path);
  INFO(q.status().to_string());
  REQUIRE(q.has_value());
  CHECK(*q == p);
  std::filesystem::remove(path);
}

TEST_CASE("plan file errors name the path", "[planner][plan]") {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string missing = (dir / "meshpipe_plan_test_no_such_file.json").string();
  Expected<Plan> p = load_plan(missing);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.status().code() == Errc::kNotFound);
  CHECK_THAT(p.status().message(), Catch::Contains(missing));

  const std::string unwritable = (dir / "meshpipe_no_such_dir" / "plan.json").string();
  const Status s = save_plan(test_plan(), unwritable);
  CHECK(s.code() == Errc::kIo);
  CHECK_THAT(s.message(), Catch::Contains(unwritable));

  Expected<Plan> d = load_plan(dir.string());
  REQUIRE_FALSE(d.has_value());
  CHECK(d.status().code() == Errc::kInvalidArgument);
  CHECK(d.status().message() ==
        "plan file '" + dir.string() + "' is a directory, not a regular file");

  // A plan is written beside the target and renamed over it: a directory or a device there is
  // refused, not replaced, and no temporary file is left behind.
  const Status onto_dir = save_plan(test_plan(), dir.string());
  CHECK(onto_dir.code() == Errc::kInvalidArgument);
  CHECK(save_plan(test_plan(), "/dev/null").code() == Errc::kInvalidArgument);
  const std::string target = (dir / "meshpipe_plan_test_replace.json").string();
  { std::ofstream(target) << "old"; }
  REQUIRE(save_plan(test_plan(), target).is_ok());
  CHECK(load_plan(target).has_value());
  CHECK_FALSE(std::filesystem::exists(target + ".tmp-" + std::to_string(::getpid())));
  std::filesystem::remove(target);

  const std::string bad = (dir / "meshpipe_plan_test_bad.json").string();
  {
    std::ofstream out(bad);
    out << edited_json([](Json& j) { j["micro_batches"] = "many"; });
  }
  Expected<Plan> b = load_plan(bad);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.status().code() == Errc::kInvalidArgument);
  CHECK(b.status().message() ==
        "plan file '" + bad + "': plan field 'micro_batches' must be an integer");
  std::filesystem::remove(bad);
}

// tests/data/plan_p3_two_hosts.json is test_plan() saved; regenerate it with
//   MP_WRITE_PLAN_GOLDEN=1 planner_tests "the stored plan file*"
TEST_CASE("the stored plan file loads and is written back byte for byte", "[planner][plan]") {
  if (std::getenv("MP_WRITE_PLAN_GOLDEN") != nullptr) {
    REQUIRE(save_plan(test_plan(), kGoldenFile).is_ok());
  }
  std::ifstream in(kGoldenFile);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  Expected<Plan> p = load_plan(kGoldenFile);
  INFO(p.status().to_string());
  REQUIRE(p.has_value());
  CHECK(p->stages.size() == 3);
  CHECK(p->cluster.num_devices() == 16);
  CHECK(plan_to_json(*p) + "\n" == text.str());
}

}  // namespace
}  // namespace meshpipe::planner

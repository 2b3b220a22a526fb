// Sharded checkpoints: saved under one plan, loaded under another (other device count, other
// tiling, a pipeline), training continues the single-device loss curve; what is wrong in a
// checkpoint is named, and an interrupted save leaves the previous checkpoint intact.
#include "runtime/checkpoint.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "graph/models/zoo.h"
#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/executor.h"
#include "runtime/hand_checkpoint.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
namespace fs = std::filesystem;
using testing::file_text;
using testing::hand_manifest;
using testing::write_hand_checkpoint;

planner::Plan grid(int64_t micro_batches, planner::GridConfig cfg) {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", 8 / micro_batches);
  auto cluster = mesh::cluster_preset("cpu:1x4");
  REQUIRE(cluster.has_value());
  planner::AnalyticCostModel cost(cluster->device);
  planner::PlannerOptions po;
  po.model = "gpt-tiny";
  po.clustering.num_layers = 4;
  auto p = planner::grid_plan(tg.graph, *cluster, cost, po, micro_batches, cfg);
  if (!p.has_value()) FAIL(p.status().to_string());
  return *p;
}

// `steps` steps of gpt-tiny (seed 17) under `plan` on threads, resumed from `load` when given,
// saved to `save` after the last one when given: the checkpoint API the way a run uses it.
Expected<std::vector<double>> try_train(const planner::Plan& plan, int steps,
                                        const std::string& load, const std::string& save) {
  graph::TrainingGraph tg = testing::zoo_training_graph("gpt-tiny", plan.micro_batch);
  graph::TrainingGraph whole = testing::zoo_training_graph("gpt-tiny", plan.global_batch);
  MP_ASSIGN_OR_RETURN(Program program, lower(plan, tg.graph));
  const std::vector<std::string> names = program.inputs;
  MP_ASSIGN_OR_RETURN(auto run, InProcessRun::create(std::move(program), tg.graph));
  MP_RETURN_IF_ERROR(run->initialize(17));
  int64_t done = 0;
  if (!load.empty()) {
    MP_ASSIGN_OR_RETURN(CheckpointInfo info, load_checkpoint(*run, tg.graph, load));
    done = info.step;
  }
  MP_ASSIGN_OR_RETURN(SyntheticData data, SyntheticData::create(whole.graph, whole.inputs, 17));
  data.seek(done);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    MP_ASSIGN_OR_RETURN(
        auto mbs, split_micro_batches(whole.graph, data.next_batch(), names, plan.micro_batches));
    MP_ASSIGN_OR_RETURN(RunStepResult r, run->step(mbs));
    losses.push_back(r.loss);
  }
  if (!save.empty()) {
    MP_RETURN_IF_ERROR(save_checkpoint(*run, tg.graph, save, {"gpt-tiny", done + steps, 17}));
  }
  return losses;
}

std::vector<double> train(const planner::Plan& plan, int steps, const std::string& load,
                          const std::string& save) {
  auto r = try_train(plan, steps, load, save);
  if (!r.has_value()) FAIL(r.status().to_string());
  return *r;
}

TEST_CASE("a checkpoint saved under one plan resumes under another", "[checkpoint]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_ckpt_test";
  fs::remove_all(dir);
  const auto want = testing::single_device_losses("gpt-tiny", 8, 6, 17, 17);
  // 3 steps data parallel over 4 devices (parameters replicated, Adam states too).
  const auto first = train(grid(1, {4, 1, 1, Mode::kZero3}), 3, "", dir.string());
  REQUIRE(fs::exists(dir / "manifest.json"));
  struct Next {
    const char* name;
    planner::Plan plan;
  };
  const Next nexts[] = {
      {"2 stages x (1, 2), 2 micro-batches", grid(2, {1, 2, 2, Mode::kFree})},
      {"one device", grid(1, {1, 1, 1, Mode::kFree})},
      {"operator parallel (1, 4)", grid(1, {1, 4, 1, Mode::kFree})},
  };
  for (const Next& n : nexts) {
    SECTION(n.name) {
      const auto rest = train(n.plan, 3, dir.string(), "");
      std::vector<double> got = first;
      got.insert(got.end(), rest.begin(), rest.end());
      REQUIRE(got.size() == want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        INFO("step " << i + 1 << ": single device " << want[i] << ", resumed " << got[i]);
        CHECK(std::abs(got[i] - want[i]) <= 1e-4 * want[i]);
      }
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("a save writes every tile once, from the lowest device holding it", "[checkpoint]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_ckpt_once_test";
  fs::remove_all(dir);
  struct Case {
    const char* name;
    planner::Plan plan;
    bool replicated;  // every device holds every value whole
  };
  const Case cases[] = {
      {"data parallel over 4 devices", grid(1, {4, 1, 1, Mode::kFree}), true},
      {"operator parallel (1, 4)", grid(1, {1, 4, 1, Mode::kFree}), false},
      {"2 stages x (1, 2)", grid(2, {1, 2, 2, Mode::kFree}), false},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      train(c.plan, 1, "", dir.string());
      std::ifstream f(dir / "manifest.json");
      const auto j = nlohmann::json::parse(f);
      int64_t values = 0;
      for (const auto& v : j.at("values")) {
        ++values;
        int64_t whole = 1;
        for (int64_t d : v.at("shape").get<std::vector<int64_t>>()) whole *= d;
        int64_t saved = 0;
        for (const auto& t : v.at("tiles")) {
          int64_t n = 1;
          for (int64_t e : t.at("extent").get<std::vector<int64_t>>()) n *= e;
          saved += n;
          const std::string file = t.at("file").get<std::string>();
          REQUIRE(fs::exists(dir / file));
          if (c.replicated) CHECK(file.rfind("tile-d0-", 0) == 0);
        }
        INFO(v.at("name").get<std::string>());
        CHECK(saved == whole);  // the tiles partition the value: no replica written twice
      }
      CHECK(values > 10);
      // The tile list survives its trip through JSON.
      std::vector<SavedTile> tiles = {
          {"w", Shape({4, 6}), DType::kF32, "tile-d3-0.bin", {{0, 2}, {3, 6}}, 0xE3069283u}};
      auto back = saved_tiles_from_json(saved_tiles_to_json(tiles));
      REQUIRE(back.has_value());
      REQUIRE(back->size() == 1);
      CHECK((*back)[0].value == "w");
      CHECK((*back)[0].shape == Shape({4, 6}));
      CHECK((*back)[0].file == "tile-d3-0.bin");
      CHECK((*back)[0].region == tiles[0].region);
      CHECK((*back)[0].crc32c == 0xE3069283u);
      CHECK_FALSE(saved_tiles_from_json("[{\"value\": 1}]").has_value());
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("what is wrong in a checkpoint is named", "[checkpoint]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_ckpt_bad";
  fs::remove_all(dir);
  const planner::Plan plan = grid(1, {2, 2, 1, Mode::kFree});
  train(plan, 1, "", dir.string());
  const std::string manifest = (dir / "manifest.json").string();
  std::string text;
  {
    std::ifstream f(manifest);
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  const auto expect_error = [&](const std::string& needle) {
    auto r = try_train(plan, 1, dir.string(), "");
    REQUIRE_FALSE(r.has_value());
    INFO(r.status().to_string());
    CHECK(r.status().to_string().find(needle) != std::string::npos);
  };
  SECTION("a missing directory") {
    fs::remove_all(dir);
    expect_error("checkpoint " + dir.string() + ": no such directory");
  }
  SECTION("another format version") {
    std::string t = text;
    t.replace(t.find("\"version\": 2"), 12, "\"version\": 7");
    std::ofstream(manifest) << t;
    expect_error("field 'version' is 7, this build reads 2");
  }
  SECTION("a truncated tile file") {
    std::ofstream(dir / "tile-d0-0.bin", std::ios::binary | std::ios::trunc) << "x";
    expect_error("tile-d0-0.bin has 1 bytes, its region needs ");
  }
  SECTION("a tile with a bit flipped") {
    std::string bytes = file_text(dir / "tile-d0-0.bin");
    bytes[5] = static_cast<char>(bytes[5] ^ 0x10);
    std::ofstream(dir / "tile-d0-0.bin", std::ios::binary | std::ios::trunc) << bytes;
    expect_error("tile-d0-0.bin (a tile of '");
    expect_error("checksum mismatch: the tile is corrupted");
  }
  SECTION("a value the model has and the checkpoint lacks") {
    std::string t = text;
    const size_t at = t.find("\"name\": \"");
    t.replace(at, 9, "\"name\": \"zz");
    std::ofstream(manifest) << t;
    expect_error("has no value");
  }
  fs::remove_all(dir);
}

TEST_CASE("a hand-written manifest loads into a tile of another tiling", "[checkpoint]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_ckpt_manifest_ok";
  write_hand_checkpoint(dir, hand_manifest().dump(1));
  graph::Graph g;
  g.add_source("w", Shape({4, 6}), DType::kF32, graph::ValueRole::kParameter);
  std::vector<float> cols(8, -1.0f);  // columns 2-3 of every row
  const std::vector<TileRef> tiles = {
      {0, "w", {{0, 4}, {2, 4}}, kernels::TensorView(cols.data(), Shape({4, 2}), DType::kF32)}};
  Expected<CheckpointInfo> info = load_tiles(tiles, g, dir.string());
  REQUIRE(info.has_value());
  CHECK(info->model == "m");
  CHECK(info->step == 3);
  CHECK(info->seed == 7);
  CHECK(cols == std::vector<float>{2, 3, 8, 9, 14, 15, 20, 21});
  Expected<CheckpointInfo> header = read_checkpoint_info(dir.string());
  REQUIRE(header.has_value());
  CHECK(header->step == 3);
  fs::remove_all(dir);
}

TEST_CASE("a malformed manifest is an error naming the field, never an exception", "[checkpoint]") {
  using Json = nlohmann::ordered_json;
  const fs::path dir = fs::temp_directory_path() / "meshpipe_ckpt_manifest_bad";
  const std::string prefix = "checkpoint " + dir.string() + ": ";
  // The message of loading the manifest `text` (every value and tile is read; no tile needed).
  const auto message = [&](const std::string& text) {
    write_hand_checkpoint(dir, text);
    Expected<CheckpointInfo> r = load_tiles({}, graph::Graph(), dir.string());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == Errc::kInvalidArgument);
    return r.status().message();
  };
  struct Case {
    const char* name;
    std::function<void(Json&)> edit;
    std::string want;  // after "checkpoint DIR: "
  };
  const std::vector<Case> cases = {
      {"format missing", [](Json& j) { j.erase("format"); },
       "field 'format' is not meshpipe-checkpoint"},
      {"format a number", [](Json& j) { j["format"] = 1; },
       "field 'format' is not meshpipe-checkpoint"},
      {"version a string", [](Json& j) { j["version"] = "1"; },
       "field 'version' is \"1\", this build reads 2"},
      {"version missing", [](Json& j) { j.erase("version"); },
       "field 'version' is missing, this build reads 2"},
      {"version 1, without checksums",
       [](Json& j) {
         j["version"] = 1;
         for (Json& t : j["values"][0]["tiles"]) t.erase("crc32c");
       },
       "field 'version' is 1, a checkpoint without tile checksums, which this build does not "
       "load (it reads version 2)"},
      {"version 3", [](Json& j) { j["version"] = 3; }, "field 'version' is 3, this build reads 2"},
      {"model a number", [](Json& j) { j["model"] = 3; }, "field 'model' must be a string"},
      {"model empty", [](Json& j) { j["model"] = ""; }, "field 'model' must not be empty"},
      {"step missing", [](Json& j) { j.erase("step"); }, "field 'step' is missing"},
      {"step negative", [](Json& j) { j["step"] = -5; },
       "field 'step' must be a non-negative integer"},
      {"step fractional", [](Json& j) { j["step"] = 1.5; }, "field 'step' must be an integer"},
      {"step beyond int64", [](Json& j) { j["step"] = uint64_t{1} << 63; },
       "field 'step' must be an integer that fits in 64 bits"},
      {"seed negative", [](Json& j) { j["seed"] = -1; },
       "field 'seed' must be a non-negative integer"},
      {"seed an object", [](Json& j) { j["seed"] = Json::object(); },
       "field 'seed' must be a non-negative integer"},
      {"values an object", [](Json& j) { j["values"] = Json::object(); },
       "field 'values' must be an array"},
      {"values missing", [](Json& j) { j.erase("values"); }, "field 'values' is missing"},
      {"a value an array",
       [](Json& j) {
         j["values"][0] = Json::array({"w", 4});
       },
       "field 'values[0]' must be an object"},
      {"a value without a name", [](Json& j) { j["values"][0].erase("name"); },
       "field 'values[0].name' is missing"},
      {"a name a number", [](Json& j) { j["values"][0]["name"] = 3; },
       "field 'values[0].name' must be a string"},
      {"a value listed twice",
       [](Json& j) {
         const Json copy = j["values"][0];
         j["values"].push_back(copy);
       },
       "field 'values[w]' is listed twice"},
      {"a shape a string", [](Json& j) { j["values"][0]["shape"] = "4x6"; },
       "field 'values[w].shape' must be an array"},
      {"a negative dimension", [](Json& j) { j["values"][0]["shape"][1] = -6; },
       "field 'values[w].shape[1]' must be a non-negative integer"},
      {"a dimension a string", [](Json& j) { j["values"][0]["shape"][0] = "4"; },
       "field 'values[w].shape[0]' must be an integer"},
      {"an unknown dtype", [](Json& j) { j["values"][0]["dtype"] = "f99"; },
       "field 'values[w].dtype' 'f99' is not a dtype"},
      {"tiles null", [](Json& j) { j["values"][0]["tiles"] = nullptr; },
       "field 'values[w].tiles' must be an array"},
      {"a tile an array",
       [](Json& j) {
         j["values"][0]["tiles"][1] = Json::array({0, 2});
       },
       "field 'values[w].tiles[1]' must be an object"},
      {"a tile without a file", [](Json& j) { j["values"][0]["tiles"][0].erase("file"); },
       "field 'values[w].tiles[0].file' is missing"},
      {"a file outside the directory",
       [](Json& j) { j["values"][0]["tiles"][0]["file"] = "../manifest.json"; },
       "field 'values[w].tiles[0].file' must be a file name in the checkpoint directory"},
      {"an absolute file", [](Json& j) { j["values"][0]["tiles"][0]["file"] = "/etc/passwd"; },
       "field 'values[w].tiles[0].file' must be a file name in the checkpoint directory"},
      {"a file named ..", [](Json& j) { j["values"][0]["tiles"][0]["file"] = ".."; },
       "field 'values[w].tiles[0].file' must be a file name in the checkpoint directory"},
      {"a file name with a NUL",
       [](Json& j) { j["values"][0]["tiles"][0]["file"] = std::string("a\0b", 3); },
       "field 'values[w].tiles[0].file' must be a file name in the checkpoint directory"},
      {"a checksum missing", [](Json& j) { j["values"][0]["tiles"][1].erase("crc32c"); },
       "field 'values[w].tiles[1].crc32c' is missing"},
      {"a checksum a number", [](Json& j) { j["values"][0]["tiles"][1]["crc32c"] = 12; },
       "field 'values[w].tiles[1].crc32c' must be a string"},
      {"a checksum in capitals", [](Json& j) { j["values"][0]["tiles"][1]["crc32c"] = "E3069283"; },
       "field 'values[w].tiles[1].crc32c' must be a CRC-32C of 8 lowercase hexadecimal digits"},
      {"a checksum too short", [](Json& j) { j["values"][0]["tiles"][1]["crc32c"] = "e306928"; },
       "field 'values[w].tiles[1].crc32c' must be a CRC-32C of 8 lowercase hexadecimal digits"},
      {"begin missing", [](Json& j) { j["values"][0]["tiles"][1].erase("begin"); },
       "field 'values[w].tiles[1].begin' is missing"},
      {"begin a number", [](Json& j) { j["values"][0]["tiles"][1]["begin"] = 2; },
       "field 'values[w].tiles[1].begin' must be an array"},
      {"begin of rank 1", [](Json& j) { j["values"][0]["tiles"][1]["begin"] = Json::array({2}); },
       "field 'values[w].tiles[1]' has a region of the wrong rank"},
      {"extent of rank 3",
       [](Json& j) {
         j["values"][0]["tiles"][1]["extent"] = Json::array({2, 6, 1});
       },
       "field 'values[w].tiles[1]' has a region of the wrong rank"},
      {"a negative begin", [](Json& j) { j["values"][0]["tiles"][1]["begin"][1] = -1; },
       "field 'values[w].tiles[1].begin[1]' must be a non-negative integer"},
      {"a negative extent", [](Json& j) { j["values"][0]["tiles"][1]["extent"][0] = -2; },
       "field 'values[w].tiles[1].extent[0]' must be a non-negative integer"},
      {"an extent a float", [](Json& j) { j["values"][0]["tiles"][1]["extent"][0] = 2.0; },
       "field 'values[w].tiles[1].extent[0]' must be an integer"},
      {"a region past the end", [](Json& j) { j["values"][0]["tiles"][1]["extent"][0] = 3; },
       "field 'values[w].tiles[1]' has a region outside the tensor"},
      {"a region that overflows",
       [](Json& j) {
         j["values"][0]["tiles"][1]["extent"][0] = std::numeric_limits<int64_t>::max();
       },
       "field 'values[w].tiles[1]' has a region outside the tensor"},
      {"an unknown field", [](Json& j) { j["comment"] = "by hand"; },
       "field 'comment' is not a known field"},
      {"an unknown field of a value", [](Json& j) { j["values"][0]["layout"] = "S0,R"; },
       "field 'values[w].layout' is not a known field"},
      {"an unknown field of a tile", [](Json& j) { j["values"][0]["tiles"][0]["device"] = 0; },
       "field 'values[w].tiles[0].device' is not a known field"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Json j = hand_manifest();
    c.edit(j);
    CHECK(message(j.dump(1)) == prefix + c.want);
  }
  // The wrong structure, and not JSON at all.
  CHECK(message("[]") == prefix + "the manifest must be a JSON object");
  CHECK(message("\"meshpipe-checkpoint\"") == prefix + "the manifest must be a JSON object");
  CHECK(message("{\"format\": ").find(prefix + "manifest is malformed") == 0);
  CHECK(message("").find(prefix + "manifest is malformed") == 0);

  // The header alone: read_checkpoint_info names the same fields.
  Json j = hand_manifest();
  j["seed"] = "7";
  write_hand_checkpoint(dir, j.dump());
  Expected<CheckpointInfo> info = read_checkpoint_info(dir.string());
  REQUIRE_FALSE(info.has_value());
  CHECK(info.status().message() == prefix + "field 'seed' must be a non-negative integer");
  j = hand_manifest();
  j["step"] = -5;
  write_hand_checkpoint(dir, j.dump());
  info = read_checkpoint_info(dir.string());
  REQUIRE_FALSE(info.has_value());
  CHECK(info.status().message() == prefix + "field 'step' must be a non-negative integer");
  fs::remove_all(dir);
}

TEST_CASE("a malformed tile list is an error naming the field, never an exception",
          "[checkpoint]") {
  const auto message = [](const std::string& text) {
    Expected<std::vector<SavedTile>> r = saved_tiles_from_json(text);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == Errc::kInvalidArgument);
    return r.status().message();
  };
  const std::string tile =
      R"("value": "w", "shape": [4, 6], "dtype": "f32", "file": "tile-d3-0.bin", "crc32c": "e3069283")";
  const auto list = [&](const std::string& fields) { return "[{" + tile + fields + "}]"; };
  REQUIRE(saved_tiles_from_json(list(R"(, "begin": [0, 3], "extent": [2, 3])")).has_value());
  CHECK(saved_tiles_from_json("[]").has_value());
  CHECK(message("{}") == "tile list must be a JSON array");
  CHECK(message("[3]") == "tile list field '[0]' must be an object");
  CHECK(message("[{\"value\": 1}]") == "tile list field '[0].value' must be a string");
  CHECK(message("[{\"value\": \"w\"}]") == "tile list field '[0].shape' is missing");
  CHECK(message(list(R"(, "begin": [0, 3])")) == "tile list field '[0].extent' is missing");
  CHECK(message(list(R"(, "begin": {"0": 0}, "extent": [2, 3])")) ==
        "tile list field '[0].begin' must be an array");
  CHECK(message(list(R"(, "begin": [0, 4], "extent": [2, 3])")) ==
        "tile list field '[0]' has a region outside the tensor");
  CHECK(message(list(R"(, "begin": [0], "extent": [2])")) ==
        "tile list field '[0]' has a region of the wrong rank");
  CHECK(message(list(R"(, "begin": [0, 18446744073709551615], "extent": [2, 3])")) ==
        "tile list field '[0].begin[1]' must be an integer that fits in 64 bits");
  CHECK(message(list(R"(, "begin": [0, 3], "extent": [2, 3], "device": 3)")) ==
        "tile list field '[0].device' is not a known field");
  CHECK(message(R"([{"value": "w", "shape": [], "dtype": "f32", "file": "a", "begin": [],
                      "extent": [], "crc32c": "00000000"}, 3])") ==
        "tile list field '[1]' must be an object");
  CHECK(message(R"([{"value": "w", "shape": [], "dtype": "f32", "file": "a", "begin": [],
                      "extent": []}])") == "tile list field '[0].crc32c' is missing");
  CHECK(message("not JSON").find("tile list is malformed") == 0);
}

TEST_CASE("a save replaces the previous checkpoint only when complete", "[checkpoint]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_ckpt_replace";
  fs::remove_all(dir);
  const planner::Plan plan = grid(1, {4, 1, 1, Mode::kReplicated});
  train(plan, 2, "", dir.string());
  train(plan, 1, dir.string(), dir.string());  // resumes at 2, writes step 3
  std::ifstream f(dir / "manifest.json");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"step\": 3") != std::string::npos);
  for (const auto& e : fs::directory_iterator(dir.parent_path())) {
    CHECK(e.path().filename().string().find("meshpipe_ckpt_replace.partial") == std::string::npos);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace meshpipe::runtime

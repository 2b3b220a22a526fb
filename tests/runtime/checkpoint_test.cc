// Sharded checkpoints: saved under one plan, loaded under another (other device count, other
// tiling, a pipeline), training continues the single-device loss curve; what is wrong in a
// checkpoint is named, and an interrupted save leaves the previous checkpoint intact.
#include "runtime/checkpoint.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "graph/models/zoo.h"
#include "mesh/cluster.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "runtime/executor.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/synthetic_data.h"
#include "runtime/zoo_graph.h"

namespace meshpipe::runtime {
namespace {

using Mode = planner::ShardingOptions::ParameterMode;
namespace fs = std::filesystem;

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
          {"w", Shape({4, 6}), DType::kF32, "tile-d3-0.bin", {{0, 2}, {3, 6}}}};
      auto back = saved_tiles_from_json(saved_tiles_to_json(tiles));
      REQUIRE(back.has_value());
      REQUIRE(back->size() == 1);
      CHECK((*back)[0].value == "w");
      CHECK((*back)[0].shape == Shape({4, 6}));
      CHECK((*back)[0].file == "tile-d3-0.bin");
      CHECK((*back)[0].region == tiles[0].region);
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
    expect_error("manifest.json");
  }
  SECTION("another format version") {
    std::string t = text;
    t.replace(t.find("\"version\": 1"), 12, "\"version\": 7");
    std::ofstream(manifest) << t;
    expect_error("field 'version'");
  }
  SECTION("a truncated tile file") {
    std::ofstream(dir / "tile-d0-0.bin", std::ios::binary | std::ios::trunc) << "x";
    expect_error("tile-d0-0.bin holds 1 bytes");
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

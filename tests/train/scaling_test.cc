// The scaling harness (train/scaling.h): Alpa's FLOP counting against the number Alpa's own
// benchmark README reports, suites and their errors, the cluster of a point, one point
// simulated (its throughput recomputed from the graph, out-of-memory marked), the results file
// (round trip, a cut-off last line, a broken one), the table beside the paper's values and the
// figure.
#include "train/scaling.h"

#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "planner/build_plan.h"
#include "planner/planner.h"

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;

TEST_CASE("Alpa's FLOP counting gives the TFLOPS Alpa's benchmark README reports", "[scaling]") {
  // benchmark/alpa/README.md (docs/algorithms.md §4.3): GPT-2.6B, batch 32, 8 GPUs, 2.464 s per
  // iteration, 37.01 TFLOPS per GPU.
  auto spec = graph::models::find_model("gpt-2.6b");
  REQUIRE(spec.has_value());
  const double tflops_per_gpu = alpa_iteration_flops(*spec, 32) / (2.464 * 8) / 1e12;
  CHECK(tflops_per_gpu == Approx(37.01).epsilon(0.001));
  // MoE: compute_moe_tflops written out term by term for moe-380m (H 768, L 8, E 8, S 1024,
  // G 2048, V 32000), batch 1024, with recomputation (factor 4).
  auto moe = graph::models::find_model("moe-380m");
  REQUIRE(moe.has_value());
  const double B = 1024, S = 1024, H = 768, L = 8, E = 8, G = 2048, V = 32000;
  const double dense_block = 8 * B * S * H * H + 32 * B * S * H * H + 4 * B * S * S * H;
  const double moe_block = 8 * B * S * H * H + 4 * B * S * S * H + 64 * B * S * H * H +
                           2 * B * S * H * E + 4 * B * S * G + 8 * B * S * H * G;
  const double want = 4 * (dense_block * L / 2 + moe_block * L / 2) + 6 * B * S * H * V;
  CHECK(alpa_iteration_flops(*moe, 1024) == Approx(want).epsilon(1e-12));
  auto wres = graph::models::find_model("wresnet-250m");
  REQUIRE(wres.has_value());
  CHECK(alpa_iteration_flops(*wres, 1536) == 0.0);  // counted from the graph instead
}

TEST_CASE("suites: the built-in ones, a file's lines, and errors naming file and line",
          "[scaling]") {
  auto gpt = builtin_suite("gpt");
  REQUIRE(gpt.has_value());
  REQUIRE(gpt->size() >= 7);
  CHECK((*gpt)[0] == ScalingPoint{"gpt-350m", 1, 1024});
  CHECK((*gpt)[6] == ScalingPoint{"gpt-39b", 64, 1024});
  for (const std::string& name : builtin_suite_names()) {
    auto s = builtin_suite(name);
    REQUIRE(s.has_value());
    for (const ScalingPoint& p : *s) CHECK(graph::models::find_model(p.model).has_value());
  }
  CHECK_THAT(builtin_suite("bert").status().message(), Catch::Contains("gpt, moe, wresnet"));

  auto ok = parse_suite("# a comment\n\ngpt-tiny 1\n  gpt-tiny 2 16  # two devices\n", "s.txt");
  REQUIRE(ok.has_value());
  REQUIRE(ok->size() == 2);
  CHECK((*ok)[1] == ScalingPoint{"gpt-tiny", 2, 16});
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"gpt-tiny 1\nnosuch 2\n", "s.txt:2"},
      {"gpt-tiny 0\n", "devices must be a whole number"},
      {"gpt-tiny two\n", "got 'two'"},
      {"gpt-tiny 2 -4\n", "global batch must be a positive whole number"},
      {"gpt-tiny 2 16 9\n", "expected 'MODEL DEVICES [GLOBAL_BATCH]'"},
      {"gpt-tiny 99999\n", "1..1024"},
      {"# nothing\n", "no points"},
  };
  for (const auto& [text, want] : bad) {
    INFO(text);
    auto r = parse_suite(text, "s.txt");
    REQUIRE(!r.has_value());
    CHECK_THAT(r.status().message(), Catch::Contains(want));
  }
  CHECK(load_suite_file("/nonexistent/suite.txt").status().code() == Errc::kNotFound);
}

TEST_CASE("a MoE plans at micro-batches that fill whole expert groups", "[scaling]") {
  auto moe = graph::models::find_model("moe-380m");  // seq 1024, group 2048
  REQUIRE(moe.has_value());
  CHECK(graph::models::min_micro_batch(*moe) == 2);
  CHECK(graph::models::min_micro_batch(*graph::models::find_model("gpt-tiny")) == 1);
  auto spec = graph::models::find_model("gpt-tiny");
  auto tg = graph::models::zoo_training_graph(*spec, 2, graph::OptimizerConfig{}, std::nullopt);
  REQUIRE(tg.has_value());
  planner::PlannerOptions o;
  o.global_batch = 16;
  o.micro_batch_multiple = 2;
  o.graph_for_micro_batch = [&](int64_t) -> Expected<graph::Graph> { return tg->graph; };
  auto c = planner::micro_batch_candidates(tg->graph, o, 2);
  REQUIRE(c.has_value());
  std::vector<int64_t> sizes;
  for (const auto& m : *c) sizes.push_back(m.micro_batch);
  CHECK(sizes == std::vector<int64_t>{2, 4, 8, 16});
  // A MoE point of Alpa's suite is planned (its smallest micro-batch is 2 sequences).
  ScalingOptions dp;
  dp.systems = {"data parallel"};
  auto point = simulate_point("moe", ScalingPoint{"moe-380m", 1, 1024}, "p3.16xlarge", dp);
  REQUIRE(point.has_value());
  REQUIRE(point->systems.size() == 1);
  CHECK(point->systems[0].status == "ok");
  CHECK(point->systems[0].micro_batches <= 512);
}

TEST_CASE("Alpa's own plan is priced, lowered and simulated where docs/algorithms.md gives one",
          "[scaling]") {
  const ScalingPoint one{"gpt-350m", 1, 1024};
  auto systems = point_systems("p3.16xlarge", one);
  CHECK(std::find(systems.begin(), systems.end(), kAlpasPlan) != systems.end());
  systems = point_systems("dgx-h100", one);  // Alpa's plans are for its V100 testbed
  CHECK(std::find(systems.begin(), systems.end(), kAlpasPlan) == systems.end());
  systems = point_systems("p3.16xlarge", ScalingPoint{"gpt-tiny", 2, 16});
  CHECK(std::find(systems.begin(), systems.end(), kAlpasPlan) == systems.end());

  ScalingOptions only;
  only.systems = {kAlpasPlan};
  auto r = simulate_point("gpt", one, "p3.16xlarge", only);
  REQUIRE(r.has_value());
  REQUIRE(r->systems.size() == 1);
  const SystemResult& a = r->systems[0];
  INFO(a.detail);
  CHECK(a.system == kAlpasPlan);
  CHECK(a.status == "ok");
  CHECK(a.micro_batches == 512);  // Alpa's NB for this point
  CHECK(a.stages == 1);
  CHECK_THAT(a.detail, Catch::Contains("0@1x1:1x1"));
  CHECK(a.step_time > 0);
}

TEST_CASE("a point's cluster: whole hosts of the preset, or one host with fewer devices",
          "[scaling]") {
  auto four = cluster_for_point("p3.16xlarge", 4);
  REQUIRE(four.has_value());
  CHECK(four->hosts == 1);
  CHECK(four->devices_per_host == 4);
  auto sixteen = cluster_for_point("p3.16xlarge", 16);
  REQUIRE(sixteen.has_value());
  CHECK(sixteen->hosts == 2);
  CHECK(sixteen->devices_per_host == 8);
  CHECK_THAT(cluster_for_point("p3.16xlarge", 12).status().message(),
             Catch::Contains("not a whole number of"));
  CHECK(!cluster_for_point("p3.16xlarge", 6).has_value());  // hosts hold powers of two
  CHECK(!cluster_for_point("nosuch", 2).has_value());
}

TEST_CASE("a simulated point: every system's throughput is its plan's FLOPs per simulated second",
          "[scaling]") {
  auto r = simulate_point("tiny", ScalingPoint{"gpt-tiny", 2, 16}, "cpu:1x2", {});
  REQUIRE(r.has_value());
  CHECK(r->global_batch == 16);
  REQUIRE(r->systems.size() == point_systems("cpu:1x2", ScalingPoint{"gpt-tiny", 2, 16}).size());
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  int ran = 0;
  for (const SystemResult& s : r->systems) {
    INFO(s.system << ": " << s.status << " " << s.detail);
    CHECK((s.status == "ok" || s.status == "none"));
    if (s.status != "ok") continue;
    ++ran;
    CHECK(s.step_time > 0);
    CHECK(s.peak_bytes > 0);
    CHECK(s.peak_bytes <= r->memory_limit);
    REQUIRE(s.micro_batches >= 1);
    // Recomputed from the zoo's graph at the plan's micro-batch size.
    auto tg = graph::models::zoo_training_graph(*spec, 16 / s.micro_batches,
                                                graph::OptimizerConfig{}, std::nullopt);
    REQUIRE(tg.has_value());
    const double flops =
        planner::model_flops_per_micro_batch(tg->graph) * static_cast<double>(s.micro_batches);
    CHECK(s.pflops * 1e15 * s.step_time == Approx(flops).epsilon(1e-9));
    CHECK(s.alpa_pflops * 1e15 * s.step_time ==
          Approx(alpa_iteration_flops(*spec, 16)).epsilon(1e-9));
  }
  CHECK(ran >= 5);
  const SystemResult* mine = r->find("meshpipe");
  const SystemResult* plain = r->find(kWithoutLocalAllGather);
  const SystemResult* signal = r->find(kSignalSendRecv);
  REQUIRE(mine != nullptr);
  REQUIRE(plain != nullptr);
  REQUIRE(signal != nullptr);
  REQUIRE(mine->status == "ok");
  // Fig. 11's bound: bare signals instead of tensors are never slower than sending them.
  REQUIRE(mine->stages > 1);  // there are transfers between meshes to ablate
  CHECK(signal->step_time <= mine->step_time + 1e-12);
  CHECK(signal->step_time <= plain->step_time + 1e-12);
  CHECK(signal->step_time < plain->step_time);

  // No memory to plan in: every system is out of memory, none is an error.
  ScalingOptions starved;
  starved.memory_fraction = 1e-9;
  starved.systems = {"meshpipe", "data parallel", "ZeRO-3"};
  auto oom = simulate_point("tiny", ScalingPoint{"gpt-tiny", 2, 16}, "cpu:1x2", starved);
  REQUIRE(oom.has_value());
  REQUIRE(oom->systems.size() == 3);
  for (const SystemResult& s : oom->systems) {
    INFO(s.system << ": " << s.detail);
    CHECK(s.status == "oom");
  }
  ScalingOptions unknown;
  unknown.systems = {"DeepSpeed"};
  CHECK_THAT(simulate_point("tiny", ScalingPoint{"gpt-tiny", 2, 16}, "cpu:1x2", unknown)
                 .status()
                 .message(),
             Catch::Contains("no system 'DeepSpeed'"));
}

TEST_CASE("results as JSON lines: a round trip, a cut-off last line dropped, a broken one named",
          "[scaling]") {
  PointResult r;
  r.suite = "gpt";
  r.cluster = "p3.16xlarge";
  r.mode = "simulate";
  r.point = {"gpt-39b", 64, 1024};
  r.global_batch = 1024;
  r.memory_limit = int64_t{16} << 30;
  r.seconds = 12.5;
  r.systems = {
      {"meshpipe", "ok", "16 stages", 70.1, 66.0, 3.0, 3.5, 15 << 20, 16, 1024},
      {"data parallel", "oom", "out of memory: stage 0 needs 600 GiB", 0, 0, 0, 0, 0, 0, 0}};
  const std::string line = to_json_line(r);
  CHECK(line.find('\n') == std::string::npos);
  auto back = parse_json_line(line);
  REQUIRE(back.has_value());
  CHECK(back->point == r.point);
  CHECK(back->systems == r.systems);
  CHECK(back->seconds == r.seconds);
  CHECK_THAT(parse_json_line("{\"suite\": \"gpt\"}").status().message(),
             Catch::Contains("missing field 'cluster'"));
  // Numbers are checked, not converted: a count that would wrap, a fraction, a negative time.
  std::string wraps = line;
  wraps.replace(wraps.find("\"devices\":64"), 12, "\"devices\":4294967297");
  CHECK_THAT(parse_json_line(wraps).status().message(), Catch::Contains("devices"));
  std::string half = line;
  half.replace(half.find("\"devices\":64"), 12, "\"devices\":2.5");
  CHECK_THAT(parse_json_line(half).status().message(), Catch::Contains("not a whole number"));
  CHECK(!parse_json_line("[1, 2]").has_value());

  const fs::path dir = fs::temp_directory_path() / "meshpipe_scaling_results_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "results.jsonl").string();
  CHECK(load_results(path)->empty());  // no file yet
  {
    std::ofstream f(path);
    f << line << "\n" << line.substr(0, line.size() / 2);  // stopped while writing
  }
  auto loaded = load_results(path);
  REQUIRE(loaded.has_value());
  CHECK(loaded->size() == 1);
  {
    std::ofstream f(path);
    f << line << "\n{\"broken\n" << line << "\n";
  }
  CHECK_THAT(load_results(path).status().message(), Catch::Contains("results.jsonl:2"));
  fs::remove_all(dir);
}

TEST_CASE("the table shows the paper's value and the ratio; the figure draws every system",
          "[scaling]") {
  auto point = [](int32_t devices, double alpa_pflops, const std::string& dp_status) {
    PointResult r;
    r.suite = "gpt";
    r.cluster = "p3.16xlarge";
    r.mode = "simulate";
    r.point = {devices == 64 ? "gpt-39b" : "gpt-15b", devices, 1024};
    r.global_batch = 1024;
    r.memory_limit = int64_t{16} << 30;
    r.systems = {
        {"meshpipe", "ok", "plan <A&B>", 1.0, 1.0, alpa_pflops, alpa_pflops, 1 << 30, 4, 64},
        {"data parallel", dp_status, "out of memory", 0, 0, 0, 0, 0, 0, 0}};
    return r;
  };
  // 32 devices at 2 PFLOPS, 64 at 3 (the paper: Alpa 1.9 and 3.65).
  const std::vector<PointResult> rs = {point(32, 2.0, "oom"), point(64, 3.0, "oom")};
  const std::string md = scaling_markdown(rs);
  CHECK_THAT(md, Catch::Contains("3.65 (Alpa) | 0.82 |"));
  CHECK_THAT(md, Catch::Contains("1.90 (Alpa) | 1.05 |"));
  // Weak-scaling efficiency: per-device throughput against the first point's (2.0 / 32).
  CHECK_THAT(md, Catch::Contains("| 100% |"));
  CHECK_THAT(md, Catch::Contains("| 75% |"));
  // The paper's numbers are V100 numbers: not set beside another cluster's.
  std::vector<PointResult> h100 = rs;
  for (PointResult& r : h100) r.cluster = "dgx-h100";
  CHECK_THAT(scaling_markdown(h100), !Catch::Contains("(Alpa)"));
  CHECK_THAT(md, Catch::Contains("**OOM**"));

  const std::string svg = scaling_svg(rs, "GPT <weak> scaling", figure_systems(7));
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("GPT &lt;weak&gt; scaling") != std::string::npos);
  CHECK(svg.find("<polyline") != std::string::npos);         // meshpipe's line
  CHECK(svg.find("l8,8 m0,-8 l-8,8") != std::string::npos);  // data parallel's OOM crosses
  CHECK(svg.find("linear scaling") != std::string::npos);
  CHECK(svg.find("Alpa (paper)") != std::string::npos);
  // An ablation figure draws its systems only, without the paper's Alpa points.
  const std::string fig8 = scaling_svg(rs, "intra-op", figure_systems(8));
  CHECK(fig8.find(">data parallel<") != std::string::npos);
  CHECK(fig8.find(">meshpipe<") == std::string::npos);
  CHECK(fig8.find("Alpa (paper)") == std::string::npos);
}

}  // namespace
}  // namespace meshpipe::train

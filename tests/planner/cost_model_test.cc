// Tests of the analytic and profiled cost models.
#include "planner/cost_model.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

namespace meshpipe::planner {
namespace {

const mesh::DeviceSpec kDevice{"V100", Bytes(int64_t{16} << 30), 15.7e12, 125e12, 900e9};

TEST_CASE("compute time is a roofline: the larger of FLOPs / peak and bytes / bandwidth",
          "[planner]") {
  AnalyticCostModel m(kDevice);
  // 1.25e12 FLOP of f16 matmul at 125 TFLOP/s = 10 ms; 9 GB at 900 GB/s = 10 ms too.
  CHECK(m.compute({Flops(1.25e12), Bytes(0), DType::kF16, true}).value() == Approx(0.01));
  CHECK(m.compute({Flops(0), Bytes(9'000'000'000), DType::kF16, true}).value() == Approx(0.01));
  // Elementwise f16 work runs at the f32 (non-tensor-core) peak: 15.7 GFLOP -> 1 ms.
  CHECK(m.compute({Flops(15.7e9), Bytes(0), DType::kF16, false}).value() == Approx(1e-3));
}

TEST_CASE("analytic collectives follow alpha-beta and resharding sums its steps", "[planner]") {
  AnalyticCostModel m(kDevice);
  const auto mesh = mesh::logical_mesh(4, 2, 10e-6, 1e-9, 1e-6, 1e-10);
  // all-reduce of 1 MB over axis 0 (n = 4): 10us + 1e-9 * 2 * 3/4 * 1e6 + 2e-9 = 1.51 ms + tie.
  CHECK(m.collective(mesh::CollectiveKind::kAllReduce, 1'000'000, mesh, 0).value() ==
        Approx(10e-6 + 1.5e-3 + 2e-9));
  // S0,R -> R,R of a [1000, 250] f32 tensor: one all-gather over axis 0 of the full 1 MB.
  auto r = m.resharding(Shape{1000, 250}, DType::kF32, *mesh::parse_sharding("S0,R"),
                        *mesh::parse_sharding("R,R"), mesh);
  REQUIRE(r.has_value());
  CHECK(r->value() == Approx(10e-6 + 1e-9 * 0.75 * 1e6 + 3e-9));
  auto same = m.resharding(Shape{8, 8}, DType::kF32, *mesh::parse_sharding("S0,S1"),
                           *mesh::parse_sharding("S0,S1"), mesh);
  REQUIRE(same.has_value());
  CHECK(same->value() == 0.0);
}

TEST_CASE("interpolation is linear between points and extrapolates from the nearest two",
          "[planner]") {
  const std::vector<std::pair<double, double>> pts{{0, 1}, {10, 2}, {20, 4}};
  CHECK(interpolate(pts, 5) == Approx(1.5));
  CHECK(interpolate(pts, 15) == Approx(3.0));
  CHECK(interpolate(pts, 30) == Approx(6.0));
  CHECK(interpolate({{100, 2}}, 50) == Approx(1.0));
}

TEST_CASE("a profile database overrides the analytic model where it has data", "[planner]") {
  const mesh::ClusterSpec cluster = *mesh::cluster_preset("p3.16xlarge:2");
  auto db = parse_profile_database(R"({
    "gemm": {"f16": [[0, 0], [1e12, 0.02]]},
    "collectives": [
      {"kind": "all-reduce", "group": 8, "link": "intra", "points": [[0, 1e-5], [1e6, 3e-5]]}
    ]})");
  REQUIRE(db.has_value());
  ProfiledCostModel m(cluster, *db);
  AnalyticCostModel a(cluster.device);
  // Measured GEMM: 5e11 FLOP -> 10 ms (the analytic f16 peak would say 4 ms).
  CHECK(m.compute({Flops(5e11), Bytes(0), DType::kF16, true}).value() == Approx(0.01));
  CHECK(m.compute({Flops(5e11), Bytes(0), DType::kF32, true}).value() ==
        a.compute({Flops(5e11), Bytes(0), DType::kF32, true}).value());
  // One host, 8 devices on axis 1: the intra-host table; all-gather falls back to all-reduce / 2.
  const auto mesh = *mesh::make_logical_mesh(cluster, {1, 8}, 1, 8);
  CHECK(m.collective(mesh::CollectiveKind::kAllReduce, 500'000, mesh, 1).value() == Approx(2e-5));
  CHECK(m.collective(mesh::CollectiveKind::kAllGather, 500'000, mesh, 1).value() == Approx(1e-5));
  // No table for all-to-all: the analytic model answers.
  CHECK(m.collective(mesh::CollectiveKind::kAllToAll, 500'000, mesh, 1).value() ==
        a.collective(mesh::CollectiveKind::kAllToAll, 500'000, mesh, 1).value());
}

TEST_CASE("a bad profile database is rejected with the field named", "[planner]") {
  CHECK(parse_profile_database("{").status().message().find("not valid JSON") != std::string::npos);
  CHECK(parse_profile_database(R"({"gemm": {"f99": [[1, 1]]}})")
            .status()
            .message()
            .find("gemm.f99") != std::string::npos);
  CHECK(parse_profile_database(R"({"collectives": [{"kind": "broadcast", "group": 2,
        "link": "intra", "points": [[1, 1]]}]})")
            .status()
            .message()
            .find("broadcast") != std::string::npos);
  CHECK(parse_profile_database(R"({"collectives": [{"kind": "all-reduce", "group": 2,
        "link": "intra", "points": [[1, -1]]}]})")
            .status()
            .message()
            .find("collectives[0].points") != std::string::npos);
  CHECK(load_profile_database("/nonexistent/profile.json").status().code() == Errc::kNotFound);
}

TEST_CASE("a malformed profile database is an error naming the field, never an exception",
          "[planner]") {
  auto message = [](const std::string& text) {
    Expected<ProfileDatabase> db = parse_profile_database(text);
    REQUIRE_FALSE(db.has_value());
    CHECK(db.status().code() == Errc::kInvalidArgument);
    return db.status().message();
  };
  // One collective entry with `field` set to `value` (or left out when value is empty).
  auto collective = [](const std::string& field, const std::string& value) {
    std::string entry;
    for (auto [k, v] :
         std::vector<std::pair<std::string, std::string>>{{"kind", "\"all-reduce\""},
                                                          {"group", "8"},
                                                          {"link", "\"intra\""},
                                                          {"points", "[[0, 1e-5], [1e6, 3e-5]]"}}) {
      if (k == field) v = value;
      if (v.empty()) continue;
      entry += (entry.empty() ? "" : ", ") + ("\"" + k + "\": " + v);
    }
    return R"({"collectives": [{"kind": "all-gather", "group": 2, "link": "inter",
               "points": [[1, 1]]}, {)" +
           entry + "}]}";
  };
  CHECK(parse_profile_database(collective("", "")).has_value());

  // The wrong structure.
  CHECK(message("[]") == "profile database must be an object");
  CHECK(message("null") == "profile database must be an object");
  CHECK(message(R"({"gemm": [[1, 1]]})") == "profile field 'gemm' must be an object");
  CHECK(message(R"({"gemm": {"f16": {"1": 1}}})") ==
        "profile field 'gemm.f16' must be a non-empty list of [x, seconds]");
  CHECK(message(R"({"gemm": {"f16": []}})") ==
        "profile field 'gemm.f16' must be a non-empty list of [x, seconds]");
  CHECK(message(R"({"gemm": {"f16": [[1, 1], [2]]}})") ==
        "profile field 'gemm.f16[1]' is not [x >= 0, seconds >= 0]");
  CHECK(message(R"({"gemm": {"f16": [[1, "1"]]}})") ==
        "profile field 'gemm.f16[0]' is not [x >= 0, seconds >= 0]");
  CHECK(message(R"({"gemm": {"f16": [1, 1]}})") ==
        "profile field 'gemm.f16[0]' is not [x >= 0, seconds >= 0]");
  CHECK(message(R"({"gemm": {"f99": [[1, 1]]}})") == "profile field 'gemm.f99' is not a dtype");
  CHECK(message(R"({"collectives": {"kind": "all-reduce"}})") ==
        "profile field 'collectives' must be an array");
  CHECK(message(R"({"collectives": [[8, "intra"]]})") ==
        "profile field 'collectives[0]' must be an object");

  // Missing and wrongly typed fields of a collective.
  for (const char* field : {"kind", "group", "link", "points"}) {
    CHECK(message(collective(field, "")) ==
          fmt::format("profile field 'collectives[1].{}' is missing", field));
  }
  CHECK(message(collective("kind", "3")) == "profile field 'collectives[1].kind' must be a string");
  CHECK(message(collective("group", "\"8\"")) ==
        "profile field 'collectives[1].group' must be an integer");
  CHECK(message(collective("group", "8.5")) ==
        "profile field 'collectives[1].group' must be an integer");
  CHECK(message(collective("group", "0")) ==
        "profile field 'collectives[1].group' must be a positive integer");
  CHECK(message(collective("group", "9223372036854775808")) ==
        "profile field 'collectives[1].group' must be an integer that fits in 64 bits");
  CHECK(message(collective("group", "100000000000000000000")) ==
        "profile field 'collectives[1].group' must be an integer");
  CHECK(message(collective("link", "\"nvlink\"")) ==
        "profile field 'collectives[1].link' must be intra or inter");
  CHECK(message(collective("link", "null")) ==
        "profile field 'collectives[1].link' must be a string");
  CHECK(message(collective("points", "{}")) ==
        "profile field 'collectives[1].points' must be a non-empty list of [x, seconds]");
  CHECK(message(collective("kind", "\"broadcast\"")).find("'collectives[1].kind'") !=
        std::string::npos);

  // Fields the format does not know: a misspelt table would otherwise be dropped silently.
  CHECK(message(R"({"collective": []})") == "profile field 'collective' is not a known field");
  std::string extra = collective("", "");
  extra.replace(extra.rfind("}]}"), 3, R"(, "bytes": 4}]})");
  CHECK(message(extra) == "profile field 'collectives[1].bytes' is not a known field");

  // Not JSON at all.
  CHECK(message("").find("not valid JSON") != std::string::npos);
  CHECK(message(R"({"gemm": {"f16": [[1e999, 1]]}})").find("not valid JSON") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::planner

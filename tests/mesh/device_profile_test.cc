// Tests of the device profile's JSON form (mesh/device_profile.h) and of a cluster carrying one.
#include "mesh/device_profile.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mesh/cluster.h"

namespace meshpipe::mesh {
namespace {

TEST_CASE("a device profile round-trips through JSON exactly, alone and inside a cluster",
          "[mesh][profile]") {
  DeviceProfile p;
  p.source = "test machine, 2026-12-03";
  p.op_overhead_seconds = 3.7e-6;
  p.concurrency = {{1, 1.0}, {2, 1.03}, {4, 2.0000000000000004}};
  p.gemm[DType::kF32] = {{0, 0}, {1.0 / 3.0, 1e-7}, {2e9, 0.0123456789}};
  p.memory_bound[DType::kF32] = {{4096, 1.1e-6}, {1 << 24, 2.5e-3}};
  p.gemm_grid[DType::kF32] = {{16, 16, 16, 1.5e-7}, {16, 16, 1024, 3.25e-6}};
  p.kind_factors[OpKind::kGelu] = 9.5;
  p.kind_factors[OpKind::kDot] = 1.25;
  p.collectives[{CollectiveKind::kAllReduce, 2, false}] = {{1024, 3e-6}, {1 << 20, 1e-4}};
  p.collectives[{CollectiveKind::kAllToAll, 4, true}] = {{1024, 5e-6}};
  p.transfers[true] = {{1, 2e-5}, {1e6, 1e-3}};
  auto back = parse_device_profile(device_profile_to_json(p));
  REQUIRE(back.has_value());
  CHECK(*back == p);
  // Empty: every table absent.
  auto empty = parse_device_profile("{}");
  REQUIRE(empty.has_value());
  CHECK(*empty == DeviceProfile{});

  ClusterSpec c = *cluster_preset("cpu:2x2");
  const ClusterSpec without = c;
  c.profile = std::make_shared<const DeviceProfile>(p);
  CHECK_FALSE(c == without);
  auto cb = parse_cluster_json(cluster_to_json(c));
  REQUIRE(cb.has_value());
  REQUIRE(cb->profile != nullptr);
  CHECK(*cb->profile == p);
  CHECK(*cb == c);
  auto wb = parse_cluster_json(cluster_to_json(without));
  REQUIRE(wb.has_value());
  CHECK(wb->profile == nullptr);
  CHECK(*wb == without);
  // A bad profile inside a cluster names both.
  std::string text = cluster_to_json(without);
  text.insert(text.rfind('}'), R"(, "profile": {"gemm": {"f99": [[1, 1]]}})");
  auto bad = parse_cluster_json(text);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().message().find("'profile'") != std::string::npos);
  CHECK(bad.status().message().find("gemm.f99") != std::string::npos);
}

TEST_CASE("a device profile's numbers are checked", "[mesh][profile]") {
  auto message = [](const std::string& text) {
    auto p = parse_device_profile(text);
    REQUIRE_FALSE(p.has_value());
    return p.status().message();
  };
  CHECK(message(R"({"op_overhead_seconds": -1})").find("op_overhead_seconds") != std::string::npos);
  CHECK(message(R"({"op_overhead_seconds": 2})").find("[0, 1]") != std::string::npos);
  CHECK(message(R"({"concurrency": [[0, 1]]})").find("devices >= 1") != std::string::npos);
  CHECK(message(R"({"concurrency": [[2, 0]]})").find("slowdown > 0") != std::string::npos);
  CHECK(message(R"({"transfers": [{"link": "pcie", "points": [[1, 1]]}]})")
            .find("'transfers[0].link' must be intra or inter") != std::string::npos);
  CHECK(message(R"({"gemm_grid": {"f32": [[16, 16, 0, 1e-6]]}})")
            .find("'gemm_grid.f32[0]' is not [m, n, k, seconds]") != std::string::npos);
  CHECK(message(R"({"gemm_grid": {"f32": [[16, 16, 16]]}})").find("gemm_grid.f32[0]") !=
        std::string::npos);
  CHECK(message(R"({"gemm_grid": {"f32": []}})").find("gemm_grid.f32") != std::string::npos);
  CHECK(message(R"({"kind_factors": {"nosuch": 2}})")
            .find("'kind_factors.nosuch' is not an op kind") != std::string::npos);
  CHECK(message(R"({"kind_factors": {"gelu": 0}})").find("(0, 10000]") != std::string::npos);
  CHECK(message(R"({"memory_bound": {"f32": [[-1, 1]]}})").find("'memory_bound.f32[0]'") !=
        std::string::npos);
  std::string many = R"({"gemm": {"f32": [)";
  for (int i = 0; i < 5000; ++i) many += fmt::format("{}[{}, 1]", i ? ", " : "", i);
  many += "]}}";
  CHECK(message(many).find("more than 4096 points") != std::string::npos);
}

TEST_CASE("a bad device profile is rejected with the field named", "[mesh][profile]") {
  CHECK(parse_device_profile("{").status().message().find("not valid JSON") != std::string::npos);
  CHECK(
      parse_device_profile(R"({"gemm": {"f99": [[1, 1]]}})").status().message().find("gemm.f99") !=
      std::string::npos);
  CHECK(parse_device_profile(R"({"collectives": [{"kind": "broadcast", "group": 2,
        "link": "intra", "points": [[1, 1]]}]})")
            .status()
            .message()
            .find("broadcast") != std::string::npos);
  CHECK(parse_device_profile(R"({"collectives": [{"kind": "all-reduce", "group": 2,
        "link": "intra", "points": [[1, -1]]}]})")
            .status()
            .message()
            .find("collectives[0].points") != std::string::npos);
  CHECK(load_device_profile("/nonexistent/profile.json").status().code() == Errc::kNotFound);
}

TEST_CASE("a malformed device profile is an error naming the field, never an exception",
          "[mesh][profile]") {
  auto message = [](const std::string& text) {
    Expected<DeviceProfile> db = parse_device_profile(text);
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
  CHECK(parse_device_profile(collective("", "")).has_value());

  // The wrong structure.
  CHECK(message("[]") == "device profile must be an object");
  CHECK(message("null") == "device profile must be an object");
  CHECK(message(R"({"gemm": [[1, 1]]})") ==
        "profile field 'gemm' must be an object of dtype: points");
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
        "profile field 'collectives[1].group' must be a positive integer (at most 2^20)");
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
}  // namespace meshpipe::mesh

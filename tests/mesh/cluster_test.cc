// Tests of ClusterSpec: presets, JSON parsing with field-named errors, exact round trips, files.
#include "mesh/cluster.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace meshpipe::mesh {
namespace {

const std::string kDataFile = std::string(MP_TEST_DATA_DIR) + "/cluster_p3_two_hosts.json";

// The fields of a valid cluster JSON, as (path, value text).
std::vector<std::pair<std::string, std::string>> base_fields() {
  return {{"name", "\"test\""},
          {"hosts", "2"},
          {"devices_per_host", "4"},
          {"device.kind", "\"V100\""},
          {"device.memory_gib", "16"},
          {"device.peak_tflops_f32", "15.7"},
          {"device.peak_tflops_f16", "125"},
          {"device.memory_bandwidth_gb_s", "900"},
          {"intra_host.bandwidth_gb_s", "130"},
          {"intra_host.latency_us", "5"},
          {"inter_host.bandwidth_gb_s", "3.125"},
          {"inter_host.latency_us", "20"}};
}

// Cluster JSON text without the field `skip` and with `path` set to `value`.
std::string cluster_json(const std::string& skip = "", const std::string& path = "",
                         const std::string& value = "") {
  std::string top;
  std::string groups[3];
  const char* names[3] = {"device", "intra_host", "inter_host"};
  for (auto [p, v] : base_fields()) {
    if (p == skip) continue;
    if (p == path) v = value;
    const size_t dot = p.find('.');
    std::string* out = &top;
    for (int g = 0; g < 3 && dot != std::string::npos; ++g) {
      if (p.substr(0, dot) == names[g]) out = &groups[g];
    }
    const std::string key = dot == std::string::npos ? p : p.substr(dot + 1);
    *out += (out->empty() ? "" : ", ") + ("\"" + key + "\": " + v);
  }
  for (int g = 0; g < 3; ++g) top += std::string(", \"") + names[g] + "\": {" + groups[g] + "}";
  return "{" + top + "}";
}

TEST_CASE("every preset loads and validates", "[mesh]") {
  for (const std::string& name : cluster_preset_names()) {
    Expected<ClusterSpec> c = cluster_preset(name);
    REQUIRE(c.has_value());
    CHECK(c->validate().is_ok());
  }
  CHECK(cluster_preset_names() == std::vector<std::string>{"p3.16xlarge", "dgx-h100", "cpu"});
}

TEST_CASE("p3.16xlarge presets carry Alpa's testbed figures", "[mesh]") {
  Expected<ClusterSpec> one = cluster_preset("p3.16xlarge");
  REQUIRE(one.has_value());
  CHECK(one->num_devices() == 8);
  CHECK(one->device.memory.value() == 16LL << 30);
  CHECK(one->device.peak_flops_f32 == Approx(15.7e12));
  CHECK(one->device.peak_flops_f16 == Approx(125e12));
  CHECK(one->device.memory_bandwidth == Approx(900e9));
  CHECK(one->intra_host.bandwidth == Approx(130e9));
  CHECK(one->intra_host.latency.value() == Approx(5e-6));
  CHECK(one->inter_host.bandwidth == Approx(3.125e9));
  CHECK(one->inter_host.latency.value() == Approx(20e-6));

  Expected<ClusterSpec> eight = cluster_preset("p3.16xlarge:8");
  REQUIRE(eight.has_value());
  CHECK(eight->hosts == 8);
  CHECK(eight->num_devices() == 64);
}

TEST_CASE("dgx-h100 and cpu presets parse host counts and shapes", "[mesh]") {
  Expected<ClusterSpec> dgx = cluster_preset("dgx-h100:2");
  REQUIRE(dgx.has_value());
  CHECK(dgx->num_devices() == 16);
  CHECK(dgx->device.peak_flops_f16 == Approx(989e12));
  CHECK(dgx->device.memory_bandwidth == Approx(3.35e12));
  CHECK(dgx->intra_host.bandwidth == Approx(450e9));
  CHECK(dgx->inter_host.bandwidth == Approx(400e9));
  CHECK(dgx->inter_host.latency.value() == Approx(5e-6));

  Expected<ClusterSpec> cpu = cluster_preset("cpu");
  REQUIRE(cpu.has_value());
  CHECK(cpu->hosts == 1);
  CHECK(cpu->devices_per_host == 2);
  CHECK(cpu->device.memory.value() == 4LL << 30);
  CHECK(cpu->device.peak_flops_f32 == Approx(50e9));
  CHECK(cpu->inter_host.bandwidth == Approx(1.5e9));
  CHECK(cpu->inter_host.latency.value() == Approx(50e-6));

  Expected<ClusterSpec> grid = cluster_preset("cpu:2x4");
  REQUIRE(grid.has_value());
  CHECK(grid->hosts == 2);
  CHECK(grid->devices_per_host == 4);
}

TEST_CASE("a bad preset is rejected with its name and the list of presets", "[mesh]") {
  for (const char* bad :
       {"p4d", "p3.16xlarge:0", "p3.16xlarge:x", "dgx-h100:", "cpu:4", "cpu:2x3", "cpu:x2", ""}) {
    Expected<ClusterSpec> c = cluster_preset(bad);
    REQUIRE_FALSE(c.has_value());
    const std::string msg = c.status().message();
    CHECK(msg.find(std::string("'") + bad + "'") != std::string::npos);
    CHECK(msg.find("p3.16xlarge[:HOSTS]") != std::string::npos);
    CHECK(msg.find("dgx-h100[:HOSTS]") != std::string::npos);
    CHECK(msg.find("cpu[:HOSTSxDEVICES]") != std::string::npos);
  }
  CHECK(cluster_preset("cpu:2x3").status().message().find("power of two") != std::string::npos);
}

TEST_CASE("cluster JSON parses into SI units", "[mesh]") {
  Expected<ClusterSpec> c = parse_cluster_json(cluster_json());
  REQUIRE(c.has_value());
  CHECK(c->name == "test");
  CHECK(c->num_devices() == 8);
  CHECK(c->device.kind == "V100");
  CHECK(c->device.memory.value() == 16LL << 30);
  CHECK(c->device.peak_flops_f32 == 15.7e12);
  CHECK(c->intra_host.latency.value() == 5e-6);
  CHECK(c->inter_host.bandwidth == 3.125e9);
}

TEST_CASE("a missing cluster field is named with its path", "[mesh]") {
  for (const auto& [path, value] : base_fields()) {
    Expected<ClusterSpec> c = parse_cluster_json(cluster_json(/*skip=*/path));
    REQUIRE_FALSE(c.has_value());
    CHECK(c.status().message() == "cluster field '" + path + "' is missing");
  }
}

TEST_CASE("bad cluster values are named with their path", "[mesh]") {
  auto message = [](const std::string& path, const std::string& value) {
    return parse_cluster_json(cluster_json("", path, value)).status().message();
  };
  CHECK(message("inter_host.bandwidth_gb_s", "-1") ==
        "cluster field 'inter_host.bandwidth_gb_s' must be a positive number");
  CHECK(message("device.memory_gib", "0") ==
        "cluster field 'device.memory_gib' must be a positive number");
  CHECK(message("intra_host.latency_us", "-2") ==
        "cluster field 'intra_host.latency_us' must be a non-negative number");
  CHECK(message("devices_per_host", "6") ==
        "cluster field 'devices_per_host' must be a power of two, not 6");
  CHECK(message("hosts", "\"two\"") == "cluster field 'hosts' must be a positive integer");
  CHECK(message("hosts", "1.5") == "cluster field 'hosts' must be a positive integer");
  CHECK(message("hosts", "0") == "cluster field 'hosts' must be a positive integer");
  CHECK(message("device.peak_tflops_f16", "\"fast\"") ==
        "cluster field 'device.peak_tflops_f16' must be a number");
  CHECK(message("name", "3") == "cluster field 'name' must be a string");
  CHECK(parse_cluster_json("{\"name\": \"x\", \"hosts\": 1, \"devices_per_host\": 1, "
                           "\"device\": 3}")
            .status()
            .message() == "cluster field 'device' must be an object");
}

TEST_CASE("malformed cluster JSON is reported as such", "[mesh]") {
  Expected<ClusterSpec> c = parse_cluster_json("{\"name\": ");
  REQUIRE_FALSE(c.has_value());
  CHECK(c.status().code() == Errc::kInvalidArgument);
  CHECK(c.status().message().find("cluster JSON is malformed") == 0);
  CHECK(parse_cluster_json("[1, 2]").status().message() == "cluster JSON must be an object");
}

TEST_CASE("wrongly typed and out-of-range cluster fields are errors naming the field", "[mesh]") {
  // The message of a parse that must fail (an exception fails the test case too).
  auto message = [](const std::string& text) {
    Expected<ClusterSpec> c = parse_cluster_json(text);
    REQUIRE_FALSE(c.has_value());
    CHECK(c.status().code() == Errc::kInvalidArgument);
    return c.status().message();
  };
  auto with = [](const std::string& path, const std::string& value) {
    return cluster_json("", path, value);
  };
  const std::string positive_int = "must be a positive integer";
  for (const char* count :
       {"2147483648", "4294967297", "18446744073709551615", "18446744073709551616", "-2147483649",
        "-1", "null", "[2]", "{}", "true", "2.0"}) {
    INFO(count);
    CHECK(message(with("hosts", count)) == "cluster field 'hosts' " + positive_int);
    CHECK(message(with("devices_per_host", count)) ==
          "cluster field 'devices_per_host' " + positive_int);
  }
  CHECK(message(with("name", "null")) == "cluster field 'name' must be a string");
  CHECK(message(with("name", "[\"a\"]")) == "cluster field 'name' must be a string");
  CHECK(message(with("device.kind", "5")) == "cluster field 'device.kind' must be a string");
  CHECK(message(with("device.memory_gib", "\"16\"")) ==
        "cluster field 'device.memory_gib' must be a number");
  CHECK(message(with("device.memory_gib", "1e300")) ==
        "cluster field 'device.memory_gib' must be a positive number");
  CHECK(message(with("device.peak_tflops_f32", "1e300")) ==
        "cluster field 'device.peak_tflops_f32' must be a positive number");
  CHECK(message(with("device.memory_bandwidth_gb_s", "false")) ==
        "cluster field 'device.memory_bandwidth_gb_s' must be a number");
  CHECK(message(with("intra_host.bandwidth_gb_s", "{}")) ==
        "cluster field 'intra_host.bandwidth_gb_s' must be a number");
  CHECK(message(with("inter_host.latency_us", "[20]")) ==
        "cluster field 'inter_host.latency_us' must be a number");
  CHECK(message(with("inter_host.latency_us", "null")) ==
        "cluster field 'inter_host.latency_us' must be a number");
  // A number too large for a double is a syntax error of the JSON.
  CHECK(message(with("device.memory_gib", "1e400")).find("cluster JSON is malformed") == 0);
}

TEST_CASE("a cluster JSON of the wrong structure is an error naming the field", "[mesh]") {
  auto message = [](const std::string& text) {
    Expected<ClusterSpec> c = parse_cluster_json(text);
    REQUIRE_FALSE(c.has_value());
    return c.status().message();
  };
  const std::string valid = cluster_json();
  // An object field given as something else.
  auto replace_group = [&](const std::string& name, const std::string& value) {
    std::string t = valid;
    const size_t at = t.find("\"" + name + "\": {");
    REQUIRE(at != std::string::npos);
    const size_t end = t.find('}', at);
    return t.replace(at, end + 1 - at, "\"" + name + "\": " + value);
  };
  CHECK(message(replace_group("device", "[\"V100\", 16]")) ==
        "cluster field 'device' must be an object");
  CHECK(message(replace_group("intra_host", "[130, 5]")) ==
        "cluster field 'intra_host' must be an object");
  CHECK(message(replace_group("inter_host", "\"ethernet\"")) ==
        "cluster field 'inter_host' must be an object");
  CHECK(message(replace_group("inter_host", "null")) ==
        "cluster field 'inter_host' must be an object");
  for (const char* root : {"null", "3", "\"cpu\"", "[]", "[" /* malformed */, ""}) {
    INFO(root);
    const std::string m = message(root);
    CHECK((m == "cluster JSON must be an object" || m.find("cluster JSON is malformed") == 0));
  }
  CHECK(message("[" + valid + "]") == "cluster JSON must be an object");
  CHECK(message("{}") == "cluster field 'name' is missing");
}

TEST_CASE("fields a cluster JSON does not know are errors naming them", "[mesh]") {
  // src/mesh/README.md: every field is required, a field the format does not know is an error.
  std::string t = cluster_json();
  t.insert(1, "\"comment\": {\"by\": \"hand\"}, ");
  Expected<ClusterSpec> c = parse_cluster_json(t);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.status().message() == "cluster field 'comment' is not a known field");
  t = cluster_json();
  t.replace(t.find("\"device\": {"), 11, "\"device\": {\"vendor\": \"nvidia\", ");
  c = parse_cluster_json(t);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.status().message() == "cluster field 'device.vendor' is not a known field");
}

TEST_CASE("a cluster's size and names are bounded", "[mesh]") {
  ClusterSpec c = *cluster_preset("cpu:1x2");
  c.hosts = static_cast<int32_t>(kMaxClusterDevices);  // x 2 devices
  CHECK(c.validate().code() == Errc::kOutOfRange);
  CHECK(c.validate().message().find("more than the 1024") != std::string::npos);
  c.hosts = static_cast<int32_t>(kMaxClusterDevices / 2);
  CHECK(c.validate().is_ok());
  c.name = "red\x1b[31m";
  CHECK(c.validate().message() ==
        "cluster field 'name' holds control characters or bytes that are not UTF-8: "
        "'red\\x1b[31m'");
  c.name = std::string(257, 'x');
  CHECK(c.validate().message().find("more than the 256 allowed") != std::string::npos);
  c.name = "ok";
  c.device.kind = "\xff";
  CHECK(c.validate().message().find("'device.kind'") != std::string::npos);
  CHECK_FALSE(cluster_preset("dgx-h100:1000000").has_value());
}

TEST_CASE("validate names the bad field of a cluster built in code", "[mesh]") {
  ClusterSpec c = *cluster_preset("p3.16xlarge:2");
  CHECK(c.validate().is_ok());
  ClusterSpec bad = c;
  bad.inter_host.latency = Seconds(-1.0);
  CHECK(bad.validate().message().find("'inter_host.latency_us'") != std::string::npos);
  bad = c;
  bad.device.memory_bandwidth = 0.0;
  CHECK(bad.validate().message().find("'device.memory_bandwidth_gb_s'") != std::string::npos);
  bad = c;
  bad.devices_per_host = 12;
  CHECK(bad.validate().message().find("power of two") != std::string::npos);
  bad = c;
  bad.hosts = 0;
  CHECK(bad.validate().message().find("'hosts'") != std::string::npos);
}

TEST_CASE("cluster JSON round trips exactly", "[mesh]") {
  std::vector<ClusterSpec> clusters;
  for (const char* spec : {"p3.16xlarge:4", "dgx-h100:2", "cpu", "cpu:2x2"}) {
    clusters.push_back(*cluster_preset(spec));
  }
  clusters.push_back(*parse_cluster_json(cluster_json()));
  clusters.push_back(
      *parse_cluster_json(cluster_json("", "inter_host.latency_us", "0.1234567890123")));
  clusters.push_back(*parse_cluster_json(
      cluster_json("", "device.peak_tflops_f32", "0.333333333333333314829616256247")));
  clusters.push_back(*parse_cluster_json(cluster_json("", "device.memory_gib", "0.7")));
  for (const ClusterSpec& c : clusters) {
    Expected<ClusterSpec> back = parse_cluster_json(cluster_to_json(c));
    REQUIRE(back.has_value());
    CHECK(*back == c);
    CHECK(cluster_to_json(*back) == cluster_to_json(c));
  }
}

TEST_CASE("a cluster file loads, and file errors name the path", "[mesh]") {
  Expected<ClusterSpec> file = load_cluster_file(kDataFile);
  REQUIRE(file.has_value());
  CHECK(*file == *cluster_preset("p3.16xlarge:2"));

  Expected<ClusterSpec> missing = load_cluster_file("/nonexistent/cluster_none.json");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().code() == Errc::kNotFound);
  CHECK(missing.status().message().find("/nonexistent/cluster_none.json") != std::string::npos);

  const std::filesystem::path tmp =
      std::filesystem::temp_directory_path() / "meshpipe_cluster_test_bad.json";
  std::ofstream(tmp) << cluster_json(/*skip=*/"inter_host.latency_us");
  Expected<ClusterSpec> bad = load_cluster_file(tmp.string());
  std::filesystem::remove(tmp);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().message() ==
        "cluster file '" + tmp.string() + "': cluster field 'inter_host.latency_us' is missing");
}

TEST_CASE("resolve_cluster takes a preset or an existing file", "[mesh]") {
  CHECK(*resolve_cluster("dgx-h100:4") == *cluster_preset("dgx-h100:4"));
  CHECK(*resolve_cluster(kDataFile) == *cluster_preset("p3.16xlarge:2"));
  Expected<ClusterSpec> no_file = resolve_cluster("configs/missing.json");
  REQUIRE_FALSE(no_file.has_value());
  CHECK(no_file.status().code() == Errc::kNotFound);
  CHECK(no_file.status().message().find("configs/missing.json") != std::string::npos);
  Expected<ClusterSpec> no_preset = resolve_cluster("tpu-v4");
  REQUIRE_FALSE(no_preset.has_value());
  CHECK(no_preset.status().message().find("dgx-h100[:HOSTS]") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::mesh

// ClusterSpec: validation, the JSON form (field-named errors, exact round trip) and the presets.
#include "mesh/cluster.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/files.h"
#include "core/json.h"

namespace meshpipe::mesh {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kGB = 1e9;
constexpr double kTera = 1e12;
constexpr double kMicro = 1e6;  // microseconds per second

// JSON units -> SI. Latency divides (5 us -> 5 / 1e6 is the double nearest 5e-6); the others
// multiply by an exactly representable scale.
double tera_to_si(double x) { return x * kTera; }
double giga_to_si(double x) { return x * kGB; }
double us_to_seconds(double x) { return x / kMicro; }

// The JSON number y with forward(y) == v, searched a few ulps around the naive inverse. Any
// value that came out of forward() has such a y, so parse(to_json(c)) == c for every cluster
// that was parsed or built from a preset; other values get the nearest candidate.
template <class Forward>
double json_inverse(double v, double naive, Forward forward) {
  double lo = naive;
  double hi = naive;
  for (int i = 0; i < 8; ++i) {
    if (forward(lo) == v) return lo;
    if (forward(hi) == v) return hi;
    lo = std::nextafter(lo, -std::numeric_limits<double>::infinity());
    hi = std::nextafter(hi, std::numeric_limits<double>::infinity());
  }
  return naive;
}

constexpr const char* kSubject = "cluster field";

Status field_error(const std::string& path, const char* what) {
  return json_field_error(kSubject, path, what);
}

// A count: an integer in [1, 2^31 - 1]; anything else (a string, 1.5, 0, 2^40) is named with
// one message.
Status read_count(JsonReader& r, const char* key, int32_t* out) {
  const Json* v = nullptr;
  MP_RETURN_IF_ERROR(r.find(key, &v));
  int64_t x = 0;
  if (!read_json(*v, kSubject, r.path_of(key), &x).is_ok() || x < 1 ||
      x > std::numeric_limits<int32_t>::max()) {
    return r.error(key, "must be a positive integer");
  }
  *out = static_cast<int32_t>(x);
  return Status::ok();
}

// An object of two numbers: GB/s and microseconds.
Status read_link(JsonReader& root, const char* key, LinkSpec* link) {
  const Json* o = nullptr;
  MP_RETURN_IF_ERROR(root.object(key, &o));
  JsonReader r(*o, root.path_of(key), kSubject);
  double bandwidth_gb_s = 0.0;
  double latency_us = 0.0;
  MP_RETURN_IF_ERROR(r.read("bandwidth_gb_s", &bandwidth_gb_s));
  MP_RETURN_IF_ERROR(r.read("latency_us", &latency_us));
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  link->bandwidth = giga_to_si(bandwidth_gb_s);
  link->latency = Seconds(us_to_seconds(latency_us));
  return Status::ok();
}

// Every field is required; a field the format does not know is an error (a misspelt name is
// not silently ignored).
Status parse_json_object(const Json& root, ClusterSpec* c) {
  if (!root.is_object()) {
    return make_error(Errc::kInvalidArgument, "cluster JSON must be an object");
  }
  JsonReader r(root, "", kSubject);
  MP_RETURN_IF_ERROR(r.read("name", &c->name));
  MP_RETURN_IF_ERROR(read_count(r, "hosts", &c->hosts));
  MP_RETURN_IF_ERROR(read_count(r, "devices_per_host", &c->devices_per_host));
  const Json* dev = nullptr;
  MP_RETURN_IF_ERROR(r.object("device", &dev));
  JsonReader d(*dev, "device", kSubject);
  double memory_gib = 0.0;
  double f32 = 0.0;
  double f16 = 0.0;
  double mem_bw = 0.0;
  MP_RETURN_IF_ERROR(d.read("kind", &c->device.kind));
  MP_RETURN_IF_ERROR(d.read("memory_gib", &memory_gib));
  MP_RETURN_IF_ERROR(d.read("peak_tflops_f32", &f32));
  MP_RETURN_IF_ERROR(d.read("peak_tflops_f16", &f16));
  MP_RETURN_IF_ERROR(d.read("memory_bandwidth_gb_s", &mem_bw));
  MP_RETURN_IF_ERROR(d.check_no_unknown_fields());
  if (!(memory_gib > 0.0) || memory_gib * kGiB > 9.0e18) {
    return field_error("device.memory_gib", "must be a positive number");
  }
  c->device.memory = Bytes(std::llround(memory_gib * kGiB));
  c->device.peak_flops_f32 = tera_to_si(f32);
  c->device.peak_flops_f16 = tera_to_si(f16);
  c->device.memory_bandwidth = giga_to_si(mem_bw);
  MP_RETURN_IF_ERROR(read_link(r, "intra_host", &c->intra_host));
  MP_RETURN_IF_ERROR(read_link(r, "inter_host", &c->inter_host));
  if (const Json* profile = r.find_optional("profile")) {
    auto p = parse_device_profile(profile->dump());
    if (!p.has_value()) return p.status().with_context("cluster field 'profile'");
    c->profile = std::make_shared<const DeviceProfile>(std::move(*p));
  }
  return r.check_no_unknown_fields();
}

bool is_power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

Status check_positive(double v, const char* path) {
  if (!(v > 0.0) || !std::isfinite(v)) return field_error(path, "must be a positive number");
  return Status::ok();
}

Status check_link(const LinkSpec& link, const std::string& name) {
  MP_RETURN_IF_ERROR(check_positive(link.bandwidth, (name + ".bandwidth_gb_s").c_str()));
  const double lat = link.latency.value();
  if (!(lat >= 0.0) || !std::isfinite(lat)) {
    return field_error(name + ".latency_us", "must be a non-negative number");
  }
  return Status::ok();
}

// Parses a positive decimal integer that fills `text` exactly.
bool parse_count(std::string_view text, int32_t* out) {
  if (text.empty()) return false;
  int32_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v < 1) return false;
  *out = v;
  return true;
}

// A preset's figures in the JSON units (GiB, TFLOP/s, GB/s, us).
struct PresetFigures {
  const char* kind;
  int32_t devices_per_host;
  double memory_gib;
  double tflops_f32;
  double tflops_f16;
  double memory_gb_s;
  double intra_gb_s;
  double intra_us;
  double inter_gb_s;
  double inter_us;
};

// Builds a preset through the same conversions as the parser, so that cluster_to_json of a
// preset round-trips exactly.
ClusterSpec make_preset(std::string name, int32_t hosts, const PresetFigures& f) {
  ClusterSpec c;
  c.name = std::move(name);
  c.hosts = hosts;
  c.devices_per_host = f.devices_per_host;
  c.device.kind = f.kind;
  c.device.memory = Bytes(std::llround(f.memory_gib * kGiB));
  c.device.peak_flops_f32 = tera_to_si(f.tflops_f32);
  c.device.peak_flops_f16 = tera_to_si(f.tflops_f16);
  c.device.memory_bandwidth = giga_to_si(f.memory_gb_s);
  c.intra_host = {giga_to_si(f.intra_gb_s), Seconds(us_to_seconds(f.intra_us))};
  c.inter_host = {giga_to_si(f.inter_gb_s), Seconds(us_to_seconds(f.inter_us))};
  return c;
}

// Names are printed on terminals and in tables: printable text of a bounded length.
Status check_name(const std::string& value, std::string_view field) {
  if (value.size() > 256) {
    return make_error(Errc::kInvalidArgument,
                      "cluster field '{}' is {} bytes long, more than the 256 allowed", field,
                      value.size());
  }
  if (printable(value) != value || value.find_first_of("\n\t") != std::string::npos) {
    return make_error(Errc::kInvalidArgument,
                      "cluster field '{}' holds control characters or bytes that are not UTF-8: "
                      "'{}'",
                      field, printable(value));
  }
  return Status::ok();
}

Status preset_error(const std::string& spec, const std::string& why) {
  return make_error(Errc::kInvalidArgument,
                    "bad cluster preset '{}': {}; presets are p3.16xlarge[:HOSTS], "
                    "dgx-h100[:HOSTS] and cpu[:HOSTSxDEVICES]",
                    spec, why);
}

}  // namespace

Status ClusterSpec::validate() const {
  if (hosts < 1) return field_error("hosts", "must be a positive integer");
  if (devices_per_host < 1) return field_error("devices_per_host", "must be a positive integer");
  if (!is_power_of_two(devices_per_host)) {
    return make_error(Errc::kInvalidArgument,
                      "cluster field 'devices_per_host' must be a power of two, not {}",
                      devices_per_host);
  }
  if (static_cast<int64_t>(hosts) * devices_per_host > kMaxClusterDevices) {
    return make_error(Errc::kOutOfRange,
                      "the cluster has {} x {} = {} devices, more than the {} meshpipe plans for "
                      "(the planner's search grows with the device count; larger clusters are "
                      "not supported)",
                      hosts, devices_per_host, static_cast<int64_t>(hosts) * devices_per_host,
                      kMaxClusterDevices);
  }
  MP_RETURN_IF_ERROR(check_name(name, "name"));
  MP_RETURN_IF_ERROR(check_name(device.kind, "device.kind"));
  if (device.memory.value() <= 0) {
    return field_error("device.memory_gib", "must be a positive number");
  }
  MP_RETURN_IF_ERROR(check_positive(device.peak_flops_f32, "device.peak_tflops_f32"));
  MP_RETURN_IF_ERROR(check_positive(device.peak_flops_f16, "device.peak_tflops_f16"));
  MP_RETURN_IF_ERROR(check_positive(device.memory_bandwidth, "device.memory_bandwidth_gb_s"));
  MP_RETURN_IF_ERROR(check_link(intra_host, "intra_host"));
  MP_RETURN_IF_ERROR(check_link(inter_host, "inter_host"));
  return Status::ok();
}

Expected<ClusterSpec> parse_cluster_json(const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json root, parse_json(text, "cluster JSON"));
  ClusterSpec c;
  MP_RETURN_IF_ERROR(parse_json_object(root, &c));
  MP_RETURN_IF_ERROR(c.validate());
  return c;
}

Expected<ClusterSpec> load_cluster_file(const std::string& path) {
  MP_ASSIGN_OR_RETURN(const std::string text, read_text_file(path, "cluster file"));
  Expected<ClusterSpec> c = parse_cluster_json(text);
  if (!c) return c.status().with_context(fmt::format("cluster file '{}'", path));
  return c;
}

std::string cluster_to_json(const ClusterSpec& c) {
  const auto tera_inv = [](double v) { return json_inverse(v, v / kTera, tera_to_si); };
  const auto giga_inv = [](double v) { return json_inverse(v, v / kGB, giga_to_si); };
  const auto us_inv = [](double v) { return json_inverse(v, v * kMicro, us_to_seconds); };
  // Unordered: the fields come out sorted by name, as they always have.
  nlohmann::json j;
  j["name"] = c.name;
  j["hosts"] = c.hosts;
  j["devices_per_host"] = c.devices_per_host;
  j["device"] = {
      {"kind", c.device.kind},
      {"memory_gib", static_cast<double>(c.device.memory.value()) / kGiB},
      {"peak_tflops_f32", tera_inv(c.device.peak_flops_f32)},
      {"peak_tflops_f16", tera_inv(c.device.peak_flops_f16)},
      {"memory_bandwidth_gb_s", giga_inv(c.device.memory_bandwidth)},
  };
  j["intra_host"] = {{"bandwidth_gb_s", giga_inv(c.intra_host.bandwidth)},
                     {"latency_us", us_inv(c.intra_host.latency.value())}};
  j["inter_host"] = {{"bandwidth_gb_s", giga_inv(c.inter_host.bandwidth)},
                     {"latency_us", us_inv(c.inter_host.latency.value())}};
  if (c.profile != nullptr)
    j["profile"] = nlohmann::json::parse(device_profile_to_json(*c.profile));
  return j.dump(2);
}

// Preset figures (JSON units: GiB, TFLOP/s, GB/s, us):
//  p3.16xlarge (AWS; Alpa's testbed, paper §8): 8x V100-SXM2-16GB. 15.7 TFLOP/s f32 and 125
//    TFLOP/s f16 tensor core, 900 GB/s HBM2 (NVIDIA V100 datasheet). NVLink bus bandwidth ~130
//    GB/s with ~5 us latency (nccl-tests all-reduce busbw on a V100 hybrid cube-mesh);
//    25 Gbps Ethernet between hosts = 3.125 GB/s, ~20 us (AWS instance page).
//  dgx-h100 (NVIDIA DGX H100 user guide, H100 SXM datasheet): 8x H100-SXM-80GB (taken as
//    80 GiB), 67 TFLOP/s f32, 989 TFLOP/s f16 dense, 3.35 TB/s HBM3. NVLink 4 bus bandwidth
//    ~450 GB/s, ~3 us; one 400 Gbps InfiniBand NDR port per GPU, 8 per host = 400 GB/s per
//    host, ~5 us.
//  cpu: virtual CPU devices of a 2-core machine (a modelling assumption, not a measurement):
//    4 GiB each, 50 GFLOP/s in f32 and f16, 10 GB/s memory; 5 GB/s at 20 us inside a host
//    (shared memory), 1.5 GB/s at 50 us between hosts (processes on loopback).
Expected<ClusterSpec> cluster_preset(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string base = spec.substr(0, colon);
  const bool has_arg = colon != std::string::npos;
  const std::string_view arg =
      has_arg ? std::string_view(spec).substr(colon + 1) : std::string_view();
  int32_t hosts = 1;
  if (base == "p3.16xlarge" || base == "dgx-h100") {
    if (has_arg && !parse_count(arg, &hosts)) {
      return preset_error(spec, "the host count must be a positive integer");
    }
  }
  ClusterSpec c;
  if (base == "p3.16xlarge") {
    c = make_preset(fmt::format("p3.16xlarge:{}", hosts), hosts,
                    {.kind = "V100-SXM2-16GB",
                     .devices_per_host = 8,
                     .memory_gib = 16,
                     .tflops_f32 = 15.7,
                     .tflops_f16 = 125,
                     .memory_gb_s = 900,
                     .intra_gb_s = 130,
                     .intra_us = 5,
                     .inter_gb_s = 3.125,
                     .inter_us = 20});
  } else if (base == "dgx-h100") {
    c = make_preset(fmt::format("dgx-h100:{}", hosts), hosts,
                    {.kind = "H100-SXM-80GB",
                     .devices_per_host = 8,
                     .memory_gib = 80,
                     .tflops_f32 = 67,
                     .tflops_f16 = 989,
                     .memory_gb_s = 3350,
                     .intra_gb_s = 450,
                     .intra_us = 3,
                     .inter_gb_s = 400,
                     .inter_us = 5});
  } else if (base == "cpu") {
    int32_t per_host = 2;
    if (has_arg) {
      const size_t x = arg.find('x');
      if (x == std::string_view::npos || !parse_count(arg.substr(0, x), &hosts) ||
          !parse_count(arg.substr(x + 1), &per_host)) {
        return preset_error(spec, "cpu takes HOSTSxDEVICES, e.g. cpu:2x2");
      }
    }
    c = make_preset(fmt::format("cpu:{}x{}", hosts, per_host), hosts,
                    {.kind = "cpu",
                     .devices_per_host = per_host,
                     .memory_gib = 4,
                     .tflops_f32 = 0.05,
                     .tflops_f16 = 0.05,
                     .memory_gb_s = 10,
                     .intra_gb_s = 5,
                     .intra_us = 20,
                     .inter_gb_s = 1.5,
                     .inter_us = 50});
  } else {
    return preset_error(spec, "unknown preset");
  }
  Status valid = c.validate();
  if (!valid.is_ok()) return preset_error(spec, valid.message());
  return c;
}

std::vector<std::string> cluster_preset_names() { return {"p3.16xlarge", "dgx-h100", "cpu"}; }

Expected<ClusterSpec> resolve_cluster(const std::string& preset_or_path) {
  // Anything at that path is read as a file (which refuses what is not a regular one).
  std::error_code ec;
  if (std::filesystem::exists(preset_or_path, ec)) return load_cluster_file(preset_or_path);
  Expected<ClusterSpec> preset = cluster_preset(preset_or_path);
  if (preset) return preset;
  const bool looks_like_path =
      preset_or_path.find('/') != std::string::npos || preset_or_path.ends_with(".json");
  if (looks_like_path) {
    return make_error(Errc::kNotFound, "cluster file '{}' does not exist", preset_or_path);
  }
  return preset.status();
}

}  // namespace meshpipe::mesh

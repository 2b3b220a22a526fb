// ClusterSpec: hosts x devices per host, what each device can do, and the links between them.
// Loaded from JSON (errors name the field) or from presets ("p3.16xlarge:4", "dgx-h100:2",
// "cpu:2x2").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/units.h"
#include "mesh/device_profile.h"

namespace meshpipe::mesh {

/// One accelerator (every device of a cluster is the same kind).
struct DeviceSpec {
  std::string kind;               ///< "V100-SXM2-16GB", "H100-SXM-80GB", "cpu"
  Bytes memory;                   ///< usable device memory
  double peak_flops_f32 = 0.0;    ///< FLOP/s
  double peak_flops_f16 = 0.0;    ///< FLOP/s (tensor cores); bf16 uses the same figure
  double memory_bandwidth = 0.0;  ///< bytes/s

  friend bool operator==(const DeviceSpec&, const DeviceSpec&) = default;
};

/// A class of link, in bytes/s and seconds. Inside a host, `bandwidth` is what one device sees in
/// a ring collective (NCCL's "bus bandwidth"); between hosts it is a host's whole network
/// bandwidth, shared by the concurrent cross-host collectives of that host's devices (see
/// make_logical_mesh). `latency` is the fixed cost of one collective step.
struct LinkSpec {
  double bandwidth = 0.0;  ///< bytes/s
  Seconds latency;

  friend bool operator==(const LinkSpec&, const LinkSpec&) = default;
};

/// A homogeneous cluster: `hosts` machines with `devices_per_host` devices each.
struct ClusterSpec {
  std::string name;
  int32_t hosts = 1;
  int32_t devices_per_host = 1;
  DeviceSpec device;
  LinkSpec intra_host;  ///< between devices of one host (NVLink, shared memory)
  LinkSpec inter_host;  ///< between hosts (network, per host)
  /// What these devices were measured to do (`meshpipe profile`), or none: the cost model
  /// (runtime::cost_model_for) prices with it where it has tables. Shared, never modified.
  std::shared_ptr<const DeviceProfile> profile;

  int32_t num_devices() const { return hosts * devices_per_host; }
  /// Positive sizes, memory, FLOP/s and bandwidths; devices_per_host a power of two.
  Status validate() const;

  /// Equal fields, and equal profiles (both absent, or the same measurements).
  friend bool operator==(const ClusterSpec& a, const ClusterSpec& b) {
    const bool same_profile =
        a.profile == b.profile ||
        (a.profile != nullptr && b.profile != nullptr && *a.profile == *b.profile);
    return a.name == b.name && a.hosts == b.hosts && a.devices_per_host == b.devices_per_host &&
           a.device == b.device && a.intra_host == b.intra_host && a.inter_host == b.inter_host &&
           same_profile;
  }
};

/// The most devices (hosts x devices_per_host) a cluster may have: the planner's search grows
/// with the device count (gpt-tiny on 4096 devices took 196 s to plan on two cores), and the
/// project's targets stop at 256 GPUs.
inline constexpr int64_t kMaxClusterDevices = 1024;

/// Parses the JSON form (see cluster_to_json). Every field is required; an error names the
/// missing or bad field, e.g. "cluster field 'device.memory_gib' must be a positive number".
///
///   {"name": "my-cluster", "hosts": 2, "devices_per_host": 8,
///    "device": {"kind": "V100", "memory_gib": 16, "peak_tflops_f32": 15.7,
///               "peak_tflops_f16": 125, "memory_bandwidth_gb_s": 900},
///    "intra_host": {"bandwidth_gb_s": 130, "latency_us": 5},
///    "inter_host": {"bandwidth_gb_s": 3.125, "latency_us": 20}}
///
/// and optionally "profile": a DeviceProfile in its JSON form (mesh/device_profile.h).
/// (GB = 1e9 bytes; GiB = 2^30 bytes.)
Expected<ClusterSpec> parse_cluster_json(const std::string& text);

/// Reads and parses a JSON file; the error names the path.
Expected<ClusterSpec> load_cluster_file(const std::string& path);

/// The JSON form; parse_cluster_json(cluster_to_json(c)) == c.
std::string cluster_to_json(const ClusterSpec& c);

/// A preset: "p3.16xlarge[:hosts]" (8x V100 16 GB, NVLink, 25 Gbps between hosts: Alpa's
/// testbed), "dgx-h100[:hosts]" (8x H100 80 GB, NVLink 4, 400 Gbps InfiniBand per GPU), or
/// "cpu[:HOSTSxDEVICES]" (virtual CPU devices of this machine; default 1x2). The error lists
/// the presets.
Expected<ClusterSpec> cluster_preset(const std::string& spec);

/// Names of the presets, for help texts.
std::vector<std::string> cluster_preset_names();

/// A preset spec (see cluster_preset) or, when it names an existing file, a JSON cluster file.
Expected<ClusterSpec> resolve_cluster(const std::string& preset_or_path);

}  // namespace meshpipe::mesh

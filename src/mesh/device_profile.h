// DeviceProfile: what the devices of a cluster were measured to do (`meshpipe profile`): GEMM and
// memory-bound kernel times, the slowdown when several devices compute at once on shared cores,
// the runtime's fixed cost per op, collectives per group size and link, point-to-point transfers.
// A ClusterSpec may carry one; the cost model then prices with it (planner/cost_model.h).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/op_kind.h"
#include "core/status.h"
#include "mesh/collective_kind.h"

namespace meshpipe::mesh {

/// Measured points (x, seconds), sorted by x; x >= 0, seconds >= 0.
using ProfileTable = std::vector<std::pair<double, double>>;

/// The measurements. Every table is optional: where one is missing, the analytic model answers.
struct DeviceProfile {
  std::string source;                ///< where and when it was measured (free text)
  double op_overhead_seconds = 0.0;  ///< the runtime's fixed cost of one op, kernel aside
  /// Devices computing at once on the measured machine -> slowdown of each (1 = none).
  ProfileTable concurrency;
  std::map<DType, ProfileTable> gemm;  ///< matmul FLOPs -> seconds
  /// Measured GEMMs by shape: (m, n, k, seconds) of one (m x k) . (k x n) product, over the
  /// product of a few sizes per dim (the cost model interpolates in log-size).
  std::map<DType, std::vector<std::array<double, 4>>> gemm_grid;
  std::map<DType, ProfileTable> memory_bound;  ///< bytes moved by other kernels -> seconds
  /// Per op kind: measured time of its kernels over what the tables above predict for them
  /// (transcendental elementwise ops, normalisations and batched small GEMMs run well below
  /// the rate of an add or a square GEMM). Fitted on measured training steps.
  std::map<OpKind, double> kind_factors;
  /// (kind, group size, crosses hosts) -> per-device bytes (as collective_cost counts them) ->
  /// seconds.
  std::map<std::tuple<CollectiveKind, int64_t, bool>, ProfileTable> collectives;
  std::map<bool, ProfileTable> transfers;  ///< crosses hosts -> bytes -> seconds (one message)

  friend bool operator==(const DeviceProfile&, const DeviceProfile&) = default;
};

/// Parses the JSON form (all fields optional; unknown fields are errors naming them):
///
///   {"source": "2-core Xeon, 2026-12-03", "op_overhead_seconds": 4e-6,
///    "concurrency": [[1, 1.0], [4, 2.1]],
///    "gemm": {"f32": [[flops, seconds], ...]},
///    "gemm_grid": {"f32": [[m, n, k, seconds], ...]},
///    "memory_bound": {"f32": [[bytes, seconds], ...]},
///    "kind_factors": {"gelu": 9.5, "dot": 1.4, ...},
///    "collectives": [{"kind": "all-reduce", "group": 2, "link": "intra",
///                     "points": [[bytes, seconds], ...]}, ...],
///    "transfers": [{"link": "inter", "points": [[bytes, seconds], ...]}]}
///
/// Errors name the field ("profile field 'gemm.f99' is not a dtype").
Expected<DeviceProfile> parse_device_profile(const std::string& json_text);
/// Reads a file and parses it (errors name the file).
Expected<DeviceProfile> load_device_profile(const std::string& path);
/// The JSON form; parse_device_profile(device_profile_to_json(p)) == p.
std::string device_profile_to_json(const DeviceProfile& p);

}  // namespace meshpipe::mesh

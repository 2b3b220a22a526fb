// Physical submeshes of a cluster and their 2-D logical views with per-axis alpha-beta costs.
//
//   physical submesh (hosts=2, devices_per_host=4)   logical mesh (d0=4, d1=2)
//     host 0: d0 d1 d2 d3                              row i0 = devices [2*i0, 2*i0+1]
//     host 1: d4 d5 d6 d7                              axis 1 groups: {0,1} {2,3} ... (in a host)
//                                                      axis 0 groups: {0,2,4,6} {1,3,5,7} (across)
// Devices are numbered host-major; logical (i0, i1) is submesh device i0 * d1 + i1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mesh/cluster.h"

namespace meshpipe::mesh {

/// Shape of a physical submesh: `hosts` whole hosts, or one host's `devices_per_host` devices.
struct SubmeshShape {
  int32_t hosts = 1;
  int32_t devices_per_host = 1;

  int32_t num_devices() const { return hosts * devices_per_host; }
  std::string to_string() const;  ///< "(1, 4)"
  friend bool operator==(const SubmeshShape&, const SubmeshShape&) = default;
  friend auto operator<=>(const SubmeshShape&, const SubmeshShape&) = default;
};

/// Which submesh shapes the inter-op pass may use (docs/algorithms.md §2.2).
enum class SubmeshSpace : uint8_t {
  kPowerOfTwo,       ///< (1,1), (1,2), ..., (1,M), then (2,M), (4,M), ... up to N hosts
  kSmallPowerOfTwo,  ///< as kPowerOfTwo but at most 4 hosts
  kAll,              ///< (1,1) ... (1,M) powers of two, then (2,M), (3,M), ..., (N,M)
};

/// The submesh shapes of a cluster, smallest first.
std::vector<SubmeshShape> submesh_shapes(const ClusterSpec& c, SubmeshSpace space);

/// A 2-D logical view (d0, d1) of a submesh with d0 * d1 devices, and the alpha (seconds per
/// collective) and beta (seconds per byte) of a collective along each axis. An axis whose groups
/// stay inside a host uses the intra-host link; one whose groups cross hosts uses the inter-host
/// link, whose bandwidth is shared by the groups that leave a host at the same time (a (2, 8)
/// view of two 8-device hosts runs 8 cross-host groups per host: beta = 8 / bandwidth); an
/// axis of size 1 costs nothing.
struct LogicalMesh {
  int64_t shape[2] = {1, 1};
  double alpha[2] = {0.0, 0.0};
  double beta[2] = {0.0, 0.0};

  int64_t size(int axis) const { return shape[axis]; }
  int64_t num_devices() const { return shape[0] * shape[1]; }
  std::string to_string() const;  ///< "(2, 4)"
  friend bool operator==(const LogicalMesh&, const LogicalMesh&) = default;
};

/// A logical mesh of shape (d0, d1) over a submesh; an error unless d0 * d1 = its devices.
Expected<LogicalMesh> make_logical_mesh(const ClusterSpec& c, const SubmeshShape& submesh,
                                        int64_t d0, int64_t d1);

/// A logical mesh with the given shape and explicit alpha/beta (tests, profiled meshes).
LogicalMesh logical_mesh(int64_t d0, int64_t d1, double alpha0 = 1e-5, double beta0 = 1e-9,
                         double alpha1 = 1e-5, double beta1 = 1e-9);

/// Every logical shape (d0, d1) with d0 * d1 = devices of the submesh and d1 <= devices per host
/// (docs/algorithms.md §2.3, "single node model parallel"), d1 ascending: (D, 1), (D/2, 2), ...
std::vector<LogicalMesh> logical_meshes(const ClusterSpec& c, const SubmeshShape& submesh);

}  // namespace meshpipe::mesh

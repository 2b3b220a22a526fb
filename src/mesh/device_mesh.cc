// Submesh shapes of a cluster, and logical meshes whose per-axis alpha/beta come from checking
// which hosts each axis's device groups touch.
#include "mesh/device_mesh.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

namespace meshpipe::mesh {
namespace {

// Submesh-local device index of logical coordinate (i0, i1) on a (d0, d1) view.
int64_t device_of(int64_t i0, int64_t i1, int64_t d1) { return i0 * d1 + i1; }

// The largest number of cross-host groups along `axis` that touch one host: 0 when every group
// stays inside a host. Those groups run at the same time and share the host's network link.
// Devices are numbered host-major, `per_host` to a host.
int64_t cross_host_flows(int64_t d0, int64_t d1, int axis, int64_t per_host) {
  const int64_t groups = axis == 0 ? d1 : d0;
  const int64_t members = axis == 0 ? d0 : d1;
  std::map<int64_t, int64_t> flows;  // host -> crossing groups touching it
  for (int64_t g = 0; g < groups; ++g) {
    std::set<int64_t> hosts;
    for (int64_t k = 0; k < members; ++k) {
      const int64_t dev = axis == 0 ? device_of(k, g, d1) : device_of(g, k, d1);
      hosts.insert(dev / per_host);
    }
    if (hosts.size() < 2) continue;
    for (int64_t h : hosts) ++flows[h];
  }
  int64_t most = 0;
  for (const auto& [h, n] : flows) most = std::max(most, n);
  return most;
}

}  // namespace

std::string SubmeshShape::to_string() const {
  return fmt::format("({}, {})", hosts, devices_per_host);
}

std::string LogicalMesh::to_string() const { return fmt::format("({}, {})", shape[0], shape[1]); }

std::vector<SubmeshShape> submesh_shapes(const ClusterSpec& c, SubmeshSpace space) {
  std::vector<SubmeshShape> out;
  for (int32_t m = 1; m <= c.devices_per_host; m *= 2) out.push_back({1, m});
  const int32_t per_host = c.devices_per_host;
  switch (space) {
    case SubmeshSpace::kPowerOfTwo:
      for (int32_t n = 2; n <= c.hosts; n *= 2) out.push_back({n, per_host});
      break;
    case SubmeshSpace::kSmallPowerOfTwo:
      for (int32_t n = 2; n <= std::min(c.hosts, 4); n *= 2) out.push_back({n, per_host});
      break;
    case SubmeshSpace::kAll:
      for (int32_t n = 2; n <= c.hosts; ++n) out.push_back({n, per_host});
      break;
  }
  return out;
}

Expected<LogicalMesh> make_logical_mesh(const ClusterSpec& c, const SubmeshShape& submesh,
                                        int64_t d0, int64_t d1) {
  if (submesh.hosts < 1 || submesh.devices_per_host < 1 || submesh.hosts > c.hosts ||
      submesh.devices_per_host > c.devices_per_host) {
    return make_error(Errc::kInvalidArgument, "submesh {} does not fit cluster '{}' ({} x {})",
                      submesh.to_string(), c.name, c.hosts, c.devices_per_host);
  }
  if (d0 < 1 || d1 < 1 || d0 * d1 != submesh.num_devices()) {
    return make_error(Errc::kInvalidArgument,
                      "logical mesh ({}, {}) does not have the {} devices of submesh {}", d0, d1,
                      submesh.num_devices(), submesh.to_string());
  }
  LogicalMesh mesh;
  mesh.shape[0] = d0;
  mesh.shape[1] = d1;
  for (int axis = 0; axis < 2; ++axis) {
    if (mesh.shape[axis] == 1) continue;  // no peers: alpha = beta = 0
    const int64_t flows = cross_host_flows(d0, d1, axis, submesh.devices_per_host);
    const LinkSpec& link = flows > 0 ? c.inter_host : c.intra_host;
    mesh.alpha[axis] = link.latency.value();
    mesh.beta[axis] = static_cast<double>(std::max<int64_t>(flows, 1)) / link.bandwidth;
  }
  return mesh;
}

LogicalMesh logical_mesh(int64_t d0, int64_t d1, double alpha0, double beta0, double alpha1,
                         double beta1) {
  LogicalMesh mesh;
  mesh.shape[0] = d0;
  mesh.shape[1] = d1;
  mesh.alpha[0] = alpha0;
  mesh.beta[0] = beta0;
  mesh.alpha[1] = alpha1;
  mesh.beta[1] = beta1;
  return mesh;
}

std::vector<LogicalMesh> logical_meshes(const ClusterSpec& c, const SubmeshShape& submesh) {
  std::vector<LogicalMesh> out;
  const int64_t devices = submesh.num_devices();
  for (int64_t d1 = 1; d1 <= std::min<int64_t>(devices, submesh.devices_per_host); ++d1) {
    if (devices % d1 != 0) continue;
    Expected<LogicalMesh> mesh = make_logical_mesh(c, submesh, devices / d1, d1);
    if (mesh) out.push_back(*mesh);
  }
  return out;
}

}  // namespace meshpipe::mesh

// CostModel: how long collectives, resharding and computation take on a logical mesh. The
// analytic model uses alpha-beta per mesh axis (docs/algorithms.md §1.4) and a roofline for
// compute; a cluster's measured profile (mesh/device_profile.h) overrides it by interpolation.
#pragma once

#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "core/op_attrs.h"
#include "core/op_kind.h"
#include "core/units.h"
#include "mesh/cluster.h"
#include "mesh/resharding.h"
#include "shard/op_layout.h"

namespace meshpipe::planner {

/// Work of one op on one device (shard/op_layout.h: what a layout implies).
using ComputeWork = shard::OpWork;

/// Injected into the planner (docs/style.md rule 3): every time the planner estimates comes from
/// here.
class CostModel {
 public:
  virtual ~CostModel() = default;
  /// Time of one collective along `axis` of `mesh` (bytes as mesh::collective_cost defines).
  virtual Seconds collective(mesh::CollectiveKind kind, int64_t bytes,
                             const mesh::LogicalMesh& mesh, int axis) const = 0;
  /// Time of one op's work on one device.
  virtual Seconds compute(const ComputeWork& work) const = 0;
  /// Scratch the device's kernel of `kind` needs while it runs on input tiles of these shapes
  /// (im2col columns, packed operands): the memory model counts it during the op. 0 unless the
  /// backend is known (runtime::cost_model_for adds the CPU kernels').
  virtual int64_t workspace_bytes(OpKind kind, std::span<const Shape> inputs,
                                  const OpAttrs& attrs) const {
    (void)kind;
    (void)inputs;
    (void)attrs;
    return 0;
  }
  /// What the device's allocator hands out for a request of `bytes` (its rounding): the memory
  /// model counts every buffer at this size. `bytes` unless the backend is known
  /// (runtime::cost_model_for adds the CPU buffer pool's 64-byte blocks).
  virtual int64_t allocation_bytes(int64_t bytes) const { return bytes; }
  /// Time of resharding a tensor from -> to: the steps of mesh::plan_resharding, each priced by
  /// collective().
  Expected<Seconds> resharding(const Shape& shape, DType dtype, const mesh::ShardingSpec& from,
                               const mesh::ShardingSpec& to, const mesh::LogicalMesh& mesh) const;
  /// Time of one point-to-point message of `bytes` over `link` (a stage's activations to the
  /// next mesh): latency + bytes / bandwidth unless measured. `inter_host`: the link between
  /// hosts (for a profile's tables).
  virtual Seconds transfer(int64_t bytes, const mesh::LinkSpec& link, bool inter_host) const {
    (void)inter_host;
    return Seconds(link.latency.value() +
                   (link.bandwidth > 0 ? static_cast<double>(bytes) / link.bandwidth : 0.0));
  }
  /// How much faster compute() runs when only `busy` of the cluster's devices compute at once
  /// than when all do (which compute() assumes): devices that share one machine's cores (a CPU
  /// cluster's virtual devices) run faster while others idle, e.g. in a pipeline's fill and
  /// drain. A factor in (0, 1]; 1 (no effect) unless a measured profile says otherwise.
  virtual double sharing(double busy) const {
    (void)busy;
    return 1.0;
  }
};

/// Alpha-beta collectives (mesh::collective_cost) and a roofline: max(flops / peak,
/// bytes / memory bandwidth), with peak per dtype from the cluster's device.
class AnalyticCostModel : public CostModel {
 public:
  explicit AnalyticCostModel(mesh::DeviceSpec device) : device_(std::move(device)) {}
  Seconds collective(mesh::CollectiveKind kind, int64_t bytes, const mesh::LogicalMesh& mesh,
                     int axis) const override;
  Seconds compute(const ComputeWork& work) const override;
  const mesh::DeviceSpec& device() const { return device_; }

 private:
  mesh::DeviceSpec device_;
};

/// The cluster's measured profile (mesh/device_profile.h) where it has tables, the analytic model
/// elsewhere:
///   compute     (dots: the dtype's GEMM grid at the per-device GEMM's (m, n, k), interpolated
///               in FLOP/s over log2 of each size and clamped to the grid; other matmuls: the
///               "gemm" table at the FLOPs; other ops: its "memory_bound"
///               table at the bytes; else the roofline) x the op kind's factor (where the
///               profile has one) x concurrency + op overhead, where
///               concurrency is the "concurrency" table at the devices that share the measured
///               machine's cores (all of a CPU cluster's devices: its virtual devices are threads
///               of one machine; 1 for accelerators, which compute on their own);
///   collective  the (kind, group size, link) table; all-gather and reduce-scatter without one
///               use all-reduce / 2 (as Alpa does); whether a mesh axis crosses hosts is read
///               from its beta (1 / the cluster's inter-host bandwidth);
///   transfer    the link's "transfers" table.
class ProfiledCostModel : public CostModel {
 public:
  /// `cluster.profile` must be set.
  explicit ProfiledCostModel(mesh::ClusterSpec cluster);
  Seconds collective(mesh::CollectiveKind kind, int64_t bytes, const mesh::LogicalMesh& mesh,
                     int axis) const override;
  Seconds compute(const ComputeWork& work) const override;
  Seconds transfer(int64_t bytes, const mesh::LinkSpec& link, bool inter_host) const override;
  /// The concurrency table at `busy` over its value at all the sharing devices (CPU clusters).
  double sharing(double busy) const override;
  /// The slowdown compute() applies (the concurrency table at the sharing devices; 1 without).
  double concurrency_factor() const { return concurrency_; }

 private:
  /// A dtype's GEMM grid: sizes per dim (ascending) and GFLOP/s at each (m, n, k).
  struct GemmGrid {
    std::vector<double> m, n, k;
    std::vector<double> rate;  ///< FLOP/s, index (im * |n| + in) * |k| + ik
    double seconds(const shard::GemmDims& d) const;
  };

  mesh::ClusterSpec cluster_;
  const mesh::DeviceProfile& profile_;
  AnalyticCostModel analytic_;
  double concurrency_ = 1.0;
  std::map<DType, GemmGrid> grids_;
};

/// Linear interpolation in sorted (x, y) points (extrapolation beyond the ends from the two
/// nearest points; a single point scales proportionally). Exposed for tests.
double interpolate(const std::vector<std::pair<double, double>>& points, double x);

}  // namespace meshpipe::planner

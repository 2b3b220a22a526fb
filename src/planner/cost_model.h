// CostModel: how long collectives, resharding and computation take on a logical mesh. The
// analytic model uses alpha-beta per mesh axis (docs/algorithms.md §1.4) and a roofline for
// compute; a profile database of measured GEMM and collective times overrides it by interpolation.
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

/// Measured times: GEMMs (FLOPs -> seconds per dtype) and collectives ((kind, group size, link)
/// -> bytes -> seconds). Loaded from JSON:
///
///   {"gemm": {"f16": [[flops, seconds], ...], "f32": [...]},
///    "collectives": [{"kind": "all-reduce", "group": 8, "link": "intra",
///                     "points": [[bytes, seconds], ...]}, ...]}
///
/// Times between points are interpolated linearly; beyond the last point, extrapolated from the
/// last two. Missing all-gather or reduce-scatter tables use all-reduce / 2 (as Alpa does).
struct ProfileDatabase {
  std::map<DType, std::vector<std::pair<double, double>>> gemm;
  std::map<std::tuple<mesh::CollectiveKind, int64_t, bool>, std::vector<std::pair<double, double>>>
      collectives;  ///< key: (kind, group size, crosses hosts)
};

/// Parses the JSON form; errors name the field.
Expected<ProfileDatabase> parse_profile_database(const std::string& json_text);
/// Reads a file and parses it.
Expected<ProfileDatabase> load_profile_database(const std::string& path);

/// The profile database where it has data, the analytic model elsewhere. Whether a mesh axis
/// crosses hosts is read from its beta (1 / the cluster's inter-host bandwidth).
class ProfiledCostModel : public CostModel {
 public:
  ProfiledCostModel(mesh::ClusterSpec cluster, ProfileDatabase db);
  Seconds collective(mesh::CollectiveKind kind, int64_t bytes, const mesh::LogicalMesh& mesh,
                     int axis) const override;
  Seconds compute(const ComputeWork& work) const override;

 private:
  mesh::ClusterSpec cluster_;
  ProfileDatabase db_;
  AnalyticCostModel analytic_;
};

/// Linear interpolation in sorted (x, y) points (extrapolation beyond the ends from the two
/// nearest points; a single point scales proportionally). Exposed for tests.
double interpolate(const std::vector<std::pair<double, double>>& points, double x);

}  // namespace meshpipe::planner

// cost_model_for: the analytic model, with the CPU kernels' scratch for CPU devices.
#include "runtime/cost_models.h"

#include "kernels/backend.h"
#include "runtime/buffer_pool.h"

namespace meshpipe::runtime {

namespace {

// The analytic model and, for CPU devices, the scratch of the kernels that run there.
class CpuClusterCostModel final : public planner::CostModel {
 public:
  explicit CpuClusterCostModel(const mesh::DeviceSpec& device) : analytic_(device) {}
  Seconds collective(mesh::CollectiveKind kind, int64_t bytes, const mesh::LogicalMesh& mesh,
                     int axis) const override {
    return analytic_.collective(kind, bytes, mesh, axis);
  }
  Seconds compute(const planner::ComputeWork& work) const override {
    return analytic_.compute(work);
  }
  int64_t workspace_bytes(OpKind kind, std::span<const Shape> inputs,
                          const OpAttrs& attrs) const override {
    return kernels::kernel_workspace_bytes(kernels::Device::kCpu, kind, inputs, attrs);
  }
  int64_t allocation_bytes(int64_t bytes) const override { return BufferPool::block_bytes(bytes); }

 private:
  planner::AnalyticCostModel analytic_;
};

}  // namespace

std::unique_ptr<planner::CostModel> cost_model_for(const mesh::ClusterSpec& cluster) {
  if (cluster.device.kind == "cpu") return std::make_unique<CpuClusterCostModel>(cluster.device);
  return std::make_unique<planner::AnalyticCostModel>(cluster.device);
}

}  // namespace meshpipe::runtime

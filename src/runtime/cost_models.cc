// cost_model_for: the analytic or profiled model, with the CPU kernels' scratch for CPU devices.
#include "runtime/cost_models.h"

#include "kernels/backend.h"
#include "runtime/buffer_pool.h"

namespace meshpipe::runtime {

namespace {

// The analytic (or profiled) model and, for CPU devices, the scratch of the kernels that run
// there and the buffer pool's rounding.
class CpuClusterCostModel final : public planner::CostModel {
 public:
  explicit CpuClusterCostModel(std::unique_ptr<planner::CostModel> base) : base_(std::move(base)) {}
  Seconds collective(mesh::CollectiveKind kind, int64_t bytes, const mesh::LogicalMesh& mesh,
                     int axis) const override {
    return base_->collective(kind, bytes, mesh, axis);
  }
  Seconds compute(const planner::ComputeWork& work) const override { return base_->compute(work); }
  Seconds transfer(int64_t bytes, const mesh::LinkSpec& link, bool inter_host) const override {
    return base_->transfer(bytes, link, inter_host);
  }
  int64_t workspace_bytes(OpKind kind, std::span<const Shape> inputs,
                          const OpAttrs& attrs) const override {
    return kernels::kernel_workspace_bytes(kernels::Device::kCpu, kind, inputs, attrs);
  }
  int64_t allocation_bytes(int64_t bytes) const override { return BufferPool::block_bytes(bytes); }
  double sharing(double busy) const override { return base_->sharing(busy); }

 private:
  std::unique_ptr<planner::CostModel> base_;
};

}  // namespace

std::unique_ptr<planner::CostModel> cost_model_for(const mesh::ClusterSpec& cluster) {
  std::unique_ptr<planner::CostModel> base;
  if (cluster.profile != nullptr) {
    base = std::make_unique<planner::ProfiledCostModel>(cluster);
  } else {
    base = std::make_unique<planner::AnalyticCostModel>(cluster.device);
  }
  if (cluster.device.kind == "cpu") return std::make_unique<CpuClusterCostModel>(std::move(base));
  return base;
}

}  // namespace meshpipe::runtime

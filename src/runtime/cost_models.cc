// cost_model_for: the analytic or profiled model, with the scratch of the kernels that run on the
// cluster's devices (the CPU's column for CPU devices, the CUDA column for GPUs) and the device
// interpreter's block rounding.
#include "runtime/cost_models.h"

#include "kernels/backend.h"
#include "runtime/buffer_pool.h"

namespace meshpipe::runtime {

namespace {

// The analytic (or profiled) model with the scratch of the kernels of `device` (what the device
// interpreter allocates around each op: DeviceInterpreter sizes kernel workspaces from the
// column of the memory it runs on) and the rounding of its blocks (BufferPool::block_bytes, on
// the host and on a GPU alike).
class BackendCostModel final : public planner::CostModel {
 public:
  BackendCostModel(std::unique_ptr<planner::CostModel> base, kernels::Device device)
      : base_(std::move(base)), device_(device) {}
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
    return kernels::kernel_workspace_bytes(device_, kind, inputs, attrs);
  }
  int64_t allocation_bytes(int64_t bytes) const override { return BufferPool::block_bytes(bytes); }
  double sharing(double busy) const override { return base_->sharing(busy); }

 private:
  std::unique_ptr<planner::CostModel> base_;
  kernels::Device device_;
};

}  // namespace

std::unique_ptr<planner::CostModel> cost_model_for(const mesh::ClusterSpec& cluster) {
  std::unique_ptr<planner::CostModel> base;
  if (cluster.profile != nullptr) {
    base = std::make_unique<planner::ProfiledCostModel>(cluster);
  } else {
    base = std::make_unique<planner::AnalyticCostModel>(cluster.device);
  }
  return std::make_unique<BackendCostModel>(std::move(base), cluster.device.kind == "cpu"
                                                                 ? kernels::Device::kCpu
                                                                 : kernels::Device::kCuda);
}

}  // namespace meshpipe::runtime

// How one device runs its share of a sharded op. A strategy (planner/strategy.h) splits an op's
// iteration dims over the mesh axes; each device then runs the same op kind on its tiles, with
// attributes rewritten for tile shapes, index offsets for ops that see global positions (causal
// softmax rows, vocabulary rows of a sharded embedding), a scale for means taken over a split
// dim, and, for a batch norm whose batch is split, the axes its statistics must be summed over
// (lowering then emits the op as pieces with all-reduces between them).
#pragma once

#include <cstdint>
#include <vector>

#include "core/shape.h"
#include "core/status.h"
#include "graph/graph.h"
#include "kernels/tensor_view.h"
#include "mesh/device_mesh.h"
#include "mesh/sharding.h"
#include "shard/op_layout.h"

namespace meshpipe::runtime {

/// One device's part of an op.
struct LocalOp {
  graph::Op op;  ///< same kind and operands; shape attributes are the device's tile shapes
  std::vector<Shape> inputs;   ///< tile shape of each input (as the strategy wants it)
  std::vector<Shape> outputs;  ///< tile shape of each output before partial sums are resolved
  /// Spec of each output as computed locally: the strategy's output spec, minus the splits
  /// that a reduce-scatter resolution adds.
  std::vector<mesh::ShardingSpec> computed_specs;
  int64_t workspace_bytes =
      0;                      ///< scratch of the op's kernel (the plan's devices') for these tiles
  shard::OpWork work;         ///< this device's share (the simulator prices it)
  int64_t row_offset = 0;     ///< causal softmax: global index of the first local row
  int64_t id_offset = 0;      ///< embedding (and its gradient): first local vocabulary row
  float output_scale = 1.0f;  ///< multiplies output 0: a mean over a split dim counts globally
  /// Batch norm (and its gradient) with the batch split over these mesh axes (bit a = axis a):
  /// the per-channel sums must be all-reduced over them so every device normalises with the
  /// statistics of the whole batch; `sync_count` is the global N * H * W. Lowering emits such
  /// an op as its pieces (OpKind::kBatchNormSums ...) with explicit all-reduces.
  uint8_t sync_axes = 0;
  double sync_count = 0.0;
  /// The loss gradient's seed (graph::is_loss_seed): scaled by the loss scale of f16 training.
  bool loss_seed = false;
};

/// Device (i0, i1)'s part of `op` sharded as `strategy` on `mesh`, its workspace sized by the
/// kernel column of `backend` (the plan's devices). Errors name the op.
Expected<LocalOp> make_local_op(const graph::Graph& g, const graph::Op& op,
                                const shard::ShardedOp& strategy, const mesh::LogicalMesh& mesh,
                                int64_t i0, int64_t i1,
                                kernels::Device backend = kernels::Device::kCpu);

}  // namespace meshpipe::runtime

// Runs one graph op through the kernels: the single bridge between graph/ and kernels/.
#pragma once

#include <vector>

#include "graph/graph.h"
#include "kernels/tensor_view.h"

namespace meshpipe::runtime {

/// Scratch bytes the op's kernel needs (dot permutations, convolution columns).
int64_t op_workspace_bytes(const graph::Graph& g, const graph::Op& op);
/// The same for an op whose inputs have the given shapes (a device's tiles).
int64_t op_workspace_bytes(const graph::Op& op, const std::vector<Shape>& inputs);

/// Global positions of a device's tile, for kernels that see them (runtime/local_op.h).
struct IndexOffsets {
  int64_t row = 0;  ///< causal softmax: global index of the first local row
  int64_t id = 0;   ///< embedding and its gradient: first local vocabulary row
};

/// True when output 0 of the op may share the buffer of input `input_index` (the kernel
/// promises correct results when they alias).
bool op_can_run_in_place(const graph::Op& op, size_t input_index, size_t output_index);

/// Executes `op` on views of its inputs and outputs (shapes as in the graph). Errors name the
/// op; dtypes other than f32 (and i32 ids/labels) are rejected.
Status run_op(const kernels::KernelContext& ctx, const graph::Op& op,
              const std::vector<kernels::TensorView>& inputs,
              const std::vector<kernels::TensorView>& outputs, const kernels::TensorView& workspace,
              IndexOffsets offsets = {});

}  // namespace meshpipe::runtime

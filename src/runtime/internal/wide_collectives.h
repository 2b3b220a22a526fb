// Collectives on tensors of any floating storage type (private to runtime/): f16 and bf16
// tensors (tensor-parallel activations under mixed precision) are widened to f32, summed in f32
// by the communicator and rounded once at the end, as the kernels do; f32 tensors go straight
// through.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "kernels/tensor_view.h"

namespace meshpipe::runtime::internal {

/// f32 staging kept by the caller across calls (no allocation per step once grown).
struct WideScratch {
  std::vector<float> in;
  std::vector<float> out;
};

/// In place: v = sum over the group's ranks of v.
Status all_reduce_view(comm::Communicator& c, const kernels::TensorView& v, WideScratch& scratch);

/// reduce_scatter of `count` elements per rank from `in` (size() * count contiguous elements
/// of out's dtype) into out.
Status reduce_scatter_view(comm::Communicator& c, const void* in, const kernels::TensorView& out,
                           int64_t count, WideScratch& scratch);

}  // namespace meshpipe::runtime::internal

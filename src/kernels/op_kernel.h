// What a kernel call receives (KernelArgs) and what one entry of the backend table holds
// (OpKernel): split from backend.h so that CUDA files, which cannot include core/status.h (fmt
// does not compile under nvcc in C++20), can define table rows.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "core/op_attrs.h"
#include "core/op_kind.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// What a kernel call receives. Views have the shapes of the device's tiles.
struct KernelArgs {
  const KernelContext* ctx = nullptr;
  std::span<const TensorView> in;
  std::span<const TensorView> out;
  TensorView workspace;            ///< kernel_workspace_bytes of scratch (may be empty)
  const OpAttrs* attrs = nullptr;  ///< attributes, shape attributes rewritten for the tiles
  int64_t row_offset = 0;          ///< causal softmax: global index of the first local row
  int64_t id_offset = 0;           ///< embedding and its gradient: first local vocabulary row
};

/// One entry of the table.
struct OpKernel {
  /// Runs the kernel. Shapes and dtypes were checked by run_kernel.
  void (*run)(const KernelArgs& args) = nullptr;
  /// Scratch bytes for inputs of these shapes; null: none.
  int64_t (*workspace_bytes)(std::span<const Shape> inputs, const OpAttrs& attrs) = nullptr;
  /// Per output: the inputs whose memory it may overwrite (bit i: input i; the kernel is
  /// correct when they alias).
  std::array<uint8_t, 3> in_place = {0, 0, 0};
  /// Output 0 is input 0 reinterpreted (a reshape): when they share memory nothing runs.
  bool is_view = false;
};

}  // namespace meshpipe::kernels

// The kernel backend table: (device type, op kind) -> kernel. Each backend fills one column
// with what it can run (the CPU backend, kernels/cpu_backend.cc, runs every kind); the
// single-device executor and the per-device interpreter call kernels only through this table,
// so a second backend adds a column, not a second dispatcher. An entry also carries what a
// buffer planner needs to know about the kernel: its scratch size and which outputs may share
// an input's memory.
//
//              dot    add   ...  batch_norm_apply
//   kCpu       cpu    cpu         cpu
//   kCuda      -      -           -          (filled by the CUDA backend)
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "core/op_attrs.h"
#include "core/op_kind.h"
#include "core/status.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// "cpu", "cuda".
const char* device_name(Device device);

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

/// The entry of `kind` on `device`, or null when that backend has no kernel for it.
const OpKernel* find_kernel(Device device, OpKind kind);

/// Runs `kind` on `device`. Errors: no kernel on that device, or a dtype the backend does not
/// compute in (the CPU backend computes in f32, with i32 ids and labels). Callers name the op.
Status run_kernel(Device device, OpKind kind, const KernelArgs& args);

/// Scratch bytes `kind` needs on `device` for inputs of these shapes (0 without a kernel).
int64_t kernel_workspace_bytes(Device device, OpKind kind, std::span<const Shape> inputs,
                               const OpAttrs& attrs);

/// True when output `output` of `kind` may share the memory of input `input` on `device`.
bool kernel_runs_in_place(Device device, OpKind kind, size_t input, size_t output);

}  // namespace meshpipe::kernels

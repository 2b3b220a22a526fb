// The kernel backend table: (device type, op kind) -> kernel. Each backend fills one column
// with what it can run (the CPU backend, kernels/cpu_backend.cc, runs every kind); the
// single-device executor and the per-device interpreter call kernels only through this table,
// so a second backend adds a column, not a second dispatcher. An entry also carries what a
// buffer planner needs to know about the kernel: its scratch size and which outputs may share
// an input's memory.
//
//              dot    add   ...  batch_norm_apply
//   kCpu       cpu    cpu         cpu
//   kCuda      cuda   cuda        cuda       (CUDA builds: kernels/cuda/, one file per family)
//
// Dtypes: floating tensors may be f32, f16 or bf16, each view its own; every kernel computes in
// f32 and rounds to nearest even when it stores a half output (the mixed-precision path). On
// the CPU, run_kernel widens half views into f32 copies around the f32 kernels; the CUDA
// kernels load and store each storage type directly. Ids and labels are i32.
#pragma once

#include <cstdint>
#include <span>

#include "core/op_kind.h"
#include "core/status.h"
#include "kernels/op_kernel.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// "cpu", "cuda".
const char* device_name(Device device);

/// The entry of `kind` on `device`, or null when that backend has no kernel for it.
const OpKernel* find_kernel(Device device, OpKind kind);

/// Runs `kind` on `device`. Errors: no kernel on that device, an i64 tensor, or (kCuda) the
/// first launch or library failure of the call, as CUDA reports it. A CUDA kernel is queued on
/// its GPU's stream: its faults surface at the next GpuDevice::synchronize. Callers name the op.
Status run_kernel(Device device, OpKind kind, const KernelArgs& args);

/// Whether every element of the floating views (f32, f16, bf16; other dtypes are skipped) is
/// finite: the overflow check of f16 loss scaling. `ctx.device` says where the views live; on
/// a GPU one kernel per view raises a flag in device memory, read back once (the call waits for
/// the GPU's stream).
Expected<bool> all_finite(const KernelContext& ctx, std::span<const TensorView> views);

/// The sum of the squares of every element of the floating views (others are skipped),
/// accumulated in double in a fixed order (the same views give the same bits): the squared
/// global norm of gradient clipping. On a GPU each view adds its per-block partial sums into
/// fixed slots of the workspace, read back once and summed on the host (the call waits).
Expected<double> sum_of_squares(const KernelContext& ctx, std::span<const TensorView> views);

/// Scratch bytes `kind` needs on `device` for inputs of these shapes (0 without a kernel).
int64_t kernel_workspace_bytes(Device device, OpKind kind, std::span<const Shape> inputs,
                               const OpAttrs& attrs);

/// True when output `output` of `kind` may share the memory of input `input` on `device`.
bool kernel_runs_in_place(Device device, OpKind kind, size_t input, size_t output);

}  // namespace meshpipe::kernels

// The columns of the kernel backend table, one function per backend (private to kernels/):
// each returns its entry for a kind, or null when that backend has no kernel for it.
#pragma once

#include "core/op_kind.h"
#include "kernels/backend.h"

namespace meshpipe::kernels::internal {

/// The CPU backend (cpu_backend.cc): every op kind.
const OpKernel* cpu_kernel(OpKind kind);

/// The CUDA backend (cuda/backend.cc, CUDA builds only): the kinds the family files of
/// kernels/cuda/ fill.
const OpKernel* cuda_kernel(OpKind kind);

}  // namespace meshpipe::kernels::internal

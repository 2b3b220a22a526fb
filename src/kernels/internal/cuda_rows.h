// The CUDA column of the backend table, assembled from one row list per kernel family (private
// to kernels/, CUDA builds only). Each family's .cu file in kernels/cuda/ defines its function;
// cuda/backend.cu gathers them and checks that no kind appears twice.
#pragma once

#include <span>
#include <vector>

#include "core/op_kind.h"
#include "kernels/op_kernel.h"

namespace meshpipe::kernels::internal {

struct CudaRow {
  OpKind kind;
  OpKernel kernel;
};

std::vector<CudaRow> cuda_elementwise_rows();  // add .. div, scale, bias_add, activations and
                                               // their gradients, constant
std::vector<CudaRow> cuda_layout_rows();       // reshape, transpose, slice, concat, pad,
                                               // broadcast
std::vector<CudaRow> cuda_reduce_rows();       // reduce_sum, reduce_mean
std::vector<CudaRow> cuda_optimizer_rows();    // sgd, sgd_momentum, adam
std::vector<CudaRow> cuda_softmax_rows();      // softmax, log_softmax and gradients
std::vector<CudaRow> cuda_norm_rows();         // layer norm, batch norm (+ the sync pieces), grads
std::vector<CudaRow> cuda_loss_rows();         // cross_entropy and gradient
std::vector<CudaRow> cuda_embedding_rows();    // embedding and gradient
std::vector<CudaRow> cuda_moe_rows();          // top-k gating and gradient
std::vector<CudaRow> cuda_pool_rows();         // max/avg pool and gradients
std::vector<CudaRow> cuda_matmul_rows();       // dot (cuBLASLt)
std::vector<CudaRow> cuda_conv_rows();         // conv2d and gradients (cuDNN)
std::vector<CudaRow> cuda_convert_rows();      // convert (storage type changes)

struct GpuState;
/// kernels::copy_box on a GPU (cuda/layout.cu): the caller checked ranks, dtypes and bounds.
void cuda_copy_box(GpuState& g, const TensorView& src, std::span<const int64_t> src_offset,
                   const TensorView& dst, std::span<const int64_t> dst_offset,
                   std::span<const int64_t> extent);
/// 1 when every element of the `n` floating views is finite, else 0 (kernels::all_finite's GPU
/// side, in cuda/reduce.cu; waits for the stream; failures are recorded in `g.error`).
int cuda_all_finite(GpuState& g, const TensorView* views, size_t n);
/// The sum of squares of the `n` floating views' elements (kernels::sum_of_squares's GPU side,
/// in cuda/reduce.cu; deterministic; waits for the stream; failures are recorded in `g.error`).
double cuda_sum_of_squares(GpuState& g, const TensorView* views, size_t n);

}  // namespace meshpipe::kernels::internal

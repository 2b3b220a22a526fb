// The CUDA column of the kernel backend table (kernels/backend.h): the rows of every kernel
// family in kernels/cuda/*.cu, gathered once into a table indexed by kind. A kind listed by two
// families is a build bug and aborts at the first lookup. CUDA builds only.
#include <array>

#include "core/check.h"
#include "kernels/internal/backends.h"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {

namespace {

struct Column {
  std::array<OpKernel, kNumOpKinds> kernels{};
  std::array<bool, kNumOpKinds> present{};
};

Column build() {
  Column c;
  for (auto family :
       {cuda_elementwise_rows, cuda_layout_rows, cuda_reduce_rows, cuda_optimizer_rows,
        cuda_softmax_rows, cuda_norm_rows, cuda_loss_rows, cuda_embedding_rows, cuda_moe_rows,
        cuda_pool_rows, cuda_matmul_rows, cuda_conv_rows, cuda_convert_rows}) {
    for (const CudaRow& row : family()) {
      const auto i = static_cast<size_t>(row.kind);
      MP_CHECK(i < c.kernels.size() && !c.present[i])
          << "CUDA backend: kind " << op_kind_name(row.kind) << " listed twice";
      MP_CHECK(row.kernel.run != nullptr)
          << "CUDA backend: " << op_kind_name(row.kind) << " without a kernel";
      c.kernels[i] = row.kernel;
      c.present[i] = true;
    }
  }
  return c;
}

}  // namespace

const OpKernel* cuda_kernel(OpKind kind) {
  static const Column column = build();
  const auto i = static_cast<size_t>(kind);
  return i < column.kernels.size() && column.present[i] ? &column.kernels[i] : nullptr;
}

}  // namespace meshpipe::kernels::internal

// Data movement and reductions: transpose, slice, pad, concat, reduce, broadcast.
#pragma once

#include <vector>

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// out dim i = x dim perm[i]: out[idx] = x[idx permuted back]. Any dtype of 4 bytes.
void transpose(const KernelContext& ctx, const TensorView& x, const std::vector<int64_t>& perm,
               const TensorView& out);

/// out = x[..., start : start + out.shape[axis], ...] along `axis`.
void slice(const KernelContext& ctx, const TensorView& x, int64_t axis, int64_t start,
           const TensorView& out);

/// out = zeros, then out[..., start : start + x.shape[axis], ...] = x along `axis`.
void pad(const KernelContext& ctx, const TensorView& x, int64_t axis, int64_t start,
         const TensorView& out);

/// out = concatenation of inputs along `axis`.
void concat(const KernelContext& ctx, const std::vector<TensorView>& inputs, int64_t axis,
            const TensorView& out);

/// out = sum (or mean, when `mean`) of x over `axes` (ascending, distinct); the reduced dims
/// are removed from the shape.
void reduce(const KernelContext& ctx, const TensorView& x, const std::vector<int64_t>& axes,
            bool mean, const TensorView& out);

/// out[idx] = x[idx restricted to dims]: x's dim i maps to out's dim dims[i] (ascending).
void broadcast(const KernelContext& ctx, const TensorView& x, const std::vector<int64_t>& dims,
               const TensorView& out);

/// Copies the box of `extent` elements per dim that starts at `src_offset` in `src` to
/// `dst_offset` in `dst` (contiguous views of equal rank and dtype, any dtype). Packs and
/// unpacks the tiles of collectives and cross-mesh transfers. With a GPU's context both views are
/// in its memory and the copy is queued on its stream (a failure surfaces at the GPU's next
/// run_kernel or synchronize).
void copy_box(const KernelContext& ctx, const TensorView& src,
              const std::vector<int64_t>& src_offset, const TensorView& dst,
              const std::vector<int64_t>& dst_offset, const std::vector<int64_t>& extent);

}  // namespace meshpipe::kernels

// Embedding lookup (gather rows of a table) and its gradient (scatter-add).
#pragma once

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// out[..., :] = table[ids[...], :]. table [V, H] f32, ids i32 of any shape, out [ids..., H].
/// Ids outside [0, V) give rows of zeros (a sharded table owns only part of the vocabulary);
/// `id_offset` is subtracted from every id first.
void embedding(const KernelContext& ctx, const TensorView& table, const TensorView& ids,
               int64_t id_offset, const TensorView& out);

/// dtable = 0, then dtable[ids[...] - id_offset, :] += dy[..., :] for ids in range.
void embedding_grad(const KernelContext& ctx, const TensorView& ids, const TensorView& dy,
                    int64_t id_offset, const TensorView& dtable);

}  // namespace meshpipe::kernels

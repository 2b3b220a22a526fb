// GShard top-k gating: expert choice, capacity, the combine weights and the dispatch mask.
#pragma once

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

/// probs [G, S, E] (rows sum to 1) -> combine [G, S, E, C] and dispatch [G, S, E, C] (f32 0/1).
///
/// For each group g, choice j = 0..k-1 in order: every token s picks e_j(s), the argmax of its
/// probs over experts not picked by choices < j (lowest index on ties). Its position in
/// expert e is pos_j(s) = (tokens s' < s with e_j(s') = e) + (tokens of all earlier choices
/// that picked e, before capacity dropping). The token is kept for choice j iff pos_j(s) < C.
/// Gate g_j(s) = probs[s, e_j(s)] if kept else 0. For k > 1 gates are normalised:
/// g_j /= sum_j g_j (when that sum is > 0). combine[s, e_j(s), pos_j(s)] = g_j(s) for kept
/// choices; dispatch = (combine > 0) as 0/1. Everything else is 0.
void topk_gating(const KernelContext& ctx, const TensorView& probs, int64_t k, int64_t capacity,
                 const TensorView& combine, const TensorView& dispatch);

/// dprobs [G, S, E] = gradient of the combine weights w.r.t. probs for the same selection,
/// given dcombine [G, S, E, C] (dispatch has no gradient).
void topk_gating_grad(const KernelContext& ctx, const TensorView& probs, const TensorView& dcombine,
                      int64_t k, int64_t capacity, const TensorView& dprobs);

}  // namespace meshpipe::kernels

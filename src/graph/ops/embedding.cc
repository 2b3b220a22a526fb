// The embedding lookup (table [V, H], ids i32) and its gradient, a scatter-add into a table of
// zeros. FLOPs: the lookup moves data (0); the gradient adds each gathered row once.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

Expected<Types> infer_embedding(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_f32(in[0], "table"));
  MP_RETURN_IF_ERROR(expect_rank(in[0], 2, "table"));
  MP_RETURN_IF_ERROR(expect_int(in[1], "ids"));
  std::vector<int64_t> out = in[1].shape.dims();
  out.push_back(in[0].shape[1]);
  return Types{{Shape(std::move(out)), in[0].dtype}};
}

// (ids, dy) -> dtable of shape attrs.shape.
Expected<Types> infer_embedding_grad(const OpAttrs& a, const Types& in) {
  MP_RETURN_IF_ERROR(expect_int(in[0], "ids"));
  return Types{{a.shape, in[1].dtype}};
}

Flops embedding_grad_flops(const Graph& g, const Op& op) { return Flops(numel(g, op.inputs[1])); }

// Only the table gets a gradient; the ids are integers.
std::vector<ValueId> grad_embedding(GradEmitter& e, const Graph& g, const Op& op,
                                    const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.shape = g.value(op.inputs[0]).shape;
  return {e.emit1(K::kEmbeddingGrad, {op.inputs[1], dys[0]}, a, "grad"), ValueId()};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kEmbedding, infer_embedding, no_flops, grad_embedding},
    {K::kEmbeddingGrad, infer_embedding_grad, embedding_grad_flops},
};

}  // namespace

std::span<const OpDef> embedding_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

// Optimizer updates (phase kUpdate; graph/training_graph.cc emits them): SGD, SGD with momentum
// and Adam. FLOPs per parameter element: SGD 2, SGD with momentum 4, Adam 12.
#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

// (p, g) -> p'.
Expected<Types> infer_sgd(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "parameter and gradient"));
  return Types{in[0]};
}

// (p, g, m) -> (p', m').
Expected<Types> infer_sgd_momentum(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "parameter and gradient"));
  return Types{in[0], in[2]};
}

// (p, g, m, v, step) -> (p', m', v').
Expected<Types> infer_adam(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "parameter and gradient"));
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[2], "parameter and first moment"));
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[3], "parameter and second moment"));
  return Types{in[0], in[2], in[3]};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kSgdUpdate, infer_sgd, flops_per_input<2>},
    {K::kSgdMomentumUpdate, infer_sgd_momentum, flops_per_input<4>},
    {K::kAdamUpdate, infer_adam, flops_per_input<12>},
};

}  // namespace

std::span<const OpDef> update_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

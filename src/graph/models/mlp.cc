// MLP builder.
#include "graph/models/mlp.h"

#include <fmt/format.h>

#include <cmath>

namespace meshpipe::graph::models {

Status MlpConfig::validate() const {
  if (input_dim < 1 || hidden < 1 || layers < 1 || num_classes < 2) {
    return make_error(Errc::kInvalidArgument,
                      "MLP needs input_dim, hidden, layers >= 1 and classes >= 2");
  }
  return Status::ok();
}

Expected<ForwardGraph> build_mlp(const MlpConfig& c, int64_t batch, DType dtype) {
  MP_RETURN_IF_ERROR(c.validate());
  if (batch < 1) return make_error(Errc::kInvalidArgument, "batch must be >= 1, got {}", batch);
  Builder b;
  ValueId x = b.input("features", Shape{batch, c.input_dim}, DType::kF32);
  ValueId labels = b.input("labels", Shape{batch}, DType::kI32);
  int64_t in = c.input_dim;
  for (int64_t i = 0; i < c.layers; ++i) {
    b.set_layer(static_cast<int32_t>(i));
    b.push_scope(fmt::format("layer{}", i));
    const float std = std::sqrt(2.0f / static_cast<float>(in));
    ValueId w = b.parameter("w", Shape{in, c.hidden}, InitSpec::normal(std), dtype);
    ValueId bias = b.parameter("b", Shape{c.hidden}, InitSpec::zeros(), dtype);
    x = b.relu(b.linear(x, w, bias, "fc"), "act");
    in = c.hidden;
    b.pop_scope();
  }
  b.push_scope("head");
  const float std = 1.0f / std::sqrt(static_cast<float>(in));
  ValueId w = b.parameter("w", Shape{in, c.num_classes}, InitSpec::normal(std), dtype);
  ValueId bias = b.parameter("b", Shape{c.num_classes}, InitSpec::zeros(), dtype);
  ValueId loss = b.cross_entropy(b.linear(x, w, bias, "fc"), labels, "loss");
  b.pop_scope();
  return std::move(b).finish(loss);
}

int64_t mlp_parameter_count(const MlpConfig& c) {
  return c.input_dim * c.hidden + c.hidden + (c.layers - 1) * (c.hidden * c.hidden + c.hidden) +
         c.hidden * c.num_classes + c.num_classes;
}

}  // namespace meshpipe::graph::models

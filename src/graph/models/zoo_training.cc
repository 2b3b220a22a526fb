// zoo_training_graph and the per-sample token count of a zoo model.
#include "graph/models/zoo_training.h"

#include <variant>

#include "graph/mixed_precision.h"

namespace meshpipe::graph::models {

Expected<TrainingGraph> zoo_training_graph(const ModelSpec& spec, int64_t batch,
                                           const OptimizerConfig& optimizer,
                                           std::optional<DType> dtype) {
  BuildOptions bo;
  bo.batch = batch;
  bo.dtype = dtype;
  MP_ASSIGN_OR_RETURN(ForwardGraph fg, build_model(spec, bo));
  if (dtype && (*dtype == DType::kF16 || *dtype == DType::kBF16)) {
    // Mixed precision: f32 master weights, half activations (graph/mixed_precision.h).
    MP_ASSIGN_OR_RETURN(fg, with_master_weights(fg));
  }
  return make_training_graph(std::move(fg), optimizer);
}

bool is_language_model(const ModelSpec& spec) {
  if (const auto* c = std::get_if<ExternalConfig>(&spec.config)) {
    return c->tokens_per_sample > 1;
  }
  return std::holds_alternative<GptConfig>(spec.config) ||
         std::holds_alternative<MoeConfig>(spec.config);
}

int64_t tokens_per_sample(const ModelSpec& spec) {
  if (const auto* c = std::get_if<GptConfig>(&spec.config)) return c->seq_len;
  if (const auto* c = std::get_if<MoeConfig>(&spec.config)) return c->seq_len;
  if (const auto* c = std::get_if<ExternalConfig>(&spec.config)) return c->tokens_per_sample;
  return 1;
}

}  // namespace meshpipe::graph::models

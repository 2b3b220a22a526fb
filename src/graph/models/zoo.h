// The model zoo: named configurations (Alpa's benchmark suites plus tiny test models).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "graph/builder.h"
#include "graph/models/gpt.h"
#include "graph/models/mlp.h"
#include "graph/models/moe.h"
#include "graph/models/wide_resnet.h"

namespace meshpipe::graph::models {

/// A model defined outside the zoo (an imported ONNX file: train/model_source.h): its forward
/// graph at any batch, and what the zoo's families answer from their configs.
struct ExternalConfig {
  /// The forward graph (float32) at a batch.
  std::function<Expected<ForwardGraph>(int64_t batch)> build;
  int64_t parameters = 0;         ///< exact parameter count
  int64_t tokens_per_sample = 1;  ///< sequence length of a token model, else 1
  /// How to build it again (JSON written and read by train/model_source.h), for the processes
  /// of a job that rebuild the model from its description.
  std::string source;
};

/// A named model: its family's config, Alpa's global batch and dtype, and a description.
struct ModelSpec {
  std::string name;    ///< "gpt-1.3b", "moe-tiny", ...
  std::string family;  ///< "gpt", "moe", "wresnet", "mlp"; "onnx" for an imported file
  std::string description;
  int64_t default_batch = 1;  ///< Alpa's global batch for the suites; small for tiny models
  DType dtype = DType::kF32;  ///< Alpa's training dtype (fp16 for GPT and MoE)
  std::variant<GptConfig, MoeConfig, WideResNetConfig, MlpConfig, ExternalConfig> config;
};

/// Every zoo entry, in a stable order (family, then size).
const std::vector<ModelSpec>& model_zoo();

/// The entry called `name`; the error lists the known names.
Expected<ModelSpec> find_model(const std::string& name);

/// Overrides for building a zoo model.
struct BuildOptions {
  int64_t batch = 0;           ///< 0: the spec's default batch
  std::optional<DType> dtype;  ///< default: the spec's dtype
};

/// Builds the forward graph of a spec.
Expected<ForwardGraph> build_model(const ModelSpec& spec, const BuildOptions& options = {});

/// The smallest batch the model can be built at, of which every buildable batch is a multiple:
/// for a MoE, the sequences whose tokens fill whole expert groups (group / gcd(seq, group));
/// 1 for the other families.
int64_t min_micro_batch(const ModelSpec& spec);

/// Parameter count from the family's closed formula: Alpa's for GPT and MoE (which leaves out
/// position embeddings, the embedding layer norm, two of the three q/k/v biases per layer and
/// the MoE gate), the exact closed form for Wide-ResNet and MLP, the imported count for an
/// external model.
int64_t formula_parameter_count(const ModelSpec& spec);

/// Parameters the built graph has beyond formula_parameter_count (the pieces listed above;
/// 0 for Wide-ResNet, MLP and external models).
int64_t formula_parameter_gap(const ModelSpec& spec);

}  // namespace meshpipe::graph::models

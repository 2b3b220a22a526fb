// The ONNX importer: a model exported by PyTorch (torch.onnx.export, opsets 13-17) becomes a
// meshpipe forward graph with a loss, its initializers parameters with their values, its inputs
// data inputs. Shape arithmetic is folded at import; PyTorch's decompositions of LayerNorm and
// GELU become meshpipe's ops; a causal mask applied with Where before a Softmax becomes the
// causal softmax. Layer tags come from the module path in node names ("/blocks.3/attn/MatMul"
// is in the layer of "blocks.3"), else one layer per matrix product or convolution.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/builder.h"
#include "onnx/model.h"

namespace meshpipe::onnx {

/// What turns the model's output into the training loss.
enum class LossKind {
  kOutput,        ///< the output is the loss already (a scalar)
  kCrossEntropy,  ///< mean softmax cross-entropy of the output (logits, classes last) and labels
};

struct ImportOptions {
  LossKind loss = LossKind::kOutput;
  /// kCrossEntropy: the labels input the importer adds (integers shaped like the logits
  /// without their last dim).
  std::string labels = "labels";
  /// The graph output to train (default: the first).
  std::string output;
  /// The leading dim of every data input (the micro-batch); 0 keeps the exported one, which
  /// must then be a number, not a symbolic dim.
  int64_t batch = 0;
};

/// What the import found, for `meshpipe models --file`.
struct ImportSummary {
  std::map<std::string, int64_t> node_counts;  ///< ONNX op type -> nodes in the file
  int64_t opset = 0;
  std::string producer;
  int64_t parameters = 0;  ///< trained elements
  int64_t parameter_tensors = 0;
  std::vector<std::string> layers;  ///< each layer's module path (or first op) in order
  int64_t exported_batch = 0;      ///< the first data input's leading dim as exported (0: symbolic)
  int64_t batch = 0;               ///< the one imported
  std::vector<std::string> notes;  ///< rewrites and dropped nodes, in words
};

struct ImportedModel {
  graph::ForwardGraph forward;
  ImportSummary summary;
};

/// Imports a decoded model. Errors name the node ("node '/blocks.0/attn/MatMul' (MatMul): ...")
/// and the reason: an op type meshpipe does not import, a shape it cannot fold, an attribute
/// value it does not support, a constant used as data.
Expected<ImportedModel> import_model(const Model& model, const ImportOptions& options);

/// read_model + import_model; errors carry the path.
Expected<ImportedModel> import_file(const std::string& path, const ImportOptions& options);

/// The op types import_model reads (ai.onnx domain), sorted.
std::vector<std::string> supported_op_types();

}  // namespace meshpipe::onnx

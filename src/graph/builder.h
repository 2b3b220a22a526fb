// Builder: constructs a forward graph with calls that read like model code. The first error
// is kept and reported by finish(); later calls on a failed builder are no-ops.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "graph/graph.h"

namespace meshpipe::graph {

/// A forward model graph with its loss and data inputs, as the model zoo returns it.
struct ForwardGraph {
  Graph graph;
  ValueId loss;
  std::vector<ValueId> inputs;  ///< data inputs in declaration order
};

/// Builds a forward graph. Every op is tagged with the current layer (set_layer) and named
/// "<scope>/<name>" from the scope stack (push_scope/pop_scope).
class Builder {
 public:
  Builder() = default;

  // ---- sources ----
  /// A trained parameter, initialised by `init`.
  ValueId parameter(const std::string& name, Shape shape, InitSpec init, DType dtype = DType::kF32);
  /// A data input fed every step.
  ValueId input(const std::string& name, Shape shape, DType dtype);

  // ---- structure ----
  /// Tags the following ops with forward layer `layer`.
  void set_layer(int32_t layer) { layer_ = layer; }
  int32_t layer() const { return layer_; }
  /// Opens a name scope ("layer3", "attn"); names become "layer3/attn/q".
  void push_scope(const std::string& scope) { scopes_.push_back(scope); }
  void pop_scope() {
    if (!scopes_.empty()) scopes_.pop_back();
  }

  // ---- linear algebra ----
  /// General dot product (see DotDims).
  ValueId dot(ValueId lhs, ValueId rhs, DotDims dims, const std::string& name = "");
  /// x [..., K] times w [K, N] -> [..., N].
  ValueId matmul(ValueId x, ValueId w, const std::string& name = "");
  /// matmul(x, w) + b over the last dim.
  ValueId linear(ValueId x, ValueId w, ValueId b, const std::string& name = "");

  // ---- elementwise ----
  ValueId add(ValueId a, ValueId b, const std::string& name = "");
  ValueId sub(ValueId a, ValueId b, const std::string& name = "");
  ValueId mul(ValueId a, ValueId b, const std::string& name = "");
  ValueId div(ValueId a, ValueId b, const std::string& name = "");
  /// alpha * x + beta.
  ValueId scale(ValueId x, float alpha, float beta = 0.0f, const std::string& name = "");
  /// x + b, b's dim i broadcast along x's dim dims[i].
  ValueId bias_add(ValueId x, ValueId b, std::vector<int64_t> dims, const std::string& name = "");
  ValueId relu(ValueId x, const std::string& name = "");
  /// PyTorch's GELU with approximate='tanh'.
  ValueId gelu(ValueId x, const std::string& name = "");
  /// PyTorch's exact GELU (nn.GELU()): x Phi(x) with the normal CDF through erf.
  ValueId gelu_erf(ValueId x, const std::string& name = "");
  ValueId tanh(ValueId x, const std::string& name = "");
  /// x stored as `dtype` (a floating type).
  ValueId convert(ValueId x, DType dtype, const std::string& name = "");

  // ---- normalisation and losses ----
  ValueId softmax(ValueId x, int64_t axis = -1, bool causal = false, const std::string& name = "");
  ValueId log_softmax(ValueId x, int64_t axis = -1, const std::string& name = "");
  /// Layer norm over the last dim; returns y (mean and rstd are extra outputs of the op).
  ValueId layer_norm(ValueId x, ValueId gamma, ValueId beta, float eps = 1e-5f,
                     const std::string& name = "");
  /// Training-mode batch norm over channels (dim 1); returns y.
  ValueId batch_norm(ValueId x, ValueId gamma, ValueId beta, float eps = 1e-5f,
                     const std::string& name = "");
  ValueId embedding(ValueId table, ValueId ids, const std::string& name = "");
  /// Mean softmax cross-entropy of logits [..., V] against integer labels [...].
  ValueId cross_entropy(ValueId logits, ValueId labels, const std::string& name = "");

  // ---- layout ----
  ValueId reshape(ValueId x, Shape shape, const std::string& name = "");
  ValueId transpose(ValueId x, std::vector<int64_t> perm, const std::string& name = "");
  ValueId slice(ValueId x, int64_t axis, int64_t start, int64_t end, const std::string& name = "");
  ValueId concat(std::vector<ValueId> xs, int64_t axis, const std::string& name = "");
  ValueId reduce_sum(ValueId x, std::vector<int64_t> axes, const std::string& name = "");
  ValueId reduce_mean(ValueId x, std::vector<int64_t> axes, const std::string& name = "");
  ValueId broadcast(ValueId x, Shape shape, std::vector<int64_t> dims,
                    const std::string& name = "");

  // ---- vision ----
  ValueId conv2d(ValueId x, ValueId w, Window2d window, const std::string& name = "");
  ValueId max_pool2d(ValueId x, Window2d window, const std::string& name = "");
  ValueId avg_pool2d(ValueId x, Window2d window, const std::string& name = "");

  // ---- mixture of experts ----
  /// GShard top-k gating of probs [G, S, E]: returns (combine, dispatch), each [G, S, E, C].
  std::pair<ValueId, ValueId> topk_gating(ValueId probs, int64_t k, int64_t capacity,
                                          const std::string& name = "");

  /// Any op kind with explicit attributes; returns all outputs (empty on error).
  std::vector<ValueId> op(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs,
                          const std::string& name = "");

  /// Shape of a value (empty shape for an invalid id).
  Shape shape(ValueId v) const;
  /// The first error, or ok.
  const Status& status() const { return status_; }
  /// The graph so far (for inspection while building).
  const Graph& graph() const { return graph_; }

  /// Marks `loss` as the graph output and returns the forward graph, or the first error.
  Expected<ForwardGraph> finish(ValueId loss) &&;

 private:
  ValueId single(OpKind kind, std::vector<ValueId> inputs, OpAttrs attrs, const std::string& name);
  std::string scoped_name(const std::string& name, OpKind kind);

  Graph graph_;
  Status status_;
  int32_t layer_ = 0;
  std::vector<std::string> scopes_;
  std::vector<ValueId> inputs_;
  int64_t counter_ = 0;
};

}  // namespace meshpipe::graph

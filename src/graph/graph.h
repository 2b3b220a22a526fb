// The training-graph IR: an SSA graph of values (tensors) and ops, stored as plain vectors.
// A Graph is a value; passes are free functions that read one and return or extend it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/ids.h"
#include "core/op_attrs.h"
#include "core/op_geometry.h"
#include "core/shape.h"
#include "core/status.h"
#include "graph/op_kind.h"

namespace meshpipe::graph {

/// What a value is for; the planner and runtime treat each role differently.
enum class ValueRole : uint8_t {
  kParameter,       ///< trained weights; persistent across steps
  kOptimizerState,  ///< Adam moments, momentum, the step counter; persistent
  kInput,           ///< a batch of data fed each step
  kActivation,      ///< produced by a forward op
  kGradient,        ///< produced by a backward op
  kUpdated,         ///< the new value of a parameter or optimizer state (an alias target)
};

/// "parameter", "optimizer_state", ...
std::string_view value_role_name(ValueRole role);

/// Which part of the training step an op belongs to.
enum class OpPhase : uint8_t { kForward, kBackward, kUpdate };

/// "forward", "backward", "update".
std::string_view op_phase_name(OpPhase phase);

/// How a persistent value is initialised (parameters and optimizer states).
struct InitSpec {
  /// kValues: the given values, row-major (a model imported with its weights).
  enum class Kind : uint8_t { kZeros, kOnes, kNormal, kUniform, kValues };
  Kind kind = Kind::kZeros;
  float scale = 0.0f;  ///< standard deviation (kNormal) or half-width (kUniform)
  std::shared_ptr<const std::vector<float>> values;  ///< kValues: one per element

  static InitSpec zeros() { return {Kind::kZeros, 0.0f, nullptr}; }
  static InitSpec ones() { return {Kind::kOnes, 0.0f, nullptr}; }
  static InitSpec normal(float stddev) { return {Kind::kNormal, stddev, nullptr}; }
  static InitSpec uniform(float half_width) { return {Kind::kUniform, half_width, nullptr}; }
  static InitSpec from_values(std::shared_ptr<const std::vector<float>> v) {
    return {Kind::kValues, 0.0f, std::move(v)};
  }
};

/// A tensor of the graph. Produced by exactly one op, or by none (parameters, inputs, states).
struct Value {
  std::string name;
  Shape shape;
  DType dtype = DType::kF32;
  ValueRole role = ValueRole::kActivation;
  OpId producer;  ///< invalid for graph inputs (parameters, states, data)
  int32_t output_index = 0;
  InitSpec init;               ///< for parameters and optimizer states
  bool requires_grad = false;  ///< depends on a parameter through differentiable ops

  int64_t bytes() const { return shape.numel() * dtype_size(dtype); }
};

/// Attributes of an op (core/op_attrs.h, shared with the kernels).
using meshpipe::OpAttrs;

/// One operation: a kind, its operands and results, attributes, and where it belongs.
struct Op {
  OpKind kind = OpKind::kAdd;
  std::string name;
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  OpAttrs attrs;
  int32_t layer = 0;  ///< index of the forward layer (backward/update ops inherit it)
  OpPhase phase = OpPhase::kForward;
  /// Backward ops: the forward op they differentiate; update ops: the first forward op that
  /// reads the parameter; forward ops: invalid. Re-clustering layers follows these links.
  OpId forward;
};

/// A persistent value and the value that replaces it after a step (parameter -> updated).
struct Alias {
  ValueId source;
  ValueId updated;
};

/// The IR container. Ops are kept in a valid execution (topological) order: an op is only
/// added after the producers of its inputs.
class Graph {
 public:
  /// Adds a value with no producer (parameter, optimizer state or data input).
  ValueId add_source(std::string name, Shape shape, DType dtype, ValueRole role,
                     InitSpec init = {});

  /// Adds an op, inferring and creating its outputs. Errors name the op and the problem.
  Expected<OpId> add_op(OpKind kind, std::string name, std::vector<ValueId> inputs, OpAttrs attrs,
                        int32_t layer, OpPhase phase,
                        ValueRole output_role = ValueRole::kActivation, OpId forward = OpId());

  /// Sets the layer tag of every op (size num_ops()); used when layers are re-clustered.
  void set_layers(const std::vector<int32_t>& layers);

  const Value& value(ValueId id) const { return values_[id.index()]; }
  Value& mutable_value(ValueId id) { return values_[id.index()]; }
  const Op& op(OpId id) const { return ops_[id.index()]; }
  std::span<const Value> values() const { return values_; }
  std::span<const Op> ops() const { return ops_; }
  int64_t num_values() const { return static_cast<int64_t>(values_.size()); }
  int64_t num_ops() const { return static_cast<int64_t>(ops_.size()); }

  /// Ops that read `id`, in op order (computed on each call).
  std::vector<OpId> users(ValueId id) const;
  /// Values with the given role, in id order.
  std::vector<ValueId> values_with_role(ValueRole role) const;

  /// Values the step returns (the loss first).
  const std::vector<ValueId>& outputs() const { return outputs_; }
  void add_output(ValueId id) { outputs_.push_back(id); }
  /// Persistent values and their replacements after a step.
  const std::vector<Alias>& aliases() const { return aliases_; }
  void add_alias(ValueId source, ValueId updated) { aliases_.push_back({source, updated}); }

  /// Number of forward layers (1 + the largest layer tag).
  int32_t num_layers() const;

  /// Checks structural invariants (ids in range, topological order, shapes re-inferred equal).
  Status validate() const;

 private:
  std::vector<Value> values_;
  std::vector<Op> ops_;
  std::vector<ValueId> outputs_;
  std::vector<Alias> aliases_;
};

/// "dot 'layer0/attn/q' [8, 16, 32] x [32, 32] -> [8, 16, 32]" for messages.
std::string describe_op(const Graph& g, OpId id);

}  // namespace meshpipe::graph

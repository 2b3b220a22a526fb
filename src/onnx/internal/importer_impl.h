// The ONNX importer's state (importer.h): the named values met so far (graph values, folded
// constants, initializers not yet used), the builder, and one method per node kind. The node
// walk and the public functions are in importer.cc, the per-op methods in import_ops.cc.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "onnx/importer.h"
#include "onnx/internal/constant.h"
#include "onnx/internal/patterns.h"

namespace meshpipe::onnx::internal {

using graph::Builder;

/// A named value during import: a graph value, a folded constant, or an initializer not yet
/// used (it becomes a parameter where it is read as data, a constant where it is folded).
struct Slot {
  enum class Kind { kValue, kConst, kInit };
  Kind kind = Kind::kValue;
  ValueId id;
  Const c;
  const Tensor* init = nullptr;
  std::string param_name;  ///< kInit: the parameter it becomes (an Identity copy is its own)
  bool causal = false;     ///< kValue: scores with the causal mask applied (for Softmax)
  ValueId log_softmax_of;  ///< kValue from LogSoftmax: its logits (for NegativeLogLikelihoodLoss)
};

inline bool is_float_type(int32_t t) {
  const auto e = static_cast<ElemType>(t);
  return e == ElemType::kFloat || e == ElemType::kDouble || e == ElemType::kFloat16 ||
         e == ElemType::kBfloat16;
}

inline bool is_int_type(int32_t t) {
  const auto e = static_cast<ElemType>(t);
  return e == ElemType::kInt64 || e == ElemType::kInt32 || e == ElemType::kInt8 ||
         e == ElemType::kUint8 || e == ElemType::kBool;
}

inline int64_t norm_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

// The layer key of a node name: the module path up to the first component that is a number or
// ends in ".<number>" ("/blocks.3/attn/MatMul" -> "blocks.3", "/0/Gemm" -> "0").
inline std::string layer_key(const std::string& name) {
  std::string path;
  size_t pos = 0;
  while (pos < name.size()) {
    size_t next = name.find('/', pos);
    if (next == std::string::npos) break;  // the last component is the node's own name
    const std::string part = name.substr(pos, next - pos);
    pos = next + 1;
    if (part.empty()) continue;
    path += (path.empty() ? "" : "/") + part;
    const size_t dot = part.rfind('.');
    const std::string tail = dot == std::string::npos ? part : part.substr(dot + 1);
    if (!tail.empty() && std::all_of(tail.begin(), tail.end(), ::isdigit)) return path;
  }
  return {};
}

class Importer {
 public:
  Importer(const Model& m, const ImportOptions& o) : m_(m), o_(o) {}

  Expected<ImportedModel> run() {
    summary_.opset = m_.opsets.count("") != 0 ? m_.opsets.at("") : 0;
    summary_.producer =
        m_.producer_name + (m_.producer_version.empty() ? "" : " " + m_.producer_version);
    for (const auto& [domain, version] : m_.opsets) {
      if (!domain.empty() && domain != "ai.onnx.ml") {
        return make_error(Errc::kInvalidArgument,
                          "the model uses operator set '{}' (only ai.onnx is imported)", domain);
      }
    }
    if (summary_.opset != 0 && (summary_.opset < 7 || summary_.opset > 18)) {
      return make_error(Errc::kInvalidArgument,
                        "opset {} is not one meshpipe imports (7-18; PyTorch's 13-17 are tested)",
                        summary_.opset);
    }
    for (const Node& n : m_.graph.nodes) ++summary_.node_counts[n.op_type];
    for (const Tensor& t : m_.graph.initializers) {
      Slot s;
      s.kind = Slot::Kind::kInit;
      s.init = &t;
      s.param_name = t.name;
      slots_[t.name] = s;
    }
    MP_RETURN_IF_ERROR(add_inputs());
    internal::PatternStats stats;
    nodes_ = internal::rewrite_patterns(m_.graph, &stats);
    if (stats.layer_norms > 0) {
      summary_.notes.push_back(
          fmt::format("{} LayerNorm decompositions imported as layer norms", stats.layer_norms));
    }
    if (stats.gelu_erf > 0) {
      summary_.notes.push_back(
          fmt::format("{} exact GELU chains imported as gelu_erf", stats.gelu_erf));
    }
    if (stats.gelu_tanh > 0) {
      summary_.notes.push_back(
          fmt::format("{} tanh GELU chains imported as GELU", stats.gelu_tanh));
    }
    assign_layers();
    find_data_values();
    find_matmul_transposes();
    for (size_t k = 0; k < nodes_.size(); ++k) {
      const Node& n = nodes_[k];
      b_.set_layer(layers_[k]);
      Status s = import_node(n);
      if (s.is_ok() && !b_.status().is_ok()) s = b_.status();
      if (!s.is_ok()) {
        return Status(s.code(),
                      fmt::format("node '{}' ({}): {}",
                                  n.name.empty() ? n.outputs.empty() ? "?" : n.outputs[0] : n.name,
                                  n.op_type, s.message()));
      }
    }
    MP_ASSIGN_OR_RETURN(const ValueId loss, make_loss());
    MP_ASSIGN_OR_RETURN(graph::ForwardGraph fg, std::move(b_).finish(loss));
    for (const graph::Value& v : fg.graph.values()) {
      if (v.role != graph::ValueRole::kParameter) continue;
      ++summary_.parameter_tensors;
      summary_.parameters += v.shape.numel();
    }
    return ImportedModel{std::move(fg), std::move(summary_)};
  }

 private:
  // ---- inputs, layers, loss ----

  Status add_inputs() {
    bool first = true;
    for (const ValueInfo& v : m_.graph.inputs) {
      if (slots_.count(v.name) != 0) continue;  // an initializer listed as input (old exporters)
      if (!v.has_shape) {
        return make_error(Errc::kInvalidArgument, "input '{}' has no declared shape", v.name);
      }
      std::vector<int64_t> dims;
      for (size_t d = 0; d < v.dims.size(); ++d) {
        const Dim& dim = v.dims[d];
        if (d == 0 && first) summary_.exported_batch = dim.value.value_or(0);
        if (d == 0 && o_.batch > 0) {
          dims.push_back(o_.batch);
          continue;
        }
        if (!dim.value.has_value() || *dim.value <= 0) {
          return make_error(Errc::kInvalidArgument,
                            "input '{}': dim {} is '{}', not a number (give the batch with "
                            "--batch for dim 0; other dims must be exported fixed)",
                            v.name, d, dim.param.empty() ? "unknown" : dim.param);
        }
        dims.push_back(*dim.value);
      }
      int64_t elements = 1;
      for (int64_t d : dims) {
        if (elements > (int64_t{1} << 40) / d) {
          return make_error(Errc::kInvalidArgument,
                            "input '{}' of shape [{}] has more than 2^40 elements", v.name,
                            fmt::join(dims, ", "));
        }
        elements *= d;
      }
      if (first && !dims.empty()) summary_.batch = dims[0];
      first = false;
      DType dtype;
      if (is_float_type(v.type)) {
        dtype = DType::kF32;
      } else if (is_int_type(v.type)) {
        dtype = DType::kI32;
      } else {
        return make_error(Errc::kInvalidArgument, "input '{}' is {}, not a number type", v.name,
                          elem_type_name(v.type));
      }
      Slot s;
      s.id = b_.input(v.name, Shape(dims), dtype);
      slots_[v.name] = s;
    }
    MP_RETURN_IF_ERROR(b_.status());
    return Status::ok();
  }

  // Transposes read only as the second operand of MatMuls (and not graph outputs): the product
  // reads the untransposed value with its dims renumbered (import_matmul), so no transpose is
  // made, and the gradient of a weight that is used as w.T (a tied LM head, keys as k.T) comes
  // out of its dot in the weight's own layout.
  void find_matmul_transposes() {
    std::map<std::string, bool> only_rhs;  // Transpose output -> every reader is a MatMul rhs
    for (const Node& n : nodes_) {
      if (n.op_type == "Transpose" && n.domain.empty() && n.outputs.size() == 1) {
        only_rhs[n.outputs[0]] = true;
      }
    }
    for (const Node& n : nodes_) {
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        auto it = only_rhs.find(n.inputs[i]);
        if (it != only_rhs.end() && !(n.op_type == "MatMul" && n.domain.empty() && i == 1)) {
          it->second = false;
        }
      }
    }
    for (const ValueInfo& out : m_.graph.outputs) only_rhs.erase(out.name);
    for (const auto& [name, ok] : only_rhs) {
      if (ok) matmul_transposes_.insert(name);
    }
  }

  void assign_layers() {
    std::vector<std::string> keys;
    bool any = false;
    for (const Node& n : nodes_) {
      keys.push_back(layer_key(n.name));
      any = any || !keys.back().empty();
    }
    if (!any) {
      // One layer per matrix product or convolution reading a parameter; the rest joins the
      // layer before it.
      for (size_t k = 0; k < nodes_.size(); ++k) {
        const Node& n = nodes_[k];
        const bool heavy = n.op_type == "Conv" || n.op_type == "Gemm" || n.op_type == "MatMul";
        bool reads_param = false;
        for (const std::string& in : n.inputs) reads_param = reads_param || is_initializer(in);
        keys[k] = heavy && reads_param ? n.name.empty() ? n.outputs[0] : n.name : "";
      }
    }
    std::map<std::string, int32_t> index;
    std::vector<int32_t> layer(nodes_.size(), -1);
    for (size_t k = 0; k < nodes_.size(); ++k) {
      if (keys[k].empty()) continue;
      auto [it, fresh] = index.emplace(keys[k], static_cast<int32_t>(index.size()));
      if (fresh) summary_.layers.push_back(keys[k]);
      layer[k] = it->second;
    }
    // Untagged nodes join the layer before them; those before the first tag join the first.
    int32_t current = -1;
    for (size_t k = 0; k < nodes_.size(); ++k) {
      if (layer[k] >= 0) {
        current = std::max(current, layer[k]);
      }
      layer[k] = std::max(current, 0);
    }
    if (summary_.layers.empty()) summary_.layers.push_back("(all)");
    layers_ = layer;
  }

  bool is_initializer(const std::string& name) const {
    auto it = slots_.find(name);
    return it != slots_.end() && it->second.kind == Slot::Kind::kInit;
  }

  Expected<ValueId> make_loss() {
    std::string out = o_.output;
    if (out.empty()) out = m_.graph.outputs.front().name;
    bool declared = false;
    for (const ValueInfo& v : m_.graph.outputs) declared = declared || v.name == out;
    if (!declared) {
      std::vector<std::string> names;
      for (const ValueInfo& v : m_.graph.outputs) names.push_back(v.name);
      return make_error(Errc::kNotFound, "the model has no output '{}' (outputs: {})", out,
                        fmt::join(names, ", "));
    }
    MP_ASSIGN_OR_RETURN(const ValueId y, value(out));
    if (o_.loss == LossKind::kOutput) {
      if (b_.shape(y).numel() != 1) {
        return make_error(Errc::kInvalidArgument,
                          "output '{}' of shape {} is not a scalar loss (train it with the "
                          "cross-entropy loss against labels: --loss cross-entropy)",
                          out, b_.shape(y).to_string());
      }
      return b_.shape(y).rank() == 0 ? y : b_.reshape(y, Shape{}, "loss_scalar");
    }
    const Shape s = b_.shape(y);
    if (s.rank() < 2) {
      return make_error(Errc::kInvalidArgument,
                        "output '{}' of shape {} cannot be logits (need [..., classes])", out,
                        s.to_string());
    }
    if (slots_.count(o_.labels) != 0) {
      return make_error(Errc::kInvalidArgument,
                        "the labels input '{}' clashes with a name in the model", o_.labels);
    }
    std::vector<int64_t> dims(s.dims().begin(), s.dims().end() - 1);
    const ValueId labels = b_.input(o_.labels, Shape(dims), DType::kI32);
    b_.set_layer(layers_.empty() ? 0 : layers_.back());
    return b_.cross_entropy(y, labels, "loss");
  }

  // ---- slot access ----

  Expected<const Slot*> slot(const std::string& name) const {
    auto it = slots_.find(name);
    if (it == slots_.end()) {
      return make_error(Errc::kInvalidArgument, "input '{}' is produced by no earlier node", name);
    }
    return &it->second;
  }

  bool is_const(const std::string& name) const {
    auto it = slots_.find(name);
    return it != slots_.end() && it->second.kind == Slot::Kind::kConst;
  }
  // A constant, or an initializer no value the model computes as data depends on (a mask, a
  // shape): those fold; the others become parameters.
  bool is_foldable(const std::string& name) const {
    auto it = slots_.find(name);
    if (it == slots_.end()) return false;
    if (it->second.kind == Slot::Kind::kConst) return true;
    return it->second.kind == Slot::Kind::kInit && data_.count(name) == 0;
  }

  // Which values are read as data, directly or through layout ops: a comparison, a Where's
  // condition, a shape or index input are not data; the inputs of layout ops (Reshape, Slice,
  // Transpose, ...) are data when their outputs are; every other input is. The graph's outputs
  // are data.
  void find_data_values() {
    for (const ValueInfo& v : m_.graph.outputs) data_.insert(v.name);
    static const std::set<std::string> kNotData = {
        "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
        "Or",    "Not",  "Shape",   "Range",       "ConstantOfShape"};
    static const std::set<std::string> kLayout = {
        "Reshape", "Slice", "Transpose", "Identity", "Unsqueeze", "Squeeze", "Concat",
        "Gather",  "Cast",  "Expand",    "Flatten",  "Split",     "Dropout", "Where"};
    for (size_t k = nodes_.size(); k-- > 0;) {
      const Node& n = nodes_[k];
      if (kNotData.count(n.op_type) != 0) continue;
      bool out_data = false;
      for (const std::string& o : n.outputs) out_data = out_data || data_.count(o) != 0;
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (n.inputs[i].empty()) continue;
        bool data = true;
        if (kLayout.count(n.op_type) != 0) {
          // Only the data operand(s): Where's two branches, Concat's every input, input 0 of
          // the others (their other inputs are shapes, indices, starts and ends).
          const bool operand = n.op_type == "Concat" || (n.op_type == "Where" ? i > 0 : i == 0);
          data = operand && out_data;
        } else if (i > 0 &&
                   (n.op_type == "ReduceMean" || n.op_type == "ReduceSum" || n.op_type == "Pow")) {
          data = false;  // axes, the exponent
        }
        if (data) data_.insert(n.inputs[i]);
      }
    }
  }

  Expected<Const> constant(const std::string& name) const {
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(name));
    if (s->kind == Slot::Kind::kConst) return s->c;
    if (s->kind == Slot::Kind::kInit) return internal::const_from_tensor(*s->init);
    return make_error(Errc::kInvalidArgument,
                      "'{}' must be a constant here, but it is computed from the data", name);
  }

  Expected<std::vector<int64_t>> ints(const std::string& name) const {
    MP_ASSIGN_OR_RETURN(const Const c, constant(name));
    std::vector<int64_t> out;
    for (int64_t k = 0; k < c.numel(); ++k) out.push_back(c.int_at(k));
    return out;
  }

  Expected<std::vector<int64_t>> dims_of(const std::string& name) const {
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(name));
    switch (s->kind) {
      case Slot::Kind::kValue:
        return b_.shape(s->id).dims();
      case Slot::Kind::kConst:
        return s->c.dims;
      case Slot::Kind::kInit:
        return s->init->dims;
    }
    return std::vector<int64_t>{};
  }

  // The graph value of `name`: an initializer becomes its parameter (once: every reader shares
  // it, as tied weights do); a uniform float constant a filled tensor.
  Expected<ValueId> value(const std::string& name) {
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(name));
    if (s->kind == Slot::Kind::kValue) return s->id;
    if (s->kind == Slot::Kind::kInit) {
      if (!is_float_type(s->init->type)) {
        return make_error(Errc::kInvalidArgument,
                          "initializer '{}' ({}) is used as data; only floating initializers "
                          "become parameters",
                          s->init->name, elem_type_name(s->init->type));
      }
      auto it = params_.find(s->param_name);
      if (it != params_.end()) return it->second;
      MP_ASSIGN_OR_RETURN(std::vector<float> v, s->init->to_floats());
      const ValueId p = b_.parameter(
          s->param_name, Shape(s->init->dims),
          graph::InitSpec::from_values(std::make_shared<const std::vector<float>>(std::move(v))));
      MP_RETURN_IF_ERROR(b_.status());
      params_[s->param_name] = p;
      return p;
    }
    const Const& c = s->c;
    if (c.numel() == 0 || !c.uniform()) {
      return make_error(Errc::kInvalidArgument,
                        "constant '{}' of shape [{}] is used as data (only a constant whose "
                        "elements are all equal can be)",
                        name, fmt::join(c.dims, ", "));
    }
    graph::OpAttrs a;
    a.shape = Shape(c.dims);
    a.alpha = static_cast<float>(c.at(0));
    auto outs = b_.op(OpKind::kConstant, {}, a, name);
    MP_RETURN_IF_ERROR(b_.status());
    return outs.at(0);
  }

  void set_value(const std::string& name, ValueId id) {
    Slot s;
    s.id = id;
    slots_[name] = s;
  }
  void set_const(const std::string& name, Const c) {
    Slot s;
    s.kind = Slot::Kind::kConst;
    s.c = std::move(c);
    slots_[name] = std::move(s);
  }

  // ---- attributes ----

  static int64_t attr_i(const Node& n, const char* name, int64_t dflt) {
    const Attribute* a = n.attribute(name);
    return a != nullptr ? a->i : dflt;
  }
  static float attr_f(const Node& n, const char* name, float dflt) {
    const Attribute* a = n.attribute(name);
    return a != nullptr ? a->f : dflt;
  }
  static std::vector<int64_t> attr_ints(const Node& n, const char* name) {
    const Attribute* a = n.attribute(name);
    return a != nullptr ? a->ints : std::vector<int64_t>{};
  }
  static std::string attr_s(const Node& n, const char* name) {
    const Attribute* a = n.attribute(name);
    return a != nullptr ? a->s : std::string();
  }
  // Axes from the attribute (older opsets) or the second input (newer); empty when neither.
  Expected<std::vector<int64_t>> axes_of(const Node& n, size_t input) const {
    if (const Attribute* a = n.attribute("axes")) return a->ints;
    if (n.inputs.size() > input && !n.inputs[input].empty()) return ints(n.inputs[input]);
    return std::vector<int64_t>{};
  }

  static Status need_inputs(const Node& n, size_t lo, size_t hi) {
    if (n.inputs.size() < lo || n.inputs.size() > hi) {
      return make_error(Errc::kInvalidArgument, "has {} inputs, expected {}{}", n.inputs.size(), lo,
                        hi == lo ? "" : fmt::format("-{}", hi));
    }
    if (n.outputs.empty()) return make_error(Errc::kInvalidArgument, "has no outputs");
    return Status::ok();
  }

  // ---- the nodes ----

  Status import_node(const Node& n);
  Status import_binary(const Node& n);
  Status import_matmul(const Node& n);
  Status import_gemm(const Node& n);
  Status import_gather(const Node& n);
  Status import_reshape_like(const Node& n);
  Status import_slice(const Node& n);
  Status import_pad(const Node& n);
  Status import_split(const Node& n);
  Status import_where(const Node& n);
  Status import_conv_pool(const Node& n);
  Status import_norm(const Node& n);
  Status import_reduce(const Node& n);
  Status import_loss(const Node& n);
  Status import_constant(const Node& n);
  Status fold_node(const Node& n);

  // Drops x's size-1 dims that grow to reach `out` (numpy rules, right-aligned); `map` gets
  // the out dim of each dim kept. Returns the value with the kept dims.
  ValueId squeeze_growing(ValueId x, const std::vector<int64_t>& out, std::vector<int64_t>& map) {
    const std::vector<int64_t> in = b_.shape(x).dims();
    const size_t off = out.size() - in.size();
    std::vector<int64_t> kept;
    map.clear();
    for (size_t d = 0; d < in.size(); ++d) {
      if (in[d] == 1 && out[off + d] != 1) continue;
      kept.push_back(in[d]);
      map.push_back(static_cast<int64_t>(off + d));
    }
    return kept == in ? x : b_.reshape(x, Shape(kept));
  }

  // Broadcasts graph value x to `out` dims (numpy rules).
  ValueId broadcast_to(ValueId x, const std::vector<int64_t>& out) {
    if (b_.shape(x).dims() == out) return x;
    std::vector<int64_t> map;
    const ValueId kept = squeeze_growing(x, out, map);
    return b_.broadcast(kept, Shape(out), map);
  }

  const Model& m_;
  ImportOptions o_;
  Builder b_;
  std::vector<Node> nodes_;
  std::vector<int32_t> layers_;
  std::map<std::string, Slot> slots_;
  std::map<std::string, ValueId> params_;
  std::set<std::string> data_;               ///< values read as data (find_data_values)
  std::set<std::string> matmul_transposes_;  ///< find_matmul_transposes
  struct Transposed {
    ValueId source;
    std::vector<int64_t> perm;
  };
  std::map<std::string, Transposed> transposed_;  ///< of matmul_transposes_, not made
  ImportSummary summary_;
};

}  // namespace meshpipe::onnx::internal

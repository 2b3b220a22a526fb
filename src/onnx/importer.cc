// The ONNX importer (importer.h): the node walk (import_node dispatches on the op type, folding
// nodes whose inputs are all constants) and the public entry points. The importer's state is in
// internal/importer_impl.h, the per-op methods in internal/import_ops.cc.
#include "onnx/importer.h"

#include "onnx/internal/importer_impl.h"

namespace meshpipe::onnx {
namespace internal {

Status Importer::import_constant(const Node& n) {
  if (const Attribute* a = n.attribute("value"); a != nullptr && a->t != nullptr) {
    MP_ASSIGN_OR_RETURN(Const c, internal::const_from_tensor(*a->t));
    set_const(n.outputs[0], std::move(c));
    return Status::ok();
  }
  if (const Attribute* a = n.attribute("value_float")) {
    set_const(n.outputs[0], Const{{}, false, {}, {a->f}});
    return Status::ok();
  }
  if (const Attribute* a = n.attribute("value_int")) {
    set_const(n.outputs[0], Const::scalar_int(a->i));
    return Status::ok();
  }
  if (const Attribute* a = n.attribute("value_ints")) {
    set_const(n.outputs[0], Const::ints(a->ints));
    return Status::ok();
  }
  if (const Attribute* a = n.attribute("value_floats")) {
    Const c{{static_cast<int64_t>(a->floats.size())}, false, {}, {}};
    c.f.assign(a->floats.begin(), a->floats.end());
    set_const(n.outputs[0], std::move(c));
    return Status::ok();
  }
  return make_error(Errc::kInvalidArgument, "has no value attribute meshpipe reads");
}

// Nodes whose inputs are all constants: folded.
Status Importer::fold_node(const Node& n) {
  const std::string& op = n.op_type;
  const std::string& out = n.outputs[0];
  std::vector<Const> in;
  for (const std::string& name : n.inputs) {
    if (name.empty()) {
      in.emplace_back();
      continue;
    }
    MP_ASSIGN_OR_RETURN(Const c, constant(name));
    in.push_back(std::move(c));
  }
  Expected<Const> r = make_error(Errc::kInvalidArgument, "cannot be folded");
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow" || op == "Equal" ||
      op == "Less" || op == "Greater" || op == "And" || op == "Or" || op == "Max" || op == "Min" ||
      op == "LessOrEqual" || op == "GreaterOrEqual") {
    MP_RETURN_IF_ERROR(need_inputs(n, 2, 2));
    r = internal::fold_binary(op, in[0], in[1]);
  } else if (op == "Neg" || op == "Sqrt" || op == "Not" || op == "Abs" || op == "Identity" ||
             op == "Dropout") {
    r = internal::fold_unary(op == "Dropout" ? "Identity" : op, in.at(0));
  } else if (op == "Cast") {
    const int64_t to = attr_i(n, "to", 1);
    r = internal::fold_cast(in.at(0), is_int_type(static_cast<int32_t>(to)));
  } else if (op == "Where") {
    MP_RETURN_IF_ERROR(need_inputs(n, 3, 3));
    r = internal::fold_where(in[0], in[1], in[2]);
  } else if (op == "Unsqueeze" || op == "Squeeze") {
    MP_ASSIGN_OR_RETURN(std::vector<int64_t> axes, axes_of(n, 1));
    std::vector<int64_t> dims = in[0].dims;
    if (op == "Unsqueeze") {
      const auto rank = static_cast<int64_t>(dims.size() + axes.size());
      for (int64_t& a : axes) a = norm_axis(a, rank);
      std::sort(axes.begin(), axes.end());
      for (int64_t a : axes) {
        if (a < 0 || a > static_cast<int64_t>(dims.size())) {
          return make_error(Errc::kInvalidArgument, "unsqueeze axis out of range");
        }
        dims.insert(dims.begin() + a, 1);
      }
    } else {
      std::vector<int64_t> kept;
      const auto rank = static_cast<int64_t>(dims.size());
      for (int64_t& a : axes) a = norm_axis(a, rank);
      for (int64_t d = 0; d < rank; ++d) {
        const bool drop = axes.empty() ? dims[size_t(d)] == 1
                                       : std::find(axes.begin(), axes.end(), d) != axes.end();
        if (!drop) kept.push_back(dims[size_t(d)]);
      }
      dims = kept;
    }
    r = internal::fold_reshape(in[0], dims);
  } else if (op == "Concat") {
    std::vector<const Const*> parts;
    for (const Const& c : in) parts.push_back(&c);
    r = internal::fold_concat(parts, attr_i(n, "axis", 0));
  } else if (op == "Gather") {
    r = internal::fold_gather(in.at(0), in.at(1), attr_i(n, "axis", 0));
  } else if (op == "Reshape") {
    std::vector<int64_t> target;
    for (int64_t k = 0; k < in.at(1).numel(); ++k) target.push_back(in[1].int_at(k));
    MP_ASSIGN_OR_RETURN(
        const std::vector<int64_t> dims,
        internal::reshape_target(in[0].dims, target, attr_i(n, "allowzero", 0) != 0));
    r = internal::fold_reshape(in[0], dims);
  } else if (op == "Transpose") {
    std::vector<int64_t> perm = attr_ints(n, "perm");
    if (perm.empty()) {
      for (size_t d = in[0].dims.size(); d-- > 0;) perm.push_back(static_cast<int64_t>(d));
    }
    r = internal::fold_transpose(in[0], perm);
  } else if (op == "Slice") {
    MP_RETURN_IF_ERROR(need_inputs(n, 3, 5));
    const auto vec = [&](size_t k) {
      std::vector<int64_t> v;
      if (k < in.size()) {
        for (int64_t j = 0; j < in[k].numel(); ++j) v.push_back(in[k].int_at(j));
      }
      return v;
    };
    r = internal::fold_slice(in[0], vec(1), vec(2), vec(3), vec(4));
  } else if (op == "Range") {
    MP_RETURN_IF_ERROR(need_inputs(n, 3, 3));
    r = internal::fold_range(in[0], in[1], in[2]);
  } else if (op == "ConstantOfShape") {
    std::vector<int64_t> dims;
    for (int64_t k = 0; k < in.at(0).numel(); ++k) dims.push_back(in[0].int_at(k));
    Const value{{}, false, {}, {0.0}};
    if (const Attribute* a = n.attribute("value"); a != nullptr && a->t != nullptr) {
      MP_ASSIGN_OR_RETURN(value, internal::const_from_tensor(*a->t));
    }
    r = internal::fold_fill(dims, value);
  } else if (op == "Expand") {
    std::vector<int64_t> dims;
    for (int64_t k = 0; k < in.at(1).numel(); ++k) dims.push_back(in[1].int_at(k));
    r = internal::fold_expand(in[0], dims);
  }
  if (!r.has_value()) return r.status();
  set_const(out, std::move(*r));
  return Status::ok();
}

Status Importer::import_node(const Node& n) {
  const std::string& op = n.op_type;
  if (n.domain == "meshpipe") {
    if (op == "Gelu") {
      MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs[0]));
      set_value(n.outputs[0], attr_s(n, "approximate") == "tanh" ? b_.gelu(x) : b_.gelu_erf(x));
      return Status::ok();
    }
    return import_norm(n);  // the LayerNorm decomposition
  }
  if (!n.domain.empty() && n.domain != "ai.onnx") {
    return make_error(Errc::kInvalidArgument, "domain '{}' is not imported", n.domain);
  }
  if (n.outputs.empty()) return make_error(Errc::kInvalidArgument, "has no outputs");
  if (op == "Constant") return import_constant(n);
  if (op == "Shape") {
    MP_RETURN_IF_ERROR(need_inputs(n, 1, 1));
    MP_ASSIGN_OR_RETURN(std::vector<int64_t> dims, dims_of(n.inputs[0]));
    const auto rank = static_cast<int64_t>(dims.size());
    int64_t start = std::clamp<int64_t>(norm_axis(attr_i(n, "start", 0), rank), 0, rank);
    int64_t end = std::clamp<int64_t>(norm_axis(attr_i(n, "end", rank), rank), 0, rank);
    set_const(n.outputs[0], Const::ints(std::vector<int64_t>(dims.begin() + start,
                                                             dims.begin() + std::max(start, end))));
    return Status::ok();
  }
  // Every input a constant (or an integer initializer): fold.
  bool all_const = !n.inputs.empty();
  for (const std::string& in : n.inputs) {
    if (!in.empty() && !is_foldable(in)) all_const = false;
  }
  if (all_const && op != "Gather") return fold_node(n);
  if (op == "Identity" || op == "Dropout") {
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(n.inputs.at(0)));
    Slot copy = *s;
    if (copy.kind == Slot::Kind::kInit && op == "Identity") {
      // PyTorch shares one initializer among parameters with equal values and gives each its
      // own Identity: each is a parameter of its own.
      copy.param_name = n.outputs[0];
    }
    slots_[n.outputs[0]] = copy;
    if (op == "Dropout") summary_.notes.push_back(fmt::format("dropout '{}' removed", n.name));
    return Status::ok();
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow") {
    return import_binary(n);
  }
  if (op == "MatMul") return import_matmul(n);
  if (op == "Gemm") return import_gemm(n);
  if (op == "Relu" || op == "Tanh") {
    MP_RETURN_IF_ERROR(need_inputs(n, 1, 1));
    MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs[0]));
    set_value(n.outputs[0], op == "Relu" ? b_.relu(x) : b_.tanh(x));
    return Status::ok();
  }
  if (op == "Softmax" || op == "LogSoftmax") {
    MP_RETURN_IF_ERROR(need_inputs(n, 1, 1));
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(n.inputs[0]));
    const bool causal = s->kind == Slot::Kind::kValue && s->causal;
    MP_ASSIGN_OR_RETURN(const ValueId x, value(n.inputs[0]));
    const int64_t rank = b_.shape(x).rank();
    const int64_t default_axis = summary_.opset >= 13 ? -1 : 1;
    const int64_t axis = norm_axis(attr_i(n, "axis", default_axis), rank);
    if (summary_.opset < 13 && axis != rank - 1) {
      return make_error(Errc::kInvalidArgument,
                        "softmax over dims {}.. (opset < 13) is not imported", axis);
    }
    if (causal && (op != "Softmax" || axis != rank - 1)) {
      return make_error(Errc::kInvalidArgument,
                        "a causally masked value feeds a softmax that is not over its last dim");
    }
    if (op == "Softmax") {
      set_value(n.outputs[0], b_.softmax(x, axis, causal));
    } else {
      Slot r;
      r.id = b_.log_softmax(x, axis);
      r.log_softmax_of = axis == rank - 1 ? x : ValueId();
      slots_[n.outputs[0]] = r;
    }
    return Status::ok();
  }
  if (op == "Gather") return import_gather(n);
  if (op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
      op == "Transpose" || op == "Expand") {
    return import_reshape_like(n);
  }
  if (op == "Slice") return import_slice(n);
  if (op == "Pad") return import_pad(n);
  if (op == "Split") return import_split(n);
  if (op == "Concat") {
    std::vector<ValueId> xs;
    for (const std::string& in : n.inputs) {
      MP_ASSIGN_OR_RETURN(const ValueId x, value(in));
      xs.push_back(x);
    }
    const int64_t rank = b_.shape(xs.at(0)).rank();
    set_value(n.outputs[0], b_.concat(xs, norm_axis(attr_i(n, "axis", 0), rank)));
    return Status::ok();
  }
  if (op == "Where") return import_where(n);
  if (op == "Cast") {
    MP_ASSIGN_OR_RETURN(const Slot* s, slot(n.inputs.at(0)));
    const auto to = static_cast<int32_t>(attr_i(n, "to", 1));
    if (s->kind == Slot::Kind::kValue) {
      const DType from = b_.graph().value(s->id).dtype;
      const bool from_int = from == DType::kI32 || from == DType::kI64;
      if (from_int != is_int_type(to)) {
        return make_error(Errc::kInvalidArgument,
                          "casts computed data between integers and floats");
      }
    }
    slots_[n.outputs[0]] = *s;
    return Status::ok();
  }
  if (op == "Conv" || op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool") {
    return import_conv_pool(n);
  }
  if (op == "LayerNormalization" || op == "BatchNormalization") return import_norm(n);
  if (op == "ReduceMean" || op == "ReduceSum") return import_reduce(n);
  if (op == "SoftmaxCrossEntropyLoss" || op == "NegativeLogLikelihoodLoss") return import_loss(n);
  if (op == "Erf" || op == "Sqrt") {
    return make_error(Errc::kInvalidArgument,
                      "{} of computed data is imported only inside a GELU or LayerNorm pattern, "
                      "and this one did not match",
                      op);
  }
  const std::vector<std::string> known = supported_op_types();
  return make_error(Errc::kInvalidArgument, "op type '{}' is not imported (supported: {})", op,
                    fmt::join(known, ", "));
}

}  // namespace internal

std::vector<std::string> supported_op_types() {
  std::vector<std::string> v = {"Add",
                                "AveragePool",
                                "BatchNormalization",
                                "Cast",
                                "Concat",
                                "Constant",
                                "ConstantOfShape",
                                "Conv",
                                "Div",
                                "Dropout",
                                "Equal",
                                "Erf",
                                "Expand",
                                "Flatten",
                                "Gather",
                                "Gemm",
                                "GlobalAveragePool",
                                "Identity",
                                "LayerNormalization",
                                "LogSoftmax",
                                "MatMul",
                                "MaxPool",
                                "Mul",
                                "NegativeLogLikelihoodLoss",
                                "Neg",
                                "Pad",
                                "Pow",
                                "Range",
                                "ReduceMean",
                                "ReduceSum",
                                "Relu",
                                "Reshape",
                                "Shape",
                                "Slice",
                                "Softmax",
                                "SoftmaxCrossEntropyLoss",
                                "Split",
                                "Sqrt",
                                "Squeeze",
                                "Sub",
                                "Tanh",
                                "Transpose",
                                "Unsqueeze",
                                "Where"};
  std::sort(v.begin(), v.end());
  return v;
}

Expected<ImportedModel> import_model(const Model& model, const ImportOptions& options) {
  if (options.batch < 0) return make_error(Errc::kInvalidArgument, "batch must be positive");
  internal::Importer im(model, options);
  return im.run();
}

Expected<ImportedModel> import_file(const std::string& path, const ImportOptions& options) {
  MP_ASSIGN_OR_RETURN(const Model m, read_model(path));
  auto r = import_model(m, options);
  if (!r.has_value()) return r.status().with_context(path);
  return r;
}

}  // namespace meshpipe::onnx

// Output types of every op kind; the rules mirror the kernels' contracts in src/kernels/.
#include "graph/shape_inference.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace meshpipe::graph {
namespace {

using Types = std::vector<TensorType>;

Status expect_f32(const TensorType& t, const char* what) {
  if (!is_floating(t.dtype)) {
    return make_error(Errc::kInvalidArgument, "{} must be floating point, got {}", what,
                      dtype_name(t.dtype));
  }
  return Status::ok();
}

Status expect_int(const TensorType& t, const char* what) {
  if (t.dtype != DType::kI32) {
    return make_error(Errc::kInvalidArgument, "{} must be i32, got {}", what, dtype_name(t.dtype));
  }
  return Status::ok();
}

Status expect_same_shape(const TensorType& a, const TensorType& b, const char* what) {
  if (!(a.shape == b.shape)) {
    return make_error(Errc::kInvalidArgument, "{}: shapes differ: {} vs {}", what,
                      a.shape.to_string(), b.shape.to_string());
  }
  return Status::ok();
}

Status expect_rank(const TensorType& t, int64_t rank, const char* what) {
  if (t.shape.rank() != rank) {
    return make_error(Errc::kInvalidArgument, "{} must have rank {}, got shape {}", what, rank,
                      t.shape.to_string());
  }
  return Status::ok();
}

Status expect_increasing(const std::vector<int64_t>& dims, int64_t rank, const char* what) {
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0 || dims[i] >= rank) {
      return make_error(Errc::kInvalidArgument, "{} dim {} is out of range for rank {}", what,
                        dims[i], rank);
    }
    if (i > 0 && dims[i] <= dims[i - 1]) {
      return make_error(Errc::kInvalidArgument, "{} dims must be strictly increasing, got [{}]",
                        what, fmt::join(dims, ", "));
    }
  }
  return Status::ok();
}

// A shape without its last dim (row statistics of layer norm).
Shape drop_last(const Shape& s) {
  std::vector<int64_t> d = s.dims();
  d.pop_back();
  return Shape(std::move(d));
}

Expected<Types> infer_window(const TensorType& x, const Window2d& w, int64_t channels) {
  MP_RETURN_IF_ERROR(expect_rank(x, 4, "input (NCHW)"));
  MP_ASSIGN_OR_RETURN(int64_t ho, window_output_size(x.shape[2], w.kernel_h, w.stride_h, w.pad_h));
  MP_ASSIGN_OR_RETURN(int64_t wo, window_output_size(x.shape[3], w.kernel_w, w.stride_w, w.pad_w));
  return Types{{Shape{x.shape[0], channels, ho, wo}, x.dtype}};
}

Expected<Types> infer_forward(OpKind kind, const OpAttrs& a, const Types& in) {
  switch (kind) {
    case OpKind::kDot: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "lhs"));
      MP_RETURN_IF_ERROR(expect_f32(in[1], "rhs"));
      MP_ASSIGN_OR_RETURN(Shape out, dot_output_shape(in[0].shape, in[1].shape, a.dot));
      return Types{{out, in[0].dtype}};
    }
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
      MP_RETURN_IF_ERROR(expect_f32(in[0], "lhs"));
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "operands"));
      return Types{in[0]};
    case OpKind::kScale:
    case OpKind::kRelu:
    case OpKind::kGelu:
    case OpKind::kTanh:
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      return Types{in[0]};
    case OpKind::kBiasAdd: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      MP_RETURN_IF_ERROR(expect_increasing(a.axes, in[0].shape.rank(), "bias"));
      if (static_cast<int64_t>(a.axes.size()) != in[1].shape.rank()) {
        return make_error(Errc::kInvalidArgument, "bias has rank {} but {} dims are mapped",
                          in[1].shape.rank(), a.axes.size());
      }
      for (size_t i = 0; i < a.axes.size(); ++i) {
        if (in[1].shape[static_cast<int64_t>(i)] != in[0].shape[a.axes[i]]) {
          return make_error(Errc::kInvalidArgument,
                            "bias dim {} has size {} but input dim {} has {} (input {}, bias {})",
                            i, in[1].shape[static_cast<int64_t>(i)], a.axes[i],
                            in[0].shape[a.axes[i]], in[0].shape.to_string(),
                            in[1].shape.to_string());
        }
      }
      return Types{in[0]};
    }
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
      if (axis < 0) {
        return make_error(Errc::kInvalidArgument, "axis {} is out of range for shape {}", a.axis,
                          in[0].shape.to_string());
      }
      if (a.causal && (in[0].shape.rank() < 2 || axis != in[0].shape.rank() - 1)) {
        return make_error(Errc::kInvalidArgument,
                          "a causal softmax needs rank >= 2 and the last axis (shape {})",
                          in[0].shape.to_string());
      }
      return Types{in[0]};
    }
    case OpKind::kLayerNorm: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      if (in[0].shape.rank() < 1) {
        return make_error(Errc::kInvalidArgument, "layer norm needs rank >= 1");
      }
      const Shape param{in[0].shape[in[0].shape.rank() - 1]};
      if (!(in[1].shape == param) || !(in[2].shape == param)) {
        return make_error(Errc::kInvalidArgument, "gamma {} and beta {} must have shape {}",
                          in[1].shape.to_string(), in[2].shape.to_string(), param.to_string());
      }
      const Shape rows = drop_last(in[0].shape);
      return Types{in[0], {rows, DType::kF32}, {rows, DType::kF32}};
    }
    case OpKind::kBatchNorm: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      if (in[0].shape.rank() != 2 && in[0].shape.rank() != 4) {
        return make_error(Errc::kInvalidArgument, "batch norm needs NC or NCHW input, got {}",
                          in[0].shape.to_string());
      }
      const Shape param{in[0].shape[1]};
      if (!(in[1].shape == param) || !(in[2].shape == param)) {
        return make_error(Errc::kInvalidArgument, "gamma {} and beta {} must have shape {}",
                          in[1].shape.to_string(), in[2].shape.to_string(), param.to_string());
      }
      return Types{in[0], {param, DType::kF32}, {param, DType::kF32}};
    }
    case OpKind::kEmbedding: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "table"));
      MP_RETURN_IF_ERROR(expect_rank(in[0], 2, "table"));
      MP_RETURN_IF_ERROR(expect_int(in[1], "ids"));
      std::vector<int64_t> out = in[1].shape.dims();
      out.push_back(in[0].shape[1]);
      return Types{{Shape(std::move(out)), in[0].dtype}};
    }
    case OpKind::kCrossEntropy: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "logits"));
      MP_RETURN_IF_ERROR(expect_int(in[1], "labels"));
      if (in[0].shape.rank() < 1 || !(drop_last(in[0].shape) == in[1].shape)) {
        return make_error(Errc::kInvalidArgument,
                          "labels {} must have the logits' shape {} without its last dim",
                          in[1].shape.to_string(), in[0].shape.to_string());
      }
      return Types{{Shape{}, in[0].dtype}};
    }
    case OpKind::kReshape:
      if (!a.shape.is_valid() || a.shape.numel() != in[0].shape.numel()) {
        return make_error(Errc::kInvalidArgument, "cannot reshape {} ({} elements) to {}",
                          in[0].shape.to_string(), in[0].shape.numel(), a.shape.to_string());
      }
      return Types{{a.shape, in[0].dtype}};
    case OpKind::kTranspose: {
      const int64_t r = in[0].shape.rank();
      std::vector<int64_t> sorted = a.axes;
      std::sort(sorted.begin(), sorted.end());
      bool ok = static_cast<int64_t>(a.axes.size()) == r;
      for (int64_t i = 0; ok && i < r; ++i) ok = sorted[static_cast<size_t>(i)] == i;
      if (!ok) {
        return make_error(Errc::kInvalidArgument, "[{}] is not a permutation of {} dims",
                          fmt::join(a.axes, ", "), r);
      }
      std::vector<int64_t> out;
      for (int64_t d : a.axes) out.push_back(in[0].shape[d]);
      return Types{{Shape(std::move(out)), in[0].dtype}};
    }
    case OpKind::kSlice: {
      const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
      if (axis < 0 || a.start < 0 || a.end <= a.start || a.end > in[0].shape[axis]) {
        return make_error(Errc::kInvalidArgument, "slice [{}, {}) of axis {} is invalid for {}",
                          a.start, a.end, a.axis, in[0].shape.to_string());
      }
      Shape out = in[0].shape;
      out[axis] = a.end - a.start;
      return Types{{out, in[0].dtype}};
    }
    case OpKind::kConcat: {
      const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
      if (axis < 0) {
        return make_error(Errc::kInvalidArgument, "axis {} is out of range", a.axis);
      }
      Shape out = in[0].shape;
      for (size_t i = 1; i < in.size(); ++i) {
        Shape s = in[i].shape;
        if (s.rank() != out.rank() || in[i].dtype != in[0].dtype) {
          return make_error(Errc::kInvalidArgument, "input {} has shape {} dtype {}", i,
                            s.to_string(), dtype_name(in[i].dtype));
        }
        s[axis] = out[axis];
        if (!(s == out)) {
          return make_error(Errc::kInvalidArgument,
                            "input {} shape {} differs from {} outside axis {}", i,
                            in[i].shape.to_string(), in[0].shape.to_string(), axis);
        }
        out[axis] += in[i].shape[axis];
      }
      return Types{{out, in[0].dtype}};
    }
    case OpKind::kReduceSum:
    case OpKind::kReduceMean: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      MP_RETURN_IF_ERROR(expect_increasing(a.axes, in[0].shape.rank(), "reduce"));
      std::vector<int64_t> out;
      for (int64_t d = 0; d < in[0].shape.rank(); ++d) {
        if (std::find(a.axes.begin(), a.axes.end(), d) == a.axes.end()) {
          out.push_back(in[0].shape[d]);
        }
      }
      return Types{{Shape(std::move(out)), in[0].dtype}};
    }
    case OpKind::kBroadcast: {
      MP_RETURN_IF_ERROR(expect_increasing(a.axes, a.shape.rank(), "broadcast"));
      if (static_cast<int64_t>(a.axes.size()) != in[0].shape.rank()) {
        return make_error(Errc::kInvalidArgument, "input has rank {} but {} dims are mapped",
                          in[0].shape.rank(), a.axes.size());
      }
      for (size_t i = 0; i < a.axes.size(); ++i) {
        if (in[0].shape[static_cast<int64_t>(i)] != a.shape[a.axes[i]]) {
          return make_error(Errc::kInvalidArgument, "input dim {} ({}) does not match target {}", i,
                            in[0].shape[static_cast<int64_t>(i)], a.shape.to_string());
        }
      }
      return Types{{a.shape, in[0].dtype}};
    }
    case OpKind::kConv2d: {
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      MP_RETURN_IF_ERROR(expect_rank(in[1], 4, "filter (OIHW)"));
      if (in[0].shape.rank() == 4 && in[1].shape[1] != in[0].shape[1]) {
        return make_error(
            Errc::kInvalidArgument, "filter {} expects {} input channels but the input {} has {}",
            in[1].shape.to_string(), in[1].shape[1], in[0].shape.to_string(), in[0].shape[1]);
      }
      if (in[1].shape[2] != a.window.kernel_h || in[1].shape[3] != a.window.kernel_w) {
        return make_error(Errc::kInvalidArgument, "filter {} does not match window {}",
                          in[1].shape.to_string(), window_to_string(a.window));
      }
      return infer_window(in[0], a.window, in[1].shape[0]);
    }
    case OpKind::kMaxPool2d:
    case OpKind::kAvgPool2d:
      MP_RETURN_IF_ERROR(expect_f32(in[0], "input"));
      return infer_window(in[0], a.window, in[0].shape.rank() == 4 ? in[0].shape[1] : 0);
    case OpKind::kTopKGating: {
      MP_RETURN_IF_ERROR(expect_rank(in[0], 3, "gate probabilities [G, S, E]"));
      const int64_t e = in[0].shape[2];
      if (a.k < 1 || a.k > e || a.capacity < 1) {
        return make_error(Errc::kInvalidArgument,
                          "top-k gating needs 1 <= k <= experts ({}) and capacity >= 1 "
                          "(k = {}, capacity = {})",
                          e, a.k, a.capacity);
      }
      const Shape out{in[0].shape[0], in[0].shape[1], e, a.capacity};
      return Types{{out, DType::kF32}, {out, DType::kF32}};
    }
    case OpKind::kConstant:
      if (!a.shape.is_valid()) {
        return make_error(Errc::kInvalidArgument, "invalid constant shape {}", a.shape.to_string());
      }
      return Types{{a.shape, DType::kF32}};
    default:
      break;
  }
  return make_error(Errc::kInternal, "no forward rule for {}", op_kind_name(kind));
}

Expected<Types> infer_backward(OpKind kind, const OpAttrs& a, const Types& in) {
  switch (kind) {
    case OpKind::kReluGrad:
    case OpKind::kGeluGrad:
    case OpKind::kTanhGrad:
    case OpKind::kSoftmaxGrad:
    case OpKind::kLogSoftmaxGrad:
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "saved value and gradient"));
      return Types{in[0]};
    case OpKind::kMaxPool2dGrad: {
      MP_ASSIGN_OR_RETURN(Types pooled, infer_window(in[0], a.window,
                                                     in[0].shape.rank() == 4 ? in[0].shape[1] : 0));
      MP_RETURN_IF_ERROR(expect_same_shape(pooled[0], in[1], "pooled output and gradient"));
      return Types{in[0]};
    }
    case OpKind::kLayerNormGrad:
    case OpKind::kBatchNormGrad:
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "gradient and input"));
      return Types{in[1], in[4], in[4]};
    case OpKind::kEmbeddingGrad:
      MP_RETURN_IF_ERROR(expect_int(in[0], "ids"));
      return Types{{a.shape, in[1].dtype}};
    case OpKind::kCrossEntropyGrad:
      return Types{in[0]};
    case OpKind::kPad: {
      const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
      if (axis < 0 || a.shape.rank() != in[0].shape.rank() ||
          a.start + in[0].shape[axis] > a.shape[axis]) {
        return make_error(Errc::kInvalidArgument, "cannot pad {} into {} at {} along axis {}",
                          in[0].shape.to_string(), a.shape.to_string(), a.start, a.axis);
      }
      return Types{{a.shape, in[0].dtype}};
    }
    case OpKind::kConv2dGradInput:
    case OpKind::kConv2dGradFilter:
    case OpKind::kAvgPool2dGrad:
      return Types{{a.shape, in[0].dtype}};
    case OpKind::kTopKGatingGrad:
      return Types{in[0]};
    case OpKind::kSgdUpdate:
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "parameter and gradient"));
      return Types{in[0]};
    case OpKind::kSgdMomentumUpdate:
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "parameter and gradient"));
      return Types{in[0], in[2]};
    case OpKind::kAdamUpdate:
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "parameter and gradient"));
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[2], "parameter and first moment"));
      MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[3], "parameter and second moment"));
      return Types{in[0], in[2], in[3]};
    default:
      break;
  }
  return make_error(Errc::kInternal, "no rule for {}", op_kind_name(kind));
}

}  // namespace

Expected<Types> infer_output_types(OpKind kind, const OpAttrs& attrs, const Types& inputs) {
  const OpKindInfo& info = op_kind_info(kind);
  if (info.lowering_only) {
    return make_error(Errc::kInvalidArgument,
                      "{} is a piece the runtime's lowering emits, not an op of a graph",
                      op_kind_name(kind));
  }
  if (info.num_inputs >= 0 && static_cast<int>(inputs.size()) != info.num_inputs) {
    return make_error(Errc::kInvalidArgument, "expects {} inputs, got {}", info.num_inputs,
                      inputs.size());
  }
  if (info.num_inputs < 0 && inputs.empty()) {
    return make_error(Errc::kInvalidArgument, "expects at least one input");
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].shape.is_valid()) {
      return make_error(Errc::kInvalidArgument, "input {} has an invalid shape {}", i,
                        inputs[i].shape.to_string());
    }
  }
  if (kind < OpKind::kReluGrad) return infer_forward(kind, attrs, inputs);
  return infer_backward(kind, attrs, inputs);
}

}  // namespace meshpipe::graph

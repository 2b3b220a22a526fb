// Output types of every op kind: the checks all kinds share (arity, valid input shapes, no
// lowering-only kind), then the kind's rule from its family in ops/ (internal/op_def.h); the
// rules mirror the kernels' contracts in src/kernels/. Also the argument checks the rules share.
#include "graph/shape_inference.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "graph/internal/op_def.h"

namespace meshpipe::graph {
namespace internal {

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

Shape drop_last(const Shape& s) {
  std::vector<int64_t> d = s.dims();
  d.pop_back();
  return Shape(std::move(d));
}

Expected<Types> infer_like_saved(const OpAttrs&, const Types& in) {
  MP_RETURN_IF_ERROR(expect_same_shape(in[0], in[1], "saved value and gradient"));
  return Types{in[0]};
}

}  // namespace internal

Expected<std::vector<TensorType>> infer_output_types(OpKind kind, const OpAttrs& attrs,
                                                     const std::vector<TensorType>& inputs) {
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
  const internal::OpDef& def = internal::op_def(kind);
  if (def.infer == nullptr) {
    return make_error(Errc::kInternal, "no rule for {}", op_kind_name(kind));
  }
  return def.infer(attrs, inputs);
}

}  // namespace meshpipe::graph

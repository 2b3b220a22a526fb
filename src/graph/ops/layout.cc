// Layout and reduction ops: reshape, transpose, slice, concat, pad (the slice gradient),
// reduce_sum, reduce_mean and broadcast. FLOPs: the reductions 1 per input element; the rest
// move data (0).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "graph/internal/op_def.h"

namespace meshpipe::graph::internal {
namespace {

using K = OpKind;

// ---- shapes ----

Expected<Types> infer_reshape(const OpAttrs& a, const Types& in) {
  if (!a.shape.is_valid() || a.shape.numel() != in[0].shape.numel()) {
    return make_error(Errc::kInvalidArgument, "cannot reshape {} ({} elements) to {}",
                      in[0].shape.to_string(), in[0].shape.numel(), a.shape.to_string());
  }
  return Types{{a.shape, in[0].dtype}};
}

Expected<Types> infer_transpose(const OpAttrs& a, const Types& in) {
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

Expected<Types> infer_slice(const OpAttrs& a, const Types& in) {
  const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
  if (axis < 0 || a.start < 0 || a.end <= a.start || a.end > in[0].shape[axis]) {
    return make_error(Errc::kInvalidArgument, "slice [{}, {}) of axis {} is invalid for {}",
                      a.start, a.end, a.axis, in[0].shape.to_string());
  }
  Shape out = in[0].shape;
  out[axis] = a.end - a.start;
  return Types{{out, in[0].dtype}};
}

Expected<Types> infer_concat(const OpAttrs& a, const Types& in) {
  const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
  if (axis < 0) {
    return make_error(Errc::kInvalidArgument, "axis {} is out of range", a.axis);
  }
  Shape out = in[0].shape;
  for (size_t i = 1; i < in.size(); ++i) {
    Shape s = in[i].shape;
    if (s.rank() != out.rank() || in[i].dtype != in[0].dtype) {
      return make_error(Errc::kInvalidArgument, "input {} has shape {} dtype {}", i, s.to_string(),
                        dtype_name(in[i].dtype));
    }
    s[axis] = out[axis];
    if (!(s == out)) {
      return make_error(Errc::kInvalidArgument, "input {} shape {} differs from {} outside axis {}",
                        i, in[i].shape.to_string(), in[0].shape.to_string(), axis);
    }
    out[axis] += in[i].shape[axis];
  }
  return Types{{out, in[0].dtype}};
}

Expected<Types> infer_pad(const OpAttrs& a, const Types& in) {
  const int64_t axis = normalize_axis(a.axis, in[0].shape.rank());
  bool ok = axis >= 0 && a.shape.rank() == in[0].shape.rank() && a.start >= 0 &&
            a.start + in[0].shape[axis] <= a.shape[axis];
  // Only the pad axis grows; every other dim stays as it is.
  for (int64_t d = 0; ok && d < a.shape.rank(); ++d) ok = d == axis || a.shape[d] == in[0].shape[d];
  if (!ok) {
    return make_error(Errc::kInvalidArgument, "cannot pad {} into {} at {} along axis {}",
                      in[0].shape.to_string(), a.shape.to_string(), a.start, a.axis);
  }
  return Types{{a.shape, in[0].dtype}};
}

Expected<Types> infer_reduce(const OpAttrs& a, const Types& in) {
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

Expected<Types> infer_broadcast(const OpAttrs& a, const Types& in) {
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

// ---- gradients ----

std::vector<ValueId> grad_reshape(GradEmitter& e, const Graph& g, const Op& op,
                                  const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.shape = g.value(op.inputs[0]).shape;
  return {e.emit1(K::kReshape, {dys[0]}, a, "grad")};
}

std::vector<ValueId> grad_transpose(GradEmitter& e, const Graph&, const Op& op,
                                    const std::vector<ValueId>& dys) {
  std::vector<int64_t> inv(op.attrs.axes.size());
  for (size_t i = 0; i < inv.size(); ++i) {
    inv[static_cast<size_t>(op.attrs.axes[i])] = static_cast<int64_t>(i);
  }
  return {e.transpose(dys[0], inv, "grad")};
}

// The slice's gradient pads dy back to the input's shape.
std::vector<ValueId> grad_slice(GradEmitter& e, const Graph& g, const Op& op,
                                const std::vector<ValueId>& dys) {
  OpAttrs a;
  a.shape = g.value(op.inputs[0]).shape;
  a.axis = op.attrs.axis;
  a.start = op.attrs.start;
  return {e.emit1(K::kPad, {dys[0]}, a, "grad")};
}

// Each input's gradient is its slice of dy.
std::vector<ValueId> grad_concat(GradEmitter& e, const Graph& g, const Op& op,
                                 const std::vector<ValueId>& dys) {
  std::vector<ValueId> grads;
  int64_t offset = 0;
  for (size_t i = 0; i < op.inputs.size(); ++i) {
    const int64_t size = g.value(op.inputs[i]).shape[op.attrs.axis];
    OpAttrs s;
    s.axis = op.attrs.axis;
    s.start = offset;
    s.end = offset + size;
    grads.push_back(g.value(op.inputs[i]).requires_grad
                        ? e.emit1(K::kSlice, {dys[0]}, s, fmt::format("grad{}", i))
                        : ValueId());
    offset += size;
  }
  return grads;
}

// dy broadcast back over the reduced axes; a mean also divides by their size.
std::vector<ValueId> grad_reduce(GradEmitter& e, const Graph& g, const Op& op,
                                 const std::vector<ValueId>& dys) {
  const Shape x_shape = g.value(op.inputs[0]).shape;
  OpAttrs a;
  a.shape = x_shape;
  a.axes = complement(x_shape.rank(), op.attrs.axes);
  const ValueId b = e.emit1(K::kBroadcast, {dys[0]}, a, "grad");
  if (op.kind == K::kReduceSum) return {b};
  int64_t count = 1;
  for (int64_t d : op.attrs.axes) count *= x_shape[d];
  return {e.scale(b, 1.0f / static_cast<float>(count), "grad_mean")};
}

std::vector<ValueId> grad_broadcast(GradEmitter& e, const Graph&, const Op& op,
                                    const std::vector<ValueId>& dys) {
  return {e.reduce_sum(dys[0], complement(op.attrs.shape.rank(), op.attrs.axes), "grad")};
}

// kind, shapes, FLOPs, gradient
constexpr OpDef kRows[] = {
    {K::kReshape, infer_reshape, no_flops, grad_reshape},
    {K::kTranspose, infer_transpose, no_flops, grad_transpose},
    {K::kSlice, infer_slice, no_flops, grad_slice},
    {K::kConcat, infer_concat, no_flops, grad_concat},
    {K::kReduceSum, infer_reduce, flops_per_input<1>, grad_reduce},
    {K::kReduceMean, infer_reduce, flops_per_input<1>, grad_reduce},
    {K::kBroadcast, infer_broadcast, no_flops, grad_broadcast},
    {K::kPad, infer_pad, no_flops},
};

}  // namespace

std::span<const OpDef> layout_ops() { return kRows; }

}  // namespace meshpipe::graph::internal

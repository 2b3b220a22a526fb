// Shape and dtype inference for every op kind, with errors that name the problem.
#pragma once

#include <vector>

#include "graph/graph.h"

namespace meshpipe::graph {

/// Shape and dtype of one input or output.
struct TensorType {
  Shape shape;
  DType dtype = DType::kF32;
};

/// The output types of an op of `kind` with the given input types and attributes, or an
/// error describing which input or attribute is wrong (without the op name; add_op adds it).
Expected<std::vector<TensorType>> infer_output_types(OpKind kind, const OpAttrs& attrs,
                                                     const std::vector<TensorType>& inputs);

}  // namespace meshpipe::graph

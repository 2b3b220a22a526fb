// Dimension numbers shared by the graph (shape inference), the kernels and the planner:
// DotDims for general (batched) matrix products and Window2d for convolution and pooling.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/shape.h"
#ifndef __CUDACC__
// The validators below return Expected; nvcc (C++20) cannot compile fmt, which core/status.h
// includes, so CUDA files see only the plain types and dot_sizes (kernels/op_kernel.h).
#include "core/status.h"
#endif

namespace meshpipe {

/// Dimension numbers of a general dot product (XLA's DotGeneral). The output dims are
/// [batch dims (in lhs_batch order), lhs free dims (ascending), rhs free dims (ascending)];
/// a "free" dim is one that is neither batch nor contracting.
struct DotDims {
  std::vector<int64_t> lhs_batch;
  std::vector<int64_t> rhs_batch;
  std::vector<int64_t> lhs_contract;
  std::vector<int64_t> rhs_contract;

  friend bool operator==(const DotDims&, const DotDims&) = default;
};

/// Free dims of an operand of the given rank (ascending): those in neither list.
std::vector<int64_t> dot_free_dims(int64_t rank, const std::vector<int64_t>& batch,
                                   const std::vector<int64_t>& contract);

#ifndef __CUDACC__
/// Validates dims against the operand shapes and returns the output shape.
Expected<Shape> dot_output_shape(const Shape& lhs, const Shape& rhs, const DotDims& dims);
#endif

/// Sizes of a dot as a batch of matrix products: out[b] = lhs[b] (m x k) * rhs[b] (k x n).
struct DotSizes {
  int64_t batch = 1;
  int64_t m = 1;
  int64_t n = 1;
  int64_t k = 1;
};
/// The b, m, n, k of a validated dot.
DotSizes dot_sizes(const Shape& lhs, const Shape& rhs, const DotDims& dims);

/// Kernel, stride and padding of a 2-D window (convolution or pooling) over NCHW tensors.
struct Window2d {
  int64_t kernel_h = 1;
  int64_t kernel_w = 1;
  int64_t stride_h = 1;
  int64_t stride_w = 1;
  int64_t pad_h = 0;
  int64_t pad_w = 0;

  friend bool operator==(const Window2d&, const Window2d&) = default;
};

#ifndef __CUDACC__
/// Output spatial size: (in + 2*pad - kernel) / stride + 1; an error when it is not positive.
Expected<int64_t> window_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad);
#endif

/// "k3x3 s2x2 p1x1".
std::string window_to_string(const Window2d& w);

}  // namespace meshpipe

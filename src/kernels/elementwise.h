// Elementwise kernels: binary arithmetic, activations and their gradients, scalar ops, bias.
#pragma once

#include <vector>

#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

enum class BinaryOp : uint8_t { kAdd, kSub, kMul, kDiv };

/// out = a op b, all of one shape (f32). out may alias a or b.
void binary(const KernelContext& ctx, BinaryOp op, const TensorView& a, const TensorView& b,
            const TensorView& out);

enum class UnaryOp : uint8_t {
  kRelu,     ///< max(x, 0)
  kGelu,     ///< 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), PyTorch approximate='tanh'
  kTanh,     ///< tanh(x)
  kGeluErf,  ///< x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), PyTorch's exact GELU
};

/// out = f(x) (f32). out may alias x.
void unary(const KernelContext& ctx, UnaryOp op, const TensorView& x, const TensorView& out);

/// dx = f'(.) * dy. `saved` is the forward output y for kRelu and kTanh, the input x for the
/// GELUs.
void unary_grad(const KernelContext& ctx, UnaryOp op, const TensorView& saved, const TensorView& dy,
                const TensorView& dx);

/// out = alpha * x + beta (f32). out may alias x.
void affine_scalar(const KernelContext& ctx, const TensorView& x, float alpha, float beta,
                   const TensorView& out);

/// Every element of out set to value (f32 or i32).
void fill(const KernelContext& ctx, const TensorView& out, float value);

/// out = x + b broadcast: b's dim i maps to x's dim dims[i] (dims strictly increasing).
/// out may alias x.
void bias_add(const KernelContext& ctx, const TensorView& x, const TensorView& b,
              const std::vector<int64_t>& dims, const TensorView& out);

/// out = copy of x (any dtype, same shape and byte size).
void copy(const KernelContext& ctx, const TensorView& x, const TensorView& out);

}  // namespace meshpipe::kernels

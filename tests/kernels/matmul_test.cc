// Tests of dot against a textbook double-precision loop over arbitrary DotDims, covering the
// in-place layouts, the ones that need the workspace, and accumulation.
#include "kernels/matmul.h"

#include <catch2/catch.hpp>

#include "core/op_geometry.h"
#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::random_floats;
using testing::ravel;
using testing::unravel;

// out[batch, lhs free, rhs free] = sum over the contracting index of lhs * rhs, in double.
std::vector<double> reference_dot(const std::vector<float>& lhs, const Shape& ls,
                                  const std::vector<float>& rhs, const Shape& rs,
                                  const DotDims& dims) {
  const Shape out_shape = *dot_output_shape(ls, rs, dims);
  const std::vector<int64_t> lfree = dot_free_dims(ls.rank(), dims.lhs_batch, dims.lhs_contract);
  const std::vector<int64_t> rfree = dot_free_dims(rs.rank(), dims.rhs_batch, dims.rhs_contract);
  std::vector<int64_t> contract_sizes;
  for (int64_t d : dims.lhs_contract) contract_sizes.push_back(ls[d]);
  const Shape contract_shape(contract_sizes);
  std::vector<double> out(static_cast<size_t>(out_shape.numel()));
  for (int64_t o = 0; o < out_shape.numel(); ++o) {
    const std::vector<int64_t> oi = unravel(o, out_shape);
    std::vector<int64_t> li(static_cast<size_t>(ls.rank()));
    std::vector<int64_t> ri(static_cast<size_t>(rs.rank()));
    size_t at = 0;
    for (size_t b = 0; b < dims.lhs_batch.size(); ++b, ++at) {
      li[static_cast<size_t>(dims.lhs_batch[b])] = oi[at];
      ri[static_cast<size_t>(dims.rhs_batch[b])] = oi[at];
    }
    for (int64_t d : lfree) li[static_cast<size_t>(d)] = oi[at++];
    for (int64_t d : rfree) ri[static_cast<size_t>(d)] = oi[at++];
    double sum = 0.0;
    for (int64_t c = 0; c < contract_shape.numel(); ++c) {
      const std::vector<int64_t> ci = unravel(c, contract_shape);
      for (size_t j = 0; j < ci.size(); ++j) {
        li[static_cast<size_t>(dims.lhs_contract[j])] = ci[j];
        ri[static_cast<size_t>(dims.rhs_contract[j])] = ci[j];
      }
      sum += static_cast<double>(lhs[static_cast<size_t>(ravel(li, ls))]) *
             rhs[static_cast<size_t>(ravel(ri, rs))];
    }
    out[static_cast<size_t>(o)] = sum;
  }
  return out;
}

// Runs dot on random operands and compares with the reference. Tolerance: 1e-5 relative to
// the largest output (f32 sums of up to a few hundred products err by ~1e-6 of that).
// Returns the workspace size dot asked for.
int64_t run_dot(const Shape& ls, const Shape& rs, const DotDims& dims, bool accumulate = false,
                uint64_t seed = 1) {
  Rng rng(seed);
  std::vector<float> lhs = random_floats(rng, ls.numel());
  std::vector<float> rhs = random_floats(rng, rs.numel());
  const Shape out_shape = *dot_output_shape(ls, rs, dims);
  std::vector<float> out = random_floats(rng, out_shape.numel());
  std::vector<double> want = reference_dot(lhs, ls, rhs, rs, dims);
  if (accumulate) {
    for (size_t i = 0; i < want.size(); ++i) want[i] += out[i];
  }
  const int64_t ws_bytes = dot_workspace_bytes(ls, rs, dims);
  std::vector<float> ws(static_cast<size_t>(ws_bytes / 4));
  TensorView ws_view =
      TensorView(ws.empty() ? nullptr : ws.data(), Shape{ws_bytes / 4}, DType::kF32);
  dot(KernelContext{}, f32_view(lhs, ls), f32_view(rhs, rs), dims, f32_view(out, out_shape),
      ws_view, accumulate);
  check_close(out, want, 1e-5);
  return ws_bytes;
}

TEST_CASE("dot reads x[B,S,H] . W[H,N] in place", "[kernels]") {
  CHECK(run_dot(Shape{2, 5, 16}, Shape{16, 7}, DotDims{{}, {}, {2}, {0}}) == 0);
}

TEST_CASE("dot computes the weight gradient x^T dy over two contracting dims in place",
          "[kernels]") {
  // lhs is [contract, contract, free]: read in place through the BLAS transpose flag.
  CHECK(run_dot(Shape{2, 5, 16}, Shape{2, 5, 7}, DotDims{{}, {}, {0, 1}, {0, 1}}) == 0);
}

TEST_CASE("dot computes the input gradient dy . W^T with rhs transposed in place", "[kernels]") {
  CHECK(run_dot(Shape{2, 5, 7}, Shape{16, 7}, DotDims{{}, {}, {2}, {1}}) == 0);
}

TEST_CASE("dot computes attention scores q . k^T per batch and head in place", "[kernels]") {
  CHECK(run_dot(Shape{2, 3, 6, 8}, Shape{2, 3, 5, 8}, DotDims{{0, 1}, {0, 1}, {3}, {3}}) == 0);
}

TEST_CASE("dot computes attention output p . v per batch and head in place", "[kernels]") {
  CHECK(run_dot(Shape{2, 3, 6, 5}, Shape{2, 3, 5, 8}, DotDims{{0, 1}, {0, 1}, {3}, {2}}) == 0);
}

TEST_CASE("dot transposes both operands in place when contracting dims lead lhs and trail rhs",
          "[kernels]") {
  // lhs [K, M] -> A^T; rhs [N, K] -> B^T; out [M, N].
  CHECK(run_dot(Shape{9, 4}, Shape{6, 9}, DotDims{{}, {}, {0}, {1}}) == 0);
}

TEST_CASE("dot copies an operand whose batch dim is not leading into the workspace", "[kernels]") {
  // lhs [S, B, H] with batch dim 1 must be permuted to [B, S, H]; rhs [B, H, N] is in place.
  const int64_t ws = run_dot(Shape{5, 3, 8}, Shape{3, 8, 4}, DotDims{{1}, {0}, {2}, {1}});
  CHECK(ws == 5 * 3 * 8 * 4);
}

TEST_CASE("dot copies an operand whose contracting dims are out of order", "[kernels]") {
  // lhs [M, K1, K2] contracts (2, 1): its contract group is listed backwards, so it is copied;
  // rhs [K2, K1, N] contracts (0, 1), which is [contract..., free] in order: in place.
  const int64_t ws = run_dot(Shape{4, 3, 5}, Shape{5, 3, 6}, DotDims{{}, {}, {2, 1}, {0, 1}});
  CHECK(ws == 4 * 3 * 5 * 4);
}

TEST_CASE("dot copies both operands when neither layout fits", "[kernels]") {
  // lhs [K, B, M] batch 1 contract 0; rhs [N, B, K] batch 1 contract 2.
  const int64_t ws = run_dot(Shape{7, 2, 3}, Shape{5, 2, 7}, DotDims{{1}, {1}, {0}, {2}});
  CHECK(ws == (7 * 2 * 3 + 5 * 2 * 7) * 4);
}

TEST_CASE("dot handles a batch of outer products and a batch of inner products", "[kernels]") {
  // No contracting dims: k = 1.
  CHECK(run_dot(Shape{3, 4}, Shape{3, 5}, DotDims{{0}, {0}, {}, {}}) == 0);
  // No free dims: m = n = 1.
  CHECK(run_dot(Shape{3, 6}, Shape{3, 6}, DotDims{{0}, {0}, {1}, {1}}) == 0);
}

TEST_CASE("dot with accumulate adds to the existing output", "[kernels]") {
  CHECK(run_dot(Shape{2, 5, 16}, Shape{16, 7}, DotDims{{}, {}, {2}, {0}}, /*accumulate=*/true) ==
        0);
  CHECK(run_dot(Shape{5, 3, 8}, Shape{3, 8, 4}, DotDims{{1}, {0}, {2}, {1}},
                /*accumulate=*/true) > 0);
}

TEST_CASE("dot matches the reference on a larger matrix product", "[kernels]") {
  CHECK(run_dot(Shape{64, 96}, Shape{96, 80}, DotDims{{}, {}, {1}, {0}}, false, 7) == 0);
}

}  // namespace
}  // namespace meshpipe::kernels

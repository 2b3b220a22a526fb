// Tests of the kernel backend table (kernels/backend.h): coverage of every op kind on the CPU,
// the empty CUDA column, run_kernel's checks, in-place and workspace facts, and results through
// the table against naive loops, the synchronised batch-norm pieces included.
#include "kernels/backend.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "kernels/conv.h"
#include "kernels/device.h"
#include "kernels/half.h"
#include "kernels/kernel_test_util.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"

namespace meshpipe::kernels {
namespace {

using testing::f32_view;
using testing::i32_view;
using testing::random_floats;

const KernelContext kCpu{};

OpKind kind_at(int k) { return static_cast<OpKind>(k); }

// Runs `kind` on the CPU through the table.
Status run(OpKind kind, std::vector<TensorView> in, std::vector<TensorView> out,
           const OpAttrs& attrs, TensorView workspace = {}, int64_t id_offset = 0) {
  KernelArgs a;
  a.ctx = &kCpu;
  a.in = in;
  a.out = out;
  a.workspace = workspace;
  a.attrs = &attrs;
  a.id_offset = id_offset;
  return run_kernel(Device::kCpu, kind, a);
}

// Element-wise |got - want| <= tol * max(1, |want|).
void check_equal(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(static_cast<double>(got[i]) - want[i]) <=
          tol * std::max(1.0, std::abs(want[i])));
  }
}

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST_CASE("the CPU backend has a kernel for every op kind", "[kernels][backend]") {
  for (int k = 0; k < kNumOpKinds; ++k) {
    INFO(op_kind_name(kind_at(k)));
    const OpKernel* e = find_kernel(Device::kCpu, kind_at(k));
    REQUIRE(e != nullptr);
    CHECK(e->run != nullptr);
  }
  // Past the last kind there is nothing.
  CHECK(find_kernel(Device::kCpu, kind_at(kNumOpKinds)) == nullptr);
  CHECK(std::string(device_name(Device::kCpu)) == "cpu");
  CHECK(std::string(device_name(Device::kCuda)) == "cuda");
}

TEST_CASE("the CUDA column: every kind in a CUDA build, none without; no GPU state is an error",
          "[kernels][backend]") {
  const bool built = device_inventory().cuda_built;
  for (int k = 0; k < kNumOpKinds; ++k) {
    INFO(op_kind_name(kind_at(k)));
    CHECK((find_kernel(Device::kCuda, kind_at(k)) != nullptr) == built);
  }
  std::vector<float> x{1, 2};
  std::vector<TensorView> views{f32_view(x, Shape{2})};
  const OpAttrs attrs;
  const KernelContext cuda{Device::kCuda, nullptr};
  KernelArgs a;
  a.ctx = &cuda;
  a.in = views;
  a.out = views;
  a.attrs = &attrs;
  std::vector<TensorView> ln_in{views[0], views[0], views[0], views[0], views[0]};
  std::vector<TensorView> ln_out{views[0], views[0], views[0]};
  a.in = ln_in;
  a.out = ln_out;
  const Status s = run_kernel(Device::kCuda, OpKind::kLayerNormGrad, a);
  if (built) {
    CHECK(s.code() == Errc::kInternal);
    CHECK(s.message() == "layer_norm_grad: CUDA kernel called without a GPU state");
  } else {
    CHECK(s.code() == Errc::kUnavailable);
    CHECK(s.message() == "the cuda backend has no kernel for layer_norm_grad");
  }
  CHECK(x == std::vector<float>{1, 2});  // nothing ran
}

TEST_CASE("run_kernel rejects the wrong number of operands, naming the kind",
          "[kernels][backend]") {
  std::vector<float> a{1, 2}, b{3, 4}, c{0, 0};
  const OpAttrs attrs;
  Status s = run(OpKind::kAdd, {f32_view(a, {2})}, {f32_view(c, {2})}, attrs);
  CHECK(s.code() == Errc::kInternal);
  CHECK(s.message() == "add takes 2 inputs and 1 outputs, got 1 and 1");
  s = run(OpKind::kRelu, {f32_view(a, {2})}, {f32_view(b, {2}), f32_view(c, {2})}, attrs);
  CHECK(s.message() == "relu takes 1 inputs and 1 outputs, got 1 and 2");
  s = run(OpKind::kConcat, {}, {f32_view(c, {2})}, attrs);  // variadic, but at least one
  CHECK(s.message() == "concat takes -1 inputs and 1 outputs, got 0 and 1");
  CHECK(c == std::vector<float>{0, 0});  // nothing ran
}

TEST_CASE("run_kernel on the CPU: half tensors are widened and rounded, i64 is refused",
          "[kernels][backend]") {
  const OpAttrs attrs;
  // relu on f16 storage: exact values survive, the output is rounded f16 bits.
  const std::vector<float> xs{1.5f, -2.0f, 3.0f, 0.1f};
  std::vector<uint16_t> h(4), out(4, 0xffff);
  round_to_half(xs.data(), h.data(), 4, DType::kF16);
  const TensorView in16(h.data(), Shape{4}, DType::kF16);
  const TensorView out16(out.data(), Shape{4}, DType::kF16);
  REQUIRE(run(OpKind::kRelu, {in16}, {out16}, attrs).is_ok());
  std::vector<float> back(4);
  widen_from_half(out.data(), back.data(), 4, DType::kF16);
  CHECK(back[0] == 1.5f);
  CHECK(back[1] == 0.0f);
  CHECK(back[2] == 3.0f);
  CHECK(back[3] == Approx(0.1f).epsilon(1e-3));  // 0.1 rounded to f16
  // bf16 inputs, f32 output: the sum of the rounded values, in f32.
  std::vector<uint16_t> b(4);
  round_to_half(xs.data(), b.data(), 4, DType::kBF16);
  std::vector<float> widened(4), y(4, 7.0f);
  widen_from_half(b.data(), widened.data(), 4, DType::kBF16);
  const TensorView bf(b.data(), Shape{4}, DType::kBF16);
  REQUIRE(run(OpKind::kAdd, {bf, bf}, {f32_view(y, {4})}, attrs).is_ok());
  for (size_t i = 0; i < 4; ++i) CHECK(y[i] == 2 * widened[i]);
  // i64 is not a kernel dtype.
  std::vector<float> x{1, -2, 3, -4};
  const TensorView wide(y.data(), Shape{2}, DType::kI64);
  const Status s = run(OpKind::kScale, {f32_view(x, {4})}, {wide}, attrs);
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.message() == "scale: kernels take f32, f16, bf16 and i32 tensors, got an i64 tensor");
}

TEST_CASE("run_kernel needs a context of its device and attributes", "[kernels][backend]") {
  std::vector<float> x{1, 2};
  std::vector<float> y{0, 0};
  std::vector<TensorView> in{f32_view(x, {2})};
  std::vector<TensorView> out{f32_view(y, {2})};
  const OpAttrs attrs;
  KernelArgs a;
  a.in = in;
  a.out = out;
  a.attrs = &attrs;
  Status s = run_kernel(Device::kCpu, OpKind::kTanh, a);  // no context
  CHECK(s.code() == Errc::kInternal);
  CHECK(s.message() == "tanh: kernel called without a cpu context and attributes");
  const KernelContext cuda{Device::kCuda, nullptr};
  a.ctx = &cuda;  // a context of another device
  CHECK(run_kernel(Device::kCpu, OpKind::kTanh, a).code() == Errc::kInternal);
  a.ctx = &kCpu;
  a.attrs = nullptr;
  CHECK(run_kernel(Device::kCpu, OpKind::kTanh, a).code() == Errc::kInternal);
  a.attrs = &attrs;
  REQUIRE(run_kernel(Device::kCpu, OpKind::kTanh, a).is_ok());
  CHECK(y[1] == Approx(std::tanh(2.0)));
}

TEST_CASE("in-place facts: which outputs may overwrite which inputs", "[kernels][backend]") {
  const auto in_place = [](OpKind k, size_t in, size_t out) {
    return kernel_runs_in_place(Device::kCpu, k, in, out);
  };
  for (OpKind k : {OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv}) {
    INFO(op_kind_name(k));
    CHECK(in_place(k, 0, 0));
    CHECK(in_place(k, 1, 0));  // either input
    CHECK_FALSE(in_place(k, 2, 0));
    CHECK_FALSE(in_place(k, 0, 1));
  }
  for (OpKind k : {OpKind::kScale, OpKind::kRelu, OpKind::kGelu, OpKind::kTanh, OpKind::kBiasAdd,
                   OpKind::kSgdUpdate}) {
    INFO(op_kind_name(k));
    CHECK(in_place(k, 0, 0));
    CHECK_FALSE(in_place(k, 1, 0));  // not the bias, not the gradient
  }
  // SGD with momentum: p -> p', m (input 2) -> m'.
  CHECK(in_place(OpKind::kSgdMomentumUpdate, 0, 0));
  CHECK(in_place(OpKind::kSgdMomentumUpdate, 2, 1));
  CHECK_FALSE(in_place(OpKind::kSgdMomentumUpdate, 1, 1));
  // Adam: outputs 0, 1, 2 on inputs 0, 2, 3 and nothing else.
  const size_t adam_target[3] = {0, 2, 3};
  for (size_t out = 0; out < 3; ++out) {
    for (size_t in = 0; in < 5; ++in) {
      INFO("adam output " << out << " input " << in);
      CHECK(in_place(OpKind::kAdamUpdate, in, out) == (in == adam_target[out]));
    }
  }
  // Kernels that read their input while writing elsewhere never run in place.
  for (OpKind k : {OpKind::kDot, OpKind::kSoftmax, OpKind::kTranspose, OpKind::kConv2d,
                   OpKind::kLayerNorm, OpKind::kReshape}) {
    INFO(op_kind_name(k));
    CHECK_FALSE(in_place(k, 0, 0));
  }
  CHECK_FALSE(in_place(OpKind::kAdd, 0, 3));  // out of the table's range
  CHECK_FALSE(in_place(OpKind::kAdd, 9, 0));
}

TEST_CASE("only the reshape entry is a view", "[kernels][backend]") {
  int views = 0;
  for (int k = 0; k < kNumOpKinds; ++k) {
    if (find_kernel(Device::kCpu, kind_at(k))->is_view) {
      ++views;
      CHECK(kind_at(k) == OpKind::kReshape);
    }
  }
  CHECK(views == 1);
  // When it does run (separate buffers), it copies the elements in order.
  std::vector<float> x{1, 2, 3, 4, 5, 6};
  std::vector<float> y(6, 0.0f);
  OpAttrs a;
  a.shape = Shape{3, 2};
  REQUIRE(run(OpKind::kReshape, {f32_view(x, {2, 3})}, {f32_view(y, {3, 2})}, a).is_ok());
  CHECK(y == x);
}

TEST_CASE("workspace sizes of dots and convolutions are the kernels' own", "[kernels][backend]") {
  // A dot whose batch dim is not leading needs permuted copies.
  OpAttrs d;
  d.dot = DotDims{{1}, {0}, {2}, {1}};
  const std::vector<Shape> dot_in{{2, 3, 4}, {3, 4, 5}};
  const int64_t dot_ws = kernel_workspace_bytes(Device::kCpu, OpKind::kDot, dot_in, d);
  CHECK(dot_ws == dot_workspace_bytes(dot_in[0], dot_in[1], d.dot));
  CHECK(dot_ws > 0);
  // A row-major [M, K] x [K, N] is read in place.
  d.dot = DotDims{{}, {}, {1}, {0}};
  CHECK(kernel_workspace_bytes(Device::kCpu, OpKind::kDot, std::vector<Shape>{{4, 3}, {3, 2}}, d) ==
        0);

  // conv x [2, 3, 8, 8], w [4, 3, 3, 3], 3x3 pad 1: one im2col buffer C*R*S x Ho*Wo floats
  // = 27 x 64 x 4 bytes = 6912.
  OpAttrs c;
  c.window = Window2d{3, 3, 1, 1, 1, 1};
  const Shape x{2, 3, 8, 8};
  const Shape w{4, 3, 3, 3};
  const Shape y{2, 4, 8, 8};
  CHECK(conv2d_workspace_bytes(x, w, c.window) == 6912);
  CHECK(kernel_workspace_bytes(Device::kCpu, OpKind::kConv2d, std::vector<Shape>{x, w}, c) ==
        conv2d_workspace_bytes(x, w, c.window));
  // The gradients take the missing operand's shape from attrs.shape.
  c.shape = x;
  CHECK(kernel_workspace_bytes(Device::kCpu, OpKind::kConv2dGradInput, std::vector<Shape>{y, w},
                               c) == conv2d_workspace_bytes(x, w, c.window));
  c.shape = w;
  CHECK(kernel_workspace_bytes(Device::kCpu, OpKind::kConv2dGradFilter, std::vector<Shape>{x, y},
                               c) == conv2d_workspace_bytes(x, w, c.window));
  // Kinds without scratch report 0.
  CHECK(kernel_workspace_bytes(Device::kCpu, OpKind::kRelu, std::vector<Shape>{x}, c) == 0);
}

TEST_CASE("run_kernel computes what naive loops compute", "[kernels][backend]") {
  Rng rng(7);
  SECTION("add and sub") {
    std::vector<float> a = random_floats(rng, 6);
    std::vector<float> b = random_floats(rng, 6);
    std::vector<float> out(6);
    REQUIRE(
        run(OpKind::kSub, {f32_view(a, {2, 3}), f32_view(b, {2, 3})}, {f32_view(out, {2, 3})}, {})
            .is_ok());
    std::vector<double> want(6);
    for (size_t i = 0; i < 6; ++i) want[i] = double(a[i]) - double(b[i]);
    check_equal(out, want, 1e-6);
    // In place on the second input, as the table allows: b <- a + b.
    const std::vector<float> b_old = b;
    REQUIRE(
        run(OpKind::kAdd, {f32_view(a, {6}), f32_view(b, {6})}, {f32_view(b, {6})}, {}).is_ok());
    for (size_t i = 0; i < 6; ++i) want[i] = double(a[i]) + double(b_old[i]);
    check_equal(b, want, 1e-6);
  }
  SECTION("a dot with the batch dim in the middle, through its workspace") {
    // lhs [M=2, B=3, K=4] x rhs [B=3, K=4, N=5] -> out [B, M, N].
    OpAttrs attrs;
    attrs.dot = DotDims{{1}, {0}, {2}, {1}};
    std::vector<float> lhs = random_floats(rng, 24);
    std::vector<float> rhs = random_floats(rng, 60);
    std::vector<float> out(30, 0.0f);
    const std::vector<Shape> shapes{{2, 3, 4}, {3, 4, 5}};
    const int64_t ws = kernel_workspace_bytes(Device::kCpu, OpKind::kDot, shapes, attrs);
    std::vector<float> scratch(static_cast<size_t>(std::max<int64_t>(ws / 4, 1)));
    REQUIRE(run(OpKind::kDot, {f32_view(lhs, shapes[0]), f32_view(rhs, shapes[1])},
                {f32_view(out, {3, 2, 5})}, attrs, f32_view(scratch, {int64_t(scratch.size())}))
                .is_ok());
    std::vector<double> want(30, 0.0);
    for (int b = 0; b < 3; ++b) {
      for (int m = 0; m < 2; ++m) {
        for (int n = 0; n < 5; ++n) {
          double acc = 0.0;
          for (int k = 0; k < 4; ++k)
            acc += double(lhs[(m * 3 + b) * 4 + k]) * rhs[(b * 4 + k) * 5 + n];
          want[size_t((b * 2 + m) * 5 + n)] = acc;
        }
      }
    }
    check_equal(out, want, 1e-5);
  }
  SECTION("scale and relu") {
    std::vector<float> x{-2.0f, -0.5f, 0.0f, 1.5f};
    std::vector<float> y(4);
    OpAttrs a;
    a.alpha = 3.0f;
    a.beta = 0.5f;
    REQUIRE(run(OpKind::kScale, {f32_view(x, {4})}, {f32_view(y, {4})}, a).is_ok());
    check_equal(y, {-5.5, -1.0, 0.5, 5.0}, 1e-6);
    REQUIRE(run(OpKind::kRelu, {f32_view(y, {4})}, {f32_view(y, {4})}, {}).is_ok());  // in place
    check_equal(y, {0.0, 0.0, 0.5, 5.0}, 1e-6);
  }
  SECTION("transpose and reduce_sum") {
    std::vector<float> x = random_floats(rng, 24);  // [2, 3, 4]
    std::vector<float> t(24);
    OpAttrs a;
    a.axes = {2, 0, 1};  // out [4, 2, 3], out[i][j][k] = x[j][k][i]
    REQUIRE(run(OpKind::kTranspose, {f32_view(x, {2, 3, 4})}, {f32_view(t, {4, 2, 3})}, a).is_ok());
    std::vector<double> want(24);
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 2; ++j) {
        for (int k = 0; k < 3; ++k)
          want[size_t((i * 2 + j) * 3 + k)] = x[size_t((j * 3 + k) * 4 + i)];
      }
    }
    check_equal(t, want, 0.0);
    std::vector<float> r(3);
    OpAttrs ra;
    ra.axes = {0, 2};  // [2, 3, 4] -> [3]
    REQUIRE(run(OpKind::kReduceSum, {f32_view(x, {2, 3, 4})}, {f32_view(r, {3})}, ra).is_ok());
    std::vector<double> sums(3, 0.0);
    for (int j = 0; j < 2; ++j) {
      for (int k = 0; k < 3; ++k) {
        for (int i = 0; i < 4; ++i) sums[size_t(k)] += x[size_t((j * 3 + k) * 4 + i)];
      }
    }
    check_equal(r, sums, 1e-6);
  }
  SECTION("an embedding shard gathers its own rows and zeros for the others") {
    // The shard holds vocabulary rows 4..7 of a 3-wide table (id_offset 4).
    std::vector<float> table = random_floats(rng, 12);
    std::vector<int32_t> ids{5, 1, 7, 4};
    std::vector<float> out(12, 9.0f);
    REQUIRE(run(OpKind::kEmbedding, {f32_view(table, {4, 3}), i32_view(ids, {2, 2})},
                {f32_view(out, {2, 2, 3})}, {}, {}, /*id_offset=*/4)
                .is_ok());
    std::vector<double> want(12, 0.0);
    for (size_t p = 0; p < 4; ++p) {
      const int32_t row = ids[p] - 4;
      if (row < 0 || row >= 4) continue;
      for (size_t h = 0; h < 3; ++h) want[p * 3 + h] = table[size_t(row) * 3 + h];
    }
    check_equal(out, want, 0.0);
  }
}

// Batch-norm reference in double: per channel mean, biased variance, y; and the gradients
// dx = gamma rstd (dy - mean(dy) - xhat mean(dy xhat)), dgamma = sum dy xhat, dbeta = sum dy.
struct BnRef {
  std::vector<double> y, mean, rstd, dx, dgamma, dbeta;
};

BnRef bn_reference(const std::vector<float>& x, const std::vector<float>& dy,
                   const std::vector<float>& gamma, const std::vector<float>& beta, int64_t n,
                   int64_t c, int64_t hw, double eps) {
  BnRef r;
  const auto idx = [&](int64_t i, int64_t ch, int64_t s) { return size_t((i * c + ch) * hw + s); };
  const double count = double(n * hw);
  r.y.assign(x.size(), 0.0);
  r.dx.assign(x.size(), 0.0);
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < hw; ++s) sum += x[idx(i, ch, s)];
    }
    const double mean = sum / count;
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < hw; ++s) sq += (x[idx(i, ch, s)] - mean) * (x[idx(i, ch, s)] - mean);
    }
    const double rstd = 1.0 / std::sqrt(sq / count + eps);
    double sdy = 0.0;
    double sdyx = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < hw; ++s) {
        const double xhat = (x[idx(i, ch, s)] - mean) * rstd;
        r.y[idx(i, ch, s)] = xhat * gamma[size_t(ch)] + beta[size_t(ch)];
        sdy += dy[idx(i, ch, s)];
        sdyx += dy[idx(i, ch, s)] * xhat;
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < hw; ++s) {
        const double xhat = (x[idx(i, ch, s)] - mean) * rstd;
        r.dx[idx(i, ch, s)] =
            gamma[size_t(ch)] * rstd * (dy[idx(i, ch, s)] - sdy / count - xhat * sdyx / count);
      }
    }
    r.mean.push_back(mean);
    r.rstd.push_back(rstd);
    r.dgamma.push_back(sdyx);
    r.dbeta.push_back(sdy);
  }
  return r;
}

TEST_CASE("the batch-norm pieces composed on one device equal batch_norm and its gradient",
          "[kernels][backend]") {
  // x [N=4, C=3, H=2, W=3]: count = N * H * W = 24 per channel.
  const int64_t n = 4, c = 3, hw = 6;
  const Shape xs{n, c, 2, 3};
  const Shape cs{c};
  Rng rng(11);
  std::vector<float> x = random_floats(rng, xs.numel(), 2.0);
  for (size_t i = 0; i < x.size(); ++i) x[i] += float(i % 3);  // channel-ish offsets
  std::vector<float> dy = random_floats(rng, xs.numel());
  std::vector<float> gamma{1.5f, -0.5f, 0.75f};
  std::vector<float> beta{0.1f, 0.2f, -0.3f};
  OpAttrs attrs;
  attrs.eps = 1e-5f;
  attrs.count = double(n * hw);

  // Forward in pieces: sums -> stats (mean, centered square sums) -> apply (y, rstd).
  std::vector<float> sums(3), mean(3), sq(3), y(x.size()), rstd(3);
  REQUIRE(run(OpKind::kBatchNormSums, {f32_view(x, xs)}, {f32_view(sums, cs)}, attrs).is_ok());
  REQUIRE(run(OpKind::kBatchNormStats, {f32_view(x, xs), f32_view(sums, cs)},
              {f32_view(mean, cs), f32_view(sq, cs)}, attrs)
              .is_ok());
  REQUIRE(run(OpKind::kBatchNormApply,
              {f32_view(x, xs), f32_view(mean, cs), f32_view(sq, cs), f32_view(gamma, cs),
               f32_view(beta, cs)},
              {f32_view(y, xs), f32_view(rstd, cs)}, attrs)
              .is_ok());
  // Backward in pieces: grad_sums (dgamma, dbeta) -> grad_apply (dx).
  std::vector<float> dgamma(3), dbeta(3), dx(x.size());
  REQUIRE(run(OpKind::kBatchNormGradSums,
              {f32_view(dy, xs), f32_view(x, xs), f32_view(mean, cs), f32_view(rstd, cs)},
              {f32_view(dgamma, cs), f32_view(dbeta, cs)}, attrs)
              .is_ok());
  REQUIRE(run(OpKind::kBatchNormGradApply,
              {f32_view(dy, xs), f32_view(x, xs), f32_view(mean, cs), f32_view(rstd, cs),
               f32_view(gamma, cs), f32_view(dgamma, cs), f32_view(dbeta, cs)},
              {f32_view(dx, xs)}, attrs)
              .is_ok());

  // The whole kernels.
  std::vector<float> y1(x.size()), mean1(3), rstd1(3), dx1(x.size()), dgamma1(3), dbeta1(3);
  batch_norm(kCpu, f32_view(x, xs), f32_view(gamma, cs), f32_view(beta, cs), attrs.eps,
             f32_view(y1, xs), f32_view(mean1, cs), f32_view(rstd1, cs));
  batch_norm_grad(kCpu, f32_view(dy, xs), f32_view(x, xs), f32_view(mean1, cs), f32_view(rstd1, cs),
                  f32_view(gamma, cs), f32_view(dx1, xs), f32_view(dgamma1, cs),
                  f32_view(dbeta1, cs));
  check_equal(mean, widen(mean1), 1e-6);
  check_equal(rstd, widen(rstd1), 1e-6);
  check_equal(y, widen(y1), 1e-6);
  check_equal(dgamma, widen(dgamma1), 1e-6);
  check_equal(dbeta, widen(dbeta1), 1e-6);
  check_equal(dx, widen(dx1), 1e-6);

  // And both against the double-precision reference.
  const BnRef ref = bn_reference(x, dy, gamma, beta, n, c, hw, attrs.eps);
  check_equal(mean, ref.mean, 1e-5);
  check_equal(rstd, ref.rstd, 1e-5);
  check_equal(y, ref.y, 1e-5);
  check_equal(dgamma, ref.dgamma, 1e-5);
  check_equal(dbeta, ref.dbeta, 1e-5);
  check_equal(dx, ref.dx, 1e-5);
  // The sums piece is the plain channel sum: mean * count.
  for (size_t ch = 0; ch < 3; ++ch) CHECK(sums[ch] == Approx(ref.mean[ch] * 24.0).margin(1e-4));
}

}  // namespace
}  // namespace meshpipe::kernels

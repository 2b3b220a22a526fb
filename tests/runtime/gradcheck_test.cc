// Finite-difference checks of every forward op's gradient: autodiff + kernels + executor.
//
// Each case builds y = op(params...), the scalar loss L = sum(y * r) with a fixed random r,
// appends the backward pass and compares dL/dp with central differences
// (L(p + eps) - L(p - eps)) / (2 eps) on up to 16 elements of every parameter.
//
// Tolerance: the forward runs in float32, so L carries a rounding error of about
// 1e-7 * sum|y r| (1e-5 for these sizes); divided by 2 eps = 1e-2 that is ~1e-3. Truncation error
// is O(eps^2) = 2.5e-5 relative. We accept |fd - ad| <= 5e-3 + 2e-2 |ad|; a wrong gradient is
// typically off by O(|ad|) and fails.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <numeric>

#include "core/rng.h"
#include "graph/autodiff.h"
#include "graph/builder.h"
#include "runtime/executor.h"

namespace meshpipe::runtime {
namespace {

using graph::Builder;
using graph::InitSpec;

using ParamFill = std::function<void(int64_t numel, std::vector<float>& out, Rng& rng)>;

// Normal values pushed at least 0.1 away from zero (keeps relu and |x| kinks out of reach).
void away_from_zero(int64_t n, std::vector<float>& out, Rng& rng) {
  out.resize(static_cast<size_t>(n));
  for (auto& v : out) {
    const double x = rng.normal();
    v = static_cast<float>(x >= 0 ? 0.1 + x : -0.1 + x);
  }
}

// A random permutation of evenly spaced values (no near-ties for max and top-k).
void spaced(int64_t n, std::vector<float>& out, Rng& rng) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) std::swap(idx[size_t(i)], idx[size_t(rng.below(i + 1))]);
  out.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[size_t(i)] = 0.05f * static_cast<float>(idx[size_t(i)]) - 1.0f;
}

struct GradCase {
  GradCase(std::function<ValueId(Builder&)> b,
           std::vector<std::pair<std::string, HostTensor>> in = {})
      : build(std::move(b)), int_inputs(std::move(in)) {}

  std::function<ValueId(Builder&)> build;  // returns y; parameters are the graph's parameters
  std::vector<std::pair<std::string, HostTensor>> int_inputs;  // ids / labels by name
  ParamFill fill = away_from_zero;
  double eps = 5e-3;
};

void check_gradients(const GradCase& c) {
  Builder b;
  ValueId y = c.build(b);
  REQUIRE(b.status().is_ok());
  INFO("checking " << graph::describe_op(b.graph(), b.graph().value(y).producer));
  const Shape y_shape = b.shape(y);
  ValueId r = b.input("r", y_shape, DType::kF32);
  std::vector<int64_t> all(static_cast<size_t>(y_shape.rank()));
  std::iota(all.begin(), all.end(), 0);
  ValueId loss = b.reduce_sum(b.mul(y, r, "weighted"), all, "loss");
  auto fg = std::move(b).finish(loss);
  REQUIRE(fg.has_value());

  graph::Graph train = fg->graph;
  auto grads = graph::append_backward(train, loss);
  INFO(grads.status().to_string());
  REQUIRE(grads.has_value());
  ExecutorOptions eo;
  for (const auto& [p, gv] : *grads) eo.retain.push_back(gv);
  auto exec = Executor::create(train, eo);
  REQUIRE(exec.has_value());
  auto fwd = Executor::create(fg->graph);
  REQUIRE(fwd.has_value());

  Rng rng(99);
  std::vector<std::pair<ValueId, HostTensor>> inputs;
  for (ValueId in : fg->inputs) {
    const graph::Value& v = fg->graph.value(in);
    if (v.name == "r") {
      std::vector<float> vals(static_cast<size_t>(v.shape.numel()));
      for (auto& x : vals) x = static_cast<float>(rng.normal());
      inputs.emplace_back(in, HostTensor::from_f32(v.shape, vals));
      continue;
    }
    bool found = false;
    for (const auto& [name, t] : c.int_inputs) {
      if (name == v.name) {
        inputs.emplace_back(in, t);
        found = true;
      }
    }
    REQUIRE(found);
  }
  for (ValueId p : fg->graph.values_with_role(graph::ValueRole::kParameter)) {
    std::vector<float> vals;
    c.fill(fg->graph.value(p).shape.numel(), vals, rng);
    const HostTensor t = HostTensor::from_f32(fg->graph.value(p).shape, vals);
    REQUIRE((*exec)->set_value(p, t).is_ok());
    REQUIRE((*fwd)->set_value(p, t).is_ok());
  }
  REQUIRE((*exec)->run(inputs).has_value());
  REQUIRE_FALSE(grads->empty());

  for (const auto& [p, gv] : *grads) {
    const graph::Value& pv = fg->graph.value(p);
    INFO("parameter " << pv.name << " " << pv.shape.to_string());
    auto analytic = (*exec)->get_value(gv);
    REQUIRE(analytic.has_value());
    HostTensor base = *(*fwd)->get_value(p);
    const int64_t n = pv.shape.numel();
    const int64_t checks = std::min<int64_t>(n, 16);
    for (int64_t k = 0; k < checks; ++k) {
      const int64_t i = n <= 16 ? k : rng.below(n);
      HostTensor t = base;
      t.f32()[i] = base.f32()[i] + static_cast<float>(c.eps);
      REQUIRE((*fwd)->set_value(p, t).is_ok());
      const double lp = (*fwd)->run(inputs)->loss;
      t.f32()[i] = base.f32()[i] - static_cast<float>(c.eps);
      REQUIRE((*fwd)->set_value(p, t).is_ok());
      const double lm = (*fwd)->run(inputs)->loss;
      const double fd = (lp - lm) / (2 * c.eps);
      const double ad = analytic->f32()[i];
      INFO("element " << i << ": finite difference " << fd << ", autodiff " << ad);
      CHECK(std::fabs(fd - ad) <= 5e-3 + 2e-2 * std::fabs(ad));
    }
    REQUIRE((*fwd)->set_value(p, base).is_ok());
  }
}

ValueId param(Builder& b, const std::string& name, Shape s) {
  return b.parameter(name, std::move(s), InitSpec::zeros());
}

HostTensor ids(Shape s, int64_t range, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(s.numel()));
  for (auto& x : v) x = static_cast<int32_t>(rng.below(range));
  return HostTensor::from_i32(std::move(s), v);
}

TEST_CASE("gradient of dot: matmul, multiple contracting dims, batch dims", "[runtime][grad]") {
  check_gradients({[](Builder& b) {
    return b.matmul(param(b, "x", {2, 3, 4}), param(b, "w", {4, 5}));
  }});
  check_gradients({[](Builder& b) {
    return b.dot(param(b, "a", {3, 2, 4}), param(b, "c", {4, 5, 3}),
                 DotDims{{}, {}, {0, 2}, {2, 0}});
  }});
  check_gradients({[](Builder& b) {
    // Non-leading batch dims on both sides (the MoE expert layout).
    return b.dot(param(b, "a", {2, 3, 4, 5}), param(b, "c", {3, 5, 6}),
                 DotDims{{1}, {0}, {3}, {1}});
  }});
  check_gradients({[](Builder& b) {
    return b.dot(param(b, "q", {2, 2, 3, 4}), param(b, "k", {2, 2, 5, 4}),
                 DotDims{{0, 1}, {0, 1}, {3}, {3}});
  }});
  // Weights that contract their last dim get their gradient in place (no transpose): a tied
  // LM head, and with a non-leading batch dim of the lhs.
  check_gradients({[](Builder& b) {
    return b.dot(param(b, "x", {2, 3, 4}), param(b, "wte", {5, 4}), DotDims{{}, {}, {2}, {1}});
  }});
  check_gradients({[](Builder& b) {
    return b.dot(param(b, "a", {2, 3, 4, 5}), param(b, "c", {3, 6, 5}),
                 DotDims{{1}, {0}, {3}, {2}});
  }});
}

TEST_CASE("gradient of elementwise arithmetic and bias", "[runtime][grad]") {
  check_gradients({[](Builder& b) { return b.add(param(b, "a", {3, 4}), param(b, "c", {3, 4})); }});
  check_gradients({[](Builder& b) { return b.sub(param(b, "a", {3, 4}), param(b, "c", {3, 4})); }});
  check_gradients({[](Builder& b) { return b.mul(param(b, "a", {3, 4}), param(b, "c", {3, 4})); }});
  check_gradients({[](Builder& b) {
    // Denominator 2 + 0.1 c stays near 2.
    return b.div(param(b, "a", {3, 4}), b.scale(param(b, "c", {3, 4}), 0.1f, 2.0f));
  }});
  check_gradients({[](Builder& b) { return b.scale(param(b, "a", {5}), -1.5f, 0.3f); }});
  check_gradients({[](Builder& b) {
    return b.bias_add(param(b, "x", {2, 3, 4, 5}), param(b, "bias", {3, 5}), {1, 3});
  }});
  check_gradients({[](Builder& b) {
    ValueId x = param(b, "x", {3, 4});
    return b.mul(x, x);  // one value read twice by the same op
  }});
}

TEST_CASE("gradient of activations", "[runtime][grad]") {
  check_gradients({[](Builder& b) { return b.relu(param(b, "x", {4, 6})); }});
  check_gradients({[](Builder& b) { return b.gelu(param(b, "x", {4, 6})); }});
  check_gradients({[](Builder& b) { return b.tanh(param(b, "x", {4, 6})); }});
}

TEST_CASE("gradient of softmax and log-softmax", "[runtime][grad]") {
  check_gradients({[](Builder& b) { return b.softmax(param(b, "x", {2, 3, 5})); }});
  check_gradients({[](Builder& b) { return b.softmax(param(b, "x", {2, 3, 5}), 1); }});
  check_gradients({[](Builder& b) { return b.softmax(param(b, "x", {2, 4, 4}), -1, true); }});
  check_gradients({[](Builder& b) { return b.log_softmax(param(b, "x", {3, 6})); }});
}

TEST_CASE("gradient of layer norm and batch norm", "[runtime][grad]") {
  check_gradients({[](Builder& b) {
    return b.layer_norm(param(b, "x", {2, 3, 8}), param(b, "g", {8}), param(b, "beta", {8}));
  }});
  check_gradients({[](Builder& b) {
    return b.batch_norm(param(b, "x", {3, 2, 3, 3}), param(b, "g", {2}), param(b, "beta", {2}));
  }});
  check_gradients({[](Builder& b) {
    return b.batch_norm(param(b, "x", {6, 4}), param(b, "g", {4}), param(b, "beta", {4}));
  }});
}

TEST_CASE("gradient of embedding and cross-entropy", "[runtime][grad]") {
  check_gradients({[](Builder& b) {
                     ValueId t = param(b, "table", {7, 3});
                     return b.embedding(t, b.input("ids", Shape{2, 5}, DType::kI32));
                   },
                   {{"ids", ids(Shape{2, 5}, 7, 1)}}});
  check_gradients(
      {[](Builder& b) {
         ValueId logits = param(b, "logits", {2, 3, 6});
         ValueId loss = b.cross_entropy(logits, b.input("labels", Shape{2, 3}, DType::kI32));
         return b.reshape(loss, Shape{1});
       },
       {{"labels", ids(Shape{2, 3}, 6, 2)}}});
}

TEST_CASE("gradient of layout ops", "[runtime][grad]") {
  check_gradients({[](Builder& b) { return b.reshape(param(b, "x", {2, 6}), Shape{3, 4}); }});
  check_gradients({[](Builder& b) { return b.transpose(param(b, "x", {2, 3, 4}), {2, 0, 1}); }});
  check_gradients({[](Builder& b) { return b.slice(param(b, "x", {3, 6}), 1, 2, 5); }});
  check_gradients({[](Builder& b) {
    return b.concat({param(b, "a", {2, 3}), param(b, "c", {2, 2})}, 1);
  }});
  check_gradients({[](Builder& b) { return b.reduce_sum(param(b, "x", {2, 3, 4}), {0, 2}); }});
  check_gradients({[](Builder& b) { return b.reduce_mean(param(b, "x", {2, 3, 4}), {1}); }});
  check_gradients({[](Builder& b) {
    return b.broadcast(param(b, "x", {3}), Shape{2, 3, 4}, {1});
  }});
}

TEST_CASE("gradient of convolution and pooling", "[runtime][grad]") {
  check_gradients({[](Builder& b) {
    return b.conv2d(param(b, "x", {2, 3, 6, 6}), param(b, "w", {4, 3, 3, 3}),
                    Window2d{3, 3, 2, 2, 1, 1});
  }});
  check_gradients({[](Builder& b) {
    return b.conv2d(param(b, "x", {1, 2, 5, 5}), param(b, "w", {3, 2, 1, 1}),
                    Window2d{1, 1, 1, 1, 0, 0});
  }});
  GradCase pool{[](Builder& b) {
    return b.max_pool2d(param(b, "x", {2, 2, 5, 5}), Window2d{3, 3, 2, 2, 1, 1});
  }};
  pool.fill = spaced;
  check_gradients(pool);
  check_gradients({[](Builder& b) {
    return b.avg_pool2d(param(b, "x", {2, 2, 6, 6}), Window2d{2, 2, 2, 2, 0, 0});
  }});
}

TEST_CASE("gradient of top-k gating, including capacity drops", "[runtime][grad]") {
  for (int64_t k : {1, 2}) {
    GradCase g{[k](Builder& b) {
      // 6 tokens, 3 experts, capacity 2: some choices are dropped.
      return b.topk_gating(b.scale(param(b, "p", {1, 6, 3}), 0.5f, 1.0f), k, 2).first;
    }};
    g.fill = spaced;
    check_gradients(g);
  }
}

}  // namespace
}  // namespace meshpipe::runtime

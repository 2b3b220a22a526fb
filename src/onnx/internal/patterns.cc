// Chain rewrites of the ONNX node list (internal/patterns.h).
#include "onnx/internal/patterns.h"

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace meshpipe::onnx::internal {
namespace {

class Matcher {
 public:
  explicit Matcher(const GraphProto& g) : g_(g) {
    for (size_t k = 0; k < g.nodes.size(); ++k) {
      for (const std::string& o : g.nodes[k].outputs) producer_[o] = k;
      for (const std::string& i : g.nodes[k].inputs) {
        if (!i.empty()) consumers_[i].push_back(k);
      }
    }
    for (const ValueInfo& v : g.outputs) outputs_.insert(v.name);
    for (const Tensor& t : g.initializers) initializers_[t.name] = &t;
  }

  // The node producing `value`, when it is of `op`.
  const Node* producer(const std::string& value, const char* op) const {
    auto it = producer_.find(value);
    if (it == producer_.end()) return nullptr;
    const Node& n = g_.nodes[it->second];
    return n.op_type == op && n.domain.empty() ? &n : nullptr;
  }
  size_t index(const Node* n) const { return static_cast<size_t>(n - g_.nodes.data()); }

  // The single node reading `value` (and not a graph output), when it is of `op`.
  const Node* sole_consumer(const std::string& value, const char* op) const {
    if (outputs_.count(value) != 0) return nullptr;
    auto it = consumers_.find(value);
    if (it == consumers_.end() || it->second.size() != 1) return nullptr;
    const Node& n = g_.nodes[it->second[0]];
    return n.op_type == op && n.domain.empty() ? &n : nullptr;
  }
  // Every reader of `value` is among `nodes` and it is not a graph output.
  bool read_only_by(const std::string& value, const std::set<size_t>& nodes) const {
    if (outputs_.count(value) != 0) return false;
    auto it = consumers_.find(value);
    if (it == consumers_.end()) return true;
    for (size_t k : it->second) {
      if (nodes.count(k) == 0) return false;
    }
    return true;
  }

  // A scalar constant: a Constant node's one-element value or a one-element initializer.
  std::optional<double> scalar(const std::string& value) const {
    const Tensor* t = nullptr;
    if (const Node* c = producer(value, "Constant")) {
      const Attribute* a = c->attribute("value");
      if (a != nullptr && a->t != nullptr) t = a->t.get();
      if (const Attribute* f = c->attribute("value_float")) return f->f;
    } else if (auto it = initializers_.find(value); it != initializers_.end()) {
      t = it->second;
    }
    if (t == nullptr) return std::nullopt;
    auto n = t->numel();
    if (!n.has_value() || *n != 1) return std::nullopt;
    if (auto f = t->to_floats(); f.has_value()) return (*f)[0];
    if (auto i = t->to_ints(); i.has_value()) return static_cast<double>((*i)[0]);
    return std::nullopt;
  }
  // The other input of a two-input node whose one input is `known`; empty when neither is.
  static std::string other(const Node& n, const std::string& known) {
    if (n.inputs.size() != 2) return {};
    if (n.inputs[0] == known) return n.inputs[1];
    if (n.inputs[1] == known) return n.inputs[0];
    return {};
  }
  // For a two-input node with one scalar-constant input near `want`: the other input.
  std::string with_scalar(const Node& n, double want) const {
    if (n.inputs.size() != 2) return {};
    for (int k = 0; k < 2; ++k) {
      auto s = scalar(n.inputs[size_t(k)]);
      if (s && std::abs(*s - want) <= 1e-4 * std::max(1.0, std::abs(want))) {
        return n.inputs[size_t(1 - k)];
      }
    }
    return {};
  }
  static bool last_axis_mean(const Node& n) {
    const Attribute* axes = n.attribute("axes");
    const Attribute* keep = n.attribute("keepdims");
    return n.inputs.size() == 1 && axes != nullptr && axes->ints == std::vector<int64_t>{-1} &&
           (keep == nullptr || keep->i == 1);
  }

  const GraphProto& g_;
  std::map<std::string, size_t> producer_;
  std::map<std::string, std::vector<size_t>> consumers_;
  std::set<std::string> outputs_;
  std::map<std::string, const Tensor*> initializers_;
};

Attribute float_attr(const std::string& name, float v) {
  Attribute a;
  a.name = name;
  a.kind = static_cast<int32_t>(Attribute::Kind::kFloat);
  a.f = v;
  return a;
}

Attribute string_attr(const std::string& name, const std::string& v) {
  Attribute a;
  a.name = name;
  a.kind = static_cast<int32_t>(Attribute::Kind::kString);
  a.s = v;
  return a;
}

struct Rewrite {
  std::set<size_t> removed;
  Node node;
  size_t at = 0;  // index of the chain's last node
};

// At Div(d, s): the layer-norm decomposition ending in Mul gamma, Add beta.
std::optional<Rewrite> match_layer_norm(const Matcher& m, const Node& div) {
  if (div.op_type != "Div" || div.inputs.size() != 2) return std::nullopt;
  const std::string& d = div.inputs[0];
  const Node* sqrt = m.producer(div.inputs[1], "Sqrt");
  if (sqrt == nullptr) return std::nullopt;
  const Node* add_eps = m.producer(sqrt->inputs[0], "Add");
  if (add_eps == nullptr) return std::nullopt;
  std::optional<double> eps;
  std::string var;
  for (int k = 0; k < 2; ++k) {
    if (auto s = m.scalar(add_eps->inputs[size_t(k)])) {
      eps = s;
      var = add_eps->inputs[size_t(1 - k)];
    }
  }
  if (!eps) return std::nullopt;
  const Node* mean2 = m.producer(var, "ReduceMean");
  if (mean2 == nullptr || !Matcher::last_axis_mean(*mean2)) return std::nullopt;
  const Node* sq = m.producer(mean2->inputs[0], "Pow");
  if (sq != nullptr) {
    auto e = m.scalar(sq->inputs[1]);
    if (!e || *e != 2.0 || sq->inputs[0] != d) return std::nullopt;
  } else {
    sq = m.producer(mean2->inputs[0], "Mul");
    if (sq == nullptr || sq->inputs[0] != d || sq->inputs[1] != d) return std::nullopt;
  }
  const Node* sub = m.producer(d, "Sub");
  if (sub == nullptr) return std::nullopt;
  const std::string& x = sub->inputs[0];
  const Node* mean1 = m.producer(sub->inputs[1], "ReduceMean");
  if (mean1 == nullptr || !Matcher::last_axis_mean(*mean1) || mean1->inputs[0] != x) {
    return std::nullopt;
  }
  const Node* mul = m.sole_consumer(div.outputs[0], "Mul");
  if (mul == nullptr) return std::nullopt;
  const std::string gamma = Matcher::other(*mul, div.outputs[0]);
  const Node* add = m.sole_consumer(mul->outputs[0], "Add");
  if (add == nullptr || gamma.empty()) return std::nullopt;
  const std::string beta = Matcher::other(*add, mul->outputs[0]);
  if (beta.empty()) return std::nullopt;
  Rewrite r;
  for (const Node* n : {mean1, sub, sq, mean2, add_eps, sqrt, &div, mul, add}) {
    r.removed.insert(m.index(n));
  }
  // The intermediates must not be read outside the chain.
  for (const Node* n : {mean1, sub, sq, mean2, add_eps, sqrt, &div, mul}) {
    if (!m.read_only_by(n->outputs[0], r.removed)) return std::nullopt;
  }
  r.at = m.index(add);
  r.node.name = add->name;
  r.node.op_type = "LayerNormalization";
  r.node.domain = "meshpipe";
  r.node.inputs = {x, gamma, beta};
  r.node.outputs = {add->outputs[0]};
  r.node.attributes = {float_attr("epsilon", static_cast<float>(*eps))};
  return r;
}

// The tail x * (1 + t) * 0.5 shared by both GELU forms, from the node producing t.
std::optional<Rewrite> match_gelu_tail(const Matcher& m, const Node& gate, const std::string& x,
                                       std::set<size_t> chain, const std::string& approximate) {
  const Node* add1 = m.sole_consumer(gate.outputs[0], "Add");
  if (add1 == nullptr || m.with_scalar(*add1, 1.0) != gate.outputs[0]) return std::nullopt;
  const Node* mulx = m.sole_consumer(add1->outputs[0], "Mul");
  if (mulx == nullptr || Matcher::other(*mulx, add1->outputs[0]) != x) return std::nullopt;
  const Node* half = m.sole_consumer(mulx->outputs[0], "Mul");
  if (half == nullptr || m.with_scalar(*half, 0.5) != mulx->outputs[0]) return std::nullopt;
  for (const Node* n : {&gate, add1, mulx, half}) chain.insert(m.index(n));
  Rewrite r;
  r.removed = chain;
  for (size_t k : chain) {
    const Node& n = m.g_.nodes[k];
    if (&n == half) continue;
    if (!m.read_only_by(n.outputs[0], chain)) return std::nullopt;
  }
  r.at = m.index(half);
  r.node.name = half->name;
  r.node.op_type = "Gelu";
  r.node.domain = "meshpipe";
  r.node.inputs = {x};
  r.node.outputs = {half->outputs[0]};
  r.node.attributes = {string_attr("approximate", approximate)};
  return r;
}

std::optional<Rewrite> match_gelu_erf(const Matcher& m, const Node& erf) {
  if (erf.op_type != "Erf" || erf.inputs.size() != 1) return std::nullopt;
  std::string x;
  const Node* scale = m.producer(erf.inputs[0], "Div");
  if (scale != nullptr) {
    x = m.with_scalar(*scale, std::sqrt(2.0));
    if (x != scale->inputs[0]) x.clear();
  } else if ((scale = m.producer(erf.inputs[0], "Mul")) != nullptr) {
    x = m.with_scalar(*scale, 1.0 / std::sqrt(2.0));
  }
  if (x.empty()) return std::nullopt;
  return match_gelu_tail(m, erf, x, {m.index(scale)}, "none");
}

std::optional<Rewrite> match_gelu_tanh(const Matcher& m, const Node& tanh) {
  if (tanh.op_type != "Tanh" || tanh.inputs.size() != 1) return std::nullopt;
  const Node* s = m.producer(tanh.inputs[0], "Mul");
  if (s == nullptr) return std::nullopt;
  const std::string inner = m.with_scalar(*s, std::sqrt(2.0 / 3.14159265358979323846));
  const Node* add = m.producer(inner, "Add");
  if (add == nullptr || add->inputs.size() != 2) return std::nullopt;
  // x + 0.044715 * x^3, x^3 as Mul(x, Mul(x, x)) or Pow(x, 3).
  for (int k = 0; k < 2; ++k) {
    const std::string& x = add->inputs[size_t(k)];
    const Node* c = m.producer(add->inputs[size_t(1 - k)], "Mul");
    if (c == nullptr) continue;
    const std::string cube = m.with_scalar(*c, 0.044715);
    std::set<size_t> chain{m.index(s), m.index(add), m.index(c)};
    if (const Node* p = m.producer(cube, "Pow")) {
      auto e = m.scalar(p->inputs[1]);
      if (!e || *e != 3.0 || p->inputs[0] != x) continue;
      chain.insert(m.index(p));
    } else if (const Node* m3 = m.producer(cube, "Mul")) {
      const std::string sq = Matcher::other(*m3, x);
      const Node* m2 = m.producer(sq, "Mul");
      if (m2 == nullptr || m2->inputs[0] != x || m2->inputs[1] != x) continue;
      chain.insert(m.index(m3));
      chain.insert(m.index(m2));
    } else {
      continue;
    }
    return match_gelu_tail(m, tanh, x, chain, "tanh");
  }
  return std::nullopt;
}

}  // namespace

std::vector<Node> rewrite_patterns(const GraphProto& g, PatternStats* stats) {
  const Matcher m(g);
  std::set<size_t> removed;
  std::map<size_t, Node> placed;
  const auto apply = [&](std::optional<Rewrite> r, int* counter) {
    if (!r) return;
    for (size_t k : r->removed) {
      if (removed.count(k) != 0) return;  // overlaps an earlier rewrite
    }
    removed.insert(r->removed.begin(), r->removed.end());
    placed[r->at] = std::move(r->node);
    ++*counter;
  };
  PatternStats local;
  PatternStats& s = stats != nullptr ? *stats : local;  // counted either way
  for (const Node& n : g.nodes) {
    if (!n.domain.empty()) continue;
    if (n.op_type == "Div") apply(match_layer_norm(m, n), &s.layer_norms);
    if (n.op_type == "Erf") apply(match_gelu_erf(m, n), &s.gelu_erf);
    if (n.op_type == "Tanh") apply(match_gelu_tanh(m, n), &s.gelu_tanh);
  }
  std::vector<Node> out;
  out.reserve(g.nodes.size());
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    if (auto it = placed.find(k); it != placed.end()) {
      out.push_back(std::move(it->second));
    } else if (removed.count(k) == 0) {
      out.push_back(g.nodes[k]);
    }
  }
  return out;
}

}  // namespace meshpipe::onnx::internal

// IlpProblem::validate and evaluate(): the solver-independent arithmetic every solver result is
// checked against.
#include "planner/ilp.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/units.h"
#include "planner/internal/ilp_checks.h"

namespace meshpipe::planner {
namespace {

using internal::node_label;

/// First index of a NaN or -inf entry, or -1.
int64_t find_bad_cost(const std::vector<double>& v) {
  for (size_t k = 0; k < v.size(); ++k) {
    if (std::isnan(v[k]) || v[k] == -std::numeric_limits<double>::infinity()) {
      return static_cast<int64_t>(k);
    }
  }
  return -1;
}

Status validate_nodes(const IlpProblem& p) {
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    const IlpProblem::Node& n = p.nodes[i];
    const std::string label = node_label(p, static_cast<int32_t>(i));
    if (n.cost.empty()) return make_error(Errc::kInvalidArgument, "{} has no strategy", label);
    if (n.memory.size() != n.cost.size()) {
      return make_error(Errc::kInvalidArgument, "{} has {} costs but {} memory entries", label,
                        n.cost.size(), n.memory.size());
    }
    if (int64_t k = find_bad_cost(n.cost); k >= 0) {
      return make_error(Errc::kInvalidArgument, "{}: cost of strategy {} is {} (NaN or -inf)",
                        label, k, n.cost[static_cast<size_t>(k)]);
    }
    for (size_t k = 0; k < n.memory.size(); ++k) {
      if (!std::isfinite(n.memory[k]) || n.memory[k] < 0) {
        return make_error(Errc::kInvalidArgument,
                          "{}: memory of strategy {} is {} (must be finite and >= 0)", label, k,
                          n.memory[k]);
      }
    }
  }
  return Status::ok();
}

Status validate_pair(const IlpProblem& p, const char* what, size_t index, int32_t a, int32_t b,
                     size_t matrix_size) {
  const auto n = static_cast<int32_t>(p.nodes.size());
  if (a < 0 || a >= n || b < 0 || b >= n) {
    return make_error(Errc::kInvalidArgument, "{} {} links nodes {} and {}, out of range [0, {})",
                      what, index, a, b, n);
  }
  if (a == b) {
    return make_error(Errc::kInvalidArgument, "{} {} links {} to itself", what, index,
                      node_label(p, a));
  }
  const auto expected = static_cast<size_t>(p.num_strategies(a) * p.num_strategies(b));
  if (matrix_size != expected) {
    return make_error(Errc::kInvalidArgument, "{} {} ({} -> {}) has {} entries, expected {} x {}",
                      what, index, node_label(p, a), node_label(p, b), matrix_size,
                      p.num_strategies(a), p.num_strategies(b));
  }
  return Status::ok();
}

Status validate_liveness(const IlpProblem& p) {
  const auto n = static_cast<int32_t>(p.nodes.size());
  std::vector<int32_t> seen(p.nodes.size(), -1);
  for (size_t t = 0; t < p.liveness.size(); ++t) {
    for (int32_t i : p.liveness[t]) {
      if (i < 0 || i >= n) {
        return make_error(Errc::kInvalidArgument,
                          "liveness point {} lists node {}, out of range [0, {})", t, i, n);
      }
      if (seen[static_cast<size_t>(i)] == static_cast<int32_t>(t)) {
        return make_error(Errc::kInvalidArgument, "liveness point {} lists {} twice", t,
                          node_label(p, i));
      }
      seen[static_cast<size_t>(i)] = static_cast<int32_t>(t);
    }
  }
  if (!p.liveness_memory.empty()) {
    if (p.liveness_memory.size() != p.liveness.size()) {
      return make_error(Errc::kInvalidArgument, "liveness_memory has {} rows, liveness has {}",
                        p.liveness_memory.size(), p.liveness.size());
    }
    for (size_t t = 0; t < p.liveness.size(); ++t) {
      if (p.liveness_memory[t].size() != p.liveness[t].size()) {
        return make_error(Errc::kInvalidArgument,
                          "liveness_memory[{}] has {} vectors for {} live nodes", t,
                          p.liveness_memory[t].size(), p.liveness[t].size());
      }
      for (size_t k = 0; k < p.liveness[t].size(); ++k) {
        const auto& m = p.liveness_memory[t][k];
        if (static_cast<int64_t>(m.size()) != p.num_strategies(p.liveness[t][k])) {
          return make_error(Errc::kInvalidArgument,
                            "liveness_memory[{}][{}] has {} entries, {} has {} strategies", t, k,
                            m.size(), node_label(p, p.liveness[t][k]),
                            p.num_strategies(p.liveness[t][k]));
        }
        for (double v : m) {
          if (!std::isfinite(v) || v < 0) {
            return make_error(Errc::kInvalidArgument,
                              "liveness_memory[{}][{}] has {} (must be finite and >= 0)", t, k, v);
          }
        }
      }
    }
  }
  return Status::ok();
}

std::string bytes_text(double bytes) {
  return fmt::format("{} ({:.0f} B)", format_bytes(Bytes(std::llround(bytes))), bytes);
}

}  // namespace

Status IlpProblem::validate() const {
  MP_RETURN_IF_ERROR(validate_nodes(*this));
  for (size_t k = 0; k < edges.size(); ++k) {
    const Edge& e = edges[k];
    MP_RETURN_IF_ERROR(validate_pair(*this, "edge", k, e.src, e.dst, e.cost.size()));
    if (int64_t bad = find_bad_cost(e.cost); bad >= 0) {
      return make_error(Errc::kInvalidArgument, "edge {}: cost entry {} is {} (NaN or -inf)", k,
                        bad, e.cost[static_cast<size_t>(bad)]);
    }
  }
  for (size_t k = 0; k < aliases.size(); ++k) {
    const Alias& a = aliases[k];
    MP_RETURN_IF_ERROR(validate_pair(*this, "alias", k, a.a, a.b, a.forbidden.size()));
  }
  MP_RETURN_IF_ERROR(validate_liveness(*this));
  if (!std::isfinite(memory_budget)) {
    return make_error(Errc::kInvalidArgument,
                      "memory_budget is {}; it must be finite (<= 0 disables (c))", memory_budget);
  }
  return Status::ok();
}

Evaluation evaluate(const IlpProblem& problem, const std::vector<int32_t>& choice) {
  Evaluation ev;
  if (Status st = problem.validate(); !st.is_ok()) {
    ev.violations.push_back("invalid problem: " + st.message());
    return ev;
  }
  if (choice.size() != problem.nodes.size()) {
    ev.violations.push_back(
        fmt::format("the choice has {} entries for {} nodes", choice.size(), problem.nodes.size()));
    return ev;
  }
  const auto in_range = [&](int32_t i) {
    return choice[static_cast<size_t>(i)] >= 0 &&
           choice[static_cast<size_t>(i)] < problem.num_strategies(i);
  };
  for (size_t i = 0; i < problem.nodes.size(); ++i) {
    const auto node = static_cast<int32_t>(i);
    const int32_t p = choice[i];
    if (!in_range(node)) {
      ev.violations.push_back(fmt::format("{}: strategy {} is out of range [0, {})",
                                          node_label(problem, node), p,
                                          problem.num_strategies(node)));
      continue;
    }
    const double c = problem.nodes[i].cost[static_cast<size_t>(p)];
    if (std::isinf(c)) {
      ev.violations.push_back(fmt::format("{}: strategy {} is forbidden (infinite cost)",
                                          node_label(problem, node), p));
    }
    ev.node_cost += c;
  }
  for (size_t k = 0; k < problem.edges.size(); ++k) {
    const IlpProblem::Edge& e = problem.edges[k];
    if (!in_range(e.src) || !in_range(e.dst)) continue;
    const int32_t p = choice[static_cast<size_t>(e.src)];
    const int32_t q = choice[static_cast<size_t>(e.dst)];
    const double r = e.cost[static_cast<size_t>(p * problem.num_strategies(e.dst) + q)];
    if (std::isinf(r)) {
      ev.violations.push_back(
          fmt::format("edge {} ({} -> {}): pair ({}, {}) is forbidden "
                      "(infinite cost)",
                      k, node_label(problem, e.src), node_label(problem, e.dst), p, q));
    }
    ev.edge_cost += r;
  }
  for (size_t k = 0; k < problem.aliases.size(); ++k) {
    const IlpProblem::Alias& a = problem.aliases[k];
    if (!in_range(a.a) || !in_range(a.b)) continue;
    const int32_t p = choice[static_cast<size_t>(a.a)];
    const int32_t q = choice[static_cast<size_t>(a.b)];
    if (a.forbidden[static_cast<size_t>(p * problem.num_strategies(a.b) + q)] != 0) {
      ev.violations.push_back(fmt::format("alias {} ({}, {}) violated: pair ({}, {}) is forbidden",
                                          k, node_label(problem, a.a), node_label(problem, a.b), p,
                                          q));
    }
  }
  for (size_t t = 0; t < problem.liveness.size(); ++t) {
    double footprint = 0.0;
    for (size_t k = 0; k < problem.liveness[t].size(); ++k) {
      const int32_t i = problem.liveness[t][k];
      if (in_range(i)) {
        footprint += problem.row_memory(t, k)[static_cast<size_t>(choice[static_cast<size_t>(i)])];
      }
    }
    ev.peak_memory = std::max(ev.peak_memory, footprint);
    if (internal::memory_enabled(problem) && footprint > problem.memory_budget) {
      ev.violations.push_back(
          fmt::format("memory (c) at liveness point {}: {} is over the "
                      "budget of {}",
                      t, bytes_text(footprint), bytes_text(problem.memory_budget)));
    }
  }
  ev.total = ev.node_cost + ev.edge_cost;
  return ev;
}

}  // namespace meshpipe::planner

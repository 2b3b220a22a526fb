// Shared ILP helpers: labels, per-strategy forbiddance, pre-solve feasibility checks and the
// merged undirected links used by the tree DP, the greedy fallback and infeasibility diagnosis.
#include "planner/internal/ilp_checks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "core/units.h"

namespace meshpipe::planner::internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

size_t idx(int64_t i) { return static_cast<size_t>(i); }

std::string short_node_name(const IlpProblem& problem, int32_t i) {
  const std::string& name = problem.nodes[idx(i)].name;
  return name.empty() ? fmt::format("node {}", i) : fmt::format("'{}'", name);
}

void add_unique(std::vector<std::string>& list, std::string item) {
  if (std::find(list.begin(), list.end(), item) == list.end()) list.push_back(std::move(item));
}

}  // namespace

std::string footprint_and_budget(double footprint, double budget) {
  std::string a = format_bytes(Bytes(std::llround(footprint)));
  std::string b = format_bytes(Bytes(std::llround(budget)));
  if (a == b) {
    a += fmt::format(" ({:.0f} B)", footprint);
    b += fmt::format(" ({:.0f} B)", budget);
  }
  return fmt::format("{}, {} the budget of {}", a, footprint > budget ? "above" : "within", b);
}

std::string node_label(const IlpProblem& problem, int32_t i) {
  const std::string& name = problem.nodes[idx(i)].name;
  return name.empty() ? fmt::format("node {}", i) : fmt::format("node {} '{}'", i, name);
}

bool memory_enabled(const IlpProblem& problem) { return problem.memory_budget > 0.0; }

AllowedMask unary_allowed(const IlpProblem& problem) {
  AllowedMask allowed(problem.nodes.size());
  for (size_t i = 0; i < problem.nodes.size(); ++i) {
    const std::vector<double>& c = problem.nodes[i].cost;
    allowed[i].resize(c.size());
    for (size_t p = 0; p < c.size(); ++p) allowed[i][p] = std::isfinite(c[p]) ? 1 : 0;
  }
  // A pair matrix towards a single-strategy neighbour is a vector over the other endpoint.
  const auto fold = [&](int32_t a, int32_t b, auto&& forbids) {
    const int64_t sa = problem.num_strategies(a);
    const int64_t sb = problem.num_strategies(b);
    if (sb == 1 && sa > 1) {
      for (int64_t p = 0; p < sa; ++p) {
        if (forbids(p * sb)) allowed[idx(a)][idx(p)] = 0;
      }
    } else if (sa == 1 && sb > 1) {
      for (int64_t q = 0; q < sb; ++q) {
        if (forbids(q)) allowed[idx(b)][idx(q)] = 0;
      }
    }
  };
  for (const IlpProblem::Edge& e : problem.edges) {
    fold(e.src, e.dst, [&](int64_t k) { return std::isinf(e.cost[idx(k)]); });
  }
  for (const IlpProblem::Alias& a : problem.aliases) {
    fold(a.a, a.b, [&](int64_t k) { return a.forbidden[idx(k)] != 0; });
  }
  return allowed;
}

Status check_unary_feasibility(const IlpProblem& problem, const AllowedMask& allowed) {
  for (size_t i = 0; i < problem.nodes.size(); ++i) {
    if (std::none_of(allowed[i].begin(), allowed[i].end(), [](uint8_t a) { return a != 0; })) {
      return make_error(Errc::kInfeasible,
                        "{}: every strategy is forbidden (infinite node cost, or an infinite "
                        "edge cost or forbidden alias pair towards a single-strategy neighbour)",
                        node_label(problem, static_cast<int32_t>(i)));
    }
  }
  for (size_t k = 0; k < problem.edges.size(); ++k) {
    const IlpProblem::Edge& e = problem.edges[k];
    if (e.cost.size() == 1 && std::isinf(e.cost[0])) {
      return make_error(Errc::kInfeasible,
                        "edge {} ({} -> {}): the only pair of two single-strategy nodes has "
                        "infinite cost",
                        k, node_label(problem, e.src), node_label(problem, e.dst));
    }
  }
  for (size_t k = 0; k < problem.aliases.size(); ++k) {
    const IlpProblem::Alias& a = problem.aliases[k];
    if (a.forbidden.size() == 1 && a.forbidden[0] != 0) {
      return make_error(Errc::kInfeasible,
                        "alias (h) {} ({}, {}): forbids the only pair of two single-strategy nodes",
                        k, node_label(problem, a.a), node_label(problem, a.b));
    }
  }
  return Status::ok();
}

double min_footprint(const IlpProblem& problem, const AllowedMask& allowed, int32_t t) {
  double total = 0.0;
  for (size_t k = 0; k < problem.liveness[idx(t)].size(); ++k) {
    const int32_t i = problem.liveness[idx(t)][k];
    double best = kInf;
    const std::vector<double>& m = problem.row_memory(idx(t), k);
    for (size_t p = 0; p < m.size(); ++p) {
      if (allowed[idx(i)][p] != 0) best = std::min(best, m[p]);
    }
    total += best;
  }
  return total;
}

std::string liveness_label(const IlpProblem& problem, int32_t t) {
  constexpr size_t kShown = 5;
  const std::vector<int32_t>& live = problem.liveness[idx(t)];
  std::string names;
  for (size_t k = 0; k < live.size() && k < kShown; ++k) {
    if (k > 0) names += ", ";
    names += short_node_name(problem, live[k]);
  }
  if (live.size() > kShown) names += fmt::format(", ... ({} in all)", live.size());
  return fmt::format("liveness point {} (nodes {})", t, live.empty() ? "none" : names);
}

int32_t tightest_liveness_point(const IlpProblem& problem, const AllowedMask& allowed) {
  int32_t best = -1;
  double best_footprint = -kInf;
  for (size_t t = 0; t < problem.liveness.size(); ++t) {
    const double f = min_footprint(problem, allowed, static_cast<int32_t>(t));
    if (f > best_footprint) {
      best_footprint = f;
      best = static_cast<int32_t>(t);
    }
  }
  return best;
}

Status check_memory_lower_bound(const IlpProblem& problem, const AllowedMask& allowed) {
  if (!memory_enabled(problem)) return Status::ok();
  const int32_t t = tightest_liveness_point(problem, allowed);
  if (t < 0) return Status::ok();
  const double footprint = min_footprint(problem, allowed, t);
  if (footprint <= problem.memory_budget) return Status::ok();
  return make_error(Errc::kInfeasible, "memory (c) at {}: the smallest possible footprint is {}",
                    liveness_label(problem, t),
                    footprint_and_budget(footprint, problem.memory_budget));
}

std::vector<Link> build_links(const IlpProblem& problem) {
  std::map<std::pair<int32_t, int32_t>, Link> by_pair;
  const auto link_for = [&](int32_t a, int32_t b) -> Link& {
    const int32_t u = std::min(a, b);
    const int32_t v = std::max(a, b);
    Link& l = by_pair[{u, v}];
    if (l.cost.empty()) {
      l.u = u;
      l.v = v;
      l.cost.assign(idx(problem.num_strategies(u) * problem.num_strategies(v)), 0.0);
    }
    return l;
  };
  for (size_t k = 0; k < problem.edges.size(); ++k) {
    const IlpProblem::Edge& e = problem.edges[k];
    Link& l = link_for(e.src, e.dst);
    l.edges.push_back(static_cast<int32_t>(k));
    const int64_t sd = problem.num_strategies(e.dst);
    const int64_t sv = problem.num_strategies(l.v);
    for (int64_t p = 0; p < problem.num_strategies(e.src); ++p) {
      for (int64_t q = 0; q < sd; ++q) {
        // (p, q) are the strategies of (src, dst); the link is indexed (u, v).
        const int64_t cell = e.src == l.u ? p * sv + q : q * sv + p;
        l.cost[idx(cell)] += e.cost[idx(p * sd + q)];
      }
    }
  }
  for (size_t k = 0; k < problem.aliases.size(); ++k) {
    const IlpProblem::Alias& a = problem.aliases[k];
    Link& l = link_for(a.a, a.b);
    l.aliases.push_back(static_cast<int32_t>(k));
    const int64_t sb = problem.num_strategies(a.b);
    const int64_t sv = problem.num_strategies(l.v);
    for (int64_t p = 0; p < problem.num_strategies(a.a); ++p) {
      for (int64_t q = 0; q < sb; ++q) {
        if (a.forbidden[idx(p * sb + q)] == 0) continue;
        const int64_t cell = a.a == l.u ? p * sv + q : q * sv + p;
        l.cost[idx(cell)] = kInf;
      }
    }
  }
  std::vector<Link> links;
  links.reserve(by_pair.size());
  for (auto& [pair, l] : by_pair) links.push_back(std::move(l));
  return links;
}

double link_cost(const IlpProblem& problem, const Link& l, int32_t node, int64_t p, int64_t q) {
  const int64_t sv = problem.num_strategies(l.v);
  return node == l.u ? l.cost[idx(p * sv + q)] : l.cost[idx(q * sv + p)];
}

Status propagate_forbidden_pairs(const IlpProblem& problem, const AllowedMask& allowed) {
  AllowedMask dom = allowed;
  const std::vector<Link> links = build_links(problem);
  std::vector<std::vector<int32_t>> pruned_by(problem.nodes.size());
  // Drops the strategies of `node` that have no finite partner left at `other`; true if any.
  const auto revise = [&](const Link& l, int32_t node, int32_t other, int32_t link_index) {
    bool changed = false;
    for (int64_t p = 0; p < problem.num_strategies(node); ++p) {
      if (dom[idx(node)][idx(p)] == 0) continue;
      bool supported = false;
      for (int64_t q = 0; q < problem.num_strategies(other) && !supported; ++q) {
        supported =
            dom[idx(other)][idx(q)] != 0 && std::isfinite(link_cost(problem, l, node, p, q));
      }
      if (!supported) {
        dom[idx(node)][idx(p)] = 0;
        changed = true;
      }
    }
    if (changed) pruned_by[idx(node)].push_back(link_index);
    return changed;
  };
  const auto empty = [&](int32_t node) {
    return std::none_of(dom[idx(node)].begin(), dom[idx(node)].end(),
                        [](uint8_t a) { return a != 0; });
  };
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t k = 0; k < links.size(); ++k) {
      const Link& l = links[k];
      for (const auto& [node, other] : {std::pair{l.u, l.v}, std::pair{l.v, l.u}}) {
        if (!revise(l, node, other, static_cast<int32_t>(k))) continue;
        changed = true;
        if (!empty(node)) continue;
        std::vector<std::string> rows;
        for (int32_t li : pruned_by[idx(node)]) {
          for (int32_t e : links[idx(li)].edges) add_unique(rows, fmt::format("e[edge {}]", e));
          for (int32_t a : links[idx(li)].aliases) add_unique(rows, fmt::format("h[alias {}]", a));
        }
        return make_error(Errc::kInfeasible,
                          "{}: every strategy is ruled out by infinite edge costs or forbidden "
                          "alias pairs (h) towards the strategies its neighbours can still take "
                          "(via {})",
                          node_label(problem, node), fmt::join(rows, ", "));
      }
    }
  }
  return Status::ok();
}

std::vector<std::vector<int32_t>> links_by_node(const IlpProblem& problem,
                                                const std::vector<Link>& links) {
  std::vector<std::vector<int32_t>> by_node(problem.nodes.size());
  for (size_t k = 0; k < links.size(); ++k) {
    by_node[idx(links[k].u)].push_back(static_cast<int32_t>(k));
    by_node[idx(links[k].v)].push_back(static_cast<int32_t>(k));
  }
  return by_node;
}

}  // namespace meshpipe::planner::internal

// Exact solvers that need no ILP: dynamic programming over tree-shaped problems, and exhaustive
// enumeration for tests.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "planner/ilp.h"
#include "planner/internal/ilp_checks.h"

namespace meshpipe::planner {
namespace {

using internal::Link;
using internal::node_label;

constexpr double kInf = std::numeric_limits<double>::infinity();

size_t idx(int64_t i) { return static_cast<size_t>(i); }

/// Breadth-first order of every component of the link graph, each rooted at its lowest-index
/// node, with each node's parent and the link to it (-1 at roots).
struct Forest {
  std::vector<int32_t> order;
  std::vector<int32_t> parent;
  std::vector<int32_t> parent_link;
};

/// The forest, or kInvalidArgument naming a link that closes a cycle.
Expected<Forest> build_forest(const IlpProblem& problem, const std::vector<Link>& links) {
  const size_t n = problem.nodes.size();
  const std::vector<std::vector<int32_t>> by_node = internal::links_by_node(problem, links);
  Forest f;
  f.parent.assign(n, -1);
  f.parent_link.assign(n, -1);
  std::vector<uint8_t> seen(n, 0);
  for (size_t root = 0; root < n; ++root) {
    if (seen[root] != 0) continue;
    seen[root] = 1;
    size_t head = f.order.size();
    f.order.push_back(static_cast<int32_t>(root));
    for (; head < f.order.size(); ++head) {
      const int32_t v = f.order[head];
      for (int32_t li : by_node[idx(v)]) {
        if (li == f.parent_link[idx(v)]) continue;
        const Link& l = links[idx(li)];
        const int32_t u = l.u == v ? l.v : l.u;
        if (seen[idx(u)] != 0) {
          return make_error(Errc::kInvalidArgument,
                            "not tree-shaped: the link between {} and {} closes a cycle",
                            node_label(problem, l.u), node_label(problem, l.v));
        }
        seen[idx(u)] = 1;
        f.parent[idx(u)] = v;
        f.parent_link[idx(u)] = li;
        f.order.push_back(u);
      }
    }
  }
  return f;
}

/// Sum of node and edge costs, or +inf when a strategy, pair, alias or (c) forbids the choice.
double assignment_cost(const IlpProblem& problem, const std::vector<int32_t>& choice) {
  double total = 0.0;
  for (size_t i = 0; i < problem.nodes.size(); ++i) total += problem.nodes[i].cost[idx(choice[i])];
  for (const IlpProblem::Edge& e : problem.edges) {
    total += e.cost[idx(choice[idx(e.src)] * problem.num_strategies(e.dst) + choice[idx(e.dst)])];
  }
  if (std::isinf(total)) return kInf;
  for (const IlpProblem::Alias& a : problem.aliases) {
    if (a.forbidden[idx(choice[idx(a.a)] * problem.num_strategies(a.b) + choice[idx(a.b)])] != 0) {
      return kInf;
    }
  }
  if (internal::memory_enabled(problem)) {
    for (size_t t = 0; t < problem.liveness.size(); ++t) {
      double footprint = 0.0;
      for (size_t k = 0; k < problem.liveness[t].size(); ++k) {
        footprint += problem.row_memory(t, k)[idx(choice[idx(problem.liveness[t][k])])];
      }
      if (footprint > problem.memory_budget) return kInf;
    }
  }
  return total;
}

IlpSolution finish(const IlpProblem& problem, std::vector<int32_t> choice, const char* method) {
  const Evaluation ev = evaluate(problem, choice);
  IlpSolution sol;
  sol.choice = std::move(choice);
  sol.objective = ev.total;
  sol.optimal = ev.violations.empty();
  sol.method = method;
  return sol;
}

}  // namespace

bool is_tree_shaped(const IlpProblem& problem) {
  if (!problem.validate().is_ok()) return false;
  return build_forest(problem, internal::build_links(problem)).has_value();
}

// The DP over one component, rooted at its lowest-index node, children before parents:
//
//   F_v(p) = c_v(p) + sum over children u of v of  min_q [ L_vu(p, q) + F_u(q) ]
//
// L_vu is the merged link (all edges and aliases between v and u; +inf where forbidden), so
// parallel edges stay exact. best_u(p) is the q attaining the min (lowest q on ties). The root
// takes argmin_p F_root(p) (lowest p on ties); each child then takes best_u(choice of parent).
// F_root = +inf means the component has no allowed assignment. (c) is not modelled.
Expected<IlpSolution> solve_tree_dp(const IlpProblem& problem) {
  MP_RETURN_IF_ERROR(problem.validate());
  const std::vector<Link> links = internal::build_links(problem);
  MP_ASSIGN_OR_RETURN(const Forest forest, build_forest(problem, links));
  const size_t n = problem.nodes.size();
  std::vector<std::vector<double>> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = problem.nodes[i].cost;
  std::vector<std::vector<int32_t>> best(n);
  for (auto it = forest.order.rbegin(); it != forest.order.rend(); ++it) {
    const int32_t v = *it;
    const int32_t parent = forest.parent[idx(v)];
    if (parent < 0) continue;
    const Link& l = links[idx(forest.parent_link[idx(v)])];
    best[idx(v)].assign(idx(problem.num_strategies(parent)), 0);
    for (int64_t p = 0; p < problem.num_strategies(parent); ++p) {
      double min_value = kInf;
      for (int64_t q = 0; q < problem.num_strategies(v); ++q) {
        const double value = internal::link_cost(problem, l, parent, p, q) + f[idx(v)][idx(q)];
        if (value < min_value) {
          min_value = value;
          best[idx(v)][idx(p)] = static_cast<int32_t>(q);
        }
      }
      f[idx(parent)][idx(p)] += min_value;
    }
  }
  std::vector<int32_t> choice(n, 0);
  for (int32_t v : forest.order) {
    const int32_t parent = forest.parent[idx(v)];
    if (parent >= 0) {
      choice[idx(v)] = best[idx(v)][idx(choice[idx(parent)])];
      continue;
    }
    const std::vector<double>& root = f[idx(v)];
    const auto it = std::min_element(root.begin(), root.end());
    if (std::isinf(*it)) {
      return make_error(Errc::kInfeasible,
                        "tree-dp: no assignment of the component rooted at {} avoids every "
                        "forbidden strategy, pair and alias",
                        node_label(problem, v));
    }
    choice[idx(v)] = static_cast<int32_t>(it - root.begin());
  }
  return finish(problem, std::move(choice), "tree-dp");
}

Expected<IlpSolution> solve_exhaustive(const IlpProblem& problem, int64_t max_assignments) {
  MP_RETURN_IF_ERROR(problem.validate());
  int64_t count = 1;
  for (size_t i = 0; i < problem.nodes.size(); ++i) {
    const int64_t s = problem.num_strategies(static_cast<int32_t>(i));
    if (count > max_assignments / s) {
      return make_error(Errc::kOutOfRange,
                        "exhaustive: more than {} assignments (the limit) to enumerate",
                        max_assignments);
    }
    count *= s;
  }
  // Mixed-radix order with node 0 the fastest digit; the first strict minimum wins ties.
  std::vector<int32_t> choice(problem.nodes.size(), 0);
  std::vector<int32_t> best_choice;
  double best_cost = kInf;
  for (int64_t k = 0; k < count; ++k) {
    const double cost = assignment_cost(problem, choice);
    if (cost < best_cost) {
      best_cost = cost;
      best_choice = choice;
    }
    for (size_t i = 0; i < choice.size(); ++i) {
      if (++choice[i] < problem.num_strategies(static_cast<int32_t>(i))) break;
      choice[i] = 0;
    }
  }
  if (best_choice.empty() && !problem.nodes.empty()) {
    return make_error(Errc::kInfeasible,
                      "exhaustive: none of the {} assignments satisfies the constraints", count);
  }
  return finish(problem, std::move(best_choice), "exhaustive");
}

}  // namespace meshpipe::planner

// The fallbacks of solve_ilp when GLPK ends without an incumbent: the exact tree DP where it
// applies, otherwise a deterministic greedy local search.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "planner/internal/ilp_checks.h"
#include "planner/internal/ilp_fallback.h"

namespace meshpipe::planner::internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kMaxSweeps = 1000;

size_t idx(int64_t i) { return static_cast<size_t>(i); }

/// A current assignment with the footprint of every liveness point kept up to date.
class Greedy {
 public:
  Greedy(const IlpProblem& problem, const std::vector<Link>& links, std::vector<int32_t> start)
      : problem_(problem),
        links_(links),
        by_node_(links_by_node(problem, links_)),
        live_at_(problem.nodes.size()),
        footprint_(problem.liveness.size(), 0.0),
        choice_(std::move(start)) {
    for (size_t t = 0; t < problem.liveness.size(); ++t) {
      for (int32_t i : problem.liveness[t]) {
        live_at_[idx(i)].push_back(static_cast<int32_t>(t));
        footprint_[t] += memory(i);
      }
    }
  }

  const std::vector<int32_t>& choice() const { return choice_; }

  /// Moves each node in turn to its best strategy given its neighbours until a sweep changes
  /// nothing. With `respect_memory`, a move may not push a liveness point over the budget (nor
  /// raise one already over it).
  void improve(bool respect_memory) {
    for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
      bool changed = false;
      for (size_t i = 0; i < choice_.size(); ++i) {
        const auto node = static_cast<int32_t>(i);
        double best = local_cost(node, choice_[i]);
        int64_t arg = choice_[i];
        for (int64_t p = 0; p < problem_.num_strategies(node); ++p) {
          if (p == choice_[i] || (respect_memory && !fits(node, p))) continue;
          const double value = local_cost(node, p);
          if (value < best) {
            best = value;
            arg = p;
          }
        }
        if (arg != choice_[i]) {
          move(node, arg);
          changed = true;
        }
      }
      if (!changed) return;
    }
  }

  /// While a liveness point is over budget, moves the node live there that saves the most
  /// memory (ties: lower resulting local cost, then lower node and strategy index) to that
  /// lower-memory strategy, among strategies with finite local cost.
  void repair_memory() {
    if (!memory_enabled(problem_)) return;
    for (;;) {
      int32_t worst = -1;
      double worst_excess = 0.0;
      for (size_t t = 0; t < footprint_.size(); ++t) {
        const double excess = footprint_[t] - problem_.memory_budget;
        if (excess > worst_excess) {
          worst_excess = excess;
          worst = static_cast<int32_t>(t);
        }
      }
      if (worst < 0) return;
      int32_t best_node = -1;
      int64_t best_p = 0;
      double best_saving = 0.0;
      double best_cost = kInf;
      for (int32_t i : problem_.liveness[idx(worst)]) {
        for (int64_t p = 0; p < problem_.num_strategies(i); ++p) {
          const double saving = memory(i) - problem_.nodes[idx(i)].memory[idx(p)];
          const double cost = local_cost(i, p);
          if (saving <= 0 || std::isinf(cost)) continue;
          if (saving > best_saving || (saving == best_saving && cost < best_cost)) {
            best_node = i;
            best_p = p;
            best_saving = saving;
            best_cost = cost;
          }
        }
      }
      if (best_node < 0) return;
      move(best_node, best_p);
    }
  }

 private:
  double memory(int32_t i) const { return problem_.nodes[idx(i)].memory[idx(choice_[idx(i)])]; }

  /// c_i(p) plus the links of i given the neighbours' current strategies.
  double local_cost(int32_t i, int64_t p) const {
    double total = problem_.nodes[idx(i)].cost[idx(p)];
    for (int32_t li : by_node_[idx(i)]) {
      const Link& l = links_[idx(li)];
      const int32_t other = l.u == i ? l.v : l.u;
      total += link_cost(problem_, l, i, p, choice_[idx(other)]);
    }
    return total;
  }

  bool fits(int32_t i, int64_t p) const {
    const double delta = problem_.nodes[idx(i)].memory[idx(p)] - memory(i);
    for (int32_t t : live_at_[idx(i)]) {
      const double after = footprint_[idx(t)] + delta;
      if (delta > 0 && after > problem_.memory_budget) return false;
    }
    return true;
  }

  void move(int32_t i, int64_t p) {
    const double delta = problem_.nodes[idx(i)].memory[idx(p)] - memory(i);
    for (int32_t t : live_at_[idx(i)]) footprint_[idx(t)] += delta;
    choice_[idx(i)] = static_cast<int32_t>(p);
  }

  const IlpProblem& problem_;
  const std::vector<Link>& links_;
  std::vector<std::vector<int32_t>> by_node_;
  std::vector<std::vector<int32_t>> live_at_;
  std::vector<double> footprint_;
  std::vector<int32_t> choice_;
};

/// Each node's cheapest allowed strategy (lowest index on ties).
std::vector<int32_t> cheapest_start(const IlpProblem& problem) {
  const AllowedMask allowed = unary_allowed(problem);
  std::vector<int32_t> choice(problem.nodes.size(), 0);
  for (size_t i = 0; i < problem.nodes.size(); ++i) {
    double best = kInf;
    for (size_t p = 0; p < allowed[i].size(); ++p) {
      if (allowed[i][p] != 0 && problem.nodes[i].cost[p] < best) {
        best = problem.nodes[i].cost[p];
        choice[i] = static_cast<int32_t>(p);
      }
    }
  }
  return choice;
}

/// How much a link matters: +inf when it forbids a pair, else the spread of its finite costs.
double link_weight(const Link& l) {
  double lo = kInf;
  double hi = -kInf;
  for (double c : l.cost) {
    if (std::isinf(c)) return kInf;
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  return hi - lo;
}

/// The exact tree DP over a maximum-weight spanning forest of the links (Kruskal, ties by link
/// index); the links left out are ignored, so this is only a starting point.
Expected<IlpSolution> spanning_forest_start(const IlpProblem& problem,
                                            const std::vector<Link>& links) {
  std::vector<int32_t> order(links.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return link_weight(links[idx(a)]) > link_weight(links[idx(b)]);
  });
  std::vector<int32_t> root(problem.nodes.size());
  std::iota(root.begin(), root.end(), 0);
  const auto find = [&](int32_t x) {
    while (root[idx(x)] != x) x = root[idx(x)] = root[idx(root[idx(x)])];
    return x;
  };
  IlpProblem forest = problem;
  forest.edges.clear();
  forest.aliases.clear();
  forest.memory_budget = -1.0;
  for (int32_t li : order) {
    const Link& l = links[idx(li)];
    const int32_t a = find(l.u);
    const int32_t b = find(l.v);
    if (a == b) continue;
    root[idx(a)] = b;
    for (int32_t e : l.edges) forest.edges.push_back(problem.edges[idx(e)]);
    for (int32_t k : l.aliases) forest.aliases.push_back(problem.aliases[idx(k)]);
  }
  return solve_tree_dp(forest);
}

}  // namespace

Expected<IlpSolution> solve_greedy(const IlpProblem& problem) {
  MP_RETURN_IF_ERROR(problem.validate());
  const std::vector<Link> links = build_links(problem);
  std::vector<std::vector<int32_t>> starts = {cheapest_start(problem)};
  if (Expected<IlpSolution> tree = spanning_forest_start(problem, links)) {
    starts.push_back(tree->choice);
  }
  IlpSolution best;
  std::string first_failure;
  for (std::vector<int32_t>& start : starts) {
    Greedy greedy(problem, links, std::move(start));
    greedy.improve(/*respect_memory=*/false);
    greedy.repair_memory();
    greedy.improve(/*respect_memory=*/memory_enabled(problem));
    const Evaluation ev = evaluate(problem, greedy.choice());
    if (!ev.violations.empty()) {
      if (first_failure.empty()) {
        first_failure =
            fmt::format("{} violations; first: {}", ev.violations.size(), ev.violations.front());
      }
      continue;
    }
    if (best.choice.empty() || ev.total < best.objective) {
      best.choice = greedy.choice();
      best.objective = ev.total;
    }
  }
  if (best.choice.empty() && !problem.nodes.empty()) {
    return make_error(Errc::kInfeasible, "greedy fallback found no feasible assignment ({})",
                      first_failure);
  }
  best.optimal = false;
  best.method = "greedy-fallback";
  return best;
}

Expected<IlpSolution> solve_fallback(const IlpProblem& problem) {
  if (is_tree_shaped(problem)) {
    Expected<IlpSolution> dp = solve_tree_dp(problem);
    if (dp && evaluate(problem, dp->choice).violations.empty()) {
      dp->optimal = false;
      return dp;
    }
  }
  return solve_greedy(problem);
}

}  // namespace meshpipe::planner::internal

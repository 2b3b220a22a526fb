// Seeded property tests of the ILP solvers: GLPK against exhaustive enumeration on random small
// problems, the tree DP against GLPK on random chains and trees, and the greedy fallback.
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <utility>

#include "core/rng.h"
#include "planner/ilp.h"
#include "planner/internal/ilp_fallback.h"

namespace meshpipe::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMiB = 1024.0 * 1024.0;

/// Costs are multiples of 1 ms, so distinct objectives differ by far more than GLPK's relative
/// objective tolerance (1e-7) and equal ones tie exactly.
double random_cost(Rng& rng, double inf_probability) {
  if (rng.uniform() < inf_probability) return kInf;
  return static_cast<double>(rng.below(1000)) * 1e-3;
}

/// Resharding-like costs: 0 on the "same layout" diagonal half the time, some infinities.
IlpProblem::Edge random_edge(Rng& rng, const IlpProblem& p, int32_t src, int32_t dst,
                             double inf_probability = 0.08) {
  IlpProblem::Edge e{src, dst, {}};
  const int64_t ss = p.num_strategies(src);
  const int64_t sd = p.num_strategies(dst);
  for (int64_t a = 0; a < ss; ++a) {
    for (int64_t b = 0; b < sd; ++b) {
      e.cost.push_back(a == b && rng.uniform() < 0.5 ? 0.0 : random_cost(rng, inf_probability));
    }
  }
  return e;
}

IlpProblem::Alias random_alias(Rng& rng, const IlpProblem& p, int32_t a, int32_t b) {
  IlpProblem::Alias alias{a, b, {}};
  const int64_t sb = p.num_strategies(b);
  for (int64_t x = 0; x < p.num_strategies(a); ++x) {
    for (int64_t y = 0; y < sb; ++y) alias.forbidden.push_back(x != y && rng.uniform() < 0.7);
  }
  return alias;
}

IlpProblem::Node random_node(Rng& rng, int32_t i, int64_t max_strategies) {
  IlpProblem::Node n;
  n.name = fmt::format("n{}", i);
  const int64_t s = 1 + rng.below(max_strategies);
  for (int64_t k = 0; k < s; ++k) {
    n.cost.push_back(random_cost(rng, 0.06));
    n.memory.push_back(static_cast<double>(1 + rng.below(8)) * kMiB);
  }
  return n;
}

/// 2-6 nodes, 1-4 strategies, a chain with gaps plus skip, reversed and parallel edges,
/// sometimes aliases, liveness points and a memory budget (half-integer MiB: never a tie).
IlpProblem random_problem(Rng& rng, double edge_inf_probability = 0.08) {
  IlpProblem p;
  const auto n = static_cast<int32_t>(2 + rng.below(5));
  for (int32_t i = 0; i < n; ++i) p.nodes.push_back(random_node(rng, i, 4));
  for (int32_t i = 1; i < n; ++i) {
    if (rng.uniform() < 0.8) p.edges.push_back(random_edge(rng, p, i - 1, i, edge_inf_probability));
  }
  for (int64_t k = rng.below(n); k > 0; --k) {
    const auto a = static_cast<int32_t>(rng.below(n));
    const auto b = static_cast<int32_t>((a + 1 + rng.below(n - 1)) % n);
    p.edges.push_back(random_edge(rng, p, a, b, edge_inf_probability));  // skip, reversed, parallel
  }
  if (rng.uniform() < 0.4) {
    const auto a = static_cast<int32_t>(rng.below(n));
    const auto b = static_cast<int32_t>((a + 1 + rng.below(n - 1)) % n);
    p.aliases.push_back(random_alias(rng, p, a, b));
  }
  for (int64_t t = rng.below(4); t > 0; --t) {
    std::vector<int32_t> live;
    for (int32_t i = 0; i < n; ++i) {
      if (rng.uniform() < 0.6) live.push_back(i);
    }
    p.liveness.push_back(live);
  }
  if (rng.uniform() < 0.5) {
    p.memory_budget = (static_cast<double>(n + rng.below(3 * n)) + 0.5) * kMiB;
  }
  return p;
}

bool same_objective(double a, double b) {
  return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b));
}

/// Solves `trials` random problems with GLPK and by enumeration; returns {feasible, infeasible}.
std::pair<int, int> compare_with_exhaustive(uint64_t seed, int trials, double edge_inf) {
  Rng rng(seed);
  int feasible = 0;
  int infeasible = 0;
  for (int trial = 0; trial < trials; ++trial) {
    const IlpProblem p = random_problem(rng, edge_inf);
    INFO("trial " << trial);
    REQUIRE(p.validate().is_ok());
    Expected<IlpSolution> exact = solve_exhaustive(p);
    Expected<IlpSolution> ilp = solve_ilp(p);
    if (!exact) {
      REQUIRE(exact.status().code() == Errc::kInfeasible);
      INFO(ilp.status().message());
      REQUIRE_FALSE(ilp.has_value());
      CHECK(ilp.status().code() == Errc::kInfeasible);
      if (trial % 4 == 0) {
        SolveOptions no_presolve;
        no_presolve.presolve = false;
        CHECK(solve_ilp(p, no_presolve).status().code() == Errc::kInfeasible);
      }
      ++infeasible;
      continue;
    }
    ++feasible;
    INFO(ilp.status().message());
    REQUIRE(ilp.has_value());
    CHECK(ilp->optimal);
    CHECK(same_objective(ilp->objective, exact->objective));
    const Evaluation ev = evaluate(p, ilp->choice);
    CHECK(ev.violations.empty());
    CHECK(ev.total == ilp->objective);
    if (trial % 4 == 0) {
      SolveOptions no_presolve;
      no_presolve.presolve = false;
      Expected<IlpSolution> plain = solve_ilp(p, no_presolve);
      REQUIRE(plain.has_value());
      CHECK(same_objective(plain->objective, exact->objective));
    }
    // Lower bound: every node at its cheapest strategy, edges (all >= 0) at zero.
    double bound = 0.0;
    for (const IlpProblem::Node& node : p.nodes) {
      bound += *std::min_element(node.cost.begin(), node.cost.end());
    }
    CHECK(ilp->objective >= bound - 1e-12);
  }
  return {feasible, infeasible};
}

TEST_CASE("GLPK finds the exhaustive optimum of random small problems", "[planner]") {
  const auto [feasible, infeasible] = compare_with_exhaustive(20240611, 400, /*edge_inf=*/0.08);
  // The generator must exercise both outcomes.
  CHECK(feasible > 200);
  CHECK(infeasible > 40);
}

TEST_CASE("GLPK and exhaustive enumeration agree on problems full of forbidden pairs",
          "[planner]") {
  // Here infeasibility mostly comes from combinations of pairs, which only the ILP sees.
  const auto [feasible, infeasible] = compare_with_exhaustive(77, 300, /*edge_inf=*/0.45);
  CHECK(feasible > 50);
  CHECK(infeasible > 50);
}

/// 1-5 nodes whose strategies need 0, 1 or 2 GiB plus or minus up to 4 KiB, so that many
/// footprints lie within 1e-5 of each other (GLPK's tolerances) and 1e-4 (a relative margin).
/// The budget is the peak footprint of a random assignment, moved by 0, +-1 B, up to +-8 KiB
/// or up to +-1e-4 of itself.
IlpProblem near_budget_problem(Rng& rng) {
  constexpr double kGiB = 1024.0 * kMiB;
  IlpProblem p;
  const auto n = static_cast<int32_t>(1 + rng.below(5));
  for (int32_t i = 0; i < n; ++i) {
    IlpProblem::Node node;
    node.name = fmt::format("n{}", i);
    for (int64_t k = 1 + rng.below(4); k > 0; --k) {
      node.cost.push_back(random_cost(rng, 0.05));
      const double base = static_cast<double>(rng.below(3)) * kGiB;
      node.memory.push_back(base > 0 ? base + static_cast<double>(rng.below(8193) - 4096) : 0.0);
    }
    p.nodes.push_back(std::move(node));
  }
  for (int32_t i = 1; i < n; ++i) {
    if (rng.uniform() < 0.6) p.edges.push_back(random_edge(rng, p, i - 1, i, 0.05));
  }
  if (n > 1 && rng.uniform() < 0.2) p.aliases.push_back(random_alias(rng, p, 0, n - 1));
  for (int64_t t = 1 + rng.below(3); t > 0; --t) {
    std::vector<int32_t> live;
    for (int32_t i = 0; i < n; ++i) {
      if (rng.uniform() < 0.7) live.push_back(i);
    }
    p.liveness.push_back(live);
  }
  std::vector<int32_t> pick;
  for (int32_t i = 0; i < n; ++i)
    pick.push_back(static_cast<int32_t>(rng.below(p.num_strategies(i))));
  double peak = evaluate(p, pick).peak_memory;
  if (peak <= 0) peak = kGiB;
  switch (rng.below(4)) {
    case 0:
      p.memory_budget = peak;
      break;
    case 1:
      p.memory_budget = peak + (rng.uniform() < 0.5 ? -1.0 : 1.0);
      break;
    case 2:
      p.memory_budget = peak + static_cast<double>(rng.below(16385) - 8192);
      break;
    default:
      p.memory_budget = peak * (1.0 + (2.0 * rng.uniform() - 1.0) * 1e-4);
      break;
  }
  return p;
}

TEST_CASE("GLPK finds the exhaustive optimum when budgets sit within 1e-4 of footprints",
          "[planner]") {
  Rng rng(20240612);
  int feasible = 0;
  int infeasible = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const IlpProblem p = near_budget_problem(rng);
    INFO("trial " << trial << ", budget " << fmt::format("{:.0f}", p.memory_budget));
    REQUIRE(p.validate().is_ok());
    Expected<IlpSolution> exact = solve_exhaustive(p);
    Expected<IlpSolution> ilp = solve_ilp(p);
    INFO((ilp ? std::string("solved") : ilp.status().message()));
    if (!exact) {
      REQUIRE(exact.status().code() == Errc::kInfeasible);
      REQUIRE_FALSE(ilp.has_value());
      CHECK(ilp.status().code() == Errc::kInfeasible);
      ++infeasible;
      continue;
    }
    ++feasible;
    REQUIRE(ilp.has_value());
    CHECK(ilp->optimal);
    CHECK(ilp->method == "glpk");
    CHECK(same_objective(ilp->objective, exact->objective));
    CHECK(evaluate(p, ilp->choice).violations.empty());
    if (trial % 4 == 0) {
      SolveOptions no_presolve;
      no_presolve.presolve = false;
      Expected<IlpSolution> plain = solve_ilp(p, no_presolve);
      REQUIRE(plain.has_value());
      CHECK(same_objective(plain->objective, exact->objective));
    }
  }
  CHECK(feasible > 150);
  CHECK(infeasible > 20);
}

TEST_CASE("solving the same problem twice gives the same choice", "[planner]") {
  Rng rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    const IlpProblem p = random_problem(rng);
    Expected<IlpSolution> a = solve_ilp(p);
    Expected<IlpSolution> b = solve_ilp(p);
    REQUIRE(a.has_value() == b.has_value());
    if (a) CHECK(a->choice == b->choice);
  }
}

/// A random tree (parent of i below i) or chain of up to `max_nodes` nodes with up to
/// `max_strategies` strategies; some links carry a parallel edge or an alias.
IlpProblem random_tree(Rng& rng, int32_t max_nodes, int64_t max_strategies, bool chain) {
  IlpProblem p;
  const auto n = static_cast<int32_t>(2 + rng.below(max_nodes - 1));
  for (int32_t i = 0; i < n; ++i) p.nodes.push_back(random_node(rng, i, max_strategies));
  for (int32_t i = 1; i < n; ++i) {
    const auto parent = static_cast<int32_t>(chain ? i - 1 : rng.below(i));
    const bool reversed = rng.uniform() < 0.3;
    p.edges.push_back(random_edge(rng, p, reversed ? i : parent, reversed ? parent : i));
    if (rng.uniform() < 0.1) p.edges.push_back(random_edge(rng, p, i, parent));
    if (rng.uniform() < 0.1) p.aliases.push_back(random_alias(rng, p, parent, i));
  }
  return p;
}

TEST_CASE("the tree DP equals GLPK on random chains and trees", "[planner]") {
  Rng rng(99);
  int feasible = 0;
  for (int trial = 0; trial < 100; ++trial) {
    const IlpProblem p = random_tree(rng, 30, 8, /*chain=*/trial % 2 == 0);
    INFO("trial " << trial);
    REQUIRE(is_tree_shaped(p));
    Expected<IlpSolution> dp = solve_tree_dp(p);
    Expected<IlpSolution> ilp = solve_ilp(p);
    REQUIRE(dp.has_value() == ilp.has_value());
    if (!dp) {
      CHECK(dp.status().code() == Errc::kInfeasible);
      CHECK(ilp.status().code() == Errc::kInfeasible);
      continue;
    }
    ++feasible;
    CHECK(same_objective(dp->objective, ilp->objective));
    CHECK(evaluate(p, dp->choice).violations.empty());
  }
  CHECK(feasible > 40);
}

TEST_CASE("the tree DP equals exhaustive enumeration on small random trees", "[planner]") {
  Rng rng(5);
  int feasible = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const IlpProblem p = random_tree(rng, 6, 4, /*chain=*/false);
    Expected<IlpSolution> dp = solve_tree_dp(p);
    Expected<IlpSolution> exact = solve_exhaustive(p);
    REQUIRE(dp.has_value() == exact.has_value());
    if (!dp) continue;
    ++feasible;
    CHECK(same_objective(dp->objective, exact->objective));
  }
  CHECK(feasible > 150);
}

TEST_CASE("random chains with skip edges are not tree-shaped", "[planner]") {
  Rng rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    IlpProblem p = random_tree(rng, 10, 3, /*chain=*/true);
    if (p.nodes.size() < 3) continue;
    CHECK(is_tree_shaped(p));
    p.edges.push_back(random_edge(rng, p, 0, static_cast<int32_t>(p.nodes.size()) - 1));
    CHECK_FALSE(is_tree_shaped(p));
  }
}

TEST_CASE("the greedy fallback returns feasible assignments no better than the optimum",
          "[planner]") {
  Rng rng(31337);
  int found = 0;
  int feasible = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const IlpProblem p = random_problem(rng);
    Expected<IlpSolution> exact = solve_exhaustive(p);
    Expected<IlpSolution> greedy = internal::solve_greedy(p);
    Expected<IlpSolution> fallback = internal::solve_fallback(p);
    if (exact) ++feasible;
    for (const Expected<IlpSolution>* sol : {&greedy, &fallback}) {
      if (!*sol) {
        CHECK((*sol).status().code() == Errc::kInfeasible);
        continue;
      }
      REQUIRE(exact.has_value());  // a feasible greedy answer proves feasibility
      CHECK_FALSE((*sol)->optimal);
      CHECK(evaluate(p, (*sol)->choice).violations.empty());
      CHECK((*sol)->objective >= exact->objective - 1e-9);
    }
    if (greedy) ++found;
  }
  // Greedy is a heuristic: it may miss feasible assignments, but not most of them.
  CHECK(found > feasible * 3 / 4);
}

}  // namespace
}  // namespace meshpipe::planner

// Tests of the fallbacks solve_ilp uses when GLPK has no incumbent: the greedy search and the
// choice between it and the tree DP (called directly through the internal header).
#include "planner/internal/ilp_fallback.h"

#include <catch2/catch.hpp>
#include <limits>

#include "core/rng.h"

namespace meshpipe::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

IlpProblem::Node node(std::string name, std::vector<double> cost, std::vector<double> memory = {}) {
  if (memory.empty()) memory.assign(cost.size(), 0.0);
  return {std::move(name), std::move(cost), std::move(memory)};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// As in ilp_test.cc: optimum 4 at (0, 0, 0); the cheapest strategies (0, 1, 0) cost 6.
IlpProblem conflicting_chain() {
  IlpProblem p;
  p.nodes = {node("a", {1, 2}), node("b", {2, 1}), node("c", {1, 3})};
  p.edges = {{0, 1, {0, 1.5, 1.5, 0}}, {1, 2, {0, 1.5, 1.5, 0}}};
  return p;
}

// (a, b): cost, memory at t = 1:  (0,0) 2, 5 GiB;  (0,1) 2.5, 4 GiB;  (1,0) 3, 3 GiB;  (1,1) 3.5.
IlpProblem memory_problem(double budget) {
  IlpProblem p;
  p.nodes = {node("a", {1, 2}, {3 * kGiB, 1 * kGiB}), node("b", {1, 1.5}, {2 * kGiB, 1 * kGiB})};
  p.liveness = {{0}, {0, 1}};
  p.memory_budget = budget;
  return p;
}

TEST_CASE("greedy from the cheapest strategies alone would stop in a local optimum", "[planner]") {
  // From (0, 1, 0) = 6: a moves to 1 (given b = 1: a=0 costs 1 + 1.5, a=1 costs 2 + 0), then
  // no single move helps at (1, 1, 0) = 2 + 1 + 1 + 0 + 1.5 = 5.5. The second start, the tree
  // DP over the spanning forest, is exact on this chain: the greedy result is the optimum 4.
  Expected<IlpSolution> sol = internal::solve_greedy(conflicting_chain());
  REQUIRE(sol.has_value());
  CHECK(sol->choice == std::vector<int32_t>{0, 0, 0});
  CHECK(sol->objective == Approx(4.0));
  CHECK(sol->method == "greedy-fallback");
  CHECK_FALSE(sol->optimal);
}

TEST_CASE("greedy moves the node with the largest memory saving when over budget", "[planner]") {
  // Both starts are (0, 0): 5 GiB at t = 1.
  SECTION("3.5 GiB: a -> 1 saves 2 GiB and lands on the optimum (1, 0) = 3") {
    Expected<IlpSolution> sol = internal::solve_greedy(memory_problem(3.5 * kGiB));
    REQUIRE(sol.has_value());
    CHECK(sol->choice == std::vector<int32_t>{1, 0});
    CHECK(sol->objective == Approx(3.0));
  }
  SECTION("4 GiB: the same move is feasible but misses the optimum (0, 1) = 2.5") {
    // Moving b back is no cheaper (1.5 > 1) and moving a back would exceed the budget.
    Expected<IlpSolution> sol = internal::solve_greedy(memory_problem(4 * kGiB));
    REQUIRE(sol.has_value());
    CHECK(sol->choice == std::vector<int32_t>{1, 0});
    CHECK(evaluate(memory_problem(4 * kGiB), sol->choice).violations.empty());
  }
  SECTION("1.5 GiB: no move fits, so it reports infeasibility") {
    Expected<IlpSolution> sol = internal::solve_greedy(memory_problem(1.5 * kGiB));
    REQUIRE_FALSE(sol.has_value());
    CHECK(sol.status().code() == Errc::kInfeasible);
    CHECK(contains(sol.status().message(), "memory (c) at liveness point 1"));
  }
}

TEST_CASE("greedy never picks infinite strategies, pairs or aliased pairs", "[planner]") {
  // a=0 forbidden, (a=1, b=0) forbidden, alias forbids b != c. Feasible: (1, 1, 1) = 3 + 0.5,
  // or (2, *, *) = 5 + ...; greedy must land on a feasible one.
  IlpProblem p;
  p.nodes = {node("a", {kInf, 1, 5}), node("b", {0, 1}), node("c", {0, 1})};
  p.edges = {{0, 1, {0, 0, kInf, 0.5, 0, 0}}};
  p.aliases = {{1, 2, {0, 1, 1, 0}}};
  Expected<IlpSolution> sol = internal::solve_greedy(p);
  REQUIRE(sol.has_value());
  CHECK(evaluate(p, sol->choice).violations.empty());
  CHECK(sol->choice == std::vector<int32_t>{1, 1, 1});
  CHECK(sol->objective == Approx(3.5));
}

TEST_CASE("the fallback uses the tree DP on trees and greedy otherwise", "[planner]") {
  Expected<IlpSolution> tree = internal::solve_fallback(conflicting_chain());
  REQUIRE(tree.has_value());
  CHECK(tree->method == "tree-dp");
  CHECK_FALSE(tree->optimal);
  CHECK(tree->objective == Approx(4.0));

  // No links (a forest), but the DP's (0, 0) breaks the 3.5 GiB budget: greedy instead.
  Expected<IlpSolution> memory = internal::solve_fallback(memory_problem(3.5 * kGiB));
  REQUIRE(memory.has_value());
  CHECK(memory->method == "greedy-fallback");
  CHECK(memory->choice == std::vector<int32_t>{1, 0});

  IlpProblem cycle = conflicting_chain();
  cycle.edges.push_back({2, 0, {0, 1, 1, 0}});
  Expected<IlpSolution> greedy = internal::solve_fallback(cycle);
  REQUIRE(greedy.has_value());
  CHECK(greedy->method == "greedy-fallback");
  CHECK(evaluate(cycle, greedy->choice).violations.empty());
}

/// A 200-node chain with 8 strategies: GLPK needs far more than 1 ms for it.
IlpProblem long_chain() {
  Rng rng(3);
  IlpProblem p;
  for (int i = 0; i < 200; ++i) {
    IlpProblem::Node n;
    for (int s = 0; s < 8; ++s) {
      n.cost.push_back(rng.uniform());
      n.memory.push_back(1.0);
    }
    p.nodes.push_back(n);
  }
  for (int32_t i = 1; i < 200; ++i) {
    IlpProblem::Edge e{i - 1, i, {}};
    for (int a = 0; a < 8; ++a) {
      for (int b = 0; b < 8; ++b) e.cost.push_back(a == b ? 0.0 : rng.uniform());
    }
    p.edges.push_back(e);
  }
  return p;
}

TEST_CASE("a time limit without incumbent falls back, or is a timeout when not allowed",
          "[planner]") {
  // Whether GLPK finds an incumbent within 1 ms depends on the machine, so both outcomes are
  // accepted; either way the answer must be feasible and correctly labelled.
  const IlpProblem p = long_chain();
  SolveOptions options;
  options.time_limit_seconds = 1e-3;
  Expected<IlpSolution> sol = solve_ilp(p, options);
  REQUIRE(sol.has_value());
  CHECK(evaluate(p, sol->choice).violations.empty());
  if (sol->method != "glpk") {
    CHECK(sol->method == "tree-dp");
    CHECK_FALSE(sol->optimal);
    CHECK(sol->num_variables > 0);
  }
  options.allow_fallback = false;
  Expected<IlpSolution> strict = solve_ilp(p, options);
  if (!strict) {
    CHECK(strict.status().code() == Errc::kTimeout);
    CHECK(contains(strict.status().message(), "no incumbent within 0.001 s"));
  } else {
    CHECK(strict->method == "glpk");
  }
}

}  // namespace
}  // namespace meshpipe::planner

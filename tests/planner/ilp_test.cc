// Hand-checked IlpProblems (3-6 nodes) for solve_ilp, solve_tree_dp, solve_exhaustive,
// validate() and evaluate(); the expected optima are worked out in the comments.
#include "planner/ilp.h"

#include <catch2/catch.hpp>
#include <limits>

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

/// Solves with GLPK and checks the answer against evaluate() and the two exact solvers.
IlpSolution solve_and_check(const IlpProblem& problem) {
  Expected<IlpSolution> sol = solve_ilp(problem);
  REQUIRE(sol.has_value());
  const Evaluation ev = evaluate(problem, sol->choice);
  CHECK(ev.violations.empty());
  CHECK(sol->objective == Approx(ev.total));
  CHECK(sol->method == "glpk");
  CHECK(sol->optimal);
  Expected<IlpSolution> ex = solve_exhaustive(problem);
  REQUIRE(ex.has_value());
  CHECK(ex->objective == Approx(sol->objective));
  return *sol;
}

// Strategies 0 and 1 of every node stand for two layouts; resharding between them costs 1.5.
IlpProblem conflicting_chain() {
  IlpProblem p;
  p.nodes = {node("a", {1, 2}), node("b", {2, 1}), node("c", {1, 3})};
  p.edges = {{0, 1, {0, 1.5, 1.5, 0}}, {1, 2, {0, 1.5, 1.5, 0}}};
  return p;
}

TEST_CASE("a chain gives up b's cheaper strategy to avoid two reshardings", "[planner]") {
  // Cheapest per node: a=0, b=1, c=0 -> 1 + 1 + 1 + 1.5 + 1.5 = 6.
  // All in layout 0: 1 + 2 + 1 + 0 + 0 = 4 (every other assignment costs >= 5.5).
  const IlpProblem p = conflicting_chain();
  const IlpSolution sol = solve_and_check(p);
  CHECK(sol.choice == std::vector<int32_t>{0, 0, 0});
  CHECK(sol.objective == Approx(4.0));
  // 6 s + 8 e columns; 3 (b) + 2 x [(e) + 2 (f) + 2 (g)] = 13 rows.
  CHECK(sol.num_variables == 14);
  CHECK(sol.num_constraints == 13);
  Expected<IlpSolution> dp = solve_tree_dp(p);
  REQUIRE(dp.has_value());
  CHECK(dp->choice == std::vector<int32_t>{0, 0, 0});
  CHECK(dp->method == "tree-dp");
}

TEST_CASE("a single-strategy node is folded into its neighbour's costs", "[planner]") {
  // x has one strategy: its edge becomes the linear term {2, 0, 3} on y's s.
  // y = 0: 1 + 2 = 3; y = 1: 1 + 0 = 1; y = 2: 0.5 + 3 = 3.5. Plus x's 0.5: optimum 1.5 at y = 1.
  IlpProblem p;
  p.nodes = {node("x", {0.5}), node("y", {1, 1, 0.5})};
  p.edges = {{0, 1, {2, 0, 3}}};
  const IlpSolution sol = solve_and_check(p);
  CHECK(sol.choice == std::vector<int32_t>{0, 1});
  CHECK(sol.objective == Approx(1.5));
  CHECK(sol.num_variables == 3);    // y's s only: no s for x, no e for the edge
  CHECK(sol.num_constraints == 1);  // y's (b)
}

TEST_CASE("an infinite edge cost towards a single-strategy node forbids that strategy",
          "[planner]") {
  // Same as above but the edge forbids y = 1: y = 0 costs 3, y = 2 costs 3.5 -> y = 0, 0.5 + 3.
  IlpProblem p;
  p.nodes = {node("x", {0.5}), node("y", {1, 1, 0.5})};
  p.edges = {{1, 0, {2, kInf, 3}}};  // dst has one strategy: entry q = 0 of row p
  const IlpSolution sol = solve_and_check(p);
  CHECK(sol.choice == std::vector<int32_t>{0, 0});
  CHECK(sol.objective == Approx(3.5));
}

TEST_CASE("an alias forces a parameter and its update to the same strategy", "[planner]") {
  // Unconstrained: w = 1, w' = 0 costs 0. The alias forbids (0, 1) and (1, 0):
  // (0, 0) costs 1 + 0 = 1, (1, 1) costs 0 + 3 = 3 -> optimum 1 at (0, 0).
  IlpProblem p;
  p.nodes = {node("w", {1, 0}), node("w'", {0, 3})};
  p.aliases = {{0, 1, {0, 1, 1, 0}}};
  const IlpSolution sol = solve_and_check(p);
  CHECK(sol.choice == std::vector<int32_t>{0, 0});
  CHECK(sol.objective == Approx(1.0));
  CHECK(sol.num_constraints == 4);  // 2 (b) + 2 (h)
}

TEST_CASE("infinite strategies and infinite pairs are never chosen", "[planner]") {
  // a = 0 is forbidden outright. Pairs (a, b):
  //   (1, 0) forbidden; (1, 1) = 1 + 0 + 4 = 5; (2, 0) = 2 + 0 + 1 = 3; (2, 1) forbidden.
  // Optimum 3 at (2, 0), although a = 0 with r = 0 would cost 0.
  IlpProblem p;
  p.nodes = {node("a", {kInf, 1, 2}), node("b", {0, 0}), node("c", {0.25})};
  p.edges = {{0, 1, {0, 0, kInf, 4, 1, kInf}}, {2, 1, {0, 0}}};
  const IlpSolution sol = solve_and_check(p);
  CHECK(sol.choice == std::vector<int32_t>{2, 0, 0});
  CHECK(sol.objective == Approx(3.25));  // + c's constant 0.25
}

// Two nodes live together; strategy 0 is fast and large, strategy 1 slow and small.
IlpProblem memory_problem(double budget) {
  IlpProblem p;
  p.nodes = {node("a", {1, 2}, {3 * kGiB, 1 * kGiB}), node("b", {1, 1.5}, {2 * kGiB, 1 * kGiB})};
  p.liveness = {{0}, {0, 1}};
  p.memory_budget = budget;
  return p;
}

TEST_CASE("a memory budget flips the choice to lower-memory, higher-cost strategies", "[planner]") {
  // (a, b): cost, memory at t = 1
  //   (0, 0): 2,   5 GiB   (1, 0): 3,   3 GiB
  //   (0, 1): 2.5, 4 GiB   (1, 1): 3.5, 2 GiB
  SECTION("no budget: the fastest") {
    const IlpSolution sol = solve_and_check(memory_problem(-1));
    CHECK(sol.choice == std::vector<int32_t>{0, 0});
    CHECK(evaluate(memory_problem(-1), sol.choice).peak_memory == 5 * kGiB);
  }
  SECTION("4 GiB: b moves to its small strategy") {
    const IlpSolution sol = solve_and_check(memory_problem(4 * kGiB));
    CHECK(sol.choice == std::vector<int32_t>{0, 1});
    CHECK(sol.objective == Approx(2.5));
    CHECK(sol.num_constraints == 4);  // 2 (b) + c[t=0] + c[t=1]
  }
  SECTION("3.5 GiB: a moves instead") {
    const IlpSolution sol = solve_and_check(memory_problem(3.5 * kGiB));
    CHECK(sol.choice == std::vector<int32_t>{1, 0});
    CHECK(sol.objective == Approx(3.0));
  }
}

TEST_CASE("a budget below the smallest footprint is infeasible and names the liveness point",
          "[planner]") {
  // The smallest footprint at t = 1 is 1 + 1 = 2 GiB > 1.5 GiB (at t = 0 it is 1 GiB).
  Expected<IlpSolution> sol = solve_ilp(memory_problem(1.5 * kGiB));
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  const std::string msg = sol.status().message();
  INFO(msg);
  CHECK(contains(msg, "memory (c) at liveness point 1 (nodes 'a', 'b')"));
  CHECK(contains(msg, "2.00 GiB"));
  CHECK(contains(msg, "1.50 GiB"));
}

TEST_CASE("memory that only fails together with an alias is attributed to memory", "[planner]") {
  // Alone each node fits in 1 GiB (2 GiB together, under 3 GiB), but the alias forces equal
  // strategies: (0, 0) and (1, 1) both need 1 + 3 = 4 GiB > 3 GiB.
  IlpProblem p;
  p.nodes = {node("a", {1, 1}, {1 * kGiB, 3 * kGiB}), node("b", {1, 1}, {3 * kGiB, 1 * kGiB})};
  p.aliases = {{0, 1, {0, 1, 1, 0}}};
  p.liveness = {{0, 1}};
  p.memory_budget = 3 * kGiB;
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  INFO(sol.status().message());
  CHECK(contains(sol.status().message(), "memory (c)"));
  CHECK(contains(sol.status().message(), "liveness point 0"));
  CHECK(contains(sol.status().message(), "3.00 GiB"));
}

TEST_CASE("a strategy a hair over the budget is not chosen despite GLPK's tolerances",
          "[planner]") {
  // a = 0 is free but needs 16 GiB + 17 B, over the 16 GiB budget by 1e-9 of it; GLPK's
  // tolerances accept it, evaluate() does not, so solve_ilp re-solves with a cut excluding
  // a = 0 and picks a = 1 at cost 1.
  IlpProblem p;
  p.nodes = {node("a", {0, 1}, {16 * kGiB * (1 + 1e-9), 0}), node("b", {0, 1})};
  p.edges = {{0, 1, {0, 0, 0, 0}}};
  p.liveness = {{0, 1}};
  p.memory_budget = 16 * kGiB;
  const IlpSolution sol = solve_and_check(p);
  CHECK(sol.choice == std::vector<int32_t>{1, 0});
  CHECK(sol.objective == Approx(1.0));
}

TEST_CASE("a strategy just under the budget stays allowed when a cheaper one is a hair over it",
          "[planner]") {
  // M = 2^31 B. Strategy 0 is free but needs M + 64 B (over by 3e-8 of M, which GLPK's
  // tolerances accept); strategy 1 costs 5 and needs M - 1000 B (under by 5e-7 of M). Cutting
  // off strategy 0 must not cut off strategy 1: the optimum is 5 at strategy 1.
  constexpr double kBudget = 2147483648.0;
  IlpProblem p;
  p.nodes = {node("a", {0, 5}, {kBudget + 64, kBudget - 1000})};
  p.liveness = {{0}};
  p.memory_budget = kBudget;
  SECTION("two strategies") {
    const IlpSolution sol = solve_and_check(p);
    CHECK(sol.choice == std::vector<int32_t>{1});
    CHECK(sol.objective == 5.0);
  }
  SECTION("a third, roomy strategy does not win at cost 7") {
    p.nodes[0] = node("a", {0, 5, 7}, {kBudget + 64, kBudget - 1000, kBudget / 2});
    const IlpSolution sol = solve_and_check(p);
    CHECK(sol.choice == std::vector<int32_t>{1});
    CHECK(sol.objective == 5.0);
  }
  SECTION("next to other nodes on the same liveness point") {
    // b and c add 0 or 32 B at no cost difference; a = 1 with both at 0 B fits (M - 1000 + 0),
    // a = 0 never does.
    p.nodes.push_back(node("b", {1, 1}, {0, 32}));
    p.nodes.push_back(node("c", {1, 2}, {32, 0}));
    p.edges = {{0, 1, {0, 0, 0, 0}}};
    p.liveness = {{0, 1, 2}};
    const IlpSolution sol = solve_and_check(p);
    CHECK(sol.choice[0] == 1);
    CHECK(sol.objective == 7.0);  // 5 + 1 + 1 (c = 0 at 32 B still fits)
  }
}

TEST_CASE("memory infeasibility states each point's smallest footprint against the budget exactly",
          "[planner]") {
  // M = 2^31 B. Alone each liveness point fits (M - 1000 B), but the alias forces equal
  // strategies and both (0, 0) and (1, 1) put 2 M on one point. The smallest footprint prints
  // as the budget does (2.00 GiB), so the exact bytes and "within" must follow.
  constexpr double kBudget = 2147483648.0;
  IlpProblem p;
  p.nodes = {node("a", {1, 1}, {kBudget - 1000, 2 * kBudget}),
             node("b", {1, 1}, {2 * kBudget, kBudget - 1000})};
  p.aliases = {{0, 1, {0, 1, 1, 0}}};
  p.liveness = {{0}, {1}};
  p.memory_budget = kBudget;
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  CHECK_FALSE(solve_exhaustive(p).has_value());
  const std::string msg = sol.status().message();
  INFO(msg);
  CHECK(contains(msg, "memory (c)"));
  CHECK(contains(msg, "liveness point 0"));
  CHECK(contains(msg, "2.00 GiB (2147482648 B), within the budget of 2.00 GiB (2147483648 B)"));
}

TEST_CASE("a node whose every strategy is infinite is infeasible and named", "[planner]") {
  IlpProblem p;
  p.nodes = {node("a", {1, 2}), node("layer0/fc1", {kInf, kInf}), node("c", {1})};
  p.edges = {{0, 1, {0, 1, 1, 0}}};
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  CHECK(contains(sol.status().message(), "node 1 'layer0/fc1'"));
  CHECK(solve_exhaustive(p).status().code() == Errc::kInfeasible);
  CHECK(solve_tree_dp(p).status().code() == Errc::kInfeasible);
}

TEST_CASE("forbidden pairs that empty a neighbour's choices name that node", "[planner]") {
  // a can only take 1; edge 0 forbids (a=1, b=0); edge 1 forbids b=1 with every c.
  IlpProblem p;
  p.nodes = {node("a", {kInf, 0}), node("b", {0, 0}), node("c", {0, 0})};
  p.edges = {{0, 1, {0, 0, kInf, 0}}, {1, 2, {0, 0, kInf, kInf}}};
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  INFO(sol.status().message());
  CHECK(contains(sol.status().message(), "node 1 'b'"));
  CHECK(contains(sol.status().message(), "e[edge 1]"));
}

// Three 2-strategy nodes in a triangle; `different` forbids equal strategies, `same` unequal.
std::vector<double> different() { return {kInf, 0, 0, kInf}; }

TEST_CASE("an odd cycle of 'must differ' edges is infeasible because of its forbidden pairs",
          "[planner]") {
  // Two layouts cannot colour a triangle: every pair of strategies has support locally, so
  // only the ILP sees it. No alias, no memory: the infinite-cost edges are to blame.
  IlpProblem p;
  p.nodes = {node("a", {0, 0}), node("b", {0, 0}), node("c", {0, 0})};
  p.edges = {{0, 1, different()}, {1, 2, different()}, {0, 2, different()}};
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  INFO(sol.status().message());
  CHECK(contains(sol.status().message(), "forbidden pairs"));
  CHECK(contains(sol.status().message(), "e[edge 0], e[edge 1], e[edge 2]"));
}

TEST_CASE("an alias that contradicts the forbidden pairs is named as the cause", "[planner]") {
  // a != b and b != c force a == c; the alias forbids a == c.
  IlpProblem p;
  p.nodes = {node("a", {0, 0}), node("b", {0, 0}), node("c", {0, 0})};
  p.edges = {{0, 1, different()}, {1, 2, different()}};
  p.aliases = {{0, 2, {1, 0, 0, 1}}};
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE_FALSE(sol.has_value());
  CHECK(sol.status().code() == Errc::kInfeasible);
  INFO(sol.status().message());
  CHECK(contains(sol.status().message(), "alias (h)"));
  CHECK(contains(sol.status().message(), "h[alias 0"));
}

TEST_CASE("a problem of single-strategy nodes is solved without variables", "[planner]") {
  IlpProblem p;
  p.nodes = {node("x", {1}), node("y", {2})};
  p.edges = {{0, 1, {0.5}}};
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE(sol.has_value());
  CHECK(sol->num_variables == 0);
  CHECK(sol->objective == Approx(3.5));
  CHECK(sol->optimal);

  p.edges[0].cost = {kInf};
  CHECK(solve_ilp(p).status().code() == Errc::kInfeasible);
}

TEST_CASE("node names GLPK would reject as row names do not break the solve", "[planner]") {
  // GLPK aborts on names over 255 bytes or with control characters; the rows get cleaned names.
  IlpProblem p = conflicting_chain();
  p.nodes[0].name = std::string(300, 'x');
  p.nodes[1].name = "tab\there\nnewline";
  Expected<IlpSolution> sol = solve_ilp(p);
  REQUIRE(sol.has_value());
  CHECK(sol->objective == Approx(4.0));
}

TEST_CASE("solving without presolve gives the same optimum", "[planner]") {
  SolveOptions options;
  options.presolve = false;
  Expected<IlpSolution> sol = solve_ilp(conflicting_chain(), options);
  REQUIRE(sol.has_value());
  CHECK(sol->choice == std::vector<int32_t>{0, 0, 0});
  CHECK(sol->optimal);
  Expected<IlpSolution> bad = solve_ilp(memory_problem(1.5 * kGiB), options);
  CHECK(bad.status().code() == Errc::kInfeasible);
}

TEST_CASE("a non-positive time limit is rejected", "[planner]") {
  SolveOptions options;
  options.time_limit_seconds = 0;
  CHECK(solve_ilp(conflicting_chain(), options).status().code() == Errc::kInvalidArgument);
}

TEST_CASE("validate names the broken node, edge, alias or liveness point", "[planner]") {
  const auto message = [](const IlpProblem& p) {
    Status st = p.validate();
    CHECK(st.code() == Errc::kInvalidArgument);
    return st.message();
  };
  IlpProblem p = conflicting_chain();
  CHECK(p.validate().is_ok());
  IlpProblem q = p;
  q.edges[1].cost.pop_back();
  CHECK(contains(message(q), "edge 1"));
  q = p;
  q.edges[0].dst = 7;
  CHECK(contains(message(q), "edge 0"));
  q = p;
  q.edges[0].dst = 0;
  CHECK(contains(message(q), "to itself"));
  q = p;
  q.nodes[2].cost[1] = std::numeric_limits<double>::quiet_NaN();
  CHECK(contains(message(q), "node 2 'c'"));
  q = p;
  q.nodes[1].memory = {0};
  CHECK(contains(message(q), "node 1 'b'"));
  q = p;
  q.nodes[0].cost.clear();
  q.nodes[0].memory.clear();
  CHECK(contains(message(q), "no strategy"));
  q = p;
  q.aliases = {{0, 1, {0, 1, 1}}};
  CHECK(contains(message(q), "alias 0"));
  q = p;
  q.liveness = {{0, 1, 0}};
  CHECK(contains(message(q), "twice"));
  // solve_ilp reports it instead of handing it to GLPK.
  CHECK(solve_ilp(q).status().code() == Errc::kInvalidArgument);
}

TEST_CASE("evaluate breaks the cost down and lists each broken constraint", "[planner]") {
  IlpProblem p;
  p.nodes = {node("a", {kInf, 1}, {10, 20}), node("b", {2, 3}, {5, 6}), node("c", {1, 1})};
  p.edges = {{0, 1, {0, kInf, 0.5, 0.25}}};
  p.aliases = {{1, 2, {0, 1, 1, 0}}};
  p.liveness = {{0, 1}, {1}};
  p.memory_budget = 20;

  // Feasible: a=1, b=1, c=1 -> nodes 1 + 3 + 1 = 5, edge 0.25, memory 26 at t=0 is over 20.
  Evaluation ev = evaluate(p, {1, 1, 1});
  CHECK(ev.node_cost == Approx(5));
  CHECK(ev.edge_cost == Approx(0.25));
  CHECK(ev.total == Approx(5.25));
  CHECK(ev.peak_memory == 26);
  REQUIRE(ev.violations.size() == 1);
  CHECK(contains(ev.violations[0], "memory (c) at liveness point 0"));

  // a=0 is forbidden, (0, 1) on the edge is forbidden, b=1/c=0 breaks the alias.
  p.memory_budget = -1;
  ev = evaluate(p, {0, 1, 0});
  REQUIRE(ev.violations.size() == 3);
  CHECK(contains(ev.violations[0], "node 0 'a': strategy 0 is forbidden"));
  CHECK(contains(ev.violations[1], "edge 0"));
  CHECK(contains(ev.violations[2], "alias 0"));

  ev = evaluate(p, {1, 2, 0});
  REQUIRE_FALSE(ev.violations.empty());
  CHECK(contains(ev.violations[0], "out of range"));
  CHECK(evaluate(p, {1, 1}).violations.size() == 1);
}

TEST_CASE("is_tree_shaped merges parallel links and rejects cycles", "[planner]") {
  IlpProblem p = conflicting_chain();
  CHECK(is_tree_shaped(p));
  p.edges.push_back({1, 0, {0, 1, 1, 0}});  // parallel (reversed) edge: still one link
  CHECK(is_tree_shaped(p));
  p.aliases.push_back({1, 2, {0, 1, 1, 0}});  // alias on an existing link
  CHECK(is_tree_shaped(p));
  p.nodes.push_back(node("d", {1}));  // a second component
  CHECK(is_tree_shaped(p));
  p.aliases.push_back({2, 0, {0, 0, 0, 0}});  // closes a-b-c-a
  CHECK_FALSE(is_tree_shaped(p));
  CHECK(solve_tree_dp(p).status().code() == Errc::kInvalidArgument);
  p.edges[0].src = 9;
  CHECK_FALSE(is_tree_shaped(p));  // invalid problems are not trees
}

TEST_CASE("the tree DP sums parallel edges and honours aliases", "[planner]") {
  // Edges a->b {0, 3, 3, 0} and b->a {0, 0, 0, 0} plus the alias forbidding (a=1, b=1):
  // (0,0) = 2 + 2 = 4, (0,1) = 2 + 0 + 3 = 5, (1,0) = 0 + 2 + 3 = 5, (1,1) forbidden.
  IlpProblem p;
  p.nodes = {node("a", {2, 0}), node("b", {2, 0}), node("c", {0, 1})};
  p.edges = {{0, 1, {0, 3, 3, 0}}, {1, 0, {0, 0, 0, 0}}, {2, 1, {0, 1, 0, 0}}};
  p.aliases = {{0, 1, {0, 0, 0, 1}}};
  // c: (c=0, b=0) costs 0; so the optimum is (0, 0, 0) = 4.
  Expected<IlpSolution> dp = solve_tree_dp(p);
  REQUIRE(dp.has_value());
  CHECK(dp->choice == std::vector<int32_t>{0, 0, 0});
  CHECK(dp->objective == Approx(4));
  CHECK(dp->optimal);
  CHECK(solve_and_check(p).objective == Approx(4));
}

TEST_CASE("exhaustive enumeration refuses more assignments than its limit", "[planner]") {
  const IlpProblem p = conflicting_chain();  // 8 assignments
  CHECK(solve_exhaustive(p, /*max_assignments=*/8).has_value());
  CHECK(solve_exhaustive(p, /*max_assignments=*/7).status().code() == Errc::kOutOfRange);
}

}  // namespace
}  // namespace meshpipe::planner

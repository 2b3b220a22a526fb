// IlpProblem: the intra-operator sharding problem as plain numbers (no IR types), its GLPK
// solve, exact dynamic programs for tree-shaped problems, and an independent evaluator.
//
// Formulation (docs/algorithms.md §1.1; labels as in Alpa and XLA's auto-sharding solver):
//   variables  s_i in {0,1}^|S_i| for every node i (one-hot strategy choice)
//              e_ij in {0,1}^(|S_i| |S_j|) for every edge (i, j)
//   minimise   sum_i s_i . c_i  +  sum_(i,j) e_ij . r_ij
//   (b)  sum_p s_i(p) = 1                              one strategy per node
//   (c)  sum_(i in L[t]) s_i . m_i <= M   for every t  memory at each liveness point (M > 0)
//   (e)  sum_(p,q) e_ij(p,q) = 1
//   (f)  sum_q e_ij(p,q) <= s_i(p)   for every p       e_ij linearises s_i(p) s_j(q)
//   (g)  sum_p e_ij(p,q) <= s_j(q)   for every q
//   (h)  s_a(p) + s_b(q) <= 1 where alias pair (a, b) forbids (p, q)
// Infinite costs (std::numeric_limits<double>::infinity()) forbid a strategy or a pair.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace meshpipe::planner {

/// The problem. Costs are in seconds, memory in bytes.
struct IlpProblem {
  struct Node {
    std::string name;            ///< for diagnostics ("layer0/mlp/fc1")
    std::vector<double> cost;    ///< c_i: compute + communication per strategy
    std::vector<double> memory;  ///< m_i: bytes per device per strategy (same length as cost)
  };
  struct Edge {
    int32_t src = 0;
    int32_t dst = 0;
    std::vector<double> cost;  ///< r_ij, |S_src| x |S_dst| row-major: [p * |S_dst| + q]
  };
  struct Alias {
    int32_t a = 0;
    int32_t b = 0;
    std::vector<uint8_t> forbidden;  ///< |S_a| x |S_b| row-major: 1 where (p, q) is not allowed
  };

  std::vector<Node> nodes;
  std::vector<Edge> edges;
  std::vector<Alias> aliases;
  std::vector<std::vector<int32_t>> liveness;  ///< L[t]: nodes live at liveness point t
  /// Optional, parallel to `liveness`: liveness_memory[t][k] is the memory vector of node
  /// liveness[t][k] in row t, replacing its `memory` there. A node that stands for several
  /// values (an op and its followers) counts only the values live at t. Empty: every row uses
  /// the nodes' own vectors.
  std::vector<std::vector<std::vector<double>>> liveness_memory;
  double memory_budget = -1.0;  ///< M; <= 0 disables (c)

  /// Indices in range, matrix sizes consistent, every node has >= 1 strategy, no NaN, edges
  /// not self-loops. Errors name the node or edge.
  Status validate() const;
  /// Number of strategies of node i.
  /// The memory vector of the k-th node of liveness point t (see liveness_memory).
  const std::vector<double>& row_memory(size_t t, size_t k) const {
    return liveness_memory.empty() ? nodes[static_cast<size_t>(liveness[t][k])].memory
                                   : liveness_memory[t][k];
  }
  int64_t num_strategies(int32_t i) const {
    return static_cast<int64_t>(nodes[static_cast<size_t>(i)].cost.size());
  }
};

/// A chosen strategy per node.
struct IlpSolution {
  std::vector<int32_t> choice;  ///< strategy index per node
  double objective = 0.0;       ///< seconds (recomputed by evaluate)
  bool optimal = false;         ///< proven optimal
  std::string method;           ///< "glpk", "tree-dp", "exhaustive", "greedy-fallback"
  double solve_seconds = 0.0;
  int64_t num_variables = 0;  ///< of the ILP as built (0 for non-ILP methods)
  int64_t num_constraints = 0;
};

/// Options of solve_ilp.
struct SolveOptions {
  double time_limit_seconds = 30.0;
  bool presolve = true;
  /// When GLPK ends without an incumbent, fall back to tree_dp (tree-shaped problems without
  /// binding memory) or the greedy search; the result is marked optimal = false.
  bool allow_fallback = true;
};

/// Solves with GLPK (the only GLPK caller in meshpipe). Edge variables are continuous in [0, 1]
/// (the optimum stays integral; ALPA-shaped models solve ~35% faster). Objective coefficients are
/// scaled to microseconds for conditioning. Errors:
///   kInfeasible  - no assignment satisfies the constraints; the message names the constraint
///                  groups involved, e.g. "memory (c) at liveness point 3: the smallest possible
///                  footprint is 1.20 GiB, above the budget of 1.00 GiB", or the node whose every
///                  strategy is forbidden;
///   kTimeout     - no incumbent within the time limit and no fallback allowed/possible.
Expected<IlpSolution> solve_ilp(const IlpProblem& problem, const SolveOptions& options = {});

/// Frees the calling thread's solver state (GLPK keeps an environment per thread): a worker
/// thread that called solve_ilp calls this before it ends.
void release_solver_thread();

/// True when the edges and aliases (as undirected links) form a forest.
bool is_tree_shaped(const IlpProblem& problem);

/// Exact minimum for tree-shaped problems by dynamic programming over the forest, O(sum over
/// edges of |S_i| |S_j|). Ignores (c); errors when the problem is not tree-shaped or infeasible.
Expected<IlpSolution> solve_tree_dp(const IlpProblem& problem);

/// Exact minimum by enumerating every assignment (tests; errors above `max_assignments`).
Expected<IlpSolution> solve_exhaustive(const IlpProblem& problem,
                                       int64_t max_assignments = 2'000'000);

/// Cost breakdown and constraint violations of an assignment, computed independently of any
/// solver.
struct Evaluation {
  double node_cost = 0.0;
  double edge_cost = 0.0;
  double total = 0.0;
  double peak_memory = 0.0;             ///< max over liveness points
  std::vector<std::string> violations;  ///< empty when feasible; each names the constraint
};
Evaluation evaluate(const IlpProblem& problem, const std::vector<int32_t>& choice);

}  // namespace meshpipe::planner

// Helpers shared by the ILP solvers (GLPK, tree DP, exhaustive, greedy): labels for messages,
// per-strategy forbiddance, pre-solve feasibility checks and merged undirected links.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "planner/ilp.h"

namespace meshpipe::planner::internal {

/// "node 3 'layer0/fc1'" (or "node 3" when the node has no name).
std::string node_label(const IlpProblem& problem, int32_t i);

/// "1.20 GiB, above the budget of 1.00 GiB" ("within" when footprint <= budget); exact byte
/// counts follow both amounts when they would print alike.
std::string footprint_and_budget(double footprint, double budget);

/// True when the memory constraint (c) is active (M > 0).
bool memory_enabled(const IlpProblem& problem);

/// allowed[i][p] = 1 unless strategy p of node i is forbidden on its own: an infinite node cost,
/// an infinite edge cost or a forbidden alias pair towards a single-strategy neighbour.
using AllowedMask = std::vector<std::vector<uint8_t>>;
AllowedMask unary_allowed(const IlpProblem& problem);

/// kInfeasible when a node has no allowed strategy, or an edge or alias between two
/// single-strategy nodes forbids their only pair. Expects a valid problem.
Status check_unary_feasibility(const IlpProblem& problem, const AllowedMask& allowed);

/// Sum over the nodes of liveness point t of their smallest allowed memory.
double min_footprint(const IlpProblem& problem, const AllowedMask& allowed, int32_t t);

/// "liveness point 3 (nodes 'a', 'b', ...)".
std::string liveness_label(const IlpProblem& problem, int32_t t);

/// kInfeasible, naming the liveness point with the largest smallest-possible footprint, when
/// that footprint exceeds the budget (c). Ok when (c) is disabled.
Status check_memory_lower_bound(const IlpProblem& problem, const AllowedMask& allowed);

/// Index of the liveness point with the largest smallest-possible footprint (-1 when none).
int32_t tightest_liveness_point(const IlpProblem& problem, const AllowedMask& allowed);

/// Every edge and alias between one unordered pair of nodes, merged: u < v, cost[p * |S_v| + q]
/// is the sum of the edge costs of (u = p, v = q), infinite where an edge or alias forbids it.
struct Link {
  int32_t u = 0;
  int32_t v = 0;
  std::vector<double> cost;
  std::vector<int32_t> edges;    ///< indices into IlpProblem::edges
  std::vector<int32_t> aliases;  ///< indices into IlpProblem::aliases
};

/// The merged links of a valid problem, ordered by (u, v).
std::vector<Link> build_links(const IlpProblem& problem);

/// Cost of link `l` when its endpoint `node` takes strategy `p` and the other endpoint `q`.
double link_cost(const IlpProblem& problem, const Link& l, int32_t node, int64_t p, int64_t q);

/// Arc consistency over the links: repeatedly drops strategy p of a node when every remaining
/// strategy of some neighbour makes the pair forbidden. kInfeasible naming the first node left
/// with no strategy and the edges/aliases that emptied it; ok when no domain empties (which
/// does not prove feasibility on graphs with cycles).
Status propagate_forbidden_pairs(const IlpProblem& problem, const AllowedMask& allowed);

/// For every node, the indices of the links that touch it (ascending).
std::vector<std::vector<int32_t>> links_by_node(const IlpProblem& problem,
                                                const std::vector<Link>& links);

}  // namespace meshpipe::planner::internal

// The solvers solve_ilp falls back to when GLPK ends without an incumbent; internal so tests can
// call them directly.
#pragma once

#include "core/status.h"
#include "planner/ilp.h"

namespace meshpipe::planner::internal {

/// Greedy local search from two starts: every node at its cheapest allowed strategy, and the
/// exact tree DP over a maximum-weight spanning forest of the links (the other links ignored).
/// From each start, nodes are revisited in index order, each moving to the strategy that
/// minimises its node cost plus incident edge costs given its neighbours, until no move helps.
/// When a liveness point is over budget, nodes live there move to lower-memory strategies
/// (largest saving first), then the improvement pass runs again accepting only moves that keep
/// every point within budget. The cheaper feasible end wins (the first on ties). Deterministic
/// (lowest index wins ties). Result: method "greedy-fallback", optimal = false; kInfeasible when
/// neither end is feasible (the message lists a violation).
Expected<IlpSolution> solve_greedy(const IlpProblem& problem);

/// What solve_ilp returns when GLPK has no incumbent: solve_tree_dp when the problem is tree
/// shaped and its choice satisfies (c) (or (c) is disabled), otherwise solve_greedy. Always
/// optimal = false. Expects a valid problem.
Expected<IlpSolution> solve_fallback(const IlpProblem& problem);

}  // namespace meshpipe::planner::internal

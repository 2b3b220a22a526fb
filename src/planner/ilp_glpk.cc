// solve_ilp: the GLPK model of an IlpProblem, its solve, and the diagnosis of infeasibility.
// The only file in meshpipe that includes glpk.h (docs/style.md rule 2).
#include <fmt/format.h>
#include <glpk.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <cmath>
#include <map>
#include <memory>

#include "core/logging.h"
#include "core/units.h"
#include "planner/ilp.h"
#include "planner/internal/ilp_checks.h"
#include "planner/internal/ilp_fallback.h"

namespace meshpipe::planner {
namespace {

using internal::AllowedMask;
using internal::node_label;

/// Objective coefficients are in microseconds: costs of 1e-6..1 s become 1..1e6.
constexpr double kObjectiveScale = 1e6;

size_t idx(int64_t i) { return static_cast<size_t>(i); }

struct ProbDeleter {
  void operator()(glp_prob* lp) const { glp_delete_prob(lp); }
};
using GlpProb = std::unique_ptr<glp_prob, ProbDeleter>;

/// Silences GLPK's terminal output on this thread for one solve, then restores it.
class TermOutGuard {
 public:
  TermOutGuard() : previous_(glp_term_out(GLP_OFF)) {}
  ~TermOutGuard() { glp_term_out(previous_); }
  TermOutGuard(const TermOutGuard&) = delete;
  TermOutGuard& operator=(const TermOutGuard&) = delete;

 private:
  int previous_;
};

/// Translates a glp_intopt/glp_simplex return code (docs/style.md rule 18).
Status glpk_status(int ret) {
  switch (ret) {
    case 0:
      return Status::ok();
    case GLP_ETMLIM:
      return make_error(Errc::kTimeout, "GLPK reached its time limit");
    case GLP_ENOPFS:
    case GLP_ENOFEAS:
      return make_error(Errc::kInfeasible, "GLPK: the LP relaxation has no feasible solution");
    case GLP_ENODFS:
      return make_error(Errc::kInternal, "GLPK: the LP relaxation is unbounded");
    case GLP_EROOT:
      return make_error(Errc::kInternal, "GLPK: no optimal basis of the root LP");
    case GLP_EBOUND:
      return make_error(Errc::kInternal, "GLPK: invalid bounds");
    case GLP_EMIPGAP:
      return make_error(Errc::kTimeout, "GLPK stopped at its MIP gap tolerance");
    default:
      return make_error(Errc::kInternal, "GLPK failed with code {}", ret);
  }
}

/// GLPK aborts on names over 255 bytes or with control characters.
std::string glpk_name(std::string name) {
  if (name.size() > 255) name.resize(255);
  for (char& ch : name) {
    if (std::iscntrl(static_cast<unsigned char>(ch)) != 0) ch = '?';
  }
  return name;
}

/// A GLPK problem under construction: columns, named rows and the coefficient triplets.
class ModelBuilder {
 public:
  explicit ModelBuilder(glp_prob* lp) : lp_(lp) {}

  int add_col(const std::string& name, int kind, bool fixed_zero, double objective) {
    const int j = glp_add_cols(lp_, 1);
    glp_set_col_name(lp_, j, glpk_name(name).c_str());
    glp_set_col_kind(lp_, j, kind);
    if (fixed_zero) {
      glp_set_col_bnds(lp_, j, GLP_FX, 0.0, 0.0);
    } else {
      glp_set_col_bnds(lp_, j, GLP_DB, 0.0, 1.0);
      glp_set_obj_coef(lp_, j, objective);
    }
    return j;
  }
  int add_row(const std::string& name, int type, double bound) {
    const int i = glp_add_rows(lp_, 1);
    glp_set_row_name(lp_, i, glpk_name(name).c_str());
    glp_set_row_bnds(lp_, i, type, bound, bound);  // GLP_UP ignores the lower bound
    return i;
  }
  void add_entry(int row, int col, double value) {
    ia_.push_back(row);
    ja_.push_back(col);
    ar_.push_back(value);
  }
  /// Loads the triplets (1-based: GLPK ignores element 0).
  void finish() {
    glp_load_matrix(lp_, static_cast<int>(ia_.size()) - 1, ia_.data(), ja_.data(), ar_.data());
  }

 private:
  glp_prob* lp_;
  std::vector<int> ia_{0};
  std::vector<int> ja_{0};
  std::vector<double> ar_{0.0};
};

/// A no-good cut on one memory row (c), from a choice over the budget at liveness point t:
/// `picks` are the (node, strategy) pairs of that choice that put bytes on row t (see solve_model).
struct MemoryCut {
  int32_t t = 0;
  std::vector<std::pair<int32_t, int32_t>> picks;
  friend bool operator==(const MemoryCut&, const MemoryCut&) = default;
};

/// The built model and where each s_i(p) lives.
struct Model {
  GlpProb lp;
  std::vector<std::vector<int>> s_col;  ///< GLPK column of s_i(p); empty for one-strategy nodes
  int num_cols = 0;
  int num_rows = 0;
};

/// Class index per row (rows = true) or per column of an ss x sd row-major matrix: equal
/// vectors (exactly, infinities included) share a class; classes numbered by first appearance.
std::vector<int> equal_row_classes(const std::vector<double>& m, int64_t ss, int64_t sd,
                                   bool rows) {
  const int64_t n = rows ? ss : sd;
  const int64_t len = rows ? sd : ss;
  std::map<std::vector<double>, int> seen;
  std::vector<int> cls(idx(n));
  std::vector<double> v(idx(len));
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < len; ++b) v[idx(b)] = rows ? m[idx(a * sd + b)] : m[idx(b * sd + a)];
    auto it = seen.emplace(v, static_cast<int>(seen.size())).first;
    cls[idx(a)] = it->second;
  }
  return cls;
}

/// Per-strategy costs of edges towards a one-strategy neighbour, folded onto the other endpoint.
std::vector<std::vector<double>> folded_edge_costs(const IlpProblem& problem) {
  std::vector<std::vector<double>> folded(problem.nodes.size());
  for (size_t i = 0; i < problem.nodes.size(); ++i)
    folded[i].assign(problem.nodes[i].cost.size(), 0);
  for (const IlpProblem::Edge& e : problem.edges) {
    const int64_t ss = problem.num_strategies(e.src);
    const int64_t sd = problem.num_strategies(e.dst);
    if (sd == 1 && ss > 1) {
      for (int64_t p = 0; p < ss; ++p) folded[idx(e.src)][idx(p)] += e.cost[idx(p)];
    } else if (ss == 1 && sd > 1) {
      for (int64_t q = 0; q < sd; ++q) folded[idx(e.dst)][idx(q)] += e.cost[idx(q)];
    }
  }
  return folded;
}

// The model, in this file's symbols (S_i = problem.num_strategies(i), s_col[i][p] = s_i(p)):
//
//   columns   s_i(p) in {0,1}   for every node i with S_i >= 2 (one-strategy nodes are constants)
//             e_k(P,Q) in [0,1] for every edge k = (i, j) with S_i, S_j >= 2 and every pair of
//                               classes P of i's strategies (equal rows of r_k) and Q of j's
//                               (equal columns); continuous: with s integral, (e)-(g) force
//                               e_k to the one-hot outer product of the class indicators
//   minimise  1e6 * [ sum_i sum_p (c_i(p) + fold_i(p)) s_i(p) + sum_k sum_(P,Q) r_k(P,Q) e_k(P,Q) ]
//             fold_i(p): r of every edge between i and a one-strategy node, at i's strategy p
//   fixed     s_i(p) = 0 where !allowed[i][p] (c_i(p) or fold_i(p) infinite, or an alias with a
//             one-strategy node forbids p); e_k(p,q) = 0 where r_k(p,q) is infinite
//   rows      "b[node i 'name']"      sum_p s_i(p) = 1
//             "c[t=t]"                sum_(i in L[t], S_i >= 2) sum_p (m_i(p) / M) s_i(p)
//                                         <= 1 - (sum_(i in L[t], S_i = 1) m_i(0)) / M - margin
//             "e[edge k]"             sum_(p,q) e_k(p,q) = 1
//             "f[edge k, P=c]"        sum_Q e_k(P,Q) - sum_(p in P) s_i(p) <= 0
//             "g[edge k, Q=c]"        sum_P e_k(P,Q) - sum_(q in Q) s_j(q) <= 0
//             "h[alias k, p=p, q=q]"  s_a(p) + s_b(q) <= 1 where forbidden_k(p,q), S_a, S_b >= 2
//             "cut[k, t=t]"           sum_((i,p) in C_k) s_i(p) <= |C_k| - 1   for every memory
//                                         cut k (no-good cuts, added only on the retries
//                                         described at solve_model)
// Memory rows are divided by M so their coefficients are O(1). Constants (one-strategy nodes,
// edges between two of them) are left out: evaluate() recomputes the objective. Deterministic:
// the model is built in index order and GLPK's branch-and-bound has no randomness.
Model build_model(const IlpProblem& problem, const AllowedMask& allowed,
                  const std::vector<MemoryCut>& cuts) {
  Model m;
  m.lp.reset(glp_create_prob());
  glp_set_obj_dir(m.lp.get(), GLP_MIN);
  ModelBuilder b(m.lp.get());
  const std::vector<std::vector<double>> folded = folded_edge_costs(problem);

  // (b) one-hot
  m.s_col.resize(problem.nodes.size());
  for (size_t i = 0; i < problem.nodes.size(); ++i) {
    const auto node = static_cast<int32_t>(i);
    const int64_t s = problem.num_strategies(node);
    if (s == 1) continue;
    const int row = b.add_row(fmt::format("b[{}]", node_label(problem, node)), GLP_FX, 1.0);
    for (int64_t p = 0; p < s; ++p) {
      const bool fixed = allowed[i][idx(p)] == 0;
      const double cost = fixed ? 0.0 : problem.nodes[i].cost[idx(p)] + folded[i][idx(p)];
      const int col =
          b.add_col(fmt::format("s[{},{}]", i, p), GLP_IV, fixed, cost * kObjectiveScale);
      m.s_col[i].push_back(col);
      b.add_entry(row, col, 1.0);
    }
  }

  // (c) memory
  if (internal::memory_enabled(problem)) {
    const double budget = problem.memory_budget;
    for (size_t t = 0; t < problem.liveness.size(); ++t) {
      double constant = 0.0;
      std::vector<std::pair<int, double>> terms;
      for (size_t k = 0; k < problem.liveness[t].size(); ++k) {
        const int32_t i = problem.liveness[t][k];
        const std::vector<double>& mem = problem.row_memory(t, k);
        if (mem.size() == 1) {
          constant += mem[0];
          continue;
        }
        for (size_t p = 0; p < mem.size(); ++p) {
          if (mem[p] > 0) terms.emplace_back(m.s_col[idx(i)][p], mem[p] / budget);
        }
      }
      if (terms.empty()) continue;  // a constant row; check_memory_lower_bound covered it
      const int row = b.add_row(fmt::format("c[t={}]", t), GLP_UP, 1.0 - constant / budget);
      for (const auto& [col, coef] : terms) b.add_entry(row, col, coef);
    }
  }

  // (e)-(g) edge linearisation
  for (size_t k = 0; k < problem.edges.size(); ++k) {
    const IlpProblem::Edge& edge = problem.edges[k];
    const int64_t ss = problem.num_strategies(edge.src);
    const int64_t sd = problem.num_strategies(edge.dst);
    if (ss == 1 || sd == 1) continue;  // folded into the other endpoint's s
    // Strategies with identical cost rows (columns) are interchangeable for this edge: one
    // e variable per pair of classes, linearising (sum_{p in P} s_i(p)) (sum_{q in Q} s_j(q)).
    const std::vector<int> pc = equal_row_classes(edge.cost, ss, sd, /*rows=*/true);
    const std::vector<int> qc = equal_row_classes(edge.cost, ss, sd, /*rows=*/false);
    const int np = *std::max_element(pc.begin(), pc.end()) + 1;
    const int nq = *std::max_element(qc.begin(), qc.end()) + 1;
    const int e_row = b.add_row(fmt::format("e[edge {}]", k), GLP_FX, 1.0);
    std::vector<int> f_rows;
    std::vector<int> g_rows;
    for (int c = 0; c < np; ++c) {
      f_rows.push_back(b.add_row(fmt::format("f[edge {}, P={}]", k, c), GLP_UP, 0.0));
    }
    for (int c = 0; c < nq; ++c) {
      g_rows.push_back(b.add_row(fmt::format("g[edge {}, Q={}]", k, c), GLP_UP, 0.0));
    }
    for (int64_t p = 0; p < ss; ++p) {
      b.add_entry(f_rows[idx(pc[idx(p)])], m.s_col[idx(edge.src)][idx(p)], -1.0);
    }
    for (int64_t q = 0; q < sd; ++q) {
      b.add_entry(g_rows[idx(qc[idx(q)])], m.s_col[idx(edge.dst)][idx(q)], -1.0);
    }
    // A representative strategy of each class.
    std::vector<int64_t> p_rep(idx(np), -1);
    std::vector<int64_t> q_rep(idx(nq), -1);
    for (int64_t p = 0; p < ss; ++p) {
      if (p_rep[idx(pc[idx(p)])] < 0) p_rep[idx(pc[idx(p)])] = p;
    }
    for (int64_t q = 0; q < sd; ++q) {
      if (q_rep[idx(qc[idx(q)])] < 0) q_rep[idx(qc[idx(q)])] = q;
    }
    for (int cp = 0; cp < np; ++cp) {
      for (int cq = 0; cq < nq; ++cq) {
        const double r = edge.cost[idx(p_rep[idx(cp)] * sd + q_rep[idx(cq)])];
        const bool fixed = std::isinf(r);
        const int col = b.add_col(fmt::format("e[{},{},{}]", k, cp, cq), GLP_CV, fixed,
                                  fixed ? 0.0 : r * kObjectiveScale);
        b.add_entry(e_row, col, 1.0);
        b.add_entry(f_rows[idx(cp)], col, 1.0);
        b.add_entry(g_rows[idx(cq)], col, 1.0);
      }
    }
  }

  // (h) alias
  for (size_t k = 0; k < problem.aliases.size(); ++k) {
    const IlpProblem::Alias& alias = problem.aliases[k];
    const int64_t sa = problem.num_strategies(alias.a);
    const int64_t sb = problem.num_strategies(alias.b);
    if (sa == 1 || sb == 1) continue;  // folded into `allowed`
    for (int64_t p = 0; p < sa; ++p) {
      for (int64_t q = 0; q < sb; ++q) {
        if (alias.forbidden[idx(p * sb + q)] == 0) continue;
        const int row = b.add_row(fmt::format("h[alias {}, p={}, q={}]", k, p, q), GLP_UP, 1.0);
        b.add_entry(row, m.s_col[idx(alias.a)][idx(p)], 1.0);
        b.add_entry(row, m.s_col[idx(alias.b)][idx(q)], 1.0);
      }
    }
  }

  // no-good cuts on memory
  for (size_t k = 0; k < cuts.size(); ++k) {
    const MemoryCut& cut = cuts[k];
    const int row = b.add_row(fmt::format("cut[{}, t={}]", k, cut.t), GLP_UP,
                              static_cast<double>(cut.picks.size()) - 1.0);
    for (const auto& [i, p] : cut.picks) b.add_entry(row, m.s_col[idx(i)][idx(p)], 1.0);
  }
  b.finish();
  m.num_cols = glp_get_num_cols(m.lp.get());
  m.num_rows = glp_get_num_rows(m.lp.get());
  return m;
}

enum class Outcome { kOptimal, kFeasible, kInfeasible, kNoIncumbent };

struct RunResult {
  Outcome outcome = Outcome::kNoIncumbent;
  Status detail;  ///< GLPK's return code in words
};

int time_limit_ms(double seconds) {
  return static_cast<int>(std::clamp(std::ceil(seconds * 1e3), 1.0, static_cast<double>(INT_MAX)));
}

/// glp_intopt (after glp_simplex when presolve is off: without presolve GLPK needs a root basis).
RunResult run_glpk(glp_prob* lp, const SolveOptions& options) {
  glp_iocp parm;
  glp_init_iocp(&parm);
  parm.msg_lev = GLP_MSG_OFF;
  parm.presolve = options.presolve ? GLP_ON : GLP_OFF;
  parm.tm_lim = time_limit_ms(options.time_limit_seconds);
  if (!options.presolve) {
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    sp.tm_lim = parm.tm_lim;
    const int ret = glp_simplex(lp, &sp);
    if (ret == 0 && glp_get_status(lp) == GLP_NOFEAS) {
      return {Outcome::kInfeasible, glpk_status(GLP_ENOPFS)};
    }
    if (ret != 0 || glp_get_status(lp) != GLP_OPT) {
      return {Outcome::kNoIncumbent, ret != 0 ? glpk_status(ret) : glpk_status(GLP_EROOT)};
    }
  }
  const int ret = glp_intopt(lp, &parm);
  const int status = glp_mip_status(lp);
  if (status == GLP_OPT) return {Outcome::kOptimal, glpk_status(ret)};
  if (status == GLP_FEAS) return {Outcome::kFeasible, glpk_status(ret)};
  if (status == GLP_NOFEAS || ret == GLP_ENOPFS || ret == GLP_ENOFEAS) {
    return {Outcome::kInfeasible, glpk_status(ret)};
  }
  return {Outcome::kNoIncumbent,
          ret == 0 ? make_error(Errc::kInternal, "no incumbent") : glpk_status(ret)};
}

/// Builds and solves a (modified) problem; only the outcome matters.
Outcome solve_outcome(const IlpProblem& problem, const SolveOptions& options) {
  const AllowedMask allowed = internal::unary_allowed(problem);
  if (!internal::check_unary_feasibility(problem, allowed).is_ok()) return Outcome::kInfeasible;
  Model m = build_model(problem, allowed, /*cuts=*/{});
  if (m.num_cols == 0) return Outcome::kOptimal;
  return run_glpk(m.lp.get(), options).outcome;
}

std::string list_rows(const std::vector<std::string>& rows) {
  constexpr size_t kShown = 6;
  std::string out;
  for (size_t k = 0; k < rows.size() && k < kShown; ++k) out += (k > 0 ? ", " : "") + rows[k];
  if (rows.size() > kShown) out += fmt::format(", ... ({} in all)", rows.size());
  return out;
}

/// docs/style.md rule 19: finds which constraint group makes a GLPK-infeasible problem infeasible
/// by re-solving without (c), then without (h).
Status diagnose_infeasible(const IlpProblem& problem, const AllowedMask& allowed,
                           const SolveOptions& options) {
  MP_RETURN_IF_ERROR(internal::propagate_forbidden_pairs(problem, allowed));
  IlpProblem relaxed = problem;
  if (internal::memory_enabled(problem)) {
    relaxed.memory_budget = -1.0;
    const Outcome without_memory = solve_outcome(relaxed, options);
    if (without_memory == Outcome::kNoIncumbent) {
      return make_error(Errc::kInfeasible,
                        "GLPK proved the problem infeasible, but without memory (c) it found no "
                        "answer within {} s, so the cause (memory (c), alias (h) or forbidden "
                        "pairs) is undetermined",
                        options.time_limit_seconds);
    }
    const int32_t t = internal::tightest_liveness_point(problem, allowed);
    if (without_memory != Outcome::kInfeasible && t >= 0) {
      // check_memory_lower_bound passed, so each liveness point alone can fit: say so exactly.
      return make_error(
          Errc::kInfeasible,
          "memory (c): every assignment that satisfies the other constraints exceeds the budget "
          "of {} at some liveness point (rows c[t=...]); the tightest alone is {}, whose smallest "
          "possible footprint is {}",
          format_bytes(Bytes(std::llround(problem.memory_budget))),
          internal::liveness_label(problem, t),
          internal::footprint_and_budget(internal::min_footprint(problem, allowed, t),
                                         problem.memory_budget));
    }
  }
  std::vector<std::string> edge_rows;
  for (size_t k = 0; k < problem.edges.size(); ++k) {
    const std::vector<double>& r = problem.edges[k].cost;
    if (std::any_of(r.begin(), r.end(), [](double x) { return std::isinf(x); })) {
      edge_rows.push_back(fmt::format("e[edge {}]", k));
    }
  }
  std::vector<std::string> alias_rows;
  for (size_t k = 0; k < problem.aliases.size(); ++k) {
    alias_rows.push_back(fmt::format("h[alias {}, ...]", k));
  }
  if (!alias_rows.empty()) {
    relaxed.aliases.clear();
    const Outcome without_aliases = solve_outcome(relaxed, options);
    if (without_aliases == Outcome::kOptimal || without_aliases == Outcome::kFeasible) {
      return make_error(Errc::kInfeasible,
                        "alias (h): the alias rows {} admit no assignment together with the "
                        "forbidden (infinite-cost) strategies and pairs{}; without them a "
                        "solution exists",
                        list_rows(alias_rows),
                        edge_rows.empty() ? "" : " of " + list_rows(edge_rows));
    }
  }
  return make_error(
      Errc::kInfeasible,
      "forbidden pairs: the infinite-cost pairs of edges {} (e fixed to 0 in (e)-(g)) "
      "admit no one-hot (b) assignment{}",
      edge_rows.empty() ? "(none)" : list_rows(edge_rows),
      alias_rows.empty() ? "" : ", even without the alias rows (h)");
}

Status validate_options(const SolveOptions& options) {
  if (!(options.time_limit_seconds > 0)) {
    return make_error(Errc::kInvalidArgument, "time_limit_seconds is {}; it must be > 0",
                      options.time_limit_seconds);
  }
  return Status::ok();
}

IlpSolution make_solution(std::vector<int32_t> choice, const Evaluation& ev, bool optimal,
                          const Model& m) {
  IlpSolution sol;
  sol.choice = std::move(choice);
  sol.objective = ev.total;
  sol.optimal = optimal;
  sol.method = "glpk";
  sol.num_variables = m.num_cols;
  sol.num_constraints = m.num_rows;
  return sol;
}

std::vector<int32_t> read_choice(const Model& m) {
  std::vector<int32_t> choice(m.s_col.size(), 0);
  for (size_t i = 0; i < m.s_col.size(); ++i) {
    double best = -1.0;
    for (size_t p = 0; p < m.s_col[i].size(); ++p) {
      const double v = glp_mip_col_val(m.lp.get(), m.s_col[i][p]);
      if (v > best) {
        best = v;
        choice[i] = static_cast<int32_t>(p);
      }
    }
  }
  return choice;
}

bool only_memory_violations(const Evaluation& ev) {
  return std::all_of(ev.violations.begin(), ev.violations.end(),
                     [](const std::string& v) { return v.rfind("memory (c)", 0) == 0; });
}

/// GLPK with no valid incumbent (`why`): the fallback when allowed, else kTimeout.
Expected<IlpSolution> fall_back(const IlpProblem& problem, const SolveOptions& options,
                                const std::string& why, const Model& m) {
  if (!options.allow_fallback) return Status(Errc::kTimeout, why);
  module_logger("planner")->warn("ilp: {}; falling back", why);
  Expected<IlpSolution> fallback = internal::solve_fallback(problem);
  if (!fallback) {
    return make_error(Errc::kTimeout, "{}, and the fallback failed: {}", why,
                      fallback.status().message());
  }
  fallback->num_variables = m.num_cols;
  fallback->num_constraints = m.num_rows;
  return fallback;
}

/// The no-good cuts that exclude `choice` on every memory row (c) it exceeds (see solve_model).
std::vector<MemoryCut> memory_cuts(const IlpProblem& problem, const std::vector<int32_t>& choice) {
  std::vector<MemoryCut> cuts;
  for (size_t t = 0; t < problem.liveness.size(); ++t) {
    double footprint = 0.0;  // summed as evaluate() does
    MemoryCut cut{static_cast<int32_t>(t), {}};
    for (size_t k = 0; k < problem.liveness[t].size(); ++k) {
      const int32_t i = problem.liveness[t][k];
      const int32_t p = choice[idx(i)];
      const double bytes = problem.row_memory(t, k)[idx(p)];
      footprint += bytes;
      if (problem.num_strategies(i) > 1 && bytes > 0) cut.picks.emplace_back(i, p);
    }
    if (footprint > problem.memory_budget) cuts.push_back(std::move(cut));
  }
  return cuts;
}

/// Most GLPK solves of one solve_ilp call, the first included (see solve_model).
constexpr int kMaxMemoryRounds = 64;

// GLPK accepts a row violated by about 1e-7 (tol_bnd) and counts s = 1 - 1e-5 as integral
// (tol_int), so its choice may exceed a memory row (c) by about 1e-5 of M. evaluate() catches
// that, and the solve is repeated with, for every row t the choice p exceeds, the no-good cut
//   sum_((i,p_i) in C) s_i(p_i) <= |C| - 1,   C = {(i, p_i) : i in L[t], S_i >= 2, m_i(p_i) > 0}
// It is exact: an assignment that agrees with p on C has, at t, the same constants and terms no
// smaller than p's (the others were 0), so its footprint (float sums are monotone) is over M as
// well; the cut removes no feasible assignment, and the optimum and `optimal` stay exact. With
// integral s (to 1e-5) the excluded choice misses the cut by about 1, far beyond GLPK's
// tolerances. Later rounds get what is left of the time limit; at most kMaxMemoryRounds solves.
Expected<IlpSolution> solve_model(const IlpProblem& problem, const AllowedMask& allowed,
                                  const SolveOptions& options) {
  const TermOutGuard quiet;
  auto log = module_logger("planner");
  const auto start = std::chrono::steady_clock::now();
  std::vector<MemoryCut> cuts;
  for (int round = 0;; ++round) {
    const Model m = build_model(problem, allowed, cuts);
    SolveOptions round_options = options;
    if (round > 0) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      round_options.time_limit_seconds = options.time_limit_seconds - elapsed;
      if (!(round_options.time_limit_seconds > 0)) {
        return fall_back(problem, options,
                         fmt::format("no incumbent within {} s (GLPK's answers exceeded a memory "
                                     "row (c) within its tolerance; {} cuts added)",
                                     options.time_limit_seconds, cuts.size()),
                         m);
      }
    }
    log->debug("ilp: {} variables, {} constraints, time limit {} s, memory budget {}", m.num_cols,
               m.num_rows, round_options.time_limit_seconds,
               internal::memory_enabled(problem)
                   ? format_bytes(Bytes(std::llround(problem.memory_budget)))
                   : std::string("none"));
    bool optimal = true;
    if (m.num_cols > 0) {
      const RunResult run = run_glpk(m.lp.get(), round_options);
      if (run.outcome == Outcome::kInfeasible)
        return diagnose_infeasible(problem, allowed, options);
      if (run.outcome == Outcome::kNoIncumbent) {
        return fall_back(problem, options,
                         fmt::format("no incumbent within {} s ({})", options.time_limit_seconds,
                                     run.detail.message()),
                         m);
      }
      optimal = run.outcome == Outcome::kOptimal;
    }
    std::vector<int32_t> choice =
        m.num_cols > 0 ? read_choice(m) : std::vector<int32_t>(problem.nodes.size(), 0);
    const Evaluation ev = evaluate(problem, choice);
    if (ev.violations.empty()) return make_solution(std::move(choice), ev, optimal, m);
    if (!only_memory_violations(ev)) {
      return make_error(Errc::kInternal, "GLPK returned an assignment that violates {}",
                        ev.violations.front());
    }
    std::vector<MemoryCut> added = memory_cuts(problem, choice);
    for (const MemoryCut& cut : added) {
      if (cut.picks.empty() || std::find(cuts.begin(), cuts.end(), cut) != cuts.end()) {
        return make_error(Errc::kInternal,
                          "GLPK returned an assignment that violates {}, which a no-good cut "
                          "cannot exclude (or already excluded)",
                          ev.violations.front());
      }
    }
    if (round + 1 >= kMaxMemoryRounds) {
      return fall_back(problem, options,
                       fmt::format("no assignment within the memory budget after {} GLPK solves: "
                                   "each answer exceeded a memory row (c) within GLPK's tolerance",
                                   kMaxMemoryRounds),
                       m);
    }
    log->debug("ilp: GLPK's choice exceeds {} memory row(s) within its tolerance; cutting it off",
               added.size());
    cuts.insert(cuts.end(), added.begin(), added.end());
  }
}

}  // namespace

void release_solver_thread() { glp_free_env(); }

Expected<IlpSolution> solve_ilp(const IlpProblem& problem, const SolveOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  MP_RETURN_IF_ERROR(problem.validate());
  MP_RETURN_IF_ERROR(validate_options(options));
  const AllowedMask allowed = internal::unary_allowed(problem);
  MP_RETURN_IF_ERROR(internal::check_unary_feasibility(problem, allowed));
  MP_RETURN_IF_ERROR(internal::check_memory_lower_bound(problem, allowed));
  Expected<IlpSolution> sol = solve_model(problem, allowed, options);
  if (!sol) return sol;
  sol->solve_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  module_logger("planner")->debug(
      "ilp: {} objective {} s, {}optimal, solved in {:.3f} s ({} variables, {} constraints, "
      "memory budget {})",
      sol->method, sol->objective, sol->optimal ? "" : "not ", sol->solve_seconds,
      sol->num_variables, sol->num_constraints,
      internal::memory_enabled(problem) ? format_bytes(Bytes(std::llround(problem.memory_budget)))
                                        : std::string("none"));
  return sol;
}

}  // namespace meshpipe::planner

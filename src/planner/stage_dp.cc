// The inter-operator stage DP (docs/algorithms.md §2.4-2.5): Alpa's t_max-enumerating DP over
// (stages, first layer, devices), and the exhaustive enumeration the tests hold it to. Both return
// the same split: one total order breaks ties (see `precedes`).
#include "planner/stage_dp.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace meshpipe::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
/// t_max values within this relative gap of a group's first value share one DP run.
constexpr double kTmaxRelativeGap = 1e-6;
/// Largest DP table (entries of F) solve_stage_dp will allocate.
constexpr size_t kMaxTableEntries = size_t{1} << 27;

/// A usable stage starting at layer i: layers i..end-1 on submesh kind `submesh` with `config`
/// (finite cost, fits in memory alone, at most num_devices devices).
struct Transition {
  double cost = 0.0;
  double fill = 0.0;
  int32_t end = 0;
  int32_t submesh = 0;
  int32_t config = 0;
  int32_t devices = 0;
  int32_t max_succ = 0;
};

/// Usable transitions per first layer, each list in (submesh, config, end) order: the DP's strict
/// `<` then keeps the lowest such key among equal sums.
std::vector<std::vector<Transition>> collect_transitions(const StageDpInput& in) {
  const int32_t L = in.num_layers;
  std::vector<std::vector<Transition>> out(static_cast<size_t>(L));
  for (int32_t i = 0; i < L; ++i) {
    for (int32_t m = 0; m < in.num_submeshes(); ++m) {
      const int32_t n = in.submesh_devices[m];
      if (n > in.num_devices) continue;
      for (int32_t c = 0; c < in.num_configs; ++c) {
        for (int32_t k = i + 1; k <= L; ++k) {
          const size_t idx = in.index(i, k - 1, m, c);
          const double cost = in.cost[idx];
          const int32_t max_succ = in.max_succ_stages[idx];
          if (!(cost < kInf) || max_succ < 0) continue;
          out[i].push_back({cost, in.fill(idx), k, m, c, n, max_succ});
        }
      }
    }
  }
  return out;
}

/// Sum (right to left, as the DP adds), max and objective of a split.
StageDpResult summarize(std::vector<StageChoice> stages, const StageDpInput& in) {
  StageDpResult r;
  for (auto it = stages.rbegin(); it != stages.rend(); ++it) {
    r.sum = it->fill + r.sum;
    r.max = std::max(r.max, it->cost);
  }
  r.objective = r.sum + static_cast<double>(in.micro_batches - 1) * in.scale(stages.size()) * r.max;
  r.stages = std::move(stages);
  return r;
}

/// The total order on splits (STYLE rule 31): smaller objective; then fewer stages; then, stage by
/// stage from the first, lower submesh, lower config, earlier cut (smaller last layer).
bool precedes(const StageDpResult& a, const StageDpResult& b) {
  if (a.objective != b.objective) return a.objective < b.objective;
  if (a.stages.size() != b.stages.size()) return a.stages.size() < b.stages.size();
  for (size_t j = 0; j < a.stages.size(); ++j) {
    const StageChoice& x = a.stages[j];
    const StageChoice& y = b.stages[j];
    if (x.submesh != y.submesh) return x.submesh < y.submesh;
    if (x.config != y.config) return x.config < y.config;
    if (x.last_layer != y.last_layer) return x.last_layer < y.last_layer;
  }
  return false;
}

/// F(s, i, d) and its argmin for one t_max; the tables are reused across runs.
class StageTables {
 public:
  StageTables(const StageDpInput& in, const std::vector<std::vector<Transition>>& transitions)
      : transitions_(transitions),
        layers_(in.num_layers),
        devices_(in.num_devices),
        max_stages_(std::min(in.num_layers, in.num_devices / min_devices(in))) {
    const size_t states = static_cast<size_t>(max_stages_ + 1) * static_cast<size_t>(layers_ + 1);
    f_.resize(states * static_cast<size_t>(devices_ + 1));
    arg_.resize(f_.size());
    lo_.resize(states);
    hi_.resize(states);
  }

  static size_t table_entries(const StageDpInput& in) {
    const int32_t s = std::min(in.num_layers, in.num_devices / min_devices(in));
    return static_cast<size_t>(s + 1) * static_cast<size_t>(in.num_layers + 1) *
           static_cast<size_t>(in.num_devices + 1);
  }

  int32_t max_stages() const { return max_stages_; }
  /// F(s, 0, d).
  double sum(int32_t s, int32_t d) const { return f_[at(s, 0, d)]; }

  /// Fills F for stage costs <= t_max (the recurrence above solve_stage_dp).
  void run(double t_max) {
    std::fill(f_.begin(), f_.end(), kInf);
    std::fill(lo_.begin(), lo_.end(), devices_ + 1);
    std::fill(hi_.begin(), hi_.end(), -1);
    f_[at(0, layers_, 0)] = 0.0;
    lo_[state(0, layers_)] = 0;
    hi_[state(0, layers_)] = 0;
    for (int32_t s = 1; s <= max_stages_; ++s) {
      for (int32_t i = 0; i + s <= layers_; ++i) relax(s, i, t_max);
    }
  }

  /// The stages of the argmin path of F(s, 0, num_devices), which must be finite.
  std::vector<StageChoice> path(int32_t s) const {
    std::vector<StageChoice> stages;
    int32_t i = 0;
    int32_t d = devices_;
    for (int32_t r = s; r >= 1; --r) {
      const Transition& t = transitions_[i][static_cast<size_t>(arg_[at(r, i, d)])];
      stages.push_back({i, t.end - 1, t.submesh, t.config, t.cost, t.fill});
      d -= t.devices;
      i = t.end;
    }
    return stages;
  }

 private:
  static int32_t min_devices(const StageDpInput& in) {
    return std::max(1, *std::min_element(in.submesh_devices.begin(), in.submesh_devices.end()));
  }
  size_t state(int32_t s, int32_t i) const {
    return static_cast<size_t>(s) * static_cast<size_t>(layers_ + 1) + static_cast<size_t>(i);
  }
  size_t at(int32_t s, int32_t i, int32_t d) const {
    return state(s, i) * static_cast<size_t>(devices_ + 1) + static_cast<size_t>(d);
  }

  /// F(s, i, .) from F(s - 1, k, .); lo_/hi_ bound the d where F may be finite.
  void relax(int32_t s, int32_t i, double t_max) {
    double* cur = &f_[at(s, i, 0)];
    int32_t* arg = &arg_[at(s, i, 0)];
    int32_t lo = devices_ + 1;
    int32_t hi = -1;
    const std::vector<Transition>& list = transitions_[i];
    for (size_t x = 0; x < list.size(); ++x) {
      const Transition& t = list[x];
      if (t.cost > t_max || t.max_succ < s - 1) continue;
      const size_t next = state(s - 1, t.end);
      const int32_t d0 = lo_[next] + t.devices;
      const int32_t d1 = std::min(devices_, hi_[next] + t.devices);
      if (d0 > d1) continue;
      const double* prev = &f_[at(s - 1, t.end, d0 - t.devices)];
      const double cost = t.fill;
      const int32_t code = static_cast<int32_t>(x);
      for (int32_t d = d0; d <= d1; ++d) {
        const double candidate = cost + prev[d - d0];
        const bool better = candidate < cur[d];
        cur[d] = better ? candidate : cur[d];
        arg[d] = better ? code : arg[d];
      }
      lo = std::min(lo, d0);
      hi = std::max(hi, d1);
    }
    lo_[state(s, i)] = lo;
    hi_[state(s, i)] = hi;
  }

  const std::vector<std::vector<Transition>>& transitions_;
  int32_t layers_;
  int32_t devices_;
  int32_t max_stages_;
  std::vector<double> f_;
  std::vector<int32_t> arg_;
  std::vector<int32_t> lo_;
  std::vector<int32_t> hi_;
};

/// One DP run's t_max: `hi` (the largest cost of the group) is the threshold, `lo` (its smallest)
/// bounds the max stage cost of the splits first admitted by this run.
struct TmaxGroup {
  double lo = 0.0;
  double hi = 0.0;
};

std::vector<TmaxGroup> tmax_groups(const std::vector<std::vector<Transition>>& transitions) {
  std::vector<double> costs;
  for (const auto& list : transitions) {
    for (const Transition& t : list) costs.push_back(t.cost);
  }
  std::sort(costs.begin(), costs.end());
  costs.erase(std::unique(costs.begin(), costs.end()), costs.end());
  std::vector<TmaxGroup> groups;
  for (double c : costs) {
    if (!groups.empty() && c - groups.back().lo <= kTmaxRelativeGap * std::abs(groups.back().lo)) {
      groups.back().hi = c;
    } else {
      groups.push_back({c, c});
    }
  }
  return groups;
}

std::string list_totals(const std::vector<int32_t>& totals) {
  if (totals.empty()) return "none";
  if (totals.size() <= 12) return fmt::format("{}", fmt::join(totals, ", "));
  return fmt::format("{}, ... ({} totals from {} to {})",
                     fmt::join(totals.begin(), totals.begin() + 8, ", "), totals.size(),
                     totals.front(), totals.back());
}

/// Why no split uses all devices: a layer no usable stage covers, the submesh sizes, or memory.
/// `tables` holds F for the largest t_max (every usable stage admitted), or nullptr.
std::string explain_infeasible(const StageDpInput& in,
                               const std::vector<std::vector<Transition>>& transitions,
                               const StageTables* tables) {
  const int32_t L = in.num_layers;
  const int32_t D = in.num_devices;
  const std::string head = fmt::format(
      "no split of {} layers into pipeline stages uses all {} devices within the memory limits", L,
      D);
  for (int32_t l = 0; l < L; ++l) {
    bool covered = false;
    for (int32_t i = 0; i <= l && !covered; ++i) {
      for (const Transition& t : transitions[i]) covered = covered || t.end > l;
    }
    if (!covered) {
      return fmt::format(
          "{}: layer {} is in no candidate stage that has a finite cost, fits in memory "
          "(max_succ_stages >= 0) and needs at most {} devices",
          head, l, D);
    }
  }
  // Device totals reachable ignoring memory: reach[i * (D + 1) + d] = layers i..L-1 on d devices.
  std::vector<char> reach(static_cast<size_t>(L + 1) * static_cast<size_t>(D + 1), 0);
  reach[static_cast<size_t>(L) * static_cast<size_t>(D + 1)] = 1;
  for (int32_t i = L - 1; i >= 0; --i) {
    for (int32_t k = i + 1; k <= L; ++k) {
      for (int32_t m = 0; m < in.num_submeshes(); ++m) {
        const int32_t n = in.submesh_devices[m];
        bool finite = false;
        for (int32_t c = 0; c < in.num_configs; ++c) {
          finite = finite || in.cost[in.index(i, k - 1, m, c)] < kInf;
        }
        if (!finite) continue;
        for (int32_t d = n; d <= D; ++d) {
          if (reach[static_cast<size_t>(k) * (D + 1) + static_cast<size_t>(d - n)]) {
            reach[static_cast<size_t>(i) * (D + 1) + static_cast<size_t>(d)] = 1;
          }
        }
      }
    }
  }
  std::vector<int32_t> free_totals;
  std::vector<int32_t> memory_totals;
  for (int32_t d = 1; d <= D; ++d) {
    if (reach[static_cast<size_t>(d)]) free_totals.push_back(d);
    bool fits = false;
    for (int32_t s = 1; tables != nullptr && s <= tables->max_stages(); ++s) {
      fits = fits || tables->sum(s, d) < kInf;
    }
    if (fits) memory_totals.push_back(d);
  }
  if (!reach[static_cast<size_t>(D)]) {
    return fmt::format(
        "{}: even ignoring memory, stages on submeshes of [{}] devices with finite costs add up "
        "to {} devices, never {}",
        head, fmt::join(in.submesh_devices, ", "), list_totals(free_totals), D);
  }
  const std::string within =
      memory_totals.empty()
          ? std::string("no split fits in memory at all")
          : fmt::format("within memory, splits use {} devices", list_totals(memory_totals));
  return fmt::format(
      "{}: splits using all {} devices exist, but each breaks the 1F1B memory rule (a stage "
      "followed by s - 1 stages needs max_succ_stages >= s - 1); {}",
      head, D, within);
}

}  // namespace

size_t StageDpInput::index(int32_t i, int32_t j, int32_t m, int32_t c) const {
  const size_t L = static_cast<size_t>(num_layers);
  return ((static_cast<size_t>(i) * L + static_cast<size_t>(j)) *
              static_cast<size_t>(num_submeshes()) +
          static_cast<size_t>(m)) *
             static_cast<size_t>(num_configs) +
         static_cast<size_t>(c);
}

Status StageDpInput::validate() const {
  if (num_layers < 1) {
    return make_error(Errc::kInvalidArgument, "StageDpInput.num_layers must be >= 1, got {}",
                      num_layers);
  }
  if (num_devices < 1) {
    return make_error(Errc::kInvalidArgument, "StageDpInput.num_devices must be >= 1, got {}",
                      num_devices);
  }
  if (submesh_devices.empty()) {
    return make_error(Errc::kInvalidArgument, "StageDpInput.submesh_devices is empty");
  }
  for (size_t m = 0; m < submesh_devices.size(); ++m) {
    if (submesh_devices[m] < 1) {
      return make_error(Errc::kInvalidArgument,
                        "StageDpInput.submesh_devices[{}] must be >= 1, got {}", m,
                        submesh_devices[m]);
    }
  }
  if (num_configs < 1) {
    return make_error(Errc::kInvalidArgument, "StageDpInput.num_configs must be >= 1, got {}",
                      num_configs);
  }
  if (micro_batches < 1) {
    return make_error(Errc::kInvalidArgument, "StageDpInput.micro_batches must be >= 1, got {}",
                      micro_batches);
  }
  const double entries = static_cast<double>(num_layers) * num_layers * num_submeshes() *
                         static_cast<double>(num_configs);
  if (entries > 1e10) {
    return make_error(Errc::kInvalidArgument,
                      "StageDpInput: num_layers^2 * submeshes * num_configs = {:.3g} entries is "
                      "too large",
                      entries);
  }
  const size_t expected = static_cast<size_t>(entries);
  if (cost.size() != expected) {
    return make_error(Errc::kInvalidArgument,
                      "StageDpInput.cost has {} entries, expected L * L * submeshes * configs = {}",
                      cost.size(), expected);
  }
  if (max_succ_stages.size() != expected) {
    return make_error(Errc::kInvalidArgument,
                      "StageDpInput.max_succ_stages has {} entries, expected L * L * submeshes * "
                      "configs = {}",
                      max_succ_stages.size(), expected);
  }
  for (size_t s = 0; s < steady_scale.size(); ++s) {
    if (std::isnan(steady_scale[s]) || std::isinf(steady_scale[s])) {
      return make_error(Errc::kInvalidArgument,
                        "StageDpInput.steady_scale[{}] is {}; it must be a finite number", s,
                        steady_scale[s]);
    }
  }
  if (!fill_cost.empty() && fill_cost.size() != expected) {
    return make_error(Errc::kInvalidArgument,
                      "StageDpInput.fill_cost has {} entries, expected none or L * L * submeshes "
                      "* configs = {}",
                      fill_cost.size(), expected);
  }
  for (int32_t i = 0; i < num_layers; ++i) {
    for (int32_t j = i; j < num_layers; ++j) {
      for (int32_t m = 0; m < num_submeshes(); ++m) {
        for (int32_t c = 0; c < num_configs; ++c) {
          const double v = cost[index(i, j, m, c)];
          // A negative time would break the max over stages, which starts from 0 (summarize).
          if (std::isnan(v) || v < 0) {
            return make_error(Errc::kInvalidArgument,
                              "StageDpInput.cost of layers {}..{} on submesh {} config {} is {}; "
                              "it must be >= 0, or +inf when the stage is impossible",
                              i, j, m, c, v);
          }
          if (fill_cost.empty() || !(v < kInf)) continue;
          const double f = fill_cost[index(i, j, m, c)];
          if (std::isnan(f) || f < 0 || !(f < kInf)) {
            return make_error(Errc::kInvalidArgument,
                              "StageDpInput.fill_cost of layers {}..{} on submesh {} config {} is "
                              "{}; a stage with a finite cost needs a finite fill cost >= 0",
                              i, j, m, c, f);
          }
        }
      }
    }
  }
  return Status::ok();
}

// Recurrence (docs/algorithms.md §2.4), for one threshold t_max; L = num_layers, D = num_devices,
// n_m = submesh_devices[m], cost/max_succ = the input tables:
//
//   F(0, L, 0) = 0,  F(0, i, d) = inf otherwise
//   F(s, i, d) = min over k in (i, L], m with n_m <= d, c with
//                  cost[i, k-1, m, c] <= t_max  and  s - 1 <= max_succ[i, k-1, m, c]
//                of  fill[i, k-1, m, c] + F(s - 1, k, d - n_m)
//
// (fill = cost unless the input gives fill costs: F sums what a stage takes in the fill and
// drain, the threshold bounds its steady-state cost.)
//
// (s counts this stage and the s - 1 after it; 1F1B keeps s micro-batches of the stage's
// activations.) Among equal sums the transition with the lowest (m, c, k) wins, so F's argmin
// path is the lexicographically smallest (sum, stage keys from the first) split of its state.
//
// For each t_max the candidates are the argmin paths of F(s, 0, D), s = 1..; each is rebuilt and
// its exact objective sum + (B - 1) * max recomputed from its stages. The answer is the best
// candidate in the total order of `precedes` (objective, fewer stages, stage keys). Why this is
// the optimum: let Q be the best split and t* its largest stage cost. In the run with t_max >= t*
// (t* is a threshold), the path P of F(s_Q, 0, D) has sum_P <= sum_Q and max_P <= t*, so
// obj_P <= obj_Q, hence equal, hence sum_P = sum_Q; P is the lowest-key split with that sum, so
// P = Q (P has s_Q stages too, so the same steady scale multiplies both maxima). No
// f_stage_max table is needed. (Equal up to rounding when float sums tie by rounding;
// thresholds grouped within 1e-6 relative admit a slightly larger max, off by at most
// (B - 1) * 1e-6 * t_max, and exact when no two distinct costs are that close.)
//
// Which thresholds run: (1) the largest, which admits every stage: infeasible there means
// infeasible everywhere (F only grows as t_max falls); it also gives S = min_s F(s, 0, D) at
// t_max = inf, the least sum of any valid split. (2) If B = 1 the objective is the sum: done.
// (3) Binary search for the smallest feasible threshold (feasibility is monotone in t_max).
// (4) Ascend from it. Pruning: a split first admitted at a threshold group whose smallest cost is
// g has max >= g and sum >= S, so objective >= S + (B - 1) * k * g, k the least steady scale
// (float rounding is monotone, so this holds for computed values too); once that > best, no
// later split can beat or tie the best, and the loop stops. The test is strict so that a later
// split that ties on the objective can still win the tie-break, as in the exhaustive search.
Expected<StageDpResult> solve_stage_dp(const StageDpInput& input) {
  MP_RETURN_IF_ERROR(input.validate());
  if (StageTables::table_entries(input) > kMaxTableEntries) {
    return make_error(Errc::kResourceExhausted,
                      "stage DP table of {} layers x {} devices has {} entries, above {}",
                      input.num_layers, input.num_devices, StageTables::table_entries(input),
                      kMaxTableEntries);
  }
  const std::vector<std::vector<Transition>> transitions = collect_transitions(input);
  const std::vector<TmaxGroup> groups = tmax_groups(transitions);
  if (groups.empty()) {
    return Status(Errc::kInfeasible, explain_infeasible(input, transitions, nullptr));
  }
  StageTables tables(input, transitions);
  std::vector<char> tried(groups.size(), 0);
  int64_t runs = 0;
  bool have_best = false;
  StageDpResult best;
  // Every distinct split met, best first (the best and up to kStageDpAlternatives runners-up).
  std::vector<StageDpResult> met;
  const auto offer = [&](StageDpResult r) {
    for (const StageDpResult& m : met) {
      if (m.stages == r.stages) return;
    }
    auto at = std::find_if(met.begin(), met.end(),
                           [&](const StageDpResult& m) { return precedes(r, m); });
    met.insert(at, std::move(r));
    if (met.size() > kStageDpAlternatives + 1) met.pop_back();
  };
  // Runs the DP at group g, offers its paths to `best`; true when some split is feasible.
  auto try_group = [&](size_t g) {
    tables.run(groups[g].hi);
    tried[g] = 1;
    ++runs;
    bool feasible = false;
    for (int32_t s = 1; s <= tables.max_stages(); ++s) {
      if (!(tables.sum(s, input.num_devices) < kInf)) continue;
      feasible = true;
      StageDpResult r = summarize(tables.path(s), input);
      offer(r);
      if (!have_best || precedes(r, best)) {
        best = std::move(r);
        have_best = true;
      }
    }
    return feasible;
  };

  const size_t last = groups.size() - 1;
  if (!try_group(last)) {
    return Status(Errc::kInfeasible, explain_infeasible(input, transitions, &tables));
  }
  if (input.micro_batches > 1) {
    double least_sum = kInf;
    for (int32_t s = 1; s <= tables.max_stages(); ++s) {
      least_sum = std::min(least_sum, tables.sum(s, input.num_devices));
    }
    size_t lo = 0;
    size_t hi = last;
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if (try_group(mid)) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    // The least steady scale over the stage counts bounds every split's.
    double least_scale = 1.0;
    for (int32_t s = 1; s <= tables.max_stages(); ++s) {
      least_scale = std::min(least_scale, input.scale(static_cast<size_t>(s)));
    }
    const double b1 = static_cast<double>(input.micro_batches - 1) * least_scale;
    for (size_t g = lo; g < last; ++g) {
      if (least_sum + b1 * groups[g].lo > best.objective) break;
      if (!tried[g]) try_group(g);
    }
  }
  best.tmax_candidates_tried = runs;
  for (StageDpResult& m : met) {
    if (m.stages != best.stages) best.alternatives.push_back(std::move(m.stages));
  }
  return best;
}

namespace {

/// Depth-first enumeration of every (submesh, config) per stage of one composition.
class Exhaustive {
 public:
  explicit Exhaustive(const StageDpInput& in) : in_(in) {}

  void run_composition(const std::vector<int32_t>& ends) {
    ends_ = ends;
    current_.assign(ends.size(), StageChoice{});
    assign(0, 0, 0);
  }

  bool found() const { return have_best_; }
  const StageDpResult& best() const { return best_; }

 private:
  void assign(size_t j, int32_t first, int32_t used) {
    const size_t s = ends_.size();
    if (j == s) {
      if (used != in_.num_devices) return;
      StageDpResult r = summarize(current_, in_);
      if (!have_best_ || precedes(r, best_)) {
        best_ = std::move(r);
        have_best_ = true;
      }
      return;
    }
    const int32_t last = ends_[j];
    const int32_t successors = static_cast<int32_t>(s - 1 - j);
    for (int32_t m = 0; m < in_.num_submeshes(); ++m) {
      const int32_t n = in_.submesh_devices[m];
      if (used + n > in_.num_devices) continue;
      for (int32_t c = 0; c < in_.num_configs; ++c) {
        const size_t idx = in_.index(first, last, m, c);
        if (!(in_.cost[idx] < kInf) || in_.max_succ_stages[idx] < successors) continue;
        current_[j] = {first, last, m, c, in_.cost[idx], in_.fill(idx)};
        assign(j + 1, last + 1, used + n);
      }
    }
  }

  const StageDpInput& in_;
  std::vector<int32_t> ends_;
  std::vector<StageChoice> current_;
  bool have_best_ = false;
  StageDpResult best_;
};

}  // namespace

Expected<StageDpResult> solve_stage_exhaustive(const StageDpInput& input, int64_t max_assignments) {
  MP_RETURN_IF_ERROR(input.validate());
  // sum over s of C(L - 1, s - 1) * (M * C)^s = M * C * (1 + M * C)^(L - 1) assignments.
  const double choices = static_cast<double>(input.num_submeshes()) * input.num_configs;
  const double assignments = choices * std::pow(1.0 + choices, input.num_layers - 1);
  if (assignments > static_cast<double>(max_assignments)) {
    return make_error(Errc::kResourceExhausted,
                      "exhaustive stage search over {} layers would enumerate {:.3g} "
                      "assignments, above max_assignments = {}",
                      input.num_layers, assignments, max_assignments);
  }
  const int32_t L = input.num_layers;
  Exhaustive search(input);
  std::vector<int32_t> ends;
  // Bit b of `cuts` set: a stage ends after layer b.
  for (uint64_t cuts = 0; cuts < (uint64_t{1} << (L - 1)); ++cuts) {
    ends.clear();
    for (int32_t b = 0; b < L - 1; ++b) {
      if ((cuts >> b) & 1) ends.push_back(b);
    }
    ends.push_back(L - 1);
    search.run_composition(ends);
  }
  if (!search.found()) {
    return make_error(Errc::kInfeasible,
                      "no split of {} layers into pipeline stages uses all {} devices within the "
                      "memory limits (exhaustive search)",
                      L, input.num_devices);
  }
  return search.best();
}

}  // namespace meshpipe::planner

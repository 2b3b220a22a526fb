// Stage DP: hand-checked splits (pipelining against micro-batches, the 1F1B memory rule, device
// totals, tie-breaks), input validation, and seeded comparisons with the exhaustive search.
#include "planner/stage_dp.h"

#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/rng.h"

namespace meshpipe::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int32_t kRoomy = 100;  // max_succ_stages that never binds

/// Every cost infinite, every stage roomy in memory.
StageDpInput make_input(int32_t layers, int32_t devices, std::vector<int32_t> submeshes,
                        int32_t configs, int64_t micro_batches) {
  StageDpInput in;
  in.num_layers = layers;
  in.num_devices = devices;
  in.submesh_devices = std::move(submeshes);
  in.num_configs = configs;
  in.micro_batches = micro_batches;
  const size_t n = static_cast<size_t>(layers) * layers * in.num_submeshes() * configs;
  in.cost.assign(n, kInf);
  in.max_succ_stages.assign(n, kRoomy);
  return in;
}

void set_stage(StageDpInput& in, int32_t i, int32_t j, int32_t m, int32_t c, double cost,
               int32_t max_succ = kRoomy) {
  in.cost[in.index(i, j, m, c)] = cost;
  in.max_succ_stages[in.index(i, j, m, c)] = max_succ;
}

/// Independent check of a split: layers covered in order, all devices used, costs finite and as
/// in the table, memory rule, and sum / max / objective recomputed. Empty string when valid.
std::string violations(const StageDpInput& in, const StageDpResult& r) {
  std::string out;
  int32_t next = 0;
  int32_t devices = 0;
  double sum = 0.0;
  double max = 0.0;
  const int32_t s = static_cast<int32_t>(r.stages.size());
  for (int32_t j = 0; j < s; ++j) {
    const StageChoice& st = r.stages[j];
    if (st.first_layer != next || st.last_layer < st.first_layer) {
      out += fmt::format("stage {} covers {}..{}, expected to start at {}; ", j, st.first_layer,
                         st.last_layer, next);
      return out;
    }
    next = st.last_layer + 1;
    devices += in.submesh_devices[st.submesh];
    const size_t idx = in.index(st.first_layer, st.last_layer, st.submesh, st.config);
    if (!std::isfinite(st.cost) || st.cost != in.cost[idx]) {
      out += fmt::format("stage {} cost {} (table {}); ", j, st.cost, in.cost[idx]);
    }
    if (in.max_succ_stages[idx] < s - 1 - j) {
      out += fmt::format("stage {} has {} successors, memory allows {}; ", j, s - 1 - j,
                         in.max_succ_stages[idx]);
    }
    const double fill = in.fill_cost.empty() ? in.cost[idx] : in.fill_cost[idx];
    if (st.fill != fill) out += fmt::format("stage {} fill {} (table {}); ", j, st.fill, fill);
    sum += fill;
    max = std::max(max, st.cost);
  }
  if (next != in.num_layers) out += fmt::format("layers end at {}; ", next);
  if (devices != in.num_devices) out += fmt::format("{} devices used; ", devices);
  const double scale = static_cast<size_t>(s) < in.steady_scale.size() && in.steady_scale[s] > 0
                           ? in.steady_scale[s]
                           : 1.0;
  const double objective = sum + static_cast<double>(in.micro_batches - 1) * scale * max;
  if (std::abs(objective - r.objective) > 1e-12 * std::abs(objective)) {
    out += fmt::format("objective {} recomputes to {}; ", r.objective, objective);
  }
  if (r.max != max) out += fmt::format("max {} recomputes to {}; ", r.max, max);
  return out;
}

/// 2 layers on 2 devices, submeshes {1 device, 2 devices}, one config:
///   layer 0 on 1 device: 1.0, layer 1 on 1 device: 1.0, layers 0..1 on 2 devices: 1.5.
StageDpInput two_layers(int64_t micro_batches) {
  StageDpInput in = make_input(2, 2, {1, 2}, 1, micro_batches);
  set_stage(in, 0, 0, 0, 0, 1.0);
  set_stage(in, 1, 1, 0, 0, 1.0);
  set_stage(in, 0, 1, 1, 0, 1.5);
  return in;
}

TEST_CASE("one stage on two devices beats a two-stage pipeline when micro-batches are few",
          "[planner]") {
  // B = 1: pipeline [0]|[1] = 2 + 0 * 1 = 2; one stage [0..1] = 1.5 + 0 * 1.5 = 1.5.
  auto r = solve_stage_dp(two_layers(1));
  REQUIRE(r.has_value());
  REQUIRE(r->stages == std::vector<StageChoice>{{0, 1, 1, 0, 1.5, 1.5}});
  CHECK(r->objective == 1.5);
  CHECK(r->sum == 1.5);
  CHECK(r->max == 1.5);
  CHECK(violations(two_layers(1), *r).empty());
}

TEST_CASE("a two-stage pipeline beats one stage on two devices when micro-batches are many",
          "[planner]") {
  // B = 8: pipeline = 2 + 7 * 1 = 9; one stage = 1.5 + 7 * 1.5 = 12.
  auto r = solve_stage_dp(two_layers(8));
  REQUIRE(r.has_value());
  REQUIRE(r->stages == std::vector<StageChoice>{{0, 0, 0, 0, 1.0, 1.0}, {1, 1, 0, 0, 1.0, 1.0}});
  CHECK(r->objective == 9.0);
  CHECK(r->sum == 2.0);
  CHECK(r->max == 1.0);
}

TEST_CASE("an objective tie goes to the split with fewer stages", "[planner]") {
  // B = 2: pipeline = 2 + 1 * 1 = 3; one stage = 1.5 + 1 * 1.5 = 3. Equal: one stage wins.
  auto r = solve_stage_dp(two_layers(2));
  REQUIRE(r.has_value());
  CHECK(r->objective == 3.0);
  REQUIRE(r->stages.size() == 1);
  auto e = solve_stage_exhaustive(two_layers(2));
  REQUIRE(e.has_value());
  CHECK(e->stages == r->stages);
}

/// 4 layers on 4 devices, submeshes {1, 2}: each layer alone on 1 device costs 1.0, each pair of
/// adjacent layers on 2 devices 1.25; B = 8. `first_layer_succ` bounds layer 0 alone.
StageDpInput four_layers(int32_t first_layer_succ) {
  StageDpInput in = make_input(4, 4, {1, 2}, 1, 8);
  for (int32_t i = 0; i < 4; ++i) set_stage(in, i, i, 0, 0, 1.0, i == 0 ? first_layer_succ : 100);
  for (int32_t i = 0; i < 3; ++i) set_stage(in, i, i + 1, 1, 0, 1.25);
  return in;
}

TEST_CASE("the memory rule forbids a deep pipeline whose first stage cannot hold the stash",
          "[planner]") {
  // Without a limit: 4 one-layer stages = 4 + 7 * 1 = 11; two pairs = 2.5 + 7 * 1.25 = 11.25;
  // a pair and two singles = 3.25 + 7 * 1.25 = 12. Best: the 4-stage pipeline, 11.
  auto deep = solve_stage_dp(four_layers(kRoomy));
  REQUIRE(deep.has_value());
  CHECK(deep->objective == 11.0);
  CHECK(deep->stages.size() == 4);
  // Layer 0 alone may have at most 1 successor: every split starting with it has 2 or 3 more
  // stages (the other 3 devices cannot form one stage), so the best is two pairs, 11.25.
  auto limited = solve_stage_dp(four_layers(1));
  REQUIRE(limited.has_value());
  CHECK(limited->objective == 11.25);
  REQUIRE(limited->stages ==
          std::vector<StageChoice>{{0, 1, 1, 0, 1.25, 1.25}, {2, 3, 1, 0, 1.25, 1.25}});
  CHECK(violations(four_layers(1), *limited).empty());
}

TEST_CASE("the memory rule counts successors, so a last stage with no room is allowed",
          "[planner]") {
  // Layer 1 alone may have 0 successors: as the last stage it has none, so the B = 8 pipeline
  // (objective 9) still stands; layer 0 alone with 0 successors forbids it, leaving one stage.
  StageDpInput last_tight = two_layers(8);
  last_tight.max_succ_stages[last_tight.index(1, 1, 0, 0)] = 0;
  auto r = solve_stage_dp(last_tight);
  REQUIRE(r.has_value());
  CHECK(r->objective == 9.0);
  StageDpInput first_tight = two_layers(8);
  first_tight.max_succ_stages[first_tight.index(0, 0, 0, 0)] = 0;
  auto one = solve_stage_dp(first_tight);
  REQUIRE(one.has_value());
  CHECK(one->objective == 12.0);  // 1.5 + 7 * 1.5
  CHECK(one->stages.size() == 1);
}

TEST_CASE("no split using every device is reported as infeasible with the reason", "[planner]") {
  // Submeshes of 2 devices make 2 or 4 devices, never 3.
  StageDpInput odd = make_input(2, 3, {2}, 1, 4);
  set_stage(odd, 0, 0, 0, 0, 1.0);
  set_stage(odd, 1, 1, 0, 0, 1.0);
  set_stage(odd, 0, 1, 0, 0, 2.0);
  auto r = solve_stage_dp(odd);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().code() == Errc::kInfeasible);
  CHECK_THAT(r.status().message(), Catch::Contains("uses all 3 devices"));
  CHECK_THAT(r.status().message(), Catch::Contains("never 3"));
  CHECK(solve_stage_exhaustive(odd).status().code() == Errc::kInfeasible);

  // Only 1-device stages on 2 devices: two stages, but layer 0 alone holds no successor.
  StageDpInput memory = make_input(2, 2, {1}, 1, 4);
  set_stage(memory, 0, 0, 0, 0, 1.0, /*max_succ=*/0);
  set_stage(memory, 1, 1, 0, 0, 1.0);
  set_stage(memory, 0, 1, 0, 0, 2.0);
  auto m = solve_stage_dp(memory);
  REQUIRE_FALSE(m.has_value());
  CHECK(m.status().code() == Errc::kInfeasible);
  CHECK_THAT(m.status().message(), Catch::Contains("memory rule"));

  // Every cost infinite.
  auto none = solve_stage_dp(make_input(3, 2, {1, 2}, 2, 4));
  REQUIRE_FALSE(none.has_value());
  CHECK(none.status().code() == Errc::kInfeasible);

  // Layer 1 is in no stage that fits in memory even alone.
  StageDpInput gap = make_input(2, 2, {1}, 1, 4);
  set_stage(gap, 0, 0, 0, 0, 1.0);
  set_stage(gap, 1, 1, 0, 0, 1.0, /*max_succ=*/-1);
  auto g = solve_stage_dp(gap);
  REQUIRE_FALSE(g.has_value());
  CHECK_THAT(g.status().message(), Catch::Contains("layer 1 is in no candidate stage"));
}

TEST_CASE("equal objectives go to the lower submesh, then config, then the earlier cut",
          "[planner]") {
  // Two 2-device submesh kinds, two configs, all four at 3.0 for the one stage: m = 0, c = 0.
  StageDpInput kinds = make_input(1, 2, {2, 2}, 2, 4);
  for (int32_t m = 0; m < 2; ++m) {
    for (int32_t c = 0; c < 2; ++c) set_stage(kinds, 0, 0, m, c, 3.0);
  }
  auto r = solve_stage_dp(kinds);
  REQUIRE(r.has_value());
  CHECK(r->stages == std::vector<StageChoice>{{0, 0, 0, 0, 3.0, 3.0}});
  set_stage(kinds, 0, 0, 0, 0, kInf);  // now (m, c) = (0, 1) is the lowest finite key
  auto r2 = solve_stage_dp(kinds);
  REQUIRE(r2.has_value());
  CHECK(r2->stages == std::vector<StageChoice>{{0, 0, 0, 1, 3.0, 3.0}});

  // 3 layers, 2 devices, 1-device stages: [0]|[1..2] and [0..1]|[2] both give
  // 1 + 2 + 3 * 2 = 9 with B = 4; the earlier cut (after layer 0) wins.
  StageDpInput cuts = make_input(3, 2, {1}, 1, 4);
  for (int32_t i = 0; i < 3; ++i) set_stage(cuts, i, i, 0, 0, 1.0);
  set_stage(cuts, 0, 1, 0, 0, 2.0);
  set_stage(cuts, 1, 2, 0, 0, 2.0);
  auto c = solve_stage_dp(cuts);
  REQUIRE(c.has_value());
  CHECK(c->objective == 9.0);
  CHECK(c->stages == std::vector<StageChoice>{{0, 0, 0, 0, 1.0, 1.0}, {1, 2, 0, 0, 2.0, 2.0}});
}

TEST_CASE("costs within 1e-6 relative share one t_max run and every stage stays admissible",
          "[planner]") {
  // Layer costs 1 and 1 + 5e-7 fall in one t_max group, whose threshold is its largest value:
  // one DP run, and the 2-stage split (sum 2 + 5e-7, max 1 + 5e-7) is found.
  StageDpInput in = make_input(2, 2, {1}, 1, 8);
  set_stage(in, 0, 0, 0, 0, 1.0);
  set_stage(in, 1, 1, 0, 0, 1.0 + 5e-7);
  auto r = solve_stage_dp(in);
  REQUIRE(r.has_value());
  CHECK(r->tmax_candidates_tried == 1);
  CHECK(r->objective == Approx(2.0000005 + 7 * 1.0000005).epsilon(1e-15));
}

TEST_CASE("pruning stops the t_max enumeration early when micro-batches are many", "[planner]") {
  // 6 layers, one 1-device submesh, 3 devices: layer ranges cost their length (+ a small
  // per-range offset to make the 21 costs distinct). Once t_max passes (best - least sum) /
  // (B - 1), the remaining candidates are skipped.
  StageDpInput in = make_input(6, 3, {1}, 1, 64);
  for (int32_t i = 0; i < 6; ++i) {
    for (int32_t j = i; j < 6; ++j) set_stage(in, i, j, 0, 0, (j - i + 1) + 0.01 * i);
  }
  auto r = solve_stage_dp(in);
  REQUIRE(r.has_value());
  CHECK(r->tmax_candidates_tried < 21);
  auto e = solve_stage_exhaustive(in);
  REQUIRE(e.has_value());
  CHECK(r->stages == e->stages);
  CHECK(violations(in, *r).empty());
}

TEST_CASE("a t_max whose bound only ties the best is still tried, for the tie-break", "[planner]") {
  // 3 layers, 3 devices, submeshes {1, 2}, B = 2 (objective = sum + max). Valid splits:
  //   A = [0]m0 2 | [1]m0 3 | [2]m0 3   sum 8, max 3: 11 (3 stages)
  //   W = [0..1]m1 4 | [2]m0 3          sum 7, max 4: 11 (2 stages: wins the tie)
  //   X = [0]m0 2 | [1..2]m1 5          sum 7, max 5: 12
  // t_max = 5 (largest): with 2 stages W and X tie on sum 7 and X's first stage has the lower
  // submesh, so that run offers X (12) and A (11). The least sum is 7; at t_max = 4 the bound
  // is 7 + 1 * 4 = 11, equal to the best, not above it, so the run happens and finds W.
  StageDpInput in = make_input(3, 3, {1, 2}, 1, 2);
  set_stage(in, 0, 0, 0, 0, 2.0);
  set_stage(in, 1, 1, 0, 0, 3.0);
  set_stage(in, 2, 2, 0, 0, 3.0);
  set_stage(in, 0, 1, 1, 0, 4.0);
  set_stage(in, 1, 2, 1, 0, 5.0);
  auto r = solve_stage_dp(in);
  REQUIRE(r.has_value());
  CHECK(r->objective == 11.0);
  CHECK(r->stages == std::vector<StageChoice>{{0, 1, 1, 0, 4.0, 4.0}, {2, 2, 0, 0, 3.0, 3.0}});
  auto e = solve_stage_exhaustive(in);
  REQUIRE(e.has_value());
  CHECK(e->stages == r->stages);
}

TEST_CASE("index lays out (i, j, m, c) row-major", "[planner]") {
  StageDpInput in = make_input(3, 2, {1, 2}, 2, 1);
  // ((1 * 3 + 2) * 2 + 1) * 2 + 0 = 22
  CHECK(in.index(1, 2, 1, 0) == 22);
  CHECK(in.index(2, 2, 1, 1) == in.cost.size() - 1);
}

TEST_CASE("validate names the bad field", "[planner]") {
  auto check = [](StageDpInput in, const char* field) {
    Status s = in.validate();
    CHECK(s.code() == Errc::kInvalidArgument);
    CHECK_THAT(s.message(), Catch::Contains(field));
    CHECK(solve_stage_dp(in).status().code() == Errc::kInvalidArgument);
    CHECK(solve_stage_exhaustive(in).status().code() == Errc::kInvalidArgument);
  };
  CHECK(two_layers(4).validate().is_ok());
  StageDpInput in = two_layers(4);
  in.num_layers = 0;
  check(in, "num_layers");
  in = two_layers(4);
  in.num_devices = 0;
  check(in, "num_devices");
  in = two_layers(4);
  in.submesh_devices = {1, 0};
  check(in, "submesh_devices[1]");
  in = two_layers(4);
  in.submesh_devices.clear();
  check(in, "submesh_devices");
  in = two_layers(4);
  in.num_configs = 0;
  check(in, "num_configs");
  in = two_layers(4);
  in.micro_batches = 0;
  check(in, "micro_batches");
  in = two_layers(4);
  in.cost.pop_back();
  check(in, "cost");
  in = two_layers(4);
  in.max_succ_stages.push_back(1);
  check(in, "max_succ_stages");
  in = two_layers(4);
  in.cost[in.index(0, 1, 0, 0)] = std::nan("");
  check(in, "cost of layers 0..1");
  // NaN where j < i is ignored.
  in = two_layers(4);
  in.cost[in.index(1, 0, 0, 0)] = std::nan("");
  CHECK(in.validate().is_ok());
}

TEST_CASE("a negative stage cost is rejected, naming the stage candidate", "[planner]") {
  // The max over stages starts from 0, so with one-stage [0..1] at -1 on 2 devices and B = 8
  // the DP would report -1 + 7 * 0 = -1 rather than -1 + 7 * (-1) = -8: reject the input.
  StageDpInput in = two_layers(8);
  set_stage(in, 0, 1, 1, 0, -1.0);
  Status s = in.validate();
  CHECK(s.code() == Errc::kInvalidArgument);
  INFO(s.message());
  CHECK_THAT(s.message(), Catch::Contains("cost of layers 0..1 on submesh 1 config 0 is -1"));
  CHECK_THAT(s.message(), Catch::Contains(">= 0"));
  CHECK(solve_stage_dp(in).status().code() == Errc::kInvalidArgument);
  CHECK(solve_stage_exhaustive(in).status().code() == Errc::kInvalidArgument);
  // -inf is negative too; +inf (impossible) and -0 stay valid.
  set_stage(in, 0, 1, 1, 0, -kInf);
  CHECK(in.validate().code() == Errc::kInvalidArgument);
  set_stage(in, 0, 1, 1, 0, kInf);
  CHECK(in.validate().is_ok());
  set_stage(in, 0, 1, 1, 0, -0.0);
  CHECK(in.validate().is_ok());
}

TEST_CASE("the exhaustive search refuses more than max_assignments combinations", "[planner]") {
  // two_layers: M = 2 submesh kinds, C = 1 config, L = 2 layers, so
  // M * C * (1 + M * C)^(L - 1) = 2 * 3 = 6 assignments: refused at 5, run at 6.
  auto r = solve_stage_exhaustive(two_layers(4), /*max_assignments=*/5);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().code() == Errc::kResourceExhausted);
  CHECK(solve_stage_exhaustive(two_layers(4), /*max_assignments=*/6).has_value());
}

/// A random instance: L 1-5, 1-3 submesh kinds of {1, 2, 4} devices, D in {1, 2, 4, 8}, 1-2
/// configs, B in {1, 2, 8, 64}, max_succ in [-1, 4], 25% infinite costs. With `levels` > 0 the
/// costs are 1..levels quarters (exact sums; few levels, many ties); otherwise uniform in [0, 10).
StageDpInput random_input(Rng& rng, int64_t levels) {
  const int32_t sizes[] = {1, 2, 4};
  const int32_t totals[] = {1, 2, 4, 8};
  const int64_t batches[] = {1, 2, 8, 64};
  std::vector<int32_t> submeshes(static_cast<size_t>(1 + rng.below(3)));
  for (int32_t& n : submeshes) n = sizes[rng.below(3)];
  StageDpInput in =
      make_input(static_cast<int32_t>(1 + rng.below(5)), totals[rng.below(4)], submeshes,
                 static_cast<int32_t>(1 + rng.below(2)), batches[rng.below(4)]);
  for (size_t x = 0; x < in.cost.size(); ++x) {
    if (rng.uniform() < 0.25) continue;
    in.cost[x] =
        levels > 0 ? 0.25 * static_cast<double>(1 + rng.below(levels)) : 10.0 * rng.uniform();
    in.max_succ_stages[x] = static_cast<int32_t>(rng.below(6)) - 1;
  }
  return in;
}

/// Longer chains where the sum/max trade-off matters: L 6-9, submeshes {1} or {1, 2}, D 2-6,
/// one config, B in {2, 4, 8, 64}; layer work w_l in [1, 2), and a stage on n devices costs
/// 0.3 + (sum of its w_l) / n * [0.8, 1.2) (10% infinite), max_succ in [-1, 8].
StageDpInput random_chain(Rng& rng) {
  const int64_t batches[] = {2, 4, 8, 64};
  StageDpInput in =
      make_input(static_cast<int32_t>(6 + rng.below(4)), static_cast<int32_t>(2 + rng.below(5)),
                 rng.below(2) ? std::vector<int32_t>{1} : std::vector<int32_t>{1, 2}, 1,
                 batches[rng.below(4)]);
  std::vector<double> work(static_cast<size_t>(in.num_layers));
  for (double& w : work) w = 1.0 + rng.uniform();
  for (int32_t i = 0; i < in.num_layers; ++i) {
    double range = 0.0;
    for (int32_t j = i; j < in.num_layers; ++j) {
      range += work[j];
      for (int32_t m = 0; m < in.num_submeshes(); ++m) {
        if (rng.uniform() < 0.1) continue;
        set_stage(in, i, j, m, 0, 0.3 + range / in.submesh_devices[m] * (0.8 + 0.4 * rng.uniform()),
                  static_cast<int32_t>(rng.below(10)) - 1);
      }
    }
  }
  return in;
}

/// Sum of the fill costs + (B - 1) x the largest cost of `stages`, read from the input's tables.
double objective_from_tables(const StageDpInput& in, const std::vector<StageChoice>& stages) {
  double sum = 0.0;
  double max = 0.0;
  for (const StageChoice& c : stages) {
    const size_t k = in.index(c.first_layer, c.last_layer, c.submesh, c.config);
    sum += in.fill_cost.empty() ? in.cost[k] : in.fill_cost[k];
    max = std::max(max, in.cost[k]);
  }
  const size_t s = stages.size();
  const double scale =
      s < in.steady_scale.size() && in.steady_scale[s] > 0 ? in.steady_scale[s] : 1.0;
  return sum + static_cast<double>(in.micro_batches - 1) * scale * max;
}

/// `levels` >= 0: random_input(levels); -1: random_chain. With `fill`, every stage also gets a
/// fill cost in [0.3, 1] x its cost (devices that share cores: faster while others idle), and
/// every stage count a steady scale in [0.5, 1].
void compare_with_exhaustive(int64_t levels, uint64_t seed, int cases, bool fill = false) {
  Rng rng(seed);
  int feasible = 0;
  int alternatives = 0;
  for (int t = 0; t < cases; ++t) {
    StageDpInput in = levels >= 0 ? random_input(rng, levels) : random_chain(rng);
    if (fill) {
      in.fill_cost = in.cost;
      for (double& f : in.fill_cost) {
        if (f < std::numeric_limits<double>::infinity()) f *= 0.3 + 0.7 * rng.uniform();
      }
      in.steady_scale.assign(static_cast<size_t>(in.num_layers + 1), 1.0);
      for (double& k : in.steady_scale) k = 0.5 + 0.5 * rng.uniform();
    }
    INFO(fmt::format("case {}: L={} D={} submeshes=[{}] C={} B={}", t, in.num_layers,
                     in.num_devices, fmt::join(in.submesh_devices, ","), in.num_configs,
                     in.micro_batches));
    auto dp = solve_stage_dp(in);
    auto ex = solve_stage_exhaustive(in);
    REQUIRE(dp.has_value() == ex.has_value());
    if (!dp.has_value()) {
      CHECK(dp.status().code() == Errc::kInfeasible);
      CHECK(ex.status().code() == Errc::kInfeasible);
      continue;
    }
    ++feasible;
    CHECK(std::abs(dp->objective - ex->objective) <= 1e-12 * std::abs(ex->objective));
    CHECK(std::abs(dp->objective - objective_from_tables(in, dp->stages)) <=
          1e-12 * std::abs(dp->objective));
    CHECK(violations(in, *dp).empty());
    CHECK(violations(in, *ex).empty());
    CHECK(dp->stages == ex->stages);
    // The runners-up: valid distinct splits, none better than the answer.
    CHECK(dp->alternatives.size() <= kStageDpAlternatives);
    for (size_t a = 0; a < dp->alternatives.size(); ++a) {
      StageDpResult alt;
      alt.stages = dp->alternatives[a];
      for (const StageChoice& c : alt.stages) alt.max = std::max(alt.max, c.cost);
      alt.objective = objective_from_tables(in, alt.stages);
      INFO("alternative " << a);
      CHECK(violations(in, alt).empty());
      CHECK(alt.stages != dp->stages);
      CHECK(alt.objective >= dp->objective * (1.0 - 1e-12));
      for (size_t b = 0; b < a; ++b) CHECK(dp->alternatives[b] != alt.stages);
    }
    alternatives += static_cast<int>(dp->alternatives.size());
  }
  // The generator must exercise both outcomes.
  CHECK(feasible > cases / 10);
  CHECK(feasible < cases);
  CHECK(alternatives > 0);
}

TEST_CASE("the DP finds the exhaustive optimum and tie-break on grid costs with ties",
          "[planner]") {
  compare_with_exhaustive(/*levels=*/32, /*seed=*/20220711, /*cases=*/600);
}

TEST_CASE("the DP finds the exhaustive optimum and tie-break on coarse costs with many ties",
          "[planner]") {
  compare_with_exhaustive(/*levels=*/4, /*seed=*/7, /*cases=*/3000);
}

TEST_CASE("the DP finds the exhaustive optimum on continuous random costs", "[planner]") {
  compare_with_exhaustive(/*levels=*/0, /*seed=*/424242, /*cases=*/600);
}

TEST_CASE("the DP finds the exhaustive optimum on longer chains where t_max ascent matters",
          "[planner]") {
  compare_with_exhaustive(/*levels=*/-1, /*seed=*/31337, /*cases=*/1000);
}

TEST_CASE("with fill costs and steady scales the DP finds the exhaustive optimum", "[planner]") {
  compare_with_exhaustive(/*levels=*/0, /*seed=*/99, /*cases=*/600, /*fill=*/true);
  compare_with_exhaustive(/*levels=*/-1, /*seed=*/1999, /*cases=*/600, /*fill=*/true);
}

TEST_CASE("fill costs must match the cost table and be finite where a cost is", "[planner]") {
  StageDpInput in = make_input(1, 1, {1}, 1, 2);
  set_stage(in, 0, 0, 0, 0, 1.0, 0);
  in.fill_cost = {0.5, 0.5};
  auto r = solve_stage_dp(in);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message().find("fill_cost has 2 entries") != std::string::npos);
  in.fill_cost = {std::numeric_limits<double>::infinity()};
  r = solve_stage_dp(in);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message().find("fill_cost of layers 0..0") != std::string::npos);
  in.fill_cost = {0.25};
  r = solve_stage_dp(in);
  REQUIRE(r.has_value());
  CHECK(r->objective == 0.25 + 1.0);  // one fill + (2 - 1) x the steady cost
  in.steady_scale = {1.0, 0.5};       // one stage: the steady term halved
  r = solve_stage_dp(in);
  REQUIRE(r.has_value());
  CHECK(r->objective == 0.25 + 0.5);
  in.steady_scale = {1.0, std::numeric_limits<double>::quiet_NaN()};
  r = solve_stage_dp(in);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message().find("steady_scale[1]") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::planner

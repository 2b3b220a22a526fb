// Manual plans: the text forms of a grid and of explicit stages, and the pricing of stages.
#include "planner/manual_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

#include "core/units.h"
#include "planner/build_plan.h"
#include "planner/layer_clustering.h"
#include "planner/stage_costs.h"

namespace meshpipe::planner {
namespace {

constexpr int64_t kMaxNumber = int64_t{1} << 20;  // any size in a manual plan is below this

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t k = 0; k <= s.size(); ++k) {
    if (k == s.size() || s[k] == sep) {
      out.push_back(trim(s.substr(start, k - start)));
      start = k + 1;
    }
  }
  return out;
}

// A whole number in [lo, kMaxNumber], or nothing.
std::optional<int64_t> number(std::string_view s, int64_t lo) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > kMaxNumber) {
    return std::nullopt;
  }
  return v;
}

// "AxB" with A, B >= 1.
std::optional<std::array<int64_t, 2>> pair(std::string_view s) {
  const size_t x = s.find('x');
  if (x == std::string_view::npos) return std::nullopt;
  const auto a = number(trim(s.substr(0, x)), 1);
  const auto b = number(trim(s.substr(x + 1)), 1);
  if (!a || !b) return std::nullopt;
  return std::array<int64_t, 2>{*a, *b};
}

Status stage_error(size_t k, std::string_view text, std::string_view why) {
  return make_error(Errc::kInvalidArgument, "stage {} ('{}'): {}", k, text, why);
}

// One stage's per-stage option "key=value".
Status parse_stage_option(size_t k, std::string_view text, std::string_view option,
                          ManualStage& s) {
  const size_t eq = option.find('=');
  const std::string_view key = trim(option.substr(0, eq));
  const std::string_view value = eq == std::string_view::npos ? "" : trim(option.substr(eq + 1));
  if (key == "level") {
    if (value == "auto") {
      s.level = -1;
      return Status::ok();
    }
    const auto v = number(value, 0);
    if (!v) return stage_error(k, text, fmt::format("level '{}' is not auto or a number", value));
    s.level = static_cast<int32_t>(*v);
    return Status::ok();
  }
  if (key == "recompute") {
    auto r = parse_recompute(value);
    if (!r.has_value()) return stage_error(k, text, r.status().message());
    s.recompute = *r;
    return Status::ok();
  }
  return stage_error(
      k, text,
      fmt::format("unknown option '{}' (known: level=K|auto, recompute=on|off|auto)", option));
}

Expected<ManualStage> parse_stage(size_t k, std::string_view text) {
  ManualStage s;
  const std::vector<std::string_view> parts = split(text, ',');
  const std::string_view body = parts[0];
  const size_t at = body.find('@');
  if (at == std::string_view::npos) {
    return stage_error(k, text, "expected LAYERS@HOSTSxDEVICES[:D0xD1], e.g. 0-7@1x8:2x4");
  }
  const std::string_view layers = trim(body.substr(0, at));
  const size_t dash = layers.find('-');
  const auto first = number(trim(layers.substr(0, dash)), 0);
  const auto last =
      dash == std::string_view::npos ? first : number(trim(layers.substr(dash + 1)), 0);
  if (!first || !last) {
    return stage_error(k, text, fmt::format("layers '{}' are not FIRST-LAST or LAYER", layers));
  }
  s.first_layer = static_cast<int32_t>(*first);
  s.last_layer = static_cast<int32_t>(*last);
  const std::string_view where = trim(body.substr(at + 1));
  const size_t colon = where.find(':');
  const auto submesh = pair(trim(where.substr(0, colon)));
  if (!submesh) {
    return stage_error(
        k, text,
        fmt::format("submesh '{}' is not HOSTSxDEVICES, e.g. 1x8", trim(where.substr(0, colon))));
  }
  s.submesh = {static_cast<int32_t>((*submesh)[0]), static_cast<int32_t>((*submesh)[1])};
  if (colon != std::string_view::npos) {
    const auto logical = pair(trim(where.substr(colon + 1)));
    if (!logical) {
      return stage_error(
          k, text,
          fmt::format("logical mesh '{}' is not D0xD1, e.g. 2x4", trim(where.substr(colon + 1))));
    }
    s.logical = *logical;
  }
  for (size_t p = 1; p < parts.size(); ++p) {
    MP_RETURN_IF_ERROR(parse_stage_option(k, text, parts[p], s));
  }
  return s;
}

std::string mesh_text(const std::array<int64_t, 2>& m) {
  return fmt::format("({}, {})", m[0], m[1]);
}

// Stage k's layer range: contiguous with the previous stage, inside 0..L-1, the last ending at
// L-1.
Status check_layers(const std::vector<ManualStage>& stages, size_t k, int32_t num_layers) {
  const ManualStage& s = stages[k];
  const int32_t expected_first = k == 0 ? 0 : stages[k - 1].last_layer + 1;
  if (s.first_layer > s.last_layer) {
    return make_error(Errc::kInvalidArgument, "stage {}: layers {}-{} run backwards", k,
                      s.first_layer, s.last_layer);
  }
  if (s.first_layer != expected_first) {
    return make_error(Errc::kInvalidArgument,
                      "stage {}: starts at layer {}, expected {} (stages must cover layers 0-{} "
                      "in order, each once)",
                      k, s.first_layer, expected_first, num_layers - 1);
  }
  if (s.last_layer >= num_layers) {
    return make_error(Errc::kInvalidArgument,
                      "stage {}: layers {}-{} go beyond the {} clustered layers (0-{})", k,
                      s.first_layer, s.last_layer, num_layers, num_layers - 1);
  }
  if (k + 1 == stages.size() && s.last_layer != num_layers - 1) {
    return make_error(Errc::kInvalidArgument,
                      "stage {}: the last stage ends at layer {}, but there are {} clustered "
                      "layers (0-{})",
                      k, s.last_layer, num_layers, num_layers - 1);
  }
  return Status::ok();
}

// Stage k's submesh (one the cluster offers), logical mesh (its devices, axis 1 inside a host)
// and memory level.
Status check_mesh(const ManualStage& s, size_t k, const mesh::ClusterSpec& cluster,
                  int32_t memory_levels) {
  const std::vector<mesh::SubmeshShape> offered =
      mesh::submesh_shapes(cluster, mesh::SubmeshSpace::kAll);
  if (std::find(offered.begin(), offered.end(), s.submesh) == offered.end()) {
    std::vector<std::string> names;
    for (const mesh::SubmeshShape& o : offered) names.push_back(o.to_string());
    return make_error(Errc::kInvalidArgument,
                      "stage {}: cluster {} has no submesh {} (its submeshes: {})", k, cluster.name,
                      s.submesh.to_string(), fmt::join(names, ", "));
  }
  if (s.logical[0] != 0) {
    const std::string lm = mesh_text(s.logical);
    if (s.logical[0] * s.logical[1] != s.submesh.num_devices()) {
      return make_error(
          Errc::kInvalidArgument, "stage {}: logical mesh {} has {} devices, submesh {} has {}", k,
          lm, s.logical[0] * s.logical[1], s.submesh.to_string(), s.submesh.num_devices());
    }
    if (s.logical[1] > s.submesh.devices_per_host) {
      return make_error(Errc::kInvalidArgument,
                        "stage {}: logical mesh {} on submesh {}: mesh axis 1 ({}) must stay "
                        "within a host ({} devices)",
                        k, lm, s.submesh.to_string(), s.logical[1], s.submesh.devices_per_host);
    }
  }
  // As StageProfiler: one device cannot shard, so it has a single level.
  const int32_t levels = s.submesh.num_devices() == 1 ? 1 : std::max(1, memory_levels);
  if (s.level >= levels) {
    return make_error(Errc::kInvalidArgument,
                      "stage {}: memory level {} does not exist on submesh {} (levels 0-{})", k,
                      s.level, s.submesh.to_string(), levels - 1);
  }
  return Status::ok();
}

// The checks that need no profiling, stage by stage; then the devices of all stages together.
Status validate_stages(const std::vector<ManualStage>& stages, const mesh::ClusterSpec& cluster,
                       int32_t num_layers, int32_t memory_levels) {
  if (stages.empty()) return make_error(Errc::kInvalidArgument, "no stages given");
  int64_t devices = 0;
  for (size_t k = 0; k < stages.size(); ++k) {
    MP_RETURN_IF_ERROR(check_layers(stages, k, num_layers));
    MP_RETURN_IF_ERROR(check_mesh(stages[k], k, cluster, memory_levels));
    devices += stages[k].submesh.num_devices();
    if (devices > cluster.num_devices()) {
      return make_error(Errc::kInvalidArgument,
                        "stage {}: stages 0-{} need {} devices, cluster {} has {}", k, k, devices,
                        cluster.name, cluster.num_devices());
    }
  }
  return Status::ok();
}

// Why layers i..j cannot run on (m, c): the first unit without a sharding.
std::string infeasible_reason(const StageProfiler& p, int32_t i, int32_t j, int32_t m, int32_t c) {
  for (int32_t l = i; l <= j; ++l) {
    for (int32_t u : p.units_of_layer(l)) {
      const UnitProfile& up = p.unit(u, m, c);
      if (!up.feasible) return up.error.message();
    }
  }
  return "no finite cost";
}

// The config of stage k: among the offered ones matching its logical mesh and level, the fastest
// that holds `in_flight` micro-batches, else the one with the smallest peak.
Expected<int32_t> choose_config(const StageProfiler& p, const ManualStage& s, size_t k, int32_t m,
                                int32_t in_flight) {
  int32_t fastest_fit = -1;
  int32_t leanest = -1;
  double fit_time = std::numeric_limits<double>::infinity();
  double lean_peak = std::numeric_limits<double>::infinity();
  int32_t matching = -1;
  const auto& configs = p.configs(m);
  for (int32_t c = 0; c < static_cast<int32_t>(configs.size()); ++c) {
    const StageConfig& cfg = configs[size_t(c)];
    if (s.logical[0] != 0 &&
        (cfg.mesh.shape[0] != s.logical[0] || cfg.mesh.shape[1] != s.logical[1])) {
      continue;
    }
    if (s.level >= 0 && cfg.level != s.level) continue;
    if (s.recompute != Recompute::kAuto && cfg.recompute != (s.recompute == Recompute::kOn)) {
      continue;
    }
    if (matching < 0) matching = c;
    const StageCost sc = p.stage(s.first_layer, s.last_layer, m, c);
    if (!std::isfinite(sc.time)) continue;
    const auto peak = static_cast<double>(
        stage_peak(sc, in_flight, p.options().micro_batches, p.options().schedule));
    if (sc.max_succ_stages >= in_flight - 1 && sc.time < fit_time) {
      fit_time = sc.time;
      fastest_fit = c;
    }
    if (peak < lean_peak) {
      lean_peak = peak;
      leanest = c;
    }
  }
  if (matching < 0) {
    if (s.recompute != Recompute::kAuto) {
      return make_error(Errc::kInvalidArgument,
                        "stage {}: logical mesh {} with recompute={} is not offered on submesh {} "
                        "(is --recompute {} given?)",
                        k, mesh_text(s.logical), recompute_name(s.recompute), s.submesh.to_string(),
                        s.recompute == Recompute::kOn ? "off" : "on");
    }
    return make_error(Errc::kInvalidArgument,
                      "stage {}: logical mesh {} is not offered on submesh {}", k,
                      mesh_text(s.logical), s.submesh.to_string());
  }
  if (fastest_fit >= 0) return fastest_fit;
  if (leanest >= 0) return leanest;
  return make_error(Errc::kInfeasible, "stage {}: layers {}-{} have no sharding on {} as {}: {}", k,
                    s.first_layer, s.last_layer, s.submesh.to_string(),
                    configs[size_t(matching)].mesh.to_string(),
                    infeasible_reason(p, s.first_layer, s.last_layer, m, matching));
}

// The planner's profiling options restricted to the stages' submeshes: every submesh shape the
// cluster has (kAll) may be named, and each offers every logical mesh.
StageProfileOptions profile_options(const PlannerOptions& options, int64_t micro_batches,
                                    const std::vector<ManualStage>& stages) {
  StageProfileOptions po = options.profile;
  po.micro_batches = micro_batches;
  po.schedule = options.schedule;
  po.submesh_space = mesh::SubmeshSpace::kAll;
  po.logical_space = LogicalSpace::kSingleNodeModelParallel;
  po.only_submeshes.clear();
  for (const ManualStage& s : stages) {
    if (std::find(po.only_submeshes.begin(), po.only_submeshes.end(), s.submesh) ==
        po.only_submeshes.end()) {
      po.only_submeshes.push_back(s.submesh);
    }
  }
  po.progress = [progress = options.progress](int64_t done, int64_t total) {
    if (progress) progress("stage costs", done, total);
  };
  return po;
}

}  // namespace

Expected<std::vector<ManualStage>> parse_manual_stages(std::string_view text) {
  std::vector<ManualStage> out;
  const std::vector<std::string_view> parts = split(text, ';');
  for (size_t k = 0; k < parts.size(); ++k) {
    if (parts[k].empty()) {
      if (k + 1 == parts.size() && k > 0) break;  // a trailing ';'
      return make_error(Errc::kInvalidArgument, "stage {} is empty (stages are separated by ';')",
                        k);
    }
    MP_ASSIGN_OR_RETURN(ManualStage s, parse_stage(k, parts[k]));
    out.push_back(s);
  }
  return out;
}

std::string manual_stages_to_string(const std::vector<ManualStage>& stages) {
  std::string out;
  for (size_t k = 0; k < stages.size(); ++k) {
    const ManualStage& s = stages[k];
    if (k > 0) out += ';';
    out += fmt::format("{}-{}@{}x{}", s.first_layer, s.last_layer, s.submesh.hosts,
                       s.submesh.devices_per_host);
    if (s.logical[0] != 0) out += fmt::format(":{}x{}", s.logical[0], s.logical[1]);
    if (s.level >= 0) out += fmt::format(",level={}", s.level);
    if (s.recompute != Recompute::kAuto) {
      out += fmt::format(",recompute={}", recompute_name(s.recompute));
    }
  }
  return out;
}

Expected<GridConfig> parse_grid(std::string_view text) {
  GridConfig g;
  std::vector<std::string_view> seen;
  for (std::string_view item : split(text, ',')) {
    const size_t eq = item.find('=');
    const std::string_view key = trim(item.substr(0, eq));
    const std::string_view value = eq == std::string_view::npos ? "" : trim(item.substr(eq + 1));
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      return make_error(Errc::kInvalidArgument, "grid '{}': '{}' is given twice", text, key);
    }
    seen.push_back(key);
    if (key == "params") {
      using Mode = ShardingOptions::ParameterMode;
      if (value == "free") {
        g.parameters = Mode::kFree;
      } else if (value == "replicated") {
        g.parameters = Mode::kReplicated;
      } else if (value == "zero2") {
        g.parameters = Mode::kZero2;
      } else if (value == "zero3") {
        g.parameters = Mode::kZero3;
      } else {
        return make_error(Errc::kInvalidArgument,
                          "grid '{}': params '{}' is not free, replicated, zero2 or zero3", text,
                          value);
      }
      continue;
    }
    int64_t* size = key == "dp" ? &g.dp : key == "tp" ? &g.tp : key == "pp" ? &g.pp : nullptr;
    if (size == nullptr) {
      return make_error(Errc::kInvalidArgument,
                        "grid '{}': unknown key '{}' (expected dp=A,tp=B,pp=C[,params=MODE])", text,
                        key);
    }
    const auto v = number(value, 1);
    if (!v) {
      return make_error(Errc::kInvalidArgument, "grid '{}': {} '{}' is not a whole number >= 1",
                        text, key, value);
    }
    *size = *v;
  }
  return g;
}

Expected<Plan> price_manual_stages(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                                   const CostModel& cost, const PlannerOptions& options,
                                   int64_t micro_batches, const std::vector<ManualStage>& stages,
                                   ShardingCache& cache) {
  MP_RETURN_IF_ERROR(options.validate());
  MP_RETURN_IF_ERROR(cluster.validate());
  if (micro_batches < 1) {
    return make_error(Errc::kInvalidArgument, "micro-batches must be >= 1, got {}", micro_batches);
  }
  const int32_t num_layers = options.clustering.num_layers > 0 ? options.clustering.num_layers
                             : stages.empty()                  ? 1
                                                               : stages.back().last_layer + 1;
  MP_RETURN_IF_ERROR(validate_stages(stages, cluster, num_layers, options.profile.memory_levels));

  ClusteringOptions co = options.clustering;
  co.num_layers = num_layers;
  auto clustering = cluster_layers(g, co);
  if (!clustering.has_value()) {
    return clustering.status().with_context(
        fmt::format("clustering the model into the stages' {} layers", num_layers));
  }
  const graph::Graph clustered = apply_clustering(g, *clustering);
  std::vector<int32_t> blocks;
  for (const graph::Op& op : g.ops()) blocks.push_back(op.layer);

  StageProfileOptions po = profile_options(options, micro_batches, stages);
  StageProfiler profiler(clustered, blocks, cluster, cost, po, cache);
  MP_RETURN_IF_ERROR(profiler.profile());

  std::vector<StageChoice> choices;
  for (size_t k = 0; k < stages.size(); ++k) {
    const ManualStage& s = stages[k];
    const int32_t m = profiler.submesh_index(s.submesh);
    if (m < 0) {
      return make_error(Errc::kInternal, "stage {}: submesh {} was not profiled", k,
                        s.submesh.to_string());
    }
    const auto in_flight = options.schedule == Schedule::kGPipe
                               ? static_cast<int32_t>(std::min<int64_t>(micro_batches, kMaxNumber))
                               : static_cast<int32_t>(stages.size() - k);
    MP_ASSIGN_OR_RETURN(int32_t c, choose_config(profiler, s, k, m, in_flight));
    const double t = profiler.stage(s.first_layer, s.last_layer, m, c).time;
    choices.push_back({s.first_layer, s.last_layer, m, c, t});
  }
  return build_plan(g, *clustering, profiler, choices, cluster,
                    {options.model, options.schedule, micro_batches});
}

Status check_stage_memory(const Plan& plan, double memory_fraction) {
  const double device = static_cast<double>(plan.cluster.device.memory.value());
  const double avail = memory_fraction * device;
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    const StagePlan& s = plan.stages[k];
    if (static_cast<double>(s.memory.peak) <= avail) continue;
    return make_error(Errc::kInfeasible,
                      "stage {}: needs {} per device with {} micro-batch{} in flight ({}), {} "
                      "available ({} of {})",
                      k, format_bytes(Bytes(s.memory.peak)), s.in_flight,
                      s.in_flight == 1 ? "" : "es", schedule_name(plan.schedule),
                      format_bytes(Bytes(static_cast<int64_t>(avail))), memory_fraction,
                      format_bytes(plan.cluster.device.memory));
  }
  return Status::ok();
}

Expected<Plan> manual_plan(const graph::Graph& g, const mesh::ClusterSpec& cluster,
                           const CostModel& cost, const PlannerOptions& options,
                           int64_t micro_batches, const std::vector<ManualStage>& stages,
                           ShardingCache& cache) {
  MP_ASSIGN_OR_RETURN(Plan plan,
                      price_manual_stages(g, cluster, cost, options, micro_batches, stages, cache));
  MP_RETURN_IF_ERROR(check_stage_memory(plan, options.profile.memory_fraction));
  return plan;
}

Expected<PricedPlan> price_micro_batchings(const graph::Graph& g, const PlannerOptions& options,
                                           const PriceFunction& price) {
  MP_ASSIGN_OR_RETURN(std::vector<MicroBatching> candidates, micro_batch_candidates(g, options));
  std::optional<PricedPlan> best_fit;
  std::optional<PricedPlan> best_any;
  Status last_error;
  for (const MicroBatching& mb : candidates) {
    MP_ASSIGN_OR_RETURN(graph::Graph graph, graph_for_micro_batch(g, options, mb.micro_batch));
    auto plan = price(graph, mb.micro_batches);
    if (!plan.has_value()) {
      if (plan.status().code() != Errc::kInfeasible) return plan.status();
      last_error = plan.status().with_context(
          fmt::format("{} micro-batches of {}", mb.micro_batches, mb.micro_batch));
      continue;
    }
    PricedPlan p{std::move(*plan), Status::ok()};
    p.fits = check_stage_memory(p.plan, options.profile.memory_fraction);
    auto& best = p.fits.is_ok() ? best_fit : best_any;
    if (!best || p.plan.step_time < best->plan.step_time) best = std::move(p);
  }
  if (best_fit) return std::move(*best_fit);
  if (best_any) return std::move(*best_any);
  return last_error;
}

}  // namespace meshpipe::planner

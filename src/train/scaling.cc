// The scaling harness (train/scaling.h): suites, clusters of a point, Alpa's FLOP counting, the
// paper's values, and one point planned, lowered and simulated for every system. Results files,
// the table and the figure are in scaling_report.cc.
#include "train/scaling.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <fstream>
#include <sstream>

#include "graph/models/gpt.h"
#include "graph/models/moe.h"
#include "graph/models/zoo_training.h"
#include "planner/baselines.h"
#include "planner/build_plan.h"
#include "planner/manual_plan.h"
#include "planner/planner.h"
#include "runtime/compact_program.h"
#include "runtime/cost_models.h"
#include "runtime/counted_plan.h"
#include "runtime/lower.h"
#include "runtime/simulator.h"

namespace meshpipe::train {

namespace {

constexpr int32_t kMaxSuiteDevices = static_cast<int32_t>(mesh::kMaxClusterDevices);
constexpr size_t kMaxSuitePoints = 1000;
constexpr size_t kMaxSuiteBytes = size_t{1} << 20;

// Alpa's weak-scaling points (docs/algorithms.md §4.2), then the family's largest models on 128 and
// 256 devices for clusters that have them.
const std::vector<std::pair<std::string, std::vector<ScalingPoint>>>& suites() {
  static const auto* s = new std::vector<std::pair<std::string, std::vector<ScalingPoint>>>{
      {"gpt",
       {{"gpt-350m", 1, 1024},
        {"gpt-760m", 2, 1024},
        {"gpt-1.3b", 4, 1024},
        {"gpt-2.6b", 8, 1024},
        {"gpt-6.7b", 16, 1024},
        {"gpt-15b", 32, 1024},
        {"gpt-39b", 64, 1024},
        {"gpt-76b", 128, 1024},
        {"gpt-76b", 256, 2048}}},
      {"moe",
       {{"moe-380m", 1, 1024},
        {"moe-690m", 2, 1024},
        {"moe-1.3b", 4, 1024},
        {"moe-2.4b", 8, 1024},
        {"moe-10b", 16, 1024},
        {"moe-27b", 32, 1024},
        {"moe-70b", 64, 1024},
        {"moe-140b", 128, 1024},
        {"moe-140b", 256, 2048}}},
      {"wresnet",
       {{"wresnet-250m", 1, 1536},
        {"wresnet-500m", 2, 1536},
        {"wresnet-1b", 4, 1536},
        {"wresnet-2b", 8, 1536},
        {"wresnet-4b", 16, 1536},
        {"wresnet-6.8b", 32, 1536},
        {"wresnet-13b", 64, 1520},
        {"wresnet-13b", 128, 3040},
        {"wresnet-13b", 256, 6080}}},
  };
  return *s;
}

// n stages "0@S:L;1@S:L;..." of one clustered layer each, on submesh S with logical mesh L (or
// alternating between L and L2 when given).
std::string stages_of(int n, const std::string& submesh, const std::string& logical,
                      const std::string& logical2 = "") {
  std::string out;
  for (int k = 0; k < n; ++k) {
    if (k > 0) out += ";";
    out += fmt::format("{}@{}:{}", k, submesh, logical2.empty() || k % 2 == 0 ? logical : logical2);
  }
  return out;
}

// The plans Alpa found on p3.16xlarge (docs/algorithms.md §4.2, suite_auto_*.py), in --stages form,
// with their micro-batch count (0: meshpipe's); a stage count without a layer count is one
// clustered layer per stage.
struct AlpaPlan {
  std::string model;
  int32_t devices;
  std::string stages;
  int64_t micro_batches;
};

const std::vector<AlpaPlan>& alpa_plans() {
  static const auto* plans = new std::vector<AlpaPlan>{
      {"gpt-350m", 1, "0@1x1:1x1", 512},
      {"gpt-760m", 2, "0-2@1x1:1x1;3-5@1x1:1x1", 128},
      {"gpt-1.3b", 4, stages_of(2, "1x2", "2x1"), 128},
      {"gpt-2.6b", 8, "0-1@1x2:2x1;2-3@1x2:2x1;4-7@1x4:4x1", 128},
      {"gpt-6.7b", 16, stages_of(2, "1x8", "2x4"), 64},
      {"gpt-15b", 32, "0-3@1x8:2x4;4-7@1x8:2x4;8-11@1x8:2x4;12-15@1x8:2x4", 128},
      {"gpt-39b", 64, stages_of(16, "1x4", "1x4"), 1024},
      {"moe-10b", 16, stages_of(2, "1x8", "8x1"), 0},
      {"moe-27b", 32, stages_of(8, "1x4", "4x1"), 0},
      {"moe-70b", 64, stages_of(8, "1x8", "8x1"), 0},
      {"wresnet-4b", 16, "0-4@1x4:4x1;5-8@1x4:4x1;9-15@1x8:8x1", 0},
      {"wresnet-13b", 64, stages_of(8, "1x8", "8x1", "1x8"), 0},
  };
  return *plans;
}

const AlpaPlan* find_alpa_plan(const std::string& cluster, const ScalingPoint& p) {
  if (cluster.rfind("p3.16xlarge", 0) != 0) return nullptr;  // Alpa's plans are for its testbed
  for (const AlpaPlan& a : alpa_plans()) {
    if (a.model == p.model && a.devices == p.devices) return &a;
  }
  return nullptr;
}

std::string trim(std::string_view s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string_view::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r");
  return std::string(s.substr(a, b - a + 1));
}

// Whole number in [lo, hi], or nullopt.
std::optional<int64_t> whole(std::string_view t, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || end != t.data() + t.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

// Why a system has no plan: "oom" when no configuration fits memory, "none" when none exists
// (ok status, or kInfeasible for another reason), "error" for anything else (a search limit, a
// failed lowering).
std::string classify(const Status& s) {
  if (s.is_ok()) return "none";
  const bool memory = s.message().find("memory") != std::string::npos;
  if ((s.code() == Errc::kResourceExhausted || s.code() == Errc::kInfeasible) && memory) {
    return "oom";
  }
  return s.code() == Errc::kInfeasible ? "none" : "error";
}

}  // namespace

std::vector<std::string> builtin_suite_names() {
  std::vector<std::string> out;
  for (const auto& [name, points] : suites()) out.push_back(name);
  return out;
}

Expected<std::vector<ScalingPoint>> builtin_suite(std::string_view name) {
  for (const auto& [n, points] : suites()) {
    if (n == name) return points;
  }
  return make_error(Errc::kNotFound, "no built-in suite '{}' (known: {}; or a suite file)", name,
                    fmt::join(builtin_suite_names(), ", "));
}

Expected<std::vector<ScalingPoint>> parse_suite(std::string_view text, const std::string& origin) {
  if (text.size() > kMaxSuiteBytes) {
    return make_error(Errc::kInvalidArgument, "{}: {} bytes; a suite file holds at most {}", origin,
                      text.size(), kMaxSuiteBytes);
  }
  std::vector<ScalingPoint> out;
  size_t line_no = 0;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t nl = text.find('\n', at);
    std::string_view raw = text.substr(at, nl == std::string_view::npos ? text.npos : nl - at);
    at = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++line_no;
    if (const size_t hash = raw.find('#'); hash != std::string_view::npos)
      raw = raw.substr(0, hash);
    const std::string line = trim(raw);
    if (line.empty()) continue;
    std::istringstream in(line);
    std::vector<std::string> f;
    for (std::string w; in >> w;) f.push_back(w);
    const std::string where = fmt::format("{}:{}", origin, line_no);
    if (f.size() < 2 || f.size() > 3) {
      return make_error(Errc::kInvalidArgument,
                        "{}: expected 'MODEL DEVICES [GLOBAL_BATCH]', got '{}'", where, line);
    }
    auto spec = graph::models::find_model(f[0]);
    if (!spec.has_value()) return spec.status().with_context(where);
    const auto devices = whole(f[1], 1, kMaxSuiteDevices);
    if (!devices) {
      return make_error(Errc::kInvalidArgument,
                        "{}: devices must be a whole number in 1..{}, got '{}'", where,
                        kMaxSuiteDevices, f[1]);
    }
    ScalingPoint p{f[0], static_cast<int32_t>(*devices), 0};
    if (f.size() == 3) {
      const auto batch = whole(f[2], 1, int64_t{1} << 40);
      if (!batch) {
        return make_error(Errc::kInvalidArgument,
                          "{}: the global batch must be a positive whole number, got '{}'", where,
                          f[2]);
      }
      p.global_batch = *batch;
    }
    if (out.size() == kMaxSuitePoints) {
      return make_error(Errc::kInvalidArgument, "{}: more than {} points", where, kMaxSuitePoints);
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) return make_error(Errc::kInvalidArgument, "{}: no points", origin);
  return out;
}

Expected<std::vector<ScalingPoint>> load_suite_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(Errc::kNotFound, "cannot read suite file '{}'", path);
  std::string text(kMaxSuiteBytes + 1, '\0');
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(f.gcount()));
  if (f.bad()) return make_error(Errc::kIo, "reading suite file '{}' failed", path);
  return parse_suite(text, path);
}

Expected<mesh::ClusterSpec> cluster_for_point(const std::string& cluster, int32_t devices) {
  MP_ASSIGN_OR_RETURN(mesh::ClusterSpec c, mesh::resolve_cluster(cluster));
  const int32_t per_host = c.devices_per_host;
  if (devices < per_host) {
    c.hosts = 1;
    c.devices_per_host = devices;
    c.name = fmt::format("{} ({} of a host's {} devices)", c.name, devices, per_host);
  } else if (devices % per_host != 0) {
    return make_error(Errc::kInvalidArgument,
                      "{} devices are not a whole number of {} hosts of {} devices", devices,
                      c.name, per_host);
  } else {
    c.hosts = devices / per_host;
    c.name = fmt::format("{} ({} hosts)", c.name, c.hosts);
  }
  MP_RETURN_IF_ERROR(c.validate().with_context(fmt::format("{} devices on {}", devices, cluster)));
  return c;
}

double alpa_iteration_flops(const graph::models::ModelSpec& spec, int64_t global_batch) {
  const double b = static_cast<double>(global_batch);
  // Alpa's formulas assume its MLP widths (GPT 4 x hidden, MoE 8 x hidden).
  if (const auto* g = std::get_if<graph::models::GptConfig>(&spec.config)) {
    if (g->ffn_mult != 4) return 0.0;
    const double s = static_cast<double>(g->seq_len);
    const double h = static_cast<double>(g->hidden);
    const double l = static_cast<double>(g->layers);
    const double v = static_cast<double>(g->vocab);
    return 96.0 * b * s * h * h * l * (1.0 + s / (6.0 * h)) + 6.0 * b * s * h * v;
  }
  if (const auto* m = std::get_if<graph::models::MoeConfig>(&spec.config)) {
    if (m->ffn_mult != 8) return 0.0;
    const double s = static_cast<double>(m->seq_len);
    const double h = static_cast<double>(m->hidden);
    const double l = static_cast<double>(m->layers);
    const double v = static_cast<double>(m->vocab);
    const double e = static_cast<double>(m->experts);
    const double g = static_cast<double>(m->group_size);
    const double mlp = 8.0;  // Alpa's mlp_factor
    const double dense = b * s * h * h * (8.0 + 4.0 * mlp) + 4.0 * b * s * s * h;
    const double moe = 8.0 * b * s * h * h + 4.0 * b * s * s * h + 8.0 * b * s * h * h * mlp +
                       2.0 * b * s * h * e + 4.0 * b * s * g + 8.0 * b * s * h * g;
    return 4.0 * (dense * l / 2.0 + moe * l / 2.0) + 6.0 * b * s * h * v;
  }
  return 0.0;
}

std::vector<std::string> scaling_systems() {
  return {"meshpipe",      "data parallel",        "ZeRO-2",          "ZeRO-3",
          "Megatron grid", "equal layers",         "equal operators", "intra-op only",
          "inter-op only", kWithoutLocalAllGather, kSignalSendRecv,   kAlpasPlan};
}

std::vector<std::string> point_systems(const std::string& cluster, const ScalingPoint& point) {
  std::vector<std::string> out = scaling_systems();
  if (find_alpa_plan(cluster, point) == nullptr) std::erase(out, std::string(kAlpasPlan));
  return out;
}

std::vector<PublishedValue> published_values(std::string_view suite, int32_t devices) {
  // docs/algorithms.md §4.3, read off Fig. 7 (PFLOPS, Alpa's counting). DeepSpeed's MoE runs are
  // ZeRO with expert parallelism: ZeRO-3 is the closest system here.
  if (suite == "gpt" && devices == 32) {
    return {{"meshpipe", "Alpa", 1.9}, {"Megatron grid", "Megatron-LM", 1.85}};
  }
  if (suite == "gpt" && devices == 64) {
    return {{"meshpipe", "Alpa", 3.65},
            {"Megatron grid", "Megatron-LM", 3.7},
            {"inter-op only", "inter-op only", 3.2},
            {"intra-op only", "intra-op only", 0.1},
            {"linear", "linear scaling", 3.05}};
  }
  if (suite == "moe" && devices == 16)
    return {{"meshpipe", "Alpa", 0.72}, {"ZeRO-3", "DeepSpeed", 0.2}};
  if (suite == "moe" && devices == 32)
    return {{"meshpipe", "Alpa", 1.22}, {"ZeRO-3", "DeepSpeed", 0.12}};
  if (suite == "moe" && devices == 64)
    return {{"meshpipe", "Alpa", 2.3}, {"linear", "linear scaling", 2.9}};
  if (suite == "wresnet" && devices == 32) {
    return {{"meshpipe", "Alpa", 0.21}, {"linear", "linear scaling", 0.27}};
  }
  if (suite == "wresnet" && devices == 64) {
    return {{"meshpipe", "Alpa", 0.34}, {"linear", "linear scaling", 0.54}};
  }
  return {};
}

const SystemResult* PointResult::find(std::string_view system) const {
  for (const SystemResult& s : systems) {
    if (s.system == system) return &s;
  }
  return nullptr;
}

Expected<PointResult> simulate_point(const std::string& suite, const ScalingPoint& point,
                                     const std::string& cluster_arg,
                                     const ScalingOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec, graph::models::find_model(point.model));
  MP_ASSIGN_OR_RETURN(mesh::ClusterSpec cluster, cluster_for_point(cluster_arg, point.devices));
  PointResult r;
  r.suite = suite;
  r.cluster = cluster_arg;
  r.mode = "simulate";
  r.point = point;
  r.global_batch = point.global_batch > 0 ? point.global_batch : spec.default_batch;
  r.memory_limit = static_cast<int64_t>(static_cast<double>(cluster.device.memory.value()) *
                                        options.memory_fraction);
  r.memory_fraction = options.memory_fraction;
  for (const std::string& s : options.systems) {
    const auto all = scaling_systems();
    if (std::find(all.begin(), all.end(), s) == all.end()) {
      return make_error(Errc::kInvalidArgument, "no system '{}' (known: {})", s,
                        fmt::join(all, ", "));
    }
  }
  auto wanted = [&](const std::string& s) {
    return options.systems.empty() ||
           std::find(options.systems.begin(), options.systems.end(), s) != options.systems.end();
  };
  planner::PlannerOptions o;
  o.model = spec.name;
  o.global_batch = r.global_batch;
  o.profile.memory_fraction = options.memory_fraction;
  o.profile.threads = options.threads;
  o.profile.recompute = planner::Recompute::kAuto;
  o.graph_for_micro_batch = [spec](int64_t micro) -> Expected<graph::Graph> {
    MP_ASSIGN_OR_RETURN(
        graph::TrainingGraph tg,
        graph::models::zoo_training_graph(spec, micro, graph::OptimizerConfig{}, std::nullopt));
    return std::move(tg.graph);
  };
  o.micro_batch_multiple = graph::models::min_micro_batch(spec);
  if (r.global_batch % o.micro_batch_multiple != 0) {
    return make_error(Errc::kInvalidArgument,
                      "{}: a global batch of {} does not fill whole micro-batches of {} (its "
                      "expert groups)",
                      spec.name, r.global_batch, o.micro_batch_multiple);
  }
  MP_ASSIGN_OR_RETURN(graph::Graph g, o.graph_for_micro_batch(o.micro_batch_multiple));
  const auto cost = runtime::cost_model_for(cluster);
  planner::ShardingCache cache;
  const double alpa_flops = alpa_iteration_flops(spec, r.global_batch);
  int total = 0;
  for (const std::string& s : point_systems(cluster_arg, point)) total += wanted(s) ? 1 : 0;
  int done = 0;
  auto note = [&](const std::string& what) {
    if (options.progress) options.progress(what, done, total);
  };

  // One system's plan (or why there is none), lowered and simulated.
  auto evaluate = [&](const std::string& name, const std::optional<planner::Plan>& plan,
                      const Status& why, const std::string& description,
                      const runtime::LowerOptions& lowering = {},
                      const runtime::SimulationOptions& simulation = {}) {
    SystemResult s;
    s.system = name;
    s.detail = description;
    if (!plan) {
      s.status = classify(why);
      s.detail = why.is_ok() ? "no configuration of it exists here" : why.message();
      r.systems.push_back(std::move(s));
      ++done;
      return;
    }
    s.predicted_step_time = plan->step_time;
    s.stages = static_cast<int64_t>(plan->stages.size());
    s.micro_batches = plan->micro_batches;
    note(name + ": simulating");
    Status failed = Status::ok();
    auto pg = planner::graph_for_micro_batch(g, o, plan->micro_batch);
    if (!pg.has_value()) failed = pg.status();
    std::optional<runtime::CompactProgram> prog;
    if (failed.is_ok()) {
      auto p = runtime::lower_compact(*plan, *pg, lowering);
      if (p.has_value()) {
        prog = std::move(*p);
      } else if (p.status().code() == Errc::kOutOfRange) {
        // Too large to lower here (every device's program of a single-stage plan over 256
        // GPUs): the planner's estimate only.
        s.status = "not simulated";
        s.detail = fmt::format("{}; {} (planner's estimate {:.2f} s)", description,
                               p.status().message(), plan->step_time);
        r.systems.push_back(std::move(s));
        ++done;
        return;
      } else {
        failed = p.status().with_context("lowering");
      }
    }
    if (failed.is_ok()) {
      auto sim = runtime::simulate(*prog, cluster, simulation);
      if (sim.has_value()) {
        s.step_time = sim->step_time;
        for (const runtime::SimulatedDevice& d : sim->devices) {
          s.peak_bytes = std::max(s.peak_bytes, d.peak_bytes);
        }
      } else {
        failed = sim.status().with_context("simulation");
      }
    }
    if (!failed.is_ok()) {
      s.status = "error";
      s.detail = failed.message();
    } else if (s.peak_bytes > r.memory_limit) {
      s.status = "oom";
      s.detail = fmt::format("{} (its program peaks at {:.2f} GiB of {:.2f})", description,
                             static_cast<double>(s.peak_bytes) / (1 << 30),
                             static_cast<double>(r.memory_limit) / (1 << 30));
    } else {
      s.status = "ok";
      const double flops =
          planner::model_flops_per_micro_batch(*pg) * static_cast<double>(plan->micro_batches);
      s.pflops = s.step_time > 0 ? flops / s.step_time / 1e15 : 0.0;
      s.alpa_pflops = s.step_time > 0 ? alpa_flops / s.step_time / 1e15 : 0.0;
    }
    r.systems.push_back(std::move(s));
    ++done;
  };

  const AlpaPlan* alpa = wanted(kAlpasPlan) ? find_alpa_plan(cluster_arg, point) : nullptr;
  const bool mine = wanted("meshpipe") || wanted(kWithoutLocalAllGather) ||
                    wanted(kSignalSendRecv) || (alpa != nullptr && alpa->micro_batches == 0);
  int64_t mine_micro_batches = 0;  // Alpa's plans without a count of their own take meshpipe's
  if (mine) {
    note("meshpipe: planning");
    auto plan = runtime::make_counted_plan(g, cluster, *cost, o, &cache);
    const std::string description =
        plan.has_value() ? fmt::format("{} stages, {} micro-batches of {}", plan->stages.size(),
                                       plan->micro_batches, plan->micro_batch)
                         : "";
    const std::optional<planner::Plan> plan_or =
        plan.has_value() ? std::optional<planner::Plan>(std::move(*plan)) : std::nullopt;
    if (plan_or) mine_micro_batches = plan_or->micro_batches;
    if (wanted("meshpipe")) evaluate("meshpipe", plan_or, plan.status(), description);
    // Cross-mesh resharding (Fig. 11): the same plan with every byte sent to every receiver
    // instead of once per group and then all-gathered; and the bound, with those transfers as
    // bare signals (no all-gather after them either).
    runtime::LowerOptions plain;
    plain.local_allgather = false;
    if (wanted(kWithoutLocalAllGather)) {
      evaluate(kWithoutLocalAllGather, plan_or, plan.status(), description, plain);
    }
    if (wanted(kSignalSendRecv)) {
      runtime::SimulationOptions signal;
      signal.signal_transfers = true;
      evaluate(kSignalSendRecv, plan_or, plan.status(), description, plain, signal);
    }
  }
  bool any_baseline = false;
  for (const std::string& s : scaling_systems()) {
    const bool ours =
        s == "meshpipe" || s == kWithoutLocalAllGather || s == kSignalSendRecv || s == kAlpasPlan;
    any_baseline = any_baseline || (!ours && wanted(s));
  }
  if (any_baseline) {
    note("baselines: planning");
    auto baselines = planner::run_baselines(g, cluster, *cost, o, &cache);
    for (auto& b : baselines) {
      if (!wanted(b.name)) continue;
      evaluate(b.name, b.plan, b.status, b.description);
    }
  }
  if (alpa != nullptr) {
    note("Alpa's plan: pricing");
    int64_t nb = alpa->micro_batches;
    if (nb == 0) nb = mine_micro_batches;
    Expected<planner::Plan> priced = make_error(
        Errc::kInfeasible,
        "no micro-batch count: docs/algorithms.md gives none, and meshpipe's plan is not here");
    if (nb > 0 && r.global_batch % nb == 0) {
      auto stages = planner::parse_manual_stages(alpa->stages);
      auto ag = o.graph_for_micro_batch(r.global_batch / nb);
      planner::PlannerOptions ao = o;
      ao.micro_batches = nb;
      ao.clustering.num_layers = 0;  // the stages' own layer count
      if (!stages.has_value()) {
        priced = stages.status();
      } else if (!ag.has_value()) {
        priced = ag.status();
      } else {
        priced = planner::price_manual_stages(*ag, cluster, *cost, ao, nb, *stages, cache);
        if (priced.has_value()) {  // its 1F1B memory rule, reported as out of memory
          const Status fits = planner::check_stage_memory(*priced, ao.profile.memory_fraction);
          if (!fits.is_ok()) {
            priced = make_error(Errc::kResourceExhausted, "out of memory: {}", fits.message());
          }
        }
      }
    }
    const std::string description =
        fmt::format("`{}`, {} micro-batches (docs/algorithms.md §4.2)", alpa->stages, nb);
    evaluate(kAlpasPlan,
             priced.has_value() ? std::optional<planner::Plan>(std::move(*priced)) : std::nullopt,
             priced.status(), description);
  }
  note("done");
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace meshpipe::train

// The scaling benchmark harness behind `meshpipe bench scaling`: suites of points (a zoo model,
// a device count, a global batch), Alpa's weak-scaling suites built in (docs/algorithms.md §4.2),
// each point planned by meshpipe and by every baseline, each plan lowered and run on the simulated
// backend of the point's cluster; throughput in model FLOPs and in Alpa's counting
// (docs/algorithms.md §5), memory, out-of-memory marked; results as JSON lines (one per point, so a
// run resumes where it stopped), a Markdown table beside the values the paper reports, and the
// figure as SVG.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "graph/models/zoo.h"
#include "mesh/cluster.h"

namespace meshpipe::train {

/// One point of a weak-scaling suite.
struct ScalingPoint {
  std::string model;         ///< zoo name
  int32_t devices = 1;       ///< devices of the point's cluster
  int64_t global_batch = 0;  ///< samples per step; 0: the model's own (Alpa's)
  bool operator==(const ScalingPoint&) const = default;
};

/// "gpt", "moe", "wresnet": Alpa's points from 1 to 64 GPUs (docs/algorithms.md §4.2, the global
/// batches of suite_auto_*.py), and on clusters of more devices the largest zoo model of the family
/// at 128 and 256 devices. The error names the known suites.
Expected<std::vector<ScalingPoint>> builtin_suite(std::string_view name);
std::vector<std::string> builtin_suite_names();

/// A suite file: one point per line, "MODEL DEVICES [GLOBAL_BATCH]", blank lines and '#'
/// comments skipped. Errors name the file and line: an unknown model, a device count outside
/// 1..1024, a batch that is not a positive whole number, a file that cannot be read, more than
/// 1000 points or lines over 1 MiB in all.
Expected<std::vector<ScalingPoint>> parse_suite(std::string_view text, const std::string& origin);
Expected<std::vector<ScalingPoint>> load_suite_file(const std::string& path);

/// The cluster a point runs on: hosts of the preset's kind (p3.16xlarge, dgx-h100, cpu:HxD's
/// host, or a cluster file's) holding `devices`; fewer devices than a host holds is one host
/// with that many. kInvalidArgument when the count is not a whole number of hosts.
Expected<mesh::ClusterSpec> cluster_for_point(const std::string& cluster, int32_t devices);

/// FLOPs of one training iteration as Alpa's benchmarks count them (benchmark/alpa/util.py,
/// docs/algorithms.md §5), with activation recomputation as its benchmarks run (GPT factor 96, MoE
/// 4): GPT 96·B·S·H²·L·(1 + S/6H) + 6·B·S·H·V; MoE as compute_moe_tflops. 0 for the families it has
/// no closed formula for (Wide-ResNet, MLP: their throughput is counted from the graph).
double alpa_iteration_flops(const graph::models::ModelSpec& spec, int64_t global_batch);

/// The systems a point compares: "meshpipe", the baselines of planner::run_baselines, and
/// meshpipe's plan lowered without the local all-gather of cross-mesh transfers
/// (kWithoutLocalAllGather) and simulated with transfers as bare signals (kSignalSendRecv),
/// Alpa's Fig. 11 ablation.
inline constexpr const char* kWithoutLocalAllGather = "meshpipe w/o local all-gather";
inline constexpr const char* kSignalSendRecv = "meshpipe signal send/recv";
/// The plan Alpa found for a point of its suites on p3.16xlarge (docs/algorithms.md §4.2), written
/// as stages and priced, lowered and simulated like the others.
inline constexpr const char* kAlpasPlan = "Alpa's plan";
std::vector<std::string> scaling_systems();
/// The systems that apply to a point on `cluster`: every one, but Alpa's plan only where
/// docs/algorithms.md gives one (Alpa's points on p3.16xlarge).
std::vector<std::string> point_systems(const std::string& cluster, const ScalingPoint& point);
/// The systems of each figure: Fig. 7 (meshpipe and every baseline), Fig. 8 (intra-op
/// ablation: Alpa's ILP, "intra-op only", against data parallel and ZeRO), Fig. 9 (inter-op
/// ablation: the stage DP, "inter-op only", against equal layers and equal operators), Fig. 11
/// (cross-mesh resharding: meshpipe's plan with and without the local all-gather, and the
/// signal-only bound).
std::vector<std::string> figure_systems(int figure);

/// What the paper reports at a point of a built-in suite (Fig. 7, read off the figure,
/// docs/algorithms.md §4.3; measured on p3.16xlarge hosts): the system as it is named here and its
/// PFLOPS in Alpa's counting; "linear" is the figure's linear-scaling line. Empty where the paper
/// gives no number. paper_values(r): the same for a result, empty unless it ran on p3.16xlarge.
struct PublishedValue {
  std::string system;  ///< "meshpipe" for Alpa's own result, or a baseline's name
  std::string paper_name;
  double pflops = 0.0;
};
std::vector<PublishedValue> published_values(std::string_view suite, int32_t devices);
struct PointResult;
std::vector<PublishedValue> paper_values(const PointResult& r);

/// One system at one point.
struct SystemResult {
  std::string system;
  /// "ok"; "oom" (no configuration of it fits memory_limit, or its lowered program's peak
  /// does not); "none" (no valid configuration: e.g. equal operators with more stages than
  /// layers); "error" (what failed is in detail: a search limit, a failed lowering).
  std::string status;
  std::string detail;                ///< the configuration chosen, or why there is none
  double step_time = 0.0;            ///< simulated seconds per step
  double predicted_step_time = 0.0;  ///< the planner's estimate
  double pflops = 0.0;               ///< model FLOPs (graph) per simulated second / 1e15
  double alpa_pflops = 0.0;          ///< Alpa's counting per simulated second / 1e15 (0: n/a)
  int64_t peak_bytes = 0;            ///< largest device's simulated peak
  int64_t stages = 0;
  int64_t micro_batches = 0;
  bool operator==(const SystemResult&) const = default;
};

/// Every system at one point.
struct PointResult {
  std::string suite;
  std::string cluster;  ///< the cluster argument (preset or file)
  std::string mode;     ///< "simulate"
  ScalingPoint point;
  int64_t global_batch = 0;      ///< resolved
  int64_t memory_limit = 0;      ///< bytes per device the plans must fit (fraction x memory)
  double memory_fraction = 0.9;  ///< ScalingOptions::memory_fraction of the run
  double seconds = 0.0;          ///< wall time spent on the point
  std::vector<SystemResult> systems;
  /// The result of `system` (null when absent).
  const SystemResult* find(std::string_view system) const;
};

/// Options of simulate_point.
struct ScalingOptions {
  double memory_fraction = 0.9;  ///< of each device's memory the plans may use
  int threads = 0;               ///< planner threads; 0: every core
  /// Systems to run (names of scaling_systems()); empty: all.
  std::vector<std::string> systems;
  /// Progress: (what, done, total) as the point's systems are planned and simulated.
  std::function<void(const std::string&, int, int)> progress;
};

/// Plans the point with meshpipe's planner (memory counted on the lowered program) and every
/// baseline, lowers each plan and runs it on the simulated backend of the point's cluster.
/// Errors: an unknown model or cluster, a point the model cannot be built for. A system that
/// fails or does not fit is a row with its status, not an error.
Expected<PointResult> simulate_point(const std::string& suite, const ScalingPoint& point,
                                     const std::string& cluster, const ScalingOptions& options);

/// One JSON object per line, and back. The parser refuses malformed lines naming the field.
std::string to_json_line(const PointResult& r);
Expected<PointResult> parse_json_line(std::string_view line);

/// The results file of a run: every complete line (a truncated last line, from a run that was
/// stopped, is dropped; any other malformed line is an error naming its number). A missing
/// file is no results.
Expected<std::vector<PointResult>> load_results(const std::string& path);

/// The Markdown table: one row per point and system (step time, PFLOPS in both countings,
/// memory, status), the paper's value and our/paper ratio beside meshpipe's and each baseline's
/// where the paper reports one (built-in suites on p3.16xlarge, the paper's testbed), and
/// weak-scaling efficiency: per-device throughput against the system's own first point that
/// ran.
std::string scaling_markdown(const std::vector<PointResult>& results);

/// A figure: aggregate PFLOPS (Alpa's counting where it has one, else model FLOPs) against
/// devices (log2 axis), one line per system of `systems` (in that order), out-of-memory points
/// marked with a cross at the bottom, the linear-scaling line from the first system's first
/// point, and (when meshpipe is drawn) the paper's Alpa points; SVG 1.1, self-contained.
std::string scaling_svg(const std::vector<PointResult>& results, const std::string& title,
                        const std::vector<std::string>& systems);

}  // namespace meshpipe::train

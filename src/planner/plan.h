// Plan: the contract between planner and runtime (docs/style.md rule 4). A value: stages (layer
// ranges) on submeshes placed on physical devices, each stage's logical mesh and the sharding of
// every tensor and op, the cross-stage transfers, the micro-batch count and schedule, and the
// predicted step time, throughput and memory. Saved and loaded as versioned JSON.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "mesh/cluster.h"
#include "mesh/device_mesh.h"
#include "mesh/sharding.h"
#include "shard/op_layout.h"

namespace meshpipe::planner {

/// The pipeline schedule of a step (docs/algorithms.md §3.2): both take the same time; 1F1B keeps
/// at most (stages - s) micro-batches of activations in flight on stage s, GPipe all of them.
enum class Schedule : uint8_t {
  k1F1B,   ///< "1f1b": warm-up forwards, then one forward and one backward alternately
  kGPipe,  ///< "gpipe": every forward, then every backward
};

/// "1f1b", "gpipe".
const char* schedule_name(Schedule schedule);
/// Parses schedule_name's text; errors list the known schedules.
Expected<Schedule> parse_schedule(std::string_view text);

/// Memory of one device of a stage, in bytes.
struct StageMemory {
  int64_t persistent = 0;  ///< parameters and optimizer state
  int64_t stash = 0;       ///< activations kept from forward to backward, per micro-batch
  int64_t working = 0;     ///< transient peak beyond the stash while computing a micro-batch
  int64_t peak = 0;        ///< persistent + gradients + working + in_flight * stash
  /// Parameter gradients in their accumulators, live all step with several micro-batches (with
  /// one, each gradient counts in `working` from its production on).
  int64_t gradients = 0;
  /// When `peak` was counted on the plan's lowered program (runtime/counted_plan.h): the memory
  /// model's estimate of it, for comparison; 0 when `peak` is the model's (JSON: optional).
  int64_t estimated = 0;
  friend bool operator==(const StageMemory&, const StageMemory&) = default;
};

/// The largest global batch a plan may have (far beyond any real job; Alpa's are 1024): tensor
/// sizes and FLOP counts stay clear of 64-bit overflow.
inline constexpr int64_t kMaxGlobalBatch = int64_t{1} << 20;
/// The most micro-batches per step a plan may have: lowered programs and simulations grow with
/// the micro-batch count (Alpa's largest configuration uses 1024).
inline constexpr int64_t kMaxMicroBatches = 4096;

/// One pipeline stage.
struct StagePlan {
  int32_t first_layer = 0;  ///< inclusive
  int32_t last_layer = 0;   ///< inclusive
  mesh::SubmeshShape submesh;
  std::vector<int32_t> devices;  ///< global device ids (host * devices_per_host + local), row-major
  mesh::LogicalMesh mesh;        ///< logical view of `devices` (shape and alpha/beta)
  double time = 0.0;      ///< predicted seconds per micro-batch (forward + backward, or the tensors
                          ///< entering it where they take longer: they overlap the work)
  int32_t in_flight = 1;  ///< micro-batches whose activations are stashed at once (1F1B)
  StageMemory memory;
  /// Activation recomputation: the forward keeps only each unit's inputs; the backward of a
  /// micro-batch recomputes a unit's forward right before it needs it (JSON: optional, false).
  bool recompute = false;
  /// Value name -> its sharding spec on this stage's mesh (JSON: the spec's text).
  std::map<std::string, mesh::ShardingSpec> value_specs;
  /// Op name -> the chosen strategy in words ("S0,R = S0,R x R,R | all-reduce@1"), for people.
  std::map<std::string, std::string> op_strategies;
  /// Op name -> its layout: what the runtime lowers (JSON: shard::layout_to_string's text).
  std::map<std::string, shard::OpLayout> op_layouts;
  friend bool operator==(const StagePlan&, const StagePlan&) = default;
};

/// A tensor crossing from one stage's mesh to another's.
struct CrossStageTransfer {
  std::string value;  ///< value name
  int32_t from_stage = 0;
  int32_t to_stage = 0;
  mesh::ShardingSpec from_spec;  ///< layout on the sending mesh
  mesh::ShardingSpec to_spec;    ///< layout on the receiving mesh
  int64_t bytes = 0;             ///< full tensor bytes
  double seconds = 0.0;  ///< predicted time per micro-batch (a parameter gradient, sent once per
                         ///< step, counts 1 / micro_batches)
  friend bool operator==(const CrossStageTransfer&, const CrossStageTransfer&) = default;
};

/// Wall time of the planner's phases, in seconds (reported, not part of the plan's identity).
struct PlanningTimes {
  double clustering = 0.0;
  double stage_costs = 0.0;
  double stage_dp = 0.0;
  double total = 0.0;
  int64_t intra_op_solves = 0;  ///< ILPs solved
  int64_t intra_op_reused = 0;  ///< identical sub-problems answered from the cache
  /// What make_plan compared (for the chosen micro-batch count): the step time of its stage
  /// DP's own plan and of the best standard pipeline recipe (best_pipeline_recipe), 0 where
  /// there was none. The plan is the faster of the two.
  double dp_step_time = 0.0;
  double recipe_step_time = 0.0;
  friend bool operator==(const PlanningTimes&, const PlanningTimes&) = default;
};

/// The whole plan.
struct Plan {
  static constexpr int32_t kVersion = 2;
  int32_t version = kVersion;
  std::string model;              ///< zoo name or a user label
  std::string graph_fingerprint;  ///< hash of the training graph the plan was made for
  /// The model's precision ("f16", "f32" in JSON): its parameters' dtype, or under mixed
  /// precision (f32 master weights, graph/mixed_precision.h) the half type of its activations.
  DType dtype = DType::kF32;
  int64_t global_batch = 1;
  int64_t micro_batch = 1;
  int64_t micro_batches = 1;  ///< global_batch / micro_batch
  Schedule schedule = Schedule::k1F1B;
  mesh::ClusterSpec cluster;
  int32_t num_layers = 0;
  std::vector<int32_t> op_layers;  ///< layer of every op of the training graph (clustering)
  std::vector<StagePlan> stages;
  std::vector<CrossStageTransfer> transfers;
  double step_time = 0.0;             ///< predicted seconds per training step
  double tflops_per_device = 0.0;     ///< model FLOPs / (step time x devices) / 1e12
  int64_t max_memory_per_device = 0;  ///< bytes, the largest stage peak
  PlanningTimes times;
  friend bool operator==(const Plan&, const Plan&) = default;

  /// Stage ranges cover 0..num_layers-1 in order without gaps; devices distinct, within the
  /// cluster and matching each stage's submesh and logical mesh size; micro_batches *
  /// micro_batch == global_batch; transfers reference existing stages. Errors name the field
  /// ("stages[2].devices: device 17 is outside the cluster's 16").
  Status validate() const;
};

/// The JSON text of a plan (pretty-printed; field order stable).
std::string plan_to_json(const Plan& plan);
/// Parses and validates; errors name the field ("plan field 'stages[1].mesh.shape' ...", a
/// spec or layout that does not parse included).
/// plan_from_json(plan_to_json(p)) == p exactly.
Expected<Plan> plan_from_json(const std::string& text);
/// Writes plan_to_json to a file (kIo errors name the path).
Status save_plan(const Plan& plan, const std::string& path);
/// Reads and parses a plan file.
Expected<Plan> load_plan(const std::string& path);

}  // namespace meshpipe::planner

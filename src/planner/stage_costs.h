// Stage costs for the inter-operator pass: the time and memory of every candidate stage (a range
// of clustered layers on a submesh with a logical mesh), from the intra-op pass.
//
// Profiling unit = a run of forward ops sharing the model's own layer tag (a block) and the
// clustered layer, with its backward and update ops. Each distinct unit is solved once per
// logical mesh (ShardingCache); a stage's time is the sum of its units' times, plus resharding
// between units whose layouts differ, plus the transfer of the tensors entering the stage from
// other stages (Alpa's "individual" profiling mode, with boundary costs added). Units meet in
// the canonical boundary layout (ShardingOptions::canonical_boundaries), each converting what it
// produces for other units, so separately solved units compose without hidden resharding.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "graph/graph.h"
#include "mesh/cluster.h"
#include "mesh/device_mesh.h"
#include "planner/layer_clustering.h"
#include "planner/plan.h"
#include "planner/sharding_cache.h"
#include "planner/stage_dp.h"

namespace meshpipe::planner {

/// Which logical meshes each submesh offers (docs/algorithms.md §2.3).
enum class LogicalSpace : uint8_t {
  kSingleNodeModelParallel,  ///< (D/mp, mp) for every mp <= devices per host dividing D
  kDataParallelOnly,         ///< (D, 1) only
  kModelParallelOnly,        ///< (1, D) only
};

/// Activation recomputation offered to the stage DP.
enum class Recompute : uint8_t {
  kOff,   ///< "off": every stage stashes its activations
  kOn,    ///< "on": every stage recomputes its units' forward during the backward
  kAuto,  ///< "auto": the DP chooses per stage (both variants are offered)
};

/// "off", "on", "auto".
const char* recompute_name(Recompute r);
/// Parses recompute_name's text; errors list the known values.
Expected<Recompute> parse_recompute(std::string_view text);

/// Options of stage profiling.
struct StageProfileOptions {
  mesh::SubmeshSpace submesh_space = mesh::SubmeshSpace::kPowerOfTwo;
  LogicalSpace logical_space = LogicalSpace::kSingleNodeModelParallel;
  int64_t micro_batches = 1;
  /// The pipeline schedule: with GPipe a stage must hold every micro-batch's stash.
  Schedule schedule = Schedule::k1F1B;
  double memory_fraction = 0.9;  ///< share of device memory a stage may use
  /// When non-empty, only these submesh shapes are profiled (baselines with fixed shapes).
  std::vector<mesh::SubmeshShape> only_submeshes;
  /// Memory levels per logical mesh: level 0 is the fastest layout (no memory limit); level 1
  /// the fastest with ZeRO-style layouts allowed (sharded optimizer state, reduce-scattered
  /// gradients); level k >= 2 asks the intra-op ILP to fit in max(1 / 2^(k-1), r / 2^(k-2)) of
  /// level 0's peak, ZeRO layouts allowed, r = min(1, device memory / the whole model's
  /// level-0 footprint on the mesh).
  /// The stage DP picks a level per stage, trading speed for room for more in-flight
  /// micro-batches or a larger model. Levels are only solved on logical meshes where the whole
  /// model at level 0 would not fit a device.
  int32_t memory_levels = 4;
  /// ILP time limit of the memory levels k >= 1: memory rows make GLPK's search slow, and a good
  /// feasible layout (GLPK's incumbent, or the greedy fallback) is enough there.
  double level_time_limit_seconds = 1.0;
  /// Threads solving the distinct intra-op problems of a pass at once (0: every core). The
  /// profiles, and so the plan, are the same for any count.
  int threads = 0;
  ShardingOptions sharding;  ///< template; layer range and micro_batches are set per unit
  /// Recomputation variants: each (logical mesh, level) config also comes with recomputation
  /// (kAuto), only with it (kOn) or only without (kOff). A recomputing unit costs its forward
  /// again and stashes only its inputs; its recomputed activations join its backward's working
  /// set. No ILP is solved for the variant (same layouts).
  Recompute recompute = Recompute::kAuto;
  /// Called after each profiled (unit, mesh) with (done, total).
  std::function<void(int64_t, int64_t)> progress;

  Status validate() const;
};

/// One profiling unit on one logical mesh.
struct UnitProfile {
  bool feasible = false;
  Status error;       ///< why not, when infeasible
  double time = 0.0;  ///< seconds per micro-batch (forward + backward + amortised update)
  int64_t persistent = 0;
  int64_t gradients = 0;  ///< parameter gradients' accumulators
  int64_t stash = 0;      ///< per micro-batch, values produced in the unit
  int64_t working = 0;
  /// Excess over persistent + stash in the step's first backward, the accumulators allocated
  /// so far included (several micro-batches; `working` with one).
  int64_t first_working = 0;
  double forward_time = 0.0;     ///< seconds of the unit's forward ops (what recomputation repeats)
  double compute_time = 0.0;     ///< of `time`: the ops' compute (not their communication)
  double forward_compute = 0.0;  ///< of `forward_time`: the ops' compute
  ShardingPlan plan;             ///< the intra-op decision (specs of every value the unit touches)
};

/// Time, memory and successor bound of one candidate stage.
struct StageCost {
  /// Seconds per micro-batch in the steady state: the stage's own work, or the tensors entering
  /// from other stages where they take longer (sends are asynchronous: they overlap the work).
  double time = 0.0;
  double work = 0.0;      ///< the stage's own work per micro-batch (its units, inner reshardings)
  double transfer = 0.0;  ///< tensors entering from other stages, per micro-batch
  /// What a micro-batch takes passing through in the pipeline's fill and drain: `work` with
  /// only this stage's devices computing (its compute scaled by CostModel::sharing; equal to
  /// `work` unless devices share cores) plus `transfer`, waited for.
  double fill = 0.0;
  StageMemory memory;  ///< peak with a single micro-batch in flight
  /// Excess over persistent + stash during the step's first backward, when the accumulators are
  /// allocated as their gradients arrive (see stage_peak).
  int64_t first_working = 0;
  int32_t max_succ_stages = -1;  ///< docs/algorithms.md §2.5; -1: does not fit
};

/// A stage's peak per device with `in_flight` micro-batches' stashes live at its first backward
/// (of `micro_batches` per step). 1F1B keeps that many in flight at every later backward too,
/// with every accumulator allocated; GPipe runs all forwards first, so its first backward has
/// all stashes but only the accumulators produced so far, and each later backward one stash
/// fewer.
int64_t stage_peak(const StageCost& cost, int32_t in_flight, int64_t micro_batches,
                   Schedule schedule);

/// What scales the (B - 1) x max stage time term of a pipeline of `stages` equal stages over
/// `devices` devices (`micro_batches` = B) when the devices share cores (CostModel::sharing < 1
/// while fewer compute): the stage times are priced with every device computing, but the step's
/// M + S - 1 slots have min(k + 1, S, B, B + S - 1 - k) stages busy. With the fill priced at
/// each stage's own devices, the slots sum to sum fill + (B - 1) x this x max:
/// (sum over slots of sharing(busy devices) - S x sharing(devices / S)) / (B - 1). 1 without
/// sharing, for one stage or one micro-batch. Unequal stages: `utilisation` = sum over stages of
/// devices x stage time / (devices x the longest time) is the share of the slowest stage's pace
/// at which the others compute; a slot with k stages busy then has devices / S x k x it
/// computing (at least one stage's devices), and the slowest stage, less crowded, runs faster.
double steady_scale(const CostModel& cost, int32_t devices, int32_t stages, int64_t micro_batches,
                    double utilisation = 1.0);

/// The micro-batches stage `stage` of `stages` has in flight at its first backward: every one
/// with GPipe; with 1F1B the stages - stage forwards it runs first, never more than the step's.
int32_t stage_in_flight(Schedule schedule, size_t stage, size_t stages, int64_t micro_batches);

/// One configuration of a submesh: a logical mesh, a memory level and whether the stage
/// recomputes its activations.
struct StageConfig {
  mesh::LogicalMesh mesh;
  int32_t level = 0;
  bool recompute = false;
};

/// Profiles every unit on every (submesh, logical mesh) of a cluster and composes stages.
class StageProfiler {
 public:
  /// `g` must be tagged with the clustered layers (apply_clustering); `block_layers` holds the
  /// model's own layer tag of every op before clustering.
  StageProfiler(const graph::Graph& g, std::vector<int32_t> block_layers,
                const mesh::ClusterSpec& cluster, const CostModel& cost,
                StageProfileOptions options, ShardingCache& cache);

  /// Solves every (unit, mesh); a unit infeasible on a mesh makes the stages using it infinite.
  Status profile();

  int32_t num_layers() const { return num_layers_; }
  const std::vector<mesh::SubmeshShape>& submeshes() const { return submeshes_; }
  /// Configurations (logical mesh, memory level) of submesh m.
  const std::vector<StageConfig>& configs(int32_t m) const { return configs_[size_t(m)]; }
  /// The candidate stage of clustered layers i..j on submesh m with config c; tensors entering
  /// from other stages are priced on `link` (default: the network when there are several hosts,
  /// else the intra-host link).
  StageCost stage(int32_t i, int32_t j, int32_t m, int32_t c) const;
  StageCost stage(int32_t i, int32_t j, int32_t m, int32_t c, const mesh::LinkSpec& link) const;
  /// The DP's input: every candidate's cost and successor bound (transfers priced on `link`).
  StageDpInput dp_input() const;
  StageDpInput dp_input(const mesh::LinkSpec& link) const;
  /// Index of a submesh shape, or -1.
  int32_t submesh_index(const mesh::SubmeshShape& s) const;

  /// Units of clustered layer l, in order, and a unit's profile on (m, c).
  const std::vector<int32_t>& units_of_layer(int32_t l) const { return layer_units_[size_t(l)]; }
  const UnitProfile& unit(int32_t u, int32_t m, int32_t c) const;
  /// The graph re-tagged with unit indices (what the unit plans' ids refer to).
  const graph::Graph& unit_graph() const { return unit_graph_; }
  const StageProfileOptions& options() const { return options_; }
  /// The cost model the profiles were priced with.
  const CostModel& cost_model() const { return cost_; }
  /// True for values that feed a parameter's update (its gradient and the pieces summed into
  /// it): they cross between stages once per step, not once per micro-batch.
  bool is_parameter_gradient(ValueId v) const { return parameter_gradient_[v.index()]; }

 private:
  struct Crossing {
    ValueId value;
    int32_t from_unit = 0;
    int32_t to_unit = 0;
    bool once_per_step = false;  // a parameter gradient: summed and sent once per step
    bool stashed = false;        // a forward value read by a backward op of the reading unit
    bool forward_read = false;   // read by a forward op of the reading unit
    int32_t previous = -1;       // the value's previous crossing, or -1
  };
  void build_units(const std::vector<int32_t>& block_layers);
  void fill_profile(UnitProfile& p, ShardingPlan plan) const;
  // The recomputing variant of a unit's profile `base` (same layouts).
  UnitProfile recomputing(const UnitProfile& base) const;
  double crossing_cost(const Crossing& x, int32_t m, int32_t c) const;

  const graph::Graph& g_;
  graph::Graph unit_graph_;
  const mesh::ClusterSpec& cluster_;
  const CostModel& cost_;
  StageProfileOptions options_;
  ShardingCache& cache_;
  int32_t num_layers_ = 0;
  int32_t num_units_ = 0;
  std::vector<int32_t> unit_layer_;                // unit -> clustered layer
  std::vector<std::vector<int32_t>> layer_units_;  // clustered layer -> units
  std::vector<Crossing> crossings_;                // values produced in one unit, read in another
  std::vector<bool> parameter_gradient_;           // per value (see is_parameter_gradient)
  std::vector<mesh::SubmeshShape> submeshes_;
  std::vector<std::vector<StageConfig>> configs_;
  std::vector<UnitProfile> profiles_;   // [unit][m][c] flattened with max_configs_
  std::vector<double> crossing_costs_;  // [crossing][m][c]: resharding inside one stage
  int32_t max_configs_ = 1;
};

}  // namespace meshpipe::planner

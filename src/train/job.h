// A training job and the part of it this process runs. A JobSpec names what is trained (a zoo
// model, the global batch, the optimizer, the seed); plan_job makes or checks its plan; a
// LocalJob is the plan lowered and running on this process's devices (every device, or one
// node's share of a multi-process job), with the data stream and checkpoints. Every process of
// a job builds its graphs from the same JobSpec, so they lower the same program.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "graph/models/zoo.h"
#include "graph/optimizer.h"
#include "graph/training_graph.h"
#include "kernels/device.h"
#include "mesh/cluster.h"
#include "planner/plan.h"
#include "planner/planner.h"
#include "runtime/checkpoint.h"
#include "runtime/host_tensor.h"
#include "runtime/in_process_run.h"
#include "runtime/loss_scale.h"
#include "runtime/synthetic_data.h"
#include "train/step_runner.h"

namespace meshpipe::train {

/// The largest global batch a job accepts: far beyond any real job (Alpa's are 1024), and small
/// enough that every tensor size and FLOP count stays clear of 64-bit overflow.
inline constexpr int64_t kMaxGlobalBatch = planner::kMaxGlobalBatch;

/// Fails fast, before anything is allocated, when training `g` on one device cannot fit in
/// this machine's available memory: its parameters and optimizer states plus the largest op's
/// operands and results (a lower bound of any step's peak). `what` names the run in the error.
Status check_fits_host_memory(const graph::Graph& g, int64_t devices, std::string_view what);

/// A learning-rate schedule as GPT training uses it: linear warm-up over the first
/// `warmup_steps` steps (step s: s / warmup), then cosine decay to `min_ratio` of the rate at
/// `decay_steps` (constant after it); none of either: a constant rate. The factor of step s
/// (1-based) multiplies the optimizer's lr; PyTorch's LambdaLR(lambda it: factor(it + 1)) with
/// scheduler.step() after every optimizer step gives the same rates.
struct LrSchedule {
  int64_t warmup_steps = 0;
  int64_t decay_steps = 0;  ///< 0: no decay
  double min_ratio = 0.1;
  double factor(int64_t step) const;
  bool constant() const { return warmup_steps == 0 && decay_steps == 0; }
  /// Errors: negative steps, decay_steps not above warmup_steps, min_ratio outside [0, 1].
  Status validate() const;
};

/// What is trained.
struct JobSpec {
  graph::models::ModelSpec model;
  int64_t global_batch = 0;  ///< samples per step; 0: the model's default batch
  graph::OptimizerConfig optimizer;
  LrSchedule schedule;        ///< the optimizer's lr over the steps
  uint64_t seed = 1234;       ///< parameter initialisation and data
  bool check_finite = false;  ///< stop at the first op that writes NaN or Inf, naming it
  /// A folder of .npy arrays, one per data input (runtime/array_data.h), or a token file
  /// (runtime/token_data.h); empty: synthetic data (runtime/synthetic_data.h). Every process of
  /// a job reads the same path.
  std::string data_path;
  /// A token file's share of windows kept for validation (the last ones).
  double val_fraction = 0.1;
  /// Storage type of activations: f32, or f16/bf16 for mixed precision (f32 master weights,
  /// optimizer state and loss; graph/mixed_precision.h).
  DType precision = DType::kF32;
  /// Loss scaling (runtime/loss_scale.h): the front ends enable it for f16 unless asked not to
  /// (`--loss-scale off`); bf16 and f32 have f32's range and train without it.
  runtime::LossScaleOptions loss_scale;
  /// Global-norm gradient clipping (0: off): the optimizers read every gradient times
  /// min(1, clip_grad_norm / (norm + 1e-6)), the norm taken over the whole model's gradient
  /// (PyTorch's clip_grad_norm_), exactly under every plan.
  double clip_grad_norm = 0.0;

  /// The global batch this job trains with.
  int64_t batch() const { return global_batch > 0 ? global_batch : model.default_batch; }
  /// Samples and tokens of one step.
  int64_t samples_per_step() const { return batch(); }
  int64_t tokens_per_step() const;
  Status validate() const;
};

/// What identifies a job's data in its checkpoints: "" for synthetic data; for a token file
/// "tokens NAME BYTES crc32c=X" (X of its first MiB), for a folder "arrays NAME" and each .npy
/// file's name and size. Errors name the path.
Expected<std::string> data_identity(const std::string& path);

/// Whether the job's data holds validation batches: a token file with val_fraction > 0.
bool has_validation_split(const JobSpec& job);

/// The job's validation batches: the validation windows of a token file (job.val_fraction of
/// them); an error naming why for other data (arrays and synthetic data have no split).
Expected<std::unique_ptr<runtime::BatchSource>> open_validation_data(
    const JobSpec& job, const graph::Graph& g, const std::vector<ValueId>& inputs);

/// The job's batches for the data inputs `inputs` of `g` (the global-batch graph): the arrays
/// of a job.data_path folder, the training windows of a job.data_path token file, else
/// synthetic data from the seed.
Expected<std::unique_ptr<runtime::BatchSource>> open_job_data(const JobSpec& job,
                                                              const graph::Graph& g,
                                                              const std::vector<ValueId>& inputs);

/// The job as JSON text, for the processes of a multi-process job (no tensor data):
///   {"model": "gpt-tiny", "global_batch": 8, "seed": 1234, "check_finite": false,
///    "precision": "f16", "data": "/data/set", "data_identity": "tokens ..." (when given: a
///    process reading other data there refuses the job), "loss_scale": {"enabled": true,
///    "initial": 65536, "interval": 2000}, "optimizer": {"kind": "adam", "lr": 0.003, "momentum":
///    0, "beta1": 0.9, ...}}
std::string job_spec_to_json(const JobSpec& job);
/// Parses job_spec_to_json's text; errors name the field ("job field 'optimizer.lr' ..."), an
/// unknown model lists the known ones. Without "loss_scale", f16 jobs scale dynamically with the
/// defaults and others do not.
Expected<JobSpec> job_spec_from_json(const std::string& text);

/// How a plan is chosen when planning.
struct PlanRequest {
  int64_t micro_batches = 0;                  ///< 0: the planner chooses the micro-batch size
  std::optional<planner::Schedule> schedule;  ///< empty: 1F1B
  planner::Recompute recompute = planner::Recompute::kAuto;  ///< offered to the stage DP
};

/// Plans a graph for a cluster: make_plan with the analytic cost model, or the actor runtime's
/// planner actor.
using Planner = std::function<Expected<planner::Plan>(const graph::Graph&, const mesh::ClusterSpec&,
                                                      const planner::PlannerOptions&)>;

/// Plans `job` for `cluster` through `planner` (make_plan when empty), giving it the training
/// graph of every micro-batch size it tries.
Expected<planner::Plan> plan_job(const JobSpec& job, const mesh::ClusterSpec& cluster,
                                 const PlanRequest& request, const Planner& planner = {});

/// Checks that a given plan is one for `job`: its model, and its global batch when the job
/// names one (`explicit_batch`). `what` names the plan in errors ("plan.json").
Status check_plan_for_job(const planner::Plan& plan, const JobSpec& job, bool explicit_batch,
                          const std::string& what);

/// Whether `plan` can run with each device on a GPU of the machine `inv` describes (--device
/// cuda): a GPU per device, or, for a plan whose stages are one device each, fewer GPUs that
/// the stages share (they talk through the transport; NCCL needs a GPU per rank of a group).
/// The error names the counts and what to do.
Status check_plan_gpus(const planner::Plan& plan, const kernels::DeviceInventory& inv);

/// Options of a LocalJob.
struct LocalJobOptions {
  runtime::InProcessRunOptions run;           ///< collectives, transport, timeouts, share
  std::optional<planner::Schedule> schedule;  ///< lowering: the plan's when empty
  std::string load_dir;  ///< resume from this checkpoint (under this job's plan)
};

/// The lowered plan on this process's devices, initialised from the seed (or a checkpoint), and
/// the job's data. As a StepRunner it runs a step with one thread per device.
class LocalJob final : public StepRunner {
 public:
  /// Lowers `plan` for `job`, builds the devices (options.run.share: only this process's),
  /// initialises them and loads options.load_dir when given. Errors: a plan for another model
  /// or graph, an unreadable checkpoint (naming the field), devices that cannot be built.
  static Expected<std::unique_ptr<LocalJob>> create(const JobSpec& job, const planner::Plan& plan,
                                                    const LocalJobOptions& options);
  ~LocalJob() override;
  LocalJob(const LocalJob&) = delete;
  LocalJob& operator=(const LocalJob&) = delete;

  /// The micro-batches of step `step` (the data stream's batch step - 1, split); also sets the
  /// step's learning-rate factor (JobSpec::schedule) on every device of this process.
  Expected<std::vector<std::vector<runtime::HostTensor>>> micro_batches(int64_t step);
  /// The micro-batches of validation batch `index` (open_validation_data's batch `index`).
  Expected<std::vector<std::vector<runtime::HostTensor>>> validation_batches(int64_t index);
  /// Step `step` on this process's devices, one thread each.
  Expected<StepOutcome> run_step(int64_t step) override;
  /// Validation batch `index`, its loss with nothing updated (every device of the job is here).
  Expected<double> validate(int64_t index) override;
  /// A checkpoint written by this process alone (every device of the job is here).
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override;
  /// This process's tiles of a checkpoint, written into `partial` (a job of several processes).
  Expected<std::vector<runtime::SavedTile>> write_tiles(const std::string& partial);

  /// A step's outcome from the results of this process's devices.
  Expected<StepOutcome> outcome(
      const std::vector<std::pair<int32_t, runtime::DeviceStepResult>>& results,
      double seconds) const;

  runtime::InProcessRun& run() { return *run_; }
  const runtime::InProcessRun& run() const { return *run_; }
  const planner::Plan& plan() const { return plan_; }
  const JobSpec& spec() const { return spec_; }
  /// The micro-batch training graph the program was lowered from.
  const graph::Graph& graph() const { return graph_.graph; }
  /// 1, or the resumed checkpoint's step + 1.
  int64_t first_step() const { return first_step_; }
  /// runtime::compact_fingerprint of the lowered program.
  uint64_t fingerprint() const { return fingerprint_; }
  /// Instructions of one step, all devices (the program is held in compact form).
  int64_t instructions() const { return instructions_; }

 private:
  LocalJob() = default;
  JobSpec spec_;
  planner::Plan plan_;
  graph::TrainingGraph graph_;  // one micro-batch
  graph::TrainingGraph whole_;  // the global batch (data)
  std::unique_ptr<runtime::BatchSource> data_;
  std::unique_ptr<runtime::BatchSource> val_data_;  // opened at the first validation
  bool partial_ = false;                            // runs one process's share of the devices
  std::vector<std::string> inputs_;
  int64_t micro_batches_ = 1;
  std::unique_ptr<runtime::InProcessRun> run_;
  int64_t first_step_ = 1;
  uint64_t fingerprint_ = 0;
  int64_t instructions_ = 0;
};

}  // namespace meshpipe::train

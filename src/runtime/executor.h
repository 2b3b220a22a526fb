// Single-device executor: runs a graph (forward-only or a full training step) through one column
// of the kernel backend table (kernels/backend.h), freeing each buffer after its last use,
// running elementwise and update ops in place when the input dies there, and reporting peak
// memory. On the CPU (the default) buffers come from a BufferPool in host memory; with
// ExecutorOptions::device = kCuda every buffer (persistent values, activations, kernel
// workspaces) lives in one GPU's memory, from its caching allocator (kernels/gpu.h), and kernels
// are queued on the GPU's compute stream. The buffer plan is the same on both (their in-place
// rows agree): what differs is the kernels' workspaces (each backend declares its own) and
// where the bytes live.
//
// On a GPU only host-side values cross between host and device, through HostTensor copies:
// persistent values (initialize, set_value, get_value), data inputs (run) and the scalar loss.
// A step's time includes the final synchronisation, so it is the GPU's time, not the queueing.
// check_finite copies every floating output (f32, f16, bf16) back to the host after its op
// (slow: for debugging); profile synchronises after every op so that each op's time is its own.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "core/units.h"
#include "graph/graph.h"
#include "kernels/gpu.h"
#include "kernels/tensor_view.h"
#include "runtime/buffer_pool.h"
#include "runtime/host_tensor.h"
#include "runtime/loss_scale.h"

namespace meshpipe::runtime {

/// Options of an Executor.
struct ExecutorOptions {
  std::vector<ValueId> retain;  ///< values kept after their last use, readable after run()
  bool profile = false;         ///< accumulate time per op kind
  bool check_finite = false;    ///< fail a step when an op writes NaN or Inf (names the op)
  /// Where the kernels run and the buffers live: kCpu (host memory), or kCuda (GPU `gpu`'s
  /// memory; create() fails with kUnavailable, naming why, when there is no such GPU).
  kernels::Device device = kernels::Device::kCpu;
  int gpu = 0;  ///< with kCuda: the CUDA device ordinal
  /// f16 loss scaling (runtime/loss_scale.h): the seed carries the scale, the optimizers read
  /// g / scale, and a step whose parameter gradients hold an Inf or NaN (checked before the
  /// first update op) updates nothing.
  LossScaleOptions loss_scale;
  /// Global-norm gradient clipping (0: off): before the first update op the norm of every
  /// parameter gradient is taken and the optimizers read g * min(1, max / (norm + 1e-6)), as
  /// PyTorch's clip_grad_norm_ leaves them (StepStats::grad_norm).
  float clip_grad_norm = 0.0f;
};

/// What one step measured.
struct StepStats {
  double loss = 0.0;             ///< the graph's first output (when it is a scalar)
  Seconds time;                  ///< wall time of the step
  Bytes peak_bytes;              ///< peak live bytes during the step (persistent values included)
  float loss_scale = 0.0f;       ///< loss scaling: the step's scale (0: off)
  bool skipped = false;          ///< the gradients overflowed: nothing was updated
  float next_loss_scale = 0.0f;  ///< the scale's state after the step
  int64_t good_steps = 0;
  double grad_norm = -1.0;  ///< clipping: the gradients' global norm before clipping (-1: off)
};

/// Memory of an executor, as reported to users and compared with the planner's prediction.
struct MemoryReport {
  Bytes persistent;  ///< parameters and optimizer states
  Bytes peak;        ///< peak live bytes of the last step (kernel workspaces included)
  /// Peak live bytes of the last step without the kernels' workspaces: the buffer plan's own
  /// figure, the same on every device (the backends declare different workspaces).
  Bytes peak_values;
  /// Bytes held by the pool (kCpu), or reserved from the driver by the GPU's caching allocator
  /// (kCuda; the GPU's fixed library workspace for cuBLASLt and cuDNN is not counted).
  Bytes reserved;
};

/// Writes the initial value of persistent value `v` (its InitSpec, drawn from the stream
/// (seed, name, element index)) to `data` (v.shape.numel() floats). Every runtime initialises
/// through it, so a sharded run starts from the same parameters as a single device.
void fill_initial(const graph::Value& v, uint64_t seed, float* data);

/// Runs one graph repeatedly on one device. Persistent values (parameters, optimizer states)
/// live across runs; after each run every alias (source -> updated) replaces the source.
/// With kCuda, call it from the thread that created it (the GPU is made current there).
class Executor {
 public:
  /// Prepares the execution plan and allocates the persistent values; fails on graphs the
  /// kernels cannot run, and (kCuda) without the GPU (kUnavailable, naming why) or without
  /// memory for the persistent values.
  static Expected<std::unique_ptr<Executor>> create(const graph::Graph& g,
                                                    ExecutorOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Fills every persistent value from its InitSpec. Element i of a value named n is drawn from
  /// the counter-based stream (seed, n, i), so the result does not depend on the device layout.
  Status initialize(uint64_t seed);
  /// Overwrites a persistent value (shape and dtype must match); on a GPU, a copy to it.
  Status set_value(ValueId id, const HostTensor& value);
  /// A copy of a persistent value, or of a retained value after a run (from the GPU on kCuda).
  Expected<HostTensor> get_value(ValueId id) const;
  /// The memory of persistent value `id` itself (checkpoints write and read it in place);
  /// an error for any other value, and on a GPU (kUnavailable: its memory is not the host's;
  /// checkpoints of a GPU executor go through get_value/set_value).
  Expected<kernels::TensorView> persistent_view(ValueId id) const;

  /// Runs the graph once with the given data inputs (every kInput value must be given).
  Expected<StepStats> run(const std::vector<std::pair<ValueId, HostTensor>>& inputs);
  /// Runs the graph once for its loss only (validation): every parameter, optimizer state and
  /// step counter keeps its value, and loss scaling is left as it was.
  Expected<StepStats> evaluate(const std::vector<std::pair<ValueId, HostTensor>>& inputs);
  /// The optimizer updates of the runs that follow use lr x `scale` (a schedule's factor).
  void set_lr_scale(float scale) { lr_scale_ = scale; }

  /// Memory figures.
  MemoryReport memory() const;
  /// The GPU's caching allocator counters (kCuda; all zero on the CPU).
  kernels::AllocatorStats gpu_memory_stats() const;
  /// The loss scale's state (null when off), and its restoration from a checkpoint.
  const LossScaler* loss_scaler() const { return scaler_ ? &*scaler_ : nullptr; }
  Status restore_loss_scale(float scale, int64_t good_steps);
  /// kCpu or kCuda, as created.
  kernels::Device device() const { return options_.device; }
  /// Seconds spent per op kind over all runs (when profiling).
  const std::map<graph::OpKind, double>& profile() const { return profile_; }
  const graph::Graph& graph() const { return graph_; }

 private:
  struct Buffer {
    Block block;
    int32_t refs = 0;
    bool workspace = false;  // a kernel's scratch (not counted in peak_values)
  };
  Executor(graph::Graph g, ExecutorOptions options);
  Status plan();
  Expected<int32_t> new_buffer(int64_t bytes, bool workspace = false);
  void unref(int32_t buffer);
  kernels::TensorView view_of(ValueId id) const;
  void release_transients();
  void* data_of(ValueId id) const;
  Status check_finite(const graph::Op& op, std::span<const kernels::TensorView> outputs) const;
  // Loss scaling: whether every parameter gradient of the step is finite.
  // The gradients the optimizer updates read (loss scaling's overflow check, clipping's norm),
  // all held before the first update.
  Expected<std::vector<kernels::TensorView>> update_gradients() const;

  graph::Graph graph_;
  ExecutorOptions options_;
  std::unique_ptr<kernels::GpuDevice> gpu_;  // kCuda: the GPU every buffer lives on
  BufferPool pool_;                          // kCpu: host memory
  int64_t gpu_live_ = 0;                     // kCuda: live and peak bytes of the buffers,
  int64_t gpu_peak_ = 0;                     // rounded as BufferPool rounds them
  int64_t live_values_ = 0;                  // live bytes of buffers other than workspaces
  int64_t peak_values_ = 0;
  std::vector<Buffer> buffers_;
  std::vector<int32_t> free_buffer_ids_;
  std::vector<int32_t> slot_;      // value -> buffer (-1: none)
  std::vector<bool> persistent_;   // parameter or optimizer state
  std::vector<bool> keep_;         // not freed at last use (retained, outputs, aliases)
  std::vector<int64_t> last_use_;  // value -> last op index reading it (-1: none)
  std::vector<std::vector<ValueId>> free_after_;  // op -> values to drop after it
  std::map<ValueId, ValueId> alias_source_of_;    // updated -> source
  std::map<graph::OpKind, double> profile_;
  std::optional<LossScaler> scaler_;
  bool evaluating_ = false;  // evaluate(): the loss only, no state changes
  float lr_scale_ = 1.0f;    // set_lr_scale
  int64_t last_peak_ = 0;
  int64_t last_peak_values_ = 0;
};

}  // namespace meshpipe::runtime

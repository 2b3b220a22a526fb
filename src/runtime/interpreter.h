// The interpreter: executes one device's program (runtime/program.h, flat or in the compact form
// of runtime/compact_program.h) for one training step through the kernel table (kernels/: the
// CPU's column, or a GPU's with InterpreterOptions::device) and the communication interfaces
// (comm/). Buffers come from a per-device pool (host, or the GPU's) that reports peak bytes;
// receives are posted asynchronously and waited for by the first instruction that reads their
// buffer; sends complete before their buffer is freed and before the step ends. Every failure
// names the device, the instruction and the cause.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/transport.h"
#include "core/op_kind.h"
#include "core/status.h"
#include "kernels/gpu.h"
#include "runtime/buffer_pool.h"
#include "runtime/host_tensor.h"
#include "runtime/loss_scale.h"
#include "runtime/program.h"

namespace meshpipe::runtime {

struct CompactProgram;

/// Options of an interpreter.
struct InterpreterOptions {
  /// A receive that waits longer fails with kTimeout (collectives use their group's timeout).
  std::chrono::milliseconds timeout{30000};
  /// Fault injection for tests: the kRun of the op with this name fails (kInternal).
  std::string fail_op;
  /// Fail the first kRun whose f32 outputs hold NaN or Inf, naming the op (--check-numerics).
  bool check_finite = false;
  /// Time every kernel (DeviceStepResult::kernel_seconds), as `meshpipe profile` does to fit
  /// the cost model to what the runtime really spends.
  bool time_kernels = false;
  /// Loss scaling of f16 training (runtime/loss_scale.h). When enabled, the loss gradient's
  /// seed is multiplied by the scale, the optimizers read g / scale, and before its first
  /// optimizer update (or update-phase step count) every device checks the gradients it holds
  /// (and those it sent to another stage's update) for Inf and NaN; the devices of the program
  /// agree over the transport (tags kOverflowUpTag/kOverflowDownTag, gathered at the lowest
  /// device id), and on an overflow every device skips the update (parameters, moments and
  /// step counts stay as they were).
  LossScaleOptions loss_scale;
  /// Global-norm gradient clipping (0: off): at the same point every device adds the squares of
  /// the gradient tiles it counts (each element of the model's gradient once, however the plan
  /// shards and replicates it: runtime/internal/update_agreement.h), the sum is agreed with the
  /// loss-scaling verdict, and the optimizers read g * min(1, max / (norm + 1e-6)) as PyTorch's
  /// clip_grad_norm_ leaves them (DeviceStepResult::grad_norm: the norm before clipping).
  float clip_grad_norm = 0.0f;
  /// Where the buffers live and the kernels run: host memory (kCpu), or the memory of CUDA
  /// device `gpu` (kCuda; create() fails with kUnavailable naming why when it cannot be
  /// opened). On a GPU, kernels, copies and the collectives of NCCL communicators queue on the
  /// GPU's compute stream (DeviceInterpreter::gpu()); the transport moves host memory, so sends
  /// and receives are staged through host copies; the step waits for the GPU before it ends.
  kernels::Device device = kernels::Device::kCpu;
  int gpu = 0;
  /// With kCpu: run host memory through the GPU's code paths (staged transfers, the kernel
  /// table for accumulation and scaling, persistent tiles through host copies) with the CPU
  /// kernels, so that those paths are tested where there is no GPU. Results equal the host's.
  bool staged_host_memory = false;
  /// Overlap of gradient synchronisation with the backward pass: the all-reduces of the
  /// backward and grad-sync phases (fused or single) run on the device's side queue (a GPU's
  /// communication stream) through DeviceLinks::side, each launched right after the last
  /// instruction that touches its buffers (for the grad-sync ones, mostly inside the last
  /// micro-batch's backward pass), and the first
  /// instruction that touches a buffer one writes waits for it (on a GPU the compute stream
  /// waits; the host does not). Without a side queue or side communicators they run in order.
  /// With staged_host_memory a worker thread is the side queue, waiting `staged_side_delay`
  /// before each collective (tests: a reader that does not wait then sees stale data).
  bool overlap_collectives = true;
  std::chrono::microseconds staged_side_delay{0};
};

/// What a device talks through: a communicator per mesh axis whose group has more than one
/// device (group along axis 0: the devices with the same i1, rank i0; along axis 1: same i0,
/// rank i1), and a transport endpoint whose id is the global device id.
struct DeviceLinks {
  comm::Communicator* axis[2] = {nullptr, nullptr};
  comm::Transport* transport = nullptr;
  /// A second communicator of the same groups for collectives on the side queue
  /// (InterpreterOptions::overlap_collectives); null: none, they run in order on axis[].
  comm::Communicator* side[2] = {nullptr, nullptr};
};

/// What one device reports after a step.
struct DeviceStepResult {
  std::vector<std::pair<int32_t, double>> losses;  ///< (micro-batch, loss) from kReportLoss
  int64_t peak_bytes = 0;                          ///< pool peak during the step
  double seconds = 0.0;
  float loss_scale = 0.0f;       ///< the step's loss scale (0: loss scaling off)
  bool skipped = false;          ///< the gradients overflowed: the update was skipped
  float next_loss_scale = 0.0f;  ///< the scale of the next step
  int64_t good_steps = 0;        ///< finite steps since the scale last changed
  double grad_norm = -1.0;       ///< clipping: the global gradient norm (-1: clipping off)
  /// Collectives run on the side queue (InterpreterOptions::overlap_collectives), and of those
  /// the ones launched before their place in the program (overlapping the backward pass).
  int64_t side_collectives = 0;
  int64_t early_collectives = 0;
  /// With InterpreterOptions::time_kernels: seconds in each op kind's kernels, and the number
  /// of kernels run.
  std::map<OpKind, double> kernel_seconds;
  int64_t kernels_run = 0;
  /// With InterpreterOptions::time_kernels: the step's seconds outside the kernels, by what the
  /// device did ("collective all-gather: communicator", "collective all-gather: copies",
  /// "wait for receives", "wait for sends", "run: outside the kernel", "accumulate", ...). With
  /// kernel_seconds they add up to the step's time (up to the loop's own cost).
  std::map<std::string, double> other_seconds;
};

/// Runs one device's program step after step. Persistent buffers live as long as it does.
class DeviceInterpreter {
 public:
  /// Prepares device `device` of `program` (which must outlive it); allocates persistent tiles.
  static Expected<std::unique_ptr<DeviceInterpreter>> create(const Program& program, int32_t device,
                                                             InterpreterOptions options = {});
  /// The same for a program in compact form (runtime/compact_program.h), run template by
  /// template: what the interpreter holds does not grow with the micro-batch count (each
  /// micro-batch's buffers exist only while its tasks run). program() is then the device's
  /// entry in CompactProgram::base, without instructions.
  static Expected<std::unique_ptr<DeviceInterpreter>> create(const CompactProgram& program,
                                                             int32_t device,
                                                             InterpreterOptions options = {});
  ~DeviceInterpreter();
  DeviceInterpreter(const DeviceInterpreter&) = delete;
  DeviceInterpreter& operator=(const DeviceInterpreter&) = delete;

  /// The persistent tile of PersistentTile `i` of the device program (read and write). On a
  /// GPU its host copy: valid after pull_persistent(), written back by push_persistent().
  kernels::TensorView persistent(size_t i) const;
  /// On a GPU: copies every persistent tile to its host copy, or back (no-ops on the host).
  Status pull_persistent() const;
  Status push_persistent();
  /// The GPU (null on the host): its stream is where NCCL communicators of this device queue.
  kernels::GpuDevice* gpu();
  /// Whether gradient all-reduces may run on a side queue (overlap_collectives and the memory
  /// has one): InProcessRun then gives the device side communicators. side_stream(): the GPU's
  /// communication stream (null on the host).
  bool overlaps_collectives() const;
  void* side_stream();
  /// After a failed step: waits for collectives still on the side queue (bounded by their
  /// communicators' timeouts), ignoring their failures, and forgets them. The destructor does
  /// it too; whoever owns the side communicators calls it before destroying them.
  void abandon_side_work();
  const DeviceProgram& program() const { return *program_; }

  /// While on, steps compute the loss (validation) and update nothing: the optimizer updates and
  /// step counters keep their state, and loss scaling's overflow check and scale are skipped.
  void set_evaluating(bool on);
  /// The optimizer updates of the steps that follow use lr x `scale` (a learning-rate
  /// schedule's factor for the step).
  void set_lr_scale(float scale);

  /// Runs one step. `inputs[mb][k]` is data input k (Program::inputs) of micro-batch mb, whole.
  Expected<DeviceStepResult> run_step(const std::vector<std::vector<HostTensor>>& inputs,
                                      const DeviceLinks& links);

  /// Bytes of the persistent tiles.
  int64_t persistent_bytes() const;

  /// The loss scale's state (null when loss scaling is off), and its restoration from a
  /// checkpoint (every device of a job is given the same state).
  const LossScaler* loss_scaler() const;
  Status restore_loss_scale(float scale, int64_t good_steps);

 private:
  struct Impl;
  explicit DeviceInterpreter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  const DeviceProgram* program_ = nullptr;
};

}  // namespace meshpipe::runtime

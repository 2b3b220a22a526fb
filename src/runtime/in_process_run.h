// Running a lowered Program with every device as a thread of this process: one
// DeviceInterpreter per device, communicators per mesh-axis group (in-process or Gloo) and one
// transport endpoint per device (in-process or UCX). The first failure aborts the groups and
// the fabric, so every other device stops at once instead of waiting for a peer that will not
// come; the step returns the root cause, naming device, instruction and cause.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "graph/graph.h"
#include "runtime/compact_program.h"
#include "runtime/host_tensor.h"
#include "runtime/interpreter.h"
#include "runtime/program.h"

namespace meshpipe::runtime {

/// What a process that hosts only some of a program's devices needs from the job's other
/// processes (the cluster layer provides it over its control plane): a store for Gloo's
/// rendezvous, and the exchange of UCX endpoint addresses. Collectives must then be Gloo and
/// the transport UCX.
struct ProcessShare {
  std::vector<int32_t> local_devices;            ///< global ids this process runs
  std::shared_ptr<comm::RendezvousStore> store;  ///< shared by every process of the job
  std::string prefix = "job";                    ///< store keys: distinct per job sharing it
  std::string host = "127.0.0.1";                ///< address Gloo's TCP device binds to
  /// Publishes this process's endpoint addresses (device -> address) and returns every
  /// device's, once every process has published.
  std::function<Expected<std::map<int32_t, std::string>>(const std::map<int32_t, std::string>&)>
      exchange;
};

/// Which communicator runs the collectives of a mesh axis.
enum class CollectiveBackend : uint8_t {
  kInProcess,  ///< "in-process": shared memory between the threads of this process
  kGloo,       ///< "gloo": Gloo's TCP collectives
  kUcx,        ///< "ucx": ring and exchange collectives over the devices' UCX endpoints
  kNccl,       ///< "nccl": NCCL on the devices' GPUs (InProcessRunOptions::device kCuda)
};
/// Which transport moves tensors between stages.
enum class TransportKind : uint8_t {
  kInProcess,  ///< "in-process": a copy between the threads of this process
  kUcx,        ///< "ucx": UCX tag messages
};
/// "in-process", "gloo", "ucx", "nccl"; "in-process", "ucx".
const char* collective_backend_name(CollectiveBackend backend);
const char* transport_kind_name(TransportKind kind);
/// Parse those names; errors list the known ones.
Expected<CollectiveBackend> parse_collective_backend(std::string_view text);
Expected<TransportKind> parse_transport_kind(std::string_view text);

/// Options of an in-process run.
struct InProcessRunOptions {
  /// With a ProcessShare, Gloo or UCX applies to the groups that span processes (two levels
  /// where they allow); a group whose devices are all in this process always uses shared memory.
  /// Without one, every group runs on the backend named (UCX needs the UCX transport).
  CollectiveBackend collectives = CollectiveBackend::kInProcess;
  TransportKind transport = TransportKind::kInProcess;
  std::chrono::milliseconds timeout{30000};  ///< collectives and receives
  InterpreterOptions interpreter;            ///< timeout, device and gpu are taken from here
  /// kCpu: buffers in host memory. kCuda: each device of this process on a GPU, the ordinal its
  /// index among this process's devices (ascending) modulo the machine's GPUs (with fewer GPUs
  /// than devices they share: fine for pipeline stages, which talk through the transport, but
  /// NCCL refuses two ranks of one group on one GPU); collectives must be kNccl (communicators
  /// on each GPU's compute stream, ids exchanged through the store), transfers between stages
  /// staged through host memory.
  kernels::Device device = kernels::Device::kCpu;
  int32_t fail_device = -1;  ///< with interpreter.fail_op: the device whose kernel fails
  /// Null: every device runs here. Else only share->local_devices (one process of a job).
  std::shared_ptr<const ProcessShare> share;
  /// Give BLAS (process-wide) cores / devices threads while the run lives, when it runs more
  /// than one device; false: the caller decides (a service running several jobs at once).
  bool set_blas_threads = true;
  Status validate() const;
};

/// One training step of the whole program.
struct RunStepResult {
  double loss = 0.0;                ///< mean of the micro-batch losses
  std::vector<double> losses;       ///< per micro-batch
  double seconds = 0.0;             ///< wall time of the step
  std::vector<int64_t> peak_bytes;  ///< per global device id (0 for unused devices)
  /// With InterpreterOptions::time_kernels: kernel seconds per op kind and kernels run, summed
  /// over this process's devices.
  std::map<OpKind, double> kernel_seconds;
  int64_t kernels_run = 0;
  std::map<std::string, double> other_seconds;  ///< DeviceStepResult::other_seconds, summed
  float loss_scale = 0.0f;                      ///< the step's loss scale (0: loss scaling off)
  bool skipped = false;                         ///< the gradients overflowed and no device updated
  float next_loss_scale = 0.0f;                 ///< the scale's state after the step
  int64_t good_steps = 0;
  double grad_norm = -1.0;  ///< clipping: the global gradient norm before clipping (-1: off)
  /// DeviceStepResult::side_collectives and early_collectives, summed over this process's
  /// devices (gradient all-reduces overlapped with the backward pass).
  int64_t side_collectives = 0;
  int64_t early_collectives = 0;
};

/// A Program running on threads of this process.
class InProcessRun {
 public:
  /// Creates interpreters, communicators and transport endpoints for every device of
  /// `program`; `g` is the training graph it was lowered from (for names and initial values).
  static Expected<std::unique_ptr<InProcessRun>> create(Program program, const graph::Graph& g,
                                                        InProcessRunOptions options = {});
  /// The same for a program in compact form (lower_compact): each device runs its templates
  /// (DeviceInterpreter), so the lowered program held does not grow with the micro-batch count.
  static Expected<std::unique_ptr<InProcessRun>> create(CompactProgram program,
                                                        const graph::Graph& g,
                                                        InProcessRunOptions options = {});
  ~InProcessRun();
  InProcessRun(const InProcessRun&) = delete;
  InProcessRun& operator=(const InProcessRun&) = delete;

  /// Fills every persistent tile with its value's initial value (executor.h fill_initial), so
  /// the run starts from the parameters a single device would.
  Status initialize(uint64_t seed);

  /// Runs one step. `micro_batches[mb][k]` is data input k (Program::inputs) of micro-batch mb.
  Expected<RunStepResult> step(const std::vector<std::vector<HostTensor>>& micro_batches);
  /// Runs one step for its loss only (validation): every device's parameters, optimizer states,
  /// step counters and loss scale keep their values (DeviceInterpreter::set_evaluating).
  Expected<RunStepResult> evaluate(const std::vector<std::vector<HostTensor>>& micro_batches);
  /// Turns evaluation on or off for the steps that follow on every device of this process
  /// (whoever runs them: step(), or run_device from stage actors).
  void set_evaluating(bool on);
  /// The optimizers' learning rate of the steps that follow, times `scale`, on every device of
  /// this process (DeviceInterpreter::set_lr_scale).
  void set_lr_scale(float scale);

  /// Runs device `device`'s part of one step on the calling thread (a stage actor calls this
  /// on its own thread; step() runs every device this way). A failure aborts the run, so the
  /// other devices stop too, and is returned naming device, instruction and cause.
  Expected<DeviceStepResult> run_device(int32_t device,
                                        const std::vector<std::vector<HostTensor>>& micro_batches);

  /// The step's result from every used device's result (losses come from the loss device).
  Expected<RunStepResult> combine(const std::vector<std::pair<int32_t, DeviceStepResult>>& results,
                                  double seconds) const;

  /// Stops every device: blocked collectives and receives fail with kUnavailable naming
  /// `reason`, and later steps fail at once.
  void abort(const std::string& reason);

  /// Global ids of the devices that have a program.
  std::vector<int32_t> devices() const;
  /// The loss scale's state (scale, finite steps since it changed) of this process's devices
  /// (all equal), or nullopt when loss scaling is off; and its restoration (checkpoints).
  std::optional<std::pair<float, int64_t>> loss_scale_state() const;
  Status restore_loss_scale(float scale, int64_t good_steps);

  /// A persistent tile of one device, readable and writable (checkpoints).
  struct TileView {
    int32_t device = -1;
    const PersistentTile* tile = nullptr;
    kernels::TensorView view;
  };
  /// Every persistent tile of every device (on GPUs their host copies: pull_persistent() first,
  /// and push_persistent() after writing them).
  std::vector<TileView> persistent_tiles() const;
  Status pull_persistent() const;
  Status push_persistent();

  /// The whole persistent value `name`, assembled from its owner stage's tiles.
  Expected<HostTensor> read_value(const std::string& name) const;

  /// The program; for a compact one its CompactProgram::base (devices without instructions).
  const Program& program() const;
  /// Distinct for every run this process creates (never 0).
  uint64_t id() const;

 private:
  struct Impl;
  explicit InProcessRun(std::unique_ptr<Impl> impl);
  static Expected<std::unique_ptr<InProcessRun>> start(std::unique_ptr<Impl> impl,
                                                       const graph::Graph& g,
                                                       InProcessRunOptions options);
  std::unique_ptr<Impl> impl_;
};

/// Splits whole-batch data inputs into `micro_batches` equal parts along dim 0, in the order of
/// `names` (Program::inputs). Errors name an input that is missing or does not divide.
Expected<std::vector<std::vector<HostTensor>>> split_micro_batches(
    const graph::Graph& g, const std::vector<std::pair<ValueId, HostTensor>>& batch,
    const std::vector<std::string>& names, int64_t micro_batches);

}  // namespace meshpipe::runtime

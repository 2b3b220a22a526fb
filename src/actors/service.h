// The embedded training service: what a C++ program links to host meshpipe's runtime and train
// models inside itself. It owns a pool of CPU virtual devices; each submitted job (a model of
// the zoo, an imported ONNX file, or the program's own graph builder, with a cluster to plan
// for or a plan) waits until enough devices of the pool are free, takes them (jobs never share
// a device), is planned, built and trained on its own thread (stage actors of its own actor
// runtime, or one thread per device), and hands the devices back when it ends. The program
// follows each job through events (queued, planned, step, validation, checkpoint, finished,
// failed, cancelled) delivered to a callback, and may cancel a job at any time (a queued one
// ends at once, a running one after its current step, saving a checkpoint when it saves).
//
// A program with its own CAF actor system turns the events into actor messages from the
// callback (examples/service does: caf::anon_send to its own actor); the service's actor
// systems are its own and do not touch the program's. This header is CAF-free.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "planner/plan.h"
#include "train/job.h"

namespace meshpipe::actors {

/// What a job's events say.
enum class JobEventKind : uint8_t {
  kQueued,      ///< accepted; waiting for devices (always the first event)
  kPlanned,     ///< devices taken and a plan made (or checked): `devices`, `text` (the plan)
  kStep,        ///< a step ended: `step`, `loss`, `seconds`, `grad_norm`
  kValidation,  ///< a validation pass after `step`: `loss`
  kCheckpoint,  ///< a checkpoint of `step` written to `text` (the folder)
  kFinished,    ///< every step ran: `step` (the last), `loss` (its loss)
  kFailed,      ///< the job stopped on an error: `text` says which and why
  kCancelled,   ///< cancel(): `step` (the last finished, 0 when none), `text` what was saved
};

/// "queued", "planned", "step", "validation", "checkpoint", "finished", "failed", "cancelled".
const char* job_event_name(JobEventKind kind);

/// One event of one job. The events of a job come in order, from the job's own thread; the
/// last is kFinished, kFailed or kCancelled.
struct JobEvent {
  int64_t job = 0;     ///< the id submit() returned
  std::string name{};  ///< the job's name
  JobEventKind kind = JobEventKind::kQueued;
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0.0;
  double seconds = 0.0;            ///< kStep: the step's wall time
  double grad_norm = -1;           ///< kStep with clipping: the gradient norm before clipping
  std::vector<int32_t> devices{};  ///< kPlanned: the pool devices the job runs on
  std::string text{};
};

/// How a job's devices run.
enum class JobRunner : uint8_t {
  kAuto,     ///< actors, unless the model is the program's own graph builder (threads)
  kActors,   ///< mesh-group and stage actors of an actor runtime of the job's own
  kThreads,  ///< one thread per device (no actors)
};

/// A training job.
struct ServiceJob {
  std::string name;  ///< for events and errors; empty: "job N"
  /// The model (ModelSpec: a zoo entry from graph::models::find_model, an ONNX file from
  /// train::model_from_file, or the program's own graph: an ExternalConfig whose `build`
  /// returns its forward graph at a batch), global batch, optimizer, schedule, clipping, data.
  train::JobSpec spec;
  /// The cluster to plan for: a preset ("cpu:1x2") or a cluster JSON file. Its device count
  /// is what the job takes from the pool. Ignored when `plan` is given.
  std::string cluster = "cpu:1x1";
  std::optional<planner::Plan> plan;  ///< a plan made earlier (its devices are taken)
  train::PlanRequest request;         ///< micro-batches, schedule, recomputation when planning
  int64_t steps = 10;
  int64_t val_every = 0;  ///< validation after every N-th step and the last (token data)
  int64_t val_batches = 4;
  std::string save_dir;  ///< checkpoints here (after the last step, every save_every steps)
  int64_t save_every = 0;
  std::string load_dir;  ///< resume from this checkpoint
  JobRunner runner = JobRunner::kAuto;
};

/// Options of the service.
struct ServiceOptions {
  /// The CPU virtual devices the service shares out: a job runs only when its devices are
  /// free, so the jobs running at once never use more than this many, and never the same one.
  int32_t devices = 4;
  /// Every event of every job (called from the jobs' threads, never two at once, so it need not
  /// lock). It may submit and cancel jobs, and even destroy the service; it must not wait() for
  /// a job of this service. What it throws ends that job as failed (kInternal).
  std::function<void(const JobEvent&)> on_event;
  /// A step (of a job with several devices) that takes longer is an error.
  std::chrono::milliseconds step_timeout{120000};
  Status validate() const;
};

/// How a job ended.
struct JobOutcome {
  JobEventKind kind = JobEventKind::kFinished;  ///< kFinished, kFailed or kCancelled
  Status status{};                              ///< ok when finished
  std::vector<double> losses{};                 ///< one per step run
  int64_t last_step = 0;
};

/// The service (thread-safe: submit, cancel and wait may be called from any thread).
class TrainingService {
 public:
  static Expected<std::unique_ptr<TrainingService>> create(ServiceOptions options);
  /// Cancels every job that has not ended and waits for them (all but the calling one, when
  /// destroyed from a job's callback: that job's thread ends by itself).
  ~TrainingService();
  TrainingService(const TrainingService&) = delete;
  TrainingService& operator=(const TrainingService&) = delete;

  /// Checks the job (its spec; the cluster or plan and its device count against the pool) and
  /// queues it; the id names it in events, cancel() and wait(). Jobs take devices in the order
  /// they were submitted. Errors: a job that could never run here (more devices than the pool,
  /// a cluster or plan of GPUs, an invalid spec or cluster), or a service shutting down.
  Expected<int64_t> submit(ServiceJob job);
  /// Asks job `id` to stop (see JobEventKind::kCancelled); an unknown id is an error, a job
  /// that has ended is left as it is.
  Status cancel(int64_t id);
  /// Waits until job `id` ends. The service remembers the outcomes of the last 1024 jobs that
  /// ended (older ids are kNotFound).
  Expected<JobOutcome> wait(int64_t id);
  /// Pool devices free now.
  int32_t free_devices() const;

 private:
  struct Impl;
  explicit TrainingService(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with the jobs' threads
};

}  // namespace meshpipe::actors

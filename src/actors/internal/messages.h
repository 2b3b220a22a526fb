// The JSON payloads of the protocol's job, step and save messages (private to actors/): built
// and read in one place, read without exceptions, every field named in errors.
//
//   job      {"spec": <JobSpec JSON>, "plan": <plan JSON>, "timeout_ms": 30000, "load": ""}
//   job info {"program": "0f3c...", "devices": 2, "instructions": 1836, "first_step": 1,
//             "schedule": "1f1b"}
//   step     {"losses": [4.16, 4.11], "seconds": 0.004, "peaks": [[0, 416064], [1, 416064]]}
//            (+ "loss_scale": 65536, "skipped": false under f16 loss scaling; "grad_norm": 1.7
//            with clipping)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/status.h"
#include "planner/plan.h"
#include "runtime/in_process_run.h"
#include "train/job.h"
#include "train/step_runner.h"

namespace meshpipe::actors::internal {

/// What every node needs to build the same program.
struct JobMessage {
  train::JobSpec spec;
  planner::Plan plan;
  std::chrono::milliseconds timeout{30000};  ///< collectives and transfers inside a step
  std::string load_dir;                      ///< resume from this checkpoint ("" for none)
  bool time_kernels = false;                 ///< report where each step's time goes (--breakdown)
  /// Collectives of the groups that span nodes: UCX (the default) or Gloo, never in-process.
  runtime::CollectiveBackend collectives = runtime::CollectiveBackend::kUcx;
};
std::string job_message_to_json(const JobMessage& job);
Expected<JobMessage> job_message_from_json(const std::string& text);

/// What a node built for a job.
struct JobInfo {
  std::string program;       ///< the lowered program's fingerprint (hex)
  int64_t devices = 0;       ///< devices with a program, in the whole job
  int64_t instructions = 0;  ///< per step, in the whole job
  int64_t first_step = 1;    ///< 1, or the resumed checkpoint's step + 1
  planner::Schedule schedule = planner::Schedule::k1F1B;
};
JobInfo job_info(const train::LocalJob& job);
std::string job_info_to_json(const JobInfo& info);
Expected<JobInfo> job_info_from_json(const Json& j, const std::string& path);

/// A node's part of a step (with its time breakdown when the job times its kernels).
std::string step_report_to_json(const train::StepOutcome& outcome);
/// The step of the whole job from every node's report (a JSON array): the losses of the node
/// that holds the loss device, every device's peak, the slowest node's seconds.
Expected<train::StepOutcome> merge_step_reports(const std::string& text);

}  // namespace meshpipe::actors::internal

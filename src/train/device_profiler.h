// profile_devices: measures the devices at hand with the real backends and writes what the cost
// model needs (mesh::DeviceProfile): GEMM and memory-bound kernel times, the slowdown when the
// cluster's devices compute at once, collectives on the communicator in use per group size,
// transfers on the transport in use, and the runtime's fixed cost per op (fitted on a measured
// training step). `meshpipe profile` writes it; `plan`, `compare`, `simulate` and `train` read it
// with --profile.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/status.h"
#include "mesh/cluster.h"
#include "mesh/device_profile.h"
#include "runtime/in_process_run.h"

namespace meshpipe::train {

/// What profile_devices measures and how long it may take.
struct DeviceProfileOptions {
  /// Fewer sizes, models and repetitions (a few seconds instead of about twenty): tests, a
  /// first look.
  bool quick = false;
  /// The communicator and transport the runs to be predicted use (as `meshpipe train`'s
  /// --collectives and --transport). Gloo is measured as a job of one meshpipe-node per host
  /// runs it: groups inside a host in shared memory, across hosts over Gloo, in two levels when
  /// a group has 2 or more devices on each host it spans (runtime/in_process_run.cc).
  runtime::CollectiveBackend collectives = runtime::CollectiveBackend::kInProcess;
  runtime::TransportKind transport = runtime::TransportKind::kInProcess;
  /// Called as measurement goes: phase ("gemm", "collectives", ...), done and total steps of it.
  std::function<void(const std::string& phase, int64_t done, int64_t total)> progress;
};

/// Measures this machine for `cluster` (its device kind must be "cpu": the CPU backend is the
/// only one that runs today; an accelerator cluster is an error saying so). Group sizes of
/// collectives go up to the cluster's device count (a CPU cluster's virtual devices all live on
/// this machine, so both links get the same tables), concurrency up to its device count. Every
/// kernel runs on the BLAS threads the runtime gives one device of `cluster` (cores / devices).
/// Op-kind factors and the runtime's cost per kernel come from the runtime's own steps
/// (LocalJob, cpu:1x1, kernels timed by the interpreter) of the CPU benchmark models (quick:
/// gpt-tiny). Errors: a communicator or transport that cannot be built, a failed step.
Expected<mesh::DeviceProfile> profile_devices(const mesh::ClusterSpec& cluster,
                                              const DeviceProfileOptions& options = {});

/// `cluster` with `profile` attached (ClusterSpec::profile), read from `path`; errors name the
/// file and field.
Expected<mesh::ClusterSpec> with_profile(mesh::ClusterSpec cluster, const std::string& path);

}  // namespace meshpipe::train

// `meshpipe bench scaling --run`: weak scaling measured on this machine's CPU devices, each
// device a `meshpipe-node` process joined through a coordinator in this process.
#pragma once

#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include "core/status.h"
#include "train/scaling.h"

namespace meshpipe::cli {

/// The points --run measures: a suite file's points up to `max_devices`; for a built-in suite,
/// its family's CPU benchmark model (gpt-cpu, moe-cpu, wresnet-cpu) on 1, 2, 4, ... devices up
/// to `max_devices`, the global batch the model's times the devices (weak scaling).
Expected<std::vector<train::ScalingPoint>> measured_points(
    const std::string& suite, const std::vector<train::ScalingPoint>& listed, bool builtin,
    int32_t max_devices);

/// Measures one point: a coordinator on loopback, point.devices `meshpipe-node` processes of
/// one CPU device each, each pinned to a core of its own when there are enough (the binary beside
/// this one; their output in `logs`/MODEL-D-devices-nodeK.log), the job planned for the cluster
/// they form and trained for `steps` steps; the result's "meshpipe" row holds the median step time
/// after the first step, the plan's estimate, the throughput and the largest device peak. Mode
/// "run", cluster "this machine". Every node process is ended and reaped before it returns; `stop`
/// (a signal) ends the session early (kCancelled).
Expected<train::PointResult> measure_point(const std::string& suite,
                                           const train::ScalingPoint& point, int steps,
                                           const std::filesystem::path& logs,
                                           const std::atomic<bool>& stop);

}  // namespace meshpipe::cli

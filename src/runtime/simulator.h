// The simulated backend: runs the same device programs as the interpreter, with a clock per
// device driven by the cost model instead of kernels. An op takes the cost model's time for its
// tiles (roofline, or the profile database the plan was made with); a collective waits for the
// last member of its group, then takes its alpha-beta time; a transfer leaves when its sender
// reaches the send (each sender's link carries one message at a time) and arrives after the
// link's latency plus bytes / bandwidth (intra- or inter-host); tile copies run at memory
// bandwidth. Buffers are allocated at their first write and released at kFree, and a kernel's
// scratch (LocalOp::workspace_bytes) counts while it runs, giving memory over time. The result is
// the predicted step time, per-device busy time and peak memory, the bubble fraction and, on
// request, a Chrome trace (chrome://tracing, Perfetto).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "mesh/cluster.h"
#include "planner/cost_model.h"
#include "runtime/compact_program.h"
#include "runtime/program.h"

namespace meshpipe::runtime {

/// Options of simulate().
struct SimulationOptions {
  bool trace = false;  ///< build the Chrome trace JSON (spans per instruction, memory counters)
  bool memory_timeline = false;  ///< keep (time, live bytes) per device
  /// Prices each op's work (LocalOp::work): a profile database, or null for the cluster's model
  /// (runtime::cost_model_for, which also sizes every buffer as the device's allocator does).
  const planner::CostModel* cost = nullptr;
  /// Every message between meshes (kSend) priced as a one-byte signal, its link's latency
  /// alone: the upper bound of cross-mesh resharding (Alpa's "signal send/recv", Fig. 11).
  bool signal_transfers = false;
};

/// What one device did in the simulated step.
struct SimulatedDevice {
  int32_t device = -1;
  int32_t stage = 0;
  double end = 0.0;         ///< seconds when its last instruction finished
  double compute = 0.0;     ///< seconds running ops and tile copies
  double collective = 0.0;  ///< seconds inside collectives (after the group met)
  double waiting = 0.0;     ///< seconds blocked on a receive or a collective's group
  int64_t peak_bytes = 0;   ///< persistent tiles included
  std::vector<std::pair<double, int64_t>> memory;  ///< (seconds, live bytes) when asked
};

/// The simulated step.
struct SimulationResult {
  double step_time = 0.0;  ///< the last device's end
  /// Mean over the used devices of the share of the step they are idle (waiting for a receive,
  /// a slower group member, or the end of the step): pipeline bubbles and load imbalance.
  double bubble_fraction = 0.0;
  std::vector<SimulatedDevice> devices;  ///< used devices, by global id order
  std::string trace_json;                ///< when SimulationOptions::trace
};

/// Simulates one training step of `program` on `cluster` (whose links time the transfers).
/// Errors: a program that deadlocks (names the blocked devices and instructions).
Expected<SimulationResult> simulate(const Program& program, const mesh::ClusterSpec& cluster,
                                    const SimulationOptions& options = {});

/// The same for a compact program (runtime/compact_program.h): the same result as simulating
/// expand(program), in memory that does not grow with the instruction count.
Expected<SimulationResult> simulate(const CompactProgram& program, const mesh::ClusterSpec& cluster,
                                    const SimulationOptions& options = {});

/// Each device's peak memory in a step of `program` (indexed by global device id; 0 where a
/// device has no program), counted as simulate() counts it: persistent tiles, every buffer from
/// its first write to its kFree in program order, a kernel's scratch while it runs, each sized by
/// the cluster's allocator (runtime::cost_model_for). Needs no clock, so it is cheaper than a
/// simulation and gives the same peaks.
std::vector<int64_t> peak_memory(const CompactProgram& program, const mesh::ClusterSpec& cluster);

}  // namespace meshpipe::runtime

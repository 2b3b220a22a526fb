// Single-device executor: runs a graph (forward-only or a full training step) through the CPU
// kernels, freeing each buffer after its last use, running elementwise and update ops in place
// when the input dies there, and reporting peak memory.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "core/units.h"
#include "graph/graph.h"
#include "runtime/buffer_pool.h"
#include "runtime/host_tensor.h"

namespace meshpipe::runtime {

/// Options of an Executor.
struct ExecutorOptions {
  std::vector<ValueId> retain;  ///< values kept after their last use, readable after run()
  bool profile = false;         ///< accumulate time per op kind
  bool check_finite = false;    ///< fail a step when an op writes NaN or Inf (names the op)
};

/// What one step measured.
struct StepStats {
  double loss = 0.0;  ///< the graph's first output (when it is a scalar)
  Seconds time;       ///< wall time of the step
  Bytes peak_bytes;   ///< peak live bytes during the step (persistent values included)
};

/// Memory of an executor, as reported to users and compared with the planner's prediction.
struct MemoryReport {
  Bytes persistent;  ///< parameters and optimizer states
  Bytes peak;        ///< peak live bytes of the last step
  Bytes reserved;    ///< bytes held by the pool
};

/// Writes the initial value of persistent value `v` (its InitSpec, drawn from the stream
/// (seed, name, element index)) to `data` (v.shape.numel() floats). Every runtime initialises
/// through it, so a sharded run starts from the same parameters as a single device.
void fill_initial(const graph::Value& v, uint64_t seed, float* data);

/// Runs one graph repeatedly on the host. Persistent values (parameters, optimizer states)
/// live across runs; after each run every alias (source -> updated) replaces the source.
class Executor {
 public:
  /// Prepares the execution plan; fails on graphs the CPU kernels cannot run.
  static Expected<std::unique_ptr<Executor>> create(const graph::Graph& g,
                                                    ExecutorOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Fills every persistent value from its InitSpec. Element i of a value named n is drawn from
  /// the counter-based stream (seed, n, i), so the result does not depend on the device layout.
  Status initialize(uint64_t seed);
  /// Overwrites a persistent value (shape and dtype must match).
  Status set_value(ValueId id, const HostTensor& value);
  /// A copy of a persistent value, or of a retained value after a run.
  Expected<HostTensor> get_value(ValueId id) const;
  /// The memory of persistent value `id` itself (checkpoints write and read it in place);
  /// an error for any other value.
  Expected<kernels::TensorView> persistent_view(ValueId id) const;

  /// Runs the graph once with the given data inputs (every kInput value must be given).
  Expected<StepStats> run(const std::vector<std::pair<ValueId, HostTensor>>& inputs);

  /// Memory figures.
  MemoryReport memory() const;
  /// Seconds spent per op kind over all runs (when profiling).
  const std::map<graph::OpKind, double>& profile() const { return profile_; }
  const graph::Graph& graph() const { return graph_; }

 private:
  struct Buffer {
    Block block;
    int32_t refs = 0;
  };
  Executor(graph::Graph g, ExecutorOptions options);
  Status plan();
  int32_t new_buffer(int64_t bytes);
  void unref(int32_t buffer);
  kernels::TensorView view_of(ValueId id) const;
  void release_transients();

  graph::Graph graph_;
  ExecutorOptions options_;
  BufferPool pool_;
  std::vector<Buffer> buffers_;
  std::vector<int32_t> free_buffer_ids_;
  std::vector<int32_t> slot_;      // value -> buffer (-1: none)
  std::vector<bool> persistent_;   // parameter or optimizer state
  std::vector<bool> keep_;         // not freed at last use (retained, outputs, aliases)
  std::vector<int64_t> last_use_;  // value -> last op index reading it (-1: none)
  std::vector<std::vector<ValueId>> free_after_;  // op -> values to drop after it
  std::map<ValueId, ValueId> alias_source_of_;    // updated -> source
  std::map<graph::OpKind, double> profile_;
  int64_t last_peak_ = 0;
};

}  // namespace meshpipe::runtime

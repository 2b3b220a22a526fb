// The single-device training loop.
#include "runtime/trainer.h"

#include <algorithm>
#include <cmath>

#include "graph/cost.h"
#include "graph/training_graph.h"
#include "kernels/device.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {

Status TrainOptions::validate() const {
  if (steps < 1) return make_error(Errc::kInvalidArgument, "steps must be >= 1, got {}", steps);
  if (batch < 0) return make_error(Errc::kInvalidArgument, "batch must be >= 1, got {}", batch);
  return optimizer.validate();
}

Expected<TrainSummary> train_single_device(const graph::models::ModelSpec& spec,
                                           const TrainOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  graph::models::BuildOptions build;
  build.batch = options.batch;
  build.dtype = DType::kF32;
  MP_ASSIGN_OR_RETURN(graph::ForwardGraph fwd, graph::models::build_model(spec, build));
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                      graph::make_training_graph(std::move(fwd), options.optimizer));
  ExecutorOptions eo;
  eo.check_finite = options.check_finite;
  MP_ASSIGN_OR_RETURN(auto exec, Executor::create(tg.graph, eo));
  MP_RETURN_IF_ERROR(exec->initialize(options.seed));
  MP_ASSIGN_OR_RETURN(SyntheticData data, SyntheticData::create(tg.graph, tg.inputs, options.seed));

  TrainSummary summary;
  summary.parameter_count = graph::parameter_count(tg.graph);
  if (options.on_start) {
    RunInfo info;
    for (const graph::Op& op : tg.graph.ops()) {
      switch (op.phase) {
        case graph::OpPhase::kForward:
          ++info.forward_ops;
          break;
        case graph::OpPhase::kBackward:
          ++info.backward_ops;
          break;
        case graph::OpPhase::kUpdate:
          ++info.update_ops;
          break;
      }
    }
    const graph::GraphCost cost = graph::graph_cost(tg.graph);
    info.layers = tg.graph.num_layers();
    info.flops_per_step = cost.total();
    info.parameter_count = cost.parameter_count;
    info.parameter_bytes = cost.parameter_bytes;
    info.optimizer_state_bytes = cost.optimizer_state_bytes;
    info.device = "1 CPU device (" + kernels::device_inventory().summary + ")";
    options.on_start(info);
  }
  for (int64_t step = 1; step <= options.steps; ++step) {
    auto batch = data.next_batch();
    MP_ASSIGN_OR_RETURN(StepStats st, exec->run(batch));
    if (!std::isfinite(st.loss)) {
      return make_error(Errc::kInternal,
                        "step {}: the loss is {}; lower the learning rate (now {}) or run with "
                        "--check-numerics to find the first op that produced it",
                        step, st.loss, options.optimizer.lr);
    }
    summary.losses.push_back(st.loss);
    summary.total_time += st.time;
    summary.peak_bytes = std::max(summary.peak_bytes, st.peak_bytes);
    if (options.on_step) {
      StepReport r;
      r.step = step;
      r.total_steps = options.steps;
      r.loss = st.loss;
      r.time = st.time;
      const double secs = std::max(st.time.value(), 1e-12);
      r.samples_per_second = static_cast<double>(data.samples_per_batch()) / secs;
      r.tokens_per_second = static_cast<double>(data.tokens_per_batch()) / secs;
      r.peak = st.peak_bytes;
      options.on_step(r);
    }
  }
  summary.persistent_bytes = exec->memory().persistent;
  return summary;
}

}  // namespace meshpipe::runtime

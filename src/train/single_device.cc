// SingleDeviceJob: the executor as a StepRunner.
#include "train/single_device.h"

#include <fmt/format.h>

#include "graph/cost.h"
#include "graph/models/zoo_training.h"
#include "kernels/device.h"
#include "train/job.h"

namespace meshpipe::train {

Expected<std::unique_ptr<SingleDeviceJob>> SingleDeviceJob::create(const JobSpec& spec) {
  MP_RETURN_IF_ERROR(spec.validate());
  std::unique_ptr<SingleDeviceJob> job(new SingleDeviceJob());
  job->spec_ = spec;
  MP_ASSIGN_OR_RETURN(job->graph_,
                      graph::models::zoo_training_graph(spec.model, spec.batch(), spec.optimizer));
  MP_RETURN_IF_ERROR(check_fits_host_memory(
      job->graph_.graph, 1,
      fmt::format("training {} with a batch of {}", spec.model.name, spec.batch())));
  runtime::ExecutorOptions eo;
  eo.check_finite = spec.check_finite;
  MP_ASSIGN_OR_RETURN(job->exec_, runtime::Executor::create(job->graph_.graph, eo));
  MP_RETURN_IF_ERROR(job->exec_->initialize(spec.seed));
  MP_ASSIGN_OR_RETURN(
      runtime::SyntheticData data,
      runtime::SyntheticData::create(job->graph_.graph, job->graph_.inputs, spec.seed));
  job->data_.emplace(std::move(data));
  return job;
}

Expected<StepOutcome> SingleDeviceJob::run_step(int64_t step) {
  if (step < 1) return make_error(Errc::kInvalidArgument, "step {} is not positive", step);
  data_->seek(step - 1);
  MP_ASSIGN_OR_RETURN(runtime::StepStats st, exec_->run(data_->next_batch()));
  StepOutcome out;
  out.loss = st.loss;
  out.losses = {st.loss};
  out.seconds = st.time.value();
  out.peak_bytes[0] = st.peak_bytes.value();
  return out;
}

Status SingleDeviceJob::save_checkpoint(const std::string& dir,
                                        const runtime::CheckpointInfo& info) {
  const graph::Graph& g = graph_.graph;
  std::vector<runtime::TileRef> tiles;
  for (int64_t v = 0; v < g.num_values(); ++v) {
    const ValueId id(static_cast<int32_t>(v));
    const graph::Value& val = g.value(id);
    if (val.role != graph::ValueRole::kParameter && val.role != graph::ValueRole::kOptimizerState) {
      continue;
    }
    MP_ASSIGN_OR_RETURN(kernels::TensorView view, exec_->persistent_view(id));
    std::vector<mesh::DimRange> whole;
    for (int64_t d = 0; d < val.shape.rank(); ++d) whole.push_back({0, val.shape[d]});
    tiles.push_back({/*device=*/0, val.name, std::move(whole), view});
  }
  return runtime::save_checkpoint_with(dir, info, [&](const std::string& partial) {
    return runtime::write_tiles(tiles, g, partial);
  });
}

RunInfo SingleDeviceJob::info() const {
  RunInfo info;
  for (const graph::Op& op : graph_.graph.ops()) {
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
  const graph::GraphCost cost = graph::graph_cost(graph_.graph);
  info.layers = graph_.graph.num_layers();
  info.flops_per_step = cost.total();
  info.parameter_count = cost.parameter_count;
  info.parameter_bytes = cost.parameter_bytes;
  info.optimizer_state_bytes = cost.optimizer_state_bytes;
  info.device = "1 CPU device (" + kernels::device_inventory().summary + ")";
  return info;
}

}  // namespace meshpipe::train

// SingleDeviceJob: the executor as a StepRunner, on the CPU or one GPU.
#include "train/single_device.h"

#include <fmt/format.h>

#include "graph/cost.h"
#include "graph/models/zoo_training.h"
#include "kernels/device.h"
#include "train/job.h"

namespace meshpipe::train {

std::string single_device_label(const SingleDeviceOptions& options) {
  if (options.device == kernels::Device::kCpu) return "1 CPU device";
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (options.gpu < 0 || options.gpu >= static_cast<int>(inv.gpus.size())) {
    return fmt::format("1 GPU (CUDA device {})", options.gpu);
  }
  const kernels::GpuInfo& g = inv.gpus[static_cast<size_t>(options.gpu)];
  return fmt::format("1 GPU: {} ({}, sm_{}{})", g.name, format_bytes(Bytes(g.memory_bytes)),
                     g.major, g.minor);
}

Expected<std::unique_ptr<SingleDeviceJob>> SingleDeviceJob::create(
    const JobSpec& spec, const SingleDeviceOptions& options) {
  MP_RETURN_IF_ERROR(spec.validate());
  if (!options.load_dir.empty()) {  // a bad checkpoint fails before anything is built
    MP_ASSIGN_OR_RETURN(runtime::CheckpointInfo info,
                        runtime::read_checkpoint_info(options.load_dir));
    if (info.model != spec.model.name) {
      return make_error(Errc::kInvalidArgument, "checkpoint {} is of model '{}', not '{}'",
                        options.load_dir, info.model, spec.model.name);
    }
  }
  std::unique_ptr<SingleDeviceJob> job(new SingleDeviceJob());
  job->spec_ = spec;
  job->options_ = options;
  MP_ASSIGN_OR_RETURN(job->graph_, graph::models::zoo_training_graph(
                                       spec.model, spec.batch(), spec.optimizer, spec.precision));
  // On a GPU the values live in its memory: its caching allocator names a request that does not
  // fit (the host holds copies of host-side values only, one at a time).
  if (options.device == kernels::Device::kCpu) {
    MP_RETURN_IF_ERROR(check_fits_host_memory(
        job->graph_.graph, 1,
        fmt::format("training {} with a batch of {}", spec.model.name, spec.batch())));
  }
  runtime::ExecutorOptions eo;
  eo.check_finite = spec.check_finite;
  eo.loss_scale = spec.loss_scale;
  eo.clip_grad_norm = static_cast<float>(spec.clip_grad_norm);
  eo.device = options.device;
  eo.gpu = options.gpu;
  MP_ASSIGN_OR_RETURN(job->exec_, runtime::Executor::create(job->graph_.graph, eo));
  MP_RETURN_IF_ERROR(job->exec_->initialize(spec.seed));
  if (!options.load_dir.empty()) MP_RETURN_IF_ERROR(job->load(options.load_dir));
  MP_ASSIGN_OR_RETURN(job->data_, open_job_data(spec, job->graph_.graph, job->graph_.inputs));
  return job;
}

Expected<double> SingleDeviceJob::validate(int64_t index) {
  if (!val_data_) {
    MP_ASSIGN_OR_RETURN(val_data_, open_validation_data(spec_, graph_.graph, graph_.inputs));
  }
  val_data_->seek(index);
  MP_ASSIGN_OR_RETURN(auto batch, val_data_->read_next());
  MP_ASSIGN_OR_RETURN(runtime::StepStats st, exec_->evaluate(batch));
  return st.loss;
}

Expected<StepOutcome> SingleDeviceJob::run_step(int64_t step) {
  if (step < 1) return make_error(Errc::kInvalidArgument, "step {} is not positive", step);
  data_->seek(step - 1);
  exec_->set_lr_scale(static_cast<float>(spec_.schedule.factor(step)));
  MP_ASSIGN_OR_RETURN(auto batch, data_->read_next());
  MP_ASSIGN_OR_RETURN(runtime::StepStats st, exec_->run(batch));
  StepOutcome out;
  out.loss = st.loss;
  out.losses = {st.loss};
  out.seconds = st.time.value();
  out.peak_bytes[0] = st.peak_bytes.value();
  out.loss_scale = st.loss_scale;
  out.skipped = st.skipped;
  out.grad_norm = st.grad_norm;
  out.next_loss_scale = st.next_loss_scale;
  out.good_steps = st.good_steps;
  return out;
}

Expected<std::vector<runtime::TileRef>> SingleDeviceJob::whole_tiles(
    bool read, std::vector<std::pair<ValueId, runtime::HostTensor>>& copies) const {
  const graph::Graph& g = graph_.graph;
  std::vector<runtime::TileRef> tiles;
  for (int64_t v = 0; v < g.num_values(); ++v) {
    const ValueId id(static_cast<int32_t>(v));
    const graph::Value& val = g.value(id);
    if (val.role != graph::ValueRole::kParameter && val.role != graph::ValueRole::kOptimizerState) {
      continue;
    }
    kernels::TensorView view;
    if (exec_->device() == kernels::Device::kCpu) {
      MP_ASSIGN_OR_RETURN(view, exec_->persistent_view(id));
    } else {
      // A GPU's values cross through host copies (a moved HostTensor keeps its memory).
      runtime::HostTensor copy(val.shape, val.dtype);
      if (read) {
        MP_ASSIGN_OR_RETURN(copy, exec_->get_value(id));
      }
      view = copy.view();
      copies.emplace_back(id, std::move(copy));
    }
    std::vector<mesh::DimRange> whole;
    for (int64_t d = 0; d < val.shape.rank(); ++d) whole.push_back({0, val.shape[d]});
    tiles.push_back({/*device=*/0, val.name, std::move(whole), view});
  }
  return tiles;
}

Status SingleDeviceJob::save_checkpoint(const std::string& dir,
                                        const runtime::CheckpointInfo& info) {
  const graph::Graph& g = graph_.graph;
  std::vector<std::pair<ValueId, runtime::HostTensor>> copies;
  MP_ASSIGN_OR_RETURN(const std::vector<runtime::TileRef> tiles,
                      whole_tiles(/*read=*/true, copies));
  return runtime::save_checkpoint_with(dir, info, [&](const std::string& partial) {
    return runtime::write_tiles(tiles, g, partial);
  });
}

Status SingleDeviceJob::load(const std::string& dir) {
  const graph::Graph& g = graph_.graph;
  std::vector<std::pair<ValueId, runtime::HostTensor>> copies;
  MP_ASSIGN_OR_RETURN(const std::vector<runtime::TileRef> tiles,
                      whole_tiles(/*read=*/false, copies));
  MP_ASSIGN_OR_RETURN(const runtime::CheckpointInfo info, runtime::load_tiles(tiles, g, dir));
  for (const auto& [id, tensor] : copies) MP_RETURN_IF_ERROR(exec_->set_value(id, tensor));
  first_step_ = info.step + 1;
  // The scale goes on where it was (a checkpoint without one starts from the initial scale).
  if (exec_->loss_scaler() != nullptr && info.loss_scale > 0.0f) {
    MP_RETURN_IF_ERROR(
        exec_->restore_loss_scale(info.loss_scale, info.loss_scale_good_steps).with_context(dir));
  }
  return Status::ok();
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
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (options_.device == kernels::Device::kCuda) {
    info.device = fmt::format("{}, CUDA device {} (the single-device executor in its memory)",
                              single_device_label(options_), options_.gpu);
  } else if (inv.gpus.empty()) {
    info.device = "1 CPU device (" + inv.summary + ")";
  } else {
    info.device = "1 CPU device (chosen; GPUs here: " + kernels::describe_gpus(inv.gpus) + ")";
  }
  return info;
}

}  // namespace meshpipe::train

// train_parallel: plan, lower, run on threads, report.
#include "runtime/parallel_trainer.h"

#include <cmath>

#include "graph/training_graph.h"
#include "planner/cost_model.h"
#include "planner/planner.h"
#include "runtime/checkpoint.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {

Expected<graph::TrainingGraph> zoo_training_graph(const graph::models::ModelSpec& spec,
                                                  int64_t batch,
                                                  const graph::OptimizerConfig& optimizer) {
  graph::models::BuildOptions bo;
  bo.batch = batch;
  bo.dtype = DType::kF32;
  MP_ASSIGN_OR_RETURN(graph::ForwardGraph fg, graph::models::build_model(spec, bo));
  return graph::make_training_graph(std::move(fg), optimizer);
}

Expected<ParallelTrainSummary> train_parallel(const graph::models::ModelSpec& spec,
                                              const mesh::ClusterSpec& cluster,
                                              const ParallelTrainOptions& options) {
  MP_RETURN_IF_ERROR(options.train.validate());
  MP_RETURN_IF_ERROR(cluster.validate());
  if (!options.load_dir.empty()) {  // a bad checkpoint fails before planning
    MP_ASSIGN_OR_RETURN(CheckpointInfo info, read_checkpoint_info(options.load_dir));
    if (info.model != spec.name) {
      return make_error(Errc::kInvalidArgument, "checkpoint {} is of model '{}', not '{}'",
                        options.load_dir, info.model, spec.name);
    }
  }
  int64_t global = options.train.batch > 0 ? options.train.batch : spec.default_batch;
  ParallelTrainSummary summary;
  if (options.plan) {
    summary.plan = *options.plan;
    if (options.train.batch > 0 && summary.plan.global_batch != global) {
      return make_error(Errc::kInvalidArgument,
                        "the plan is for a global batch of {}, --batch asks for {}",
                        summary.plan.global_batch, global);
    }
    global = summary.plan.global_batch;
  } else {
    if (options.micro_batches > 0 && global % options.micro_batches != 0) {
      return make_error(Errc::kInvalidArgument,
                        "the batch of {} does not split into {} micro-batches", global,
                        options.micro_batches);
    }
    planner::PlannerOptions po;
    po.model = spec.name;
    po.global_batch = global;
    po.micro_batches = options.micro_batches;
    if (options.schedule) po.schedule = *options.schedule;
    const graph::OptimizerConfig opt = options.train.optimizer;
    po.graph_for_micro_batch = [spec, opt](int64_t micro) -> Expected<graph::Graph> {
      MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg, zoo_training_graph(spec, micro, opt));
      return std::move(tg.graph);
    };
    const int64_t first = options.micro_batches > 0 ? global / options.micro_batches : global;
    MP_ASSIGN_OR_RETURN(graph::TrainingGraph g0, zoo_training_graph(spec, first, opt));
    planner::AnalyticCostModel cost(cluster.device);
    if (options.driver != nullptr) {
      MP_ASSIGN_OR_RETURN(summary.plan, options.driver->plan(g0.graph, cluster, po));
    } else {
      MP_ASSIGN_OR_RETURN(summary.plan, planner::make_plan(g0.graph, cluster, cost, po));
    }
  }
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                      zoo_training_graph(spec, summary.plan.micro_batch, options.train.optimizer));
  LowerOptions lo;
  lo.schedule = options.schedule;
  MP_ASSIGN_OR_RETURN(Program program, lower(summary.plan, tg.graph, lo));
  if (options.on_plan) options.on_plan(summary.plan, program);
  summary.predicted_peak.assign(program.devices.size(), 0);
  for (const planner::StagePlan& s : summary.plan.stages) {
    for (int32_t d : s.devices) summary.predicted_peak[static_cast<size_t>(d)] = s.memory.peak;
  }
  const std::vector<std::string> names = program.inputs;
  const int64_t m = program.micro_batches;
  MP_ASSIGN_OR_RETURN(std::unique_ptr<InProcessRun> run,
                      InProcessRun::create(std::move(program), tg.graph, options.run));
  MP_RETURN_IF_ERROR(run->initialize(options.train.seed));
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph whole,
                      zoo_training_graph(spec, global, options.train.optimizer));
  MP_ASSIGN_OR_RETURN(SyntheticData data,
                      SyntheticData::create(whole.graph, whole.inputs, options.train.seed));
  int64_t done = 0;  // steps before this run (a resumed checkpoint's)
  if (!options.load_dir.empty()) {
    MP_ASSIGN_OR_RETURN(CheckpointInfo info, load_checkpoint(*run, tg.graph, options.load_dir));
    done = info.step;
    data.seek(info.step);
  }
  summary.first_step = done + 1;
  const auto save = [&](int64_t step) -> Status {
    return save_checkpoint(*run, tg.graph, options.save_dir, {spec.name, step, options.train.seed});
  };
  summary.measured_peak.assign(summary.predicted_peak.size(), 0);
  for (int64_t step = done + 1; step <= done + options.train.steps; ++step) {
    MP_ASSIGN_OR_RETURN(auto mbs, split_micro_batches(whole.graph, data.next_batch(), names, m));
    auto r = options.driver != nullptr ? options.driver->step(*run, mbs) : run->step(mbs);
    if (!r.has_value()) return r.status().with_context(fmt::format("step {}", step));
    if (!std::isfinite(r->loss)) {
      return make_error(Errc::kInternal, "step {}: the loss is {}; lower the learning rate", step,
                        r->loss);
    }
    summary.losses.push_back(r->loss);
    summary.total_time += Seconds(r->seconds);
    int64_t peak = 0;
    for (size_t d = 0; d < r->peak_bytes.size(); ++d) {
      summary.measured_peak[d] = std::max(summary.measured_peak[d], r->peak_bytes[d]);
      peak = std::max(peak, r->peak_bytes[d]);
    }
    if (options.train.on_step) {
      StepReport rep;
      rep.step = step;
      rep.total_steps = done + options.train.steps;
      rep.loss = r->loss;
      rep.time = Seconds(r->seconds);
      const double secs = std::max(r->seconds, 1e-12);
      rep.samples_per_second = static_cast<double>(data.samples_per_batch()) / secs;
      rep.tokens_per_second = static_cast<double>(data.tokens_per_batch()) / secs;
      rep.peak = Bytes(peak);
      options.train.on_step(rep);
    }
    const bool last = step == done + options.train.steps;
    if (!options.save_dir.empty() &&
        (last || (options.save_every > 0 && step % options.save_every == 0))) {
      MP_RETURN_IF_ERROR(save(step).with_context(fmt::format("saving after step {}", step)));
    }
  }
  return summary;
}

}  // namespace meshpipe::runtime

// run_session: the step loop.
#include "train/session.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/checkpoint.h"

namespace meshpipe::train {

namespace {

// Whether the session was asked to stop.
bool stop_requested(const SessionOptions& o) {
  return o.stop != nullptr && o.stop->load(std::memory_order_relaxed);
}

// The session stopped on request after step `step`, whose checkpoint is saved when
// `saved` (else one is saved now, when there is a save directory).
// The checkpoint header after `step`, with the loss scale's state the step left.
runtime::CheckpointInfo info_after(const SessionOptions& o, int64_t step, const StepOutcome* last) {
  runtime::CheckpointInfo info{o.model, step, o.seed};
  info.data = o.data;
  info.data_samples = o.data.empty() ? 0 : step * o.samples_per_step;
  if (last != nullptr && last->loss_scale > 0.0f) {
    info.loss_scale = last->next_loss_scale;
    info.loss_scale_good_steps = last->good_steps;
  }
  return info;
}

Status stop_after(StepRunner& runner, const SessionOptions& o, int64_t step, bool saved,
                  const StepOutcome* last) {
  if (o.save_dir.empty()) {
    return make_error(Errc::kCancelled, "interrupted after step {}; nothing saved (no --save)",
                      step);
  }
  if (!saved) {
    const Status s = runner.save_checkpoint(o.save_dir, info_after(o, step, last));
    MP_RETURN_IF_ERROR(
        s.with_context(fmt::format("interrupted after step {}; saving a checkpoint", step)));
    if (o.on_checkpoint) o.on_checkpoint(step, o.save_dir);
  }
  return make_error(Errc::kCancelled, "interrupted after step {}; checkpoint saved to {}", step,
                    o.save_dir);
}

}  // namespace

Status SessionOptions::validate() const {
  if (steps < 1) return make_error(Errc::kInvalidArgument, "steps must be >= 1, got {}", steps);
  if (first_step < 1) {
    return make_error(Errc::kInvalidArgument, "the first step must be >= 1, got {}", first_step);
  }
  // The last step, first_step + steps - 1, must not overflow.
  if (steps > std::numeric_limits<int64_t>::max() - first_step) {
    return make_error(Errc::kOutOfRange, "{} steps from step {} overflow the step count", steps,
                      first_step);
  }
  if (save_every < 0) {
    return make_error(Errc::kInvalidArgument, "save_every must be >= 0, got {}", save_every);
  }
  if (save_every > 0 && save_dir.empty()) {
    return make_error(Errc::kInvalidArgument, "save_every needs a save directory");
  }
  if (samples_per_step < 1 || tokens_per_step < 1) {
    return make_error(Errc::kInvalidArgument, "samples and tokens per step must be >= 1");
  }
  if (val_every < 0 || (val_every > 0 && (val_batches < 1 || val_batches > (int64_t{1} << 20)))) {
    return make_error(Errc::kInvalidArgument,
                      "validation every {} steps over {} batches: need every >= 0 and 1 to 2^20 "
                      "batches",
                      val_every, val_batches);
  }
  return Status::ok();
}

std::map<std::string, double> step_breakdown(const StepOutcome& outcome) {
  std::map<std::string, double> out = outcome.other_seconds;
  for (const auto& [kind, t] : outcome.kernel_seconds) {
    out[fmt::format("kernel {}", op_kind_name(kind))] += t;
  }
  return out;
}

Expected<SessionSummary> run_session(StepRunner& runner, const SessionOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  // A place that cannot take the checkpoint is found now, not after the last step.
  if (!options.save_dir.empty()) MP_RETURN_IF_ERROR(runtime::check_save_target(options.save_dir));
  SessionSummary summary;
  summary.first_step = options.first_step;
  const int64_t last = options.first_step + options.steps - 1;
  if (stop_requested(options)) {
    return make_error(Errc::kCancelled,
                      "interrupted before step {}; nothing saved (no step finished)",
                      options.first_step);
  }
  for (int64_t step = options.first_step; step <= last; ++step) {
    auto r = runner.run_step(step);
    if (!r.has_value()) return r.status().with_context(fmt::format("step {}", step));
    if (!std::isfinite(r->loss)) {
      return make_error(Errc::kNumerics,
                        "step {}: the loss is {}; lower the learning rate (now {}) or run with "
                        "--check-numerics to find the first op that produced it",
                        step, r->loss, options.lr);
    }
    summary.losses.push_back(r->loss);
    if (r->skipped) ++summary.skipped_steps;
    if (r->loss_scale > 0.0f) summary.loss_scale = r->next_loss_scale;
    if (r->grad_norm != -1.0) summary.grad_norms.push_back(r->grad_norm);
    summary.total_time += Seconds(r->seconds);
    summary.step_seconds.push_back(r->seconds);
    summary.last_step = step;
    if (step > options.first_step || options.steps == 1) {  // the first step warms up
      const std::map<std::string, double> b = step_breakdown(*r);
      for (const auto& [what, t] : b) summary.breakdown[what] += t;
      if (!b.empty()) ++summary.breakdown_steps;
    }
    int64_t peak = 0;
    for (const auto& [device, bytes] : r->peak_bytes) {
      int64_t& p = summary.peak_bytes[device];
      p = std::max(p, bytes);
      peak = std::max(peak, bytes);
    }
    if (options.on_step) {
      StepReport rep;
      rep.step = step;
      rep.total_steps = last;
      rep.loss = r->loss;
      rep.time = Seconds(r->seconds);
      const double secs = std::max(r->seconds, 1e-12);
      rep.samples_per_second = static_cast<double>(options.samples_per_step) / secs;
      rep.tokens_per_second = static_cast<double>(options.tokens_per_step) / secs;
      rep.peak = Bytes(peak);
      rep.device_peaks = r->peak_bytes;
      rep.loss_scale = r->loss_scale;
      rep.skipped = r->skipped;
      rep.grad_norm = r->grad_norm;
      options.on_step(rep);
    }
    if (options.val_every > 0 && (step % options.val_every == 0 || step == last)) {
      ValidationReport v;
      v.step = step;
      v.batches = options.val_batches;
      double sum = 0.0;
      for (int64_t k = 0; k < options.val_batches; ++k) {
        Expected<double> l = runner.validate(k);
        if (!l.has_value()) {
          // The training done so far is kept: a checkpoint first (with --save), then the error.
          if (!options.save_dir.empty()) {
            const Status saved =
                runner.save_checkpoint(options.save_dir, info_after(options, step, &*r));
            MP_RETURN_IF_ERROR(saved.with_context(fmt::format("saving after step {}", step)));
          }
          return l.status().with_context(fmt::format("validation after step {}", step));
        }
        sum += *l;
      }
      v.loss = sum / static_cast<double>(options.val_batches);
      summary.validation.push_back(v);
      if (options.on_validation) options.on_validation(v);
    }
    const bool due = step == last || (options.save_every > 0 && step % options.save_every == 0);
    const bool save = !options.save_dir.empty() && due;
    if (save) {
      const Status saved = runner.save_checkpoint(options.save_dir, info_after(options, step, &*r));
      MP_RETURN_IF_ERROR(saved.with_context(fmt::format("saving after step {}", step)));
      if (options.on_checkpoint) options.on_checkpoint(step, options.save_dir);
    }
    if (stop_requested(options)) return stop_after(runner, options, step, save, &*r);
  }
  return summary;
}

}  // namespace meshpipe::train

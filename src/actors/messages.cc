// The JSON payloads of the protocol (actors/internal/messages.h).
#include "actors/internal/messages.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "actors/internal/limits.h"
#include "runtime/program.h"
#include "train/session.h"

namespace meshpipe::actors::internal {

std::string job_message_to_json(const JobMessage& job) {
  Json j = Json::object();
  j["spec"] = train::job_spec_to_json(job.spec);
  j["plan"] = planner::plan_to_json(job.plan);
  j["timeout_ms"] = job.timeout.count();
  j["load"] = job.load_dir;
  if (job.time_kernels) j["time_kernels"] = true;
  j["collectives"] = runtime::collective_backend_name(job.collectives);
  return j.dump();
}

Expected<JobMessage> job_message_from_json(const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json j, parse_json(text, "the job"));
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "malformed job: not an object");
  JsonReader r(j, "", "job field");
  std::string spec;
  std::string plan;
  int64_t timeout_ms = 0;
  JobMessage job;
  MP_RETURN_IF_ERROR(r.read("spec", &spec));
  MP_RETURN_IF_ERROR(r.read("plan", &plan));
  MP_RETURN_IF_ERROR(r.read("timeout_ms", &timeout_ms));
  MP_RETURN_IF_ERROR(r.read("load", &job.load_dir));
  MP_RETURN_IF_ERROR(r.read_optional("time_kernels", &job.time_kernels));
  std::string collectives = runtime::collective_backend_name(job.collectives);
  MP_RETURN_IF_ERROR(r.read_optional("collectives", &collectives));
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  auto backend = runtime::parse_collective_backend(collectives);
  if (!backend.has_value() || *backend == runtime::CollectiveBackend::kInProcess) {
    return r.error("collectives", "must be \"ucx\", \"gloo\" or \"nccl\"");
  }
  job.collectives = *backend;
  if (timeout_ms <= 0) return r.error("timeout_ms", "must be positive");
  job.timeout = std::chrono::milliseconds(timeout_ms);
  MP_ASSIGN_OR_RETURN(job.spec, train::job_spec_from_json(spec));
  MP_ASSIGN_OR_RETURN(job.plan, planner::plan_from_json(plan));
  return job;
}

JobInfo job_info(const train::LocalJob& job) {
  JobInfo info;
  info.program = fmt::format("{:016x}", job.fingerprint());
  info.first_step = job.first_step();
  const runtime::Program& p = job.run().program();
  for (const runtime::StageLayout& s : p.stages) {
    info.devices += static_cast<int64_t>(s.devices.size());
  }
  info.instructions = job.instructions();
  info.schedule = p.schedule;
  return info;
}

std::string job_info_to_json(const JobInfo& info) {
  Json j = Json::object();
  j["program"] = info.program;
  j["devices"] = info.devices;
  j["instructions"] = info.instructions;
  j["first_step"] = info.first_step;
  j["schedule"] = planner::schedule_name(info.schedule);
  return j.dump();
}

Expected<JobInfo> job_info_from_json(const Json& j, const std::string& path) {
  JsonReader r(j, path, "job info field");
  JobInfo info;
  std::string schedule;
  MP_RETURN_IF_ERROR(r.read("program", &info.program));
  MP_RETURN_IF_ERROR(r.read("devices", &info.devices));
  MP_RETURN_IF_ERROR(r.read("instructions", &info.instructions));
  MP_RETURN_IF_ERROR(r.read("first_step", &info.first_step));
  MP_RETURN_IF_ERROR(r.read("schedule", &schedule));
  auto parsed = planner::parse_schedule(schedule);
  if (!parsed.has_value()) return r.error("schedule", parsed.status().message());
  info.schedule = *parsed;
  return info;
}

namespace {

// JSON has no NaN or infinity (nlohmann writes null): a diverged loss travels as a string, so
// the session sees the non-finite loss and names it, instead of a malformed report.
Json loss_to_json(double loss) {
  if (std::isfinite(loss)) return loss;
  return std::isnan(loss) ? "nan" : (loss > 0 ? "inf" : "-inf");
}

Status read_losses(JsonReader& r, std::vector<double>* out) {
  const Json* list = nullptr;
  MP_RETURN_IF_ERROR(r.array("losses", &list));
  out->clear();
  for (const Json& v : *list) {
    if (v.is_number()) {
      out->push_back(v.get<double>());
    } else if (v == "nan") {
      out->push_back(std::numeric_limits<double>::quiet_NaN());
    } else if (v == "inf" || v == "-inf") {
      out->push_back(v == "inf" ? std::numeric_limits<double>::infinity()
                                : -std::numeric_limits<double>::infinity());
    } else {
      return r.error("losses", "must hold numbers (or \"nan\", \"inf\", \"-inf\")");
    }
  }
  return Status::ok();
}

}  // namespace

std::string step_report_to_json(const train::StepOutcome& outcome) {
  Json j = Json::object();
  Json losses = Json::array();
  for (double l : outcome.losses) losses.push_back(loss_to_json(l));
  j["losses"] = std::move(losses);
  j["seconds"] = outcome.seconds;
  Json peaks = Json::array();
  for (const auto& [d, bytes] : outcome.peak_bytes) peaks.push_back(Json::array({d, bytes}));
  j["peaks"] = std::move(peaks);
  if (outcome.loss_scale > 0.0f) {
    j["loss_scale"] = outcome.loss_scale;
    j["skipped"] = outcome.skipped;
    j["next_loss_scale"] = outcome.next_loss_scale;
    j["good_steps"] = outcome.good_steps;
  }
  // Clipping's norm; null when it is not finite (an overflowed step's: JSON has no infinity).
  if (outcome.grad_norm != -1.0) {
    j["grad_norm"] = std::isfinite(outcome.grad_norm) ? Json(outcome.grad_norm) : Json(nullptr);
  }
  if (const auto breakdown = train::step_breakdown(outcome); !breakdown.empty()) {
    Json b = Json::object();
    for (const auto& [what, t] : breakdown) b[what] = t;
    j["breakdown"] = std::move(b);
  }
  return j.dump();
}

Expected<train::StepOutcome> merge_step_reports(const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json replies, parse_json(text, "the step reports"));
  if (!replies.is_array()) return make_error(Errc::kInternal, "the step reports are not a list");
  train::StepOutcome out;
  for (size_t k = 0; k < replies.size(); ++k) {
    JsonReader r(replies[k], fmt::format("[{}]", k), "step report field");
    std::vector<double> losses;
    double seconds = 0.0;
    std::vector<std::vector<int64_t>> peaks;  // [device, bytes] pairs
    MP_RETURN_IF_ERROR(read_losses(r, &losses));
    MP_RETURN_IF_ERROR(r.read("seconds", &seconds));
    MP_RETURN_IF_ERROR(r.read("peaks", &peaks));
    if (const Json* b = r.find_optional("breakdown"); b != nullptr) {
      // Activities of the node's devices ("kernel matmul", "wait for receives", ...): summed.
      if (!b->is_object() || b->size() > kMaxBreakdownEntries) {
        return r.error("breakdown", fmt::format("must be an object of at most {} numbers",
                                                kMaxBreakdownEntries));
      }
      for (auto it = b->begin(); it != b->end(); ++it) {
        if (it.key().empty() || it.key().size() > kMaxNameBytes) {
          return r.error("breakdown", fmt::format("names must have 1 to {} bytes", kMaxNameBytes));
        }
        if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < 0) {
          return r.error("breakdown", "must hold non-negative seconds");
        }
        out.other_seconds[it.key()] += it->get<double>();
      }
    }
    if (const Json* ls = r.find_optional("loss_scale"); ls != nullptr) {
      if (!ls->is_number() || !std::isfinite(ls->get<double>()) || ls->get<double>() <= 0) {
        return r.error("loss_scale", "must be a positive number");
      }
      out.loss_scale = std::max(out.loss_scale, ls->get<float>());
      bool skipped = false;
      double next = 0.0;
      int64_t good = 0;
      MP_RETURN_IF_ERROR(r.read("skipped", &skipped));
      MP_RETURN_IF_ERROR(r.read("next_loss_scale", &next));
      MP_RETURN_IF_ERROR(r.read("good_steps", &good));
      if (!std::isfinite(next) || next <= 0 || good < 0) {
        return r.error("next_loss_scale", "and good_steps must be positive and non-negative");
      }
      out.skipped = out.skipped || skipped;
      out.next_loss_scale = static_cast<float>(next);
      out.good_steps = good;
    }
    if (const Json* gn = r.find_optional("grad_norm"); gn != nullptr) {  // equal on every node
      if (gn->is_null()) {
        out.grad_norm = std::numeric_limits<double>::infinity();  // not finite
      } else if (!gn->is_number() || !(gn->get<double>() >= 0.0)) {
        return r.error("grad_norm", "must be a non-negative number or null");
      } else {
        out.grad_norm = gn->get<double>();
      }
    }
    if (!losses.empty()) out.losses = std::move(losses);
    for (const std::vector<int64_t>& p : peaks) {
      if (p.size() != 2) return r.error("peaks", "must hold [device, bytes] pairs");
      out.peak_bytes[static_cast<int32_t>(p[0])] = p[1];
    }
    out.seconds = std::max(out.seconds, seconds);
  }
  if (out.losses.empty()) return make_error(Errc::kInternal, "no node reported the loss");
  for (double l : out.losses) out.loss += l / static_cast<double>(out.losses.size());
  return out;
}

}  // namespace meshpipe::actors::internal

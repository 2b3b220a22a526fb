// bench_step_time: wall time of one GPT training step (forward, backward, Adam) on one CPU device
// through runtime::Executor. Prints one JSON line; bench/step_time.py compares it with PyTorch.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "graph/cost.h"
#include "graph/models/gpt.h"
#include "graph/training_graph.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::bench {
namespace {

/// Command-line settings; the defaults are the committed benchmark configuration.
struct Options {
  graph::models::GptConfig gpt{/*seq_len=*/256, /*hidden=*/512,
                               /*layers=*/4,    /*heads=*/8,
                               /*vocab=*/8192,  /*ffn_mult=*/4};
  int64_t batch = 8;
  int64_t warmup = 2;
  int64_t steps = 10;
  int64_t profile_steps = 3;  ///< profiled steps after one profiled warm-up; 0 disables
  int64_t top = 12;           ///< op kinds listed in the breakdown
  float lr = 1e-4f;
  uint64_t seed = 1;
};

void print_usage() {
  std::fprintf(stderr,
               "usage: bench_step_time [--hidden N] [--layers N] [--heads N] [--seq N] "
               "[--batch N] [--vocab N] [--ffn-mult N] [--warmup N] [--steps N] "
               "[--profile-steps N] [--top N] [--lr X] [--seed N]\n");
}

Expected<Options> parse_args(int argc, char** argv) {
  Options o;
  std::map<std::string, int64_t*> ints = {{"--hidden", &o.gpt.hidden},
                                          {"--layers", &o.gpt.layers},
                                          {"--heads", &o.gpt.heads},
                                          {"--seq", &o.gpt.seq_len},
                                          {"--vocab", &o.gpt.vocab},
                                          {"--ffn-mult", &o.gpt.ffn_mult},
                                          {"--batch", &o.batch},
                                          {"--warmup", &o.warmup},
                                          {"--steps", &o.steps},
                                          {"--profile-steps", &o.profile_steps},
                                          {"--top", &o.top}};
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      print_usage();
      std::exit(0);
    }
    if (i + 1 >= argc) return make_error(Errc::kInvalidArgument, "{} needs a value", flag);
    const std::string value = argv[++i];
    char* end = nullptr;
    if (auto it = ints.find(flag); it != ints.end()) {
      *it->second = std::strtoll(value.c_str(), &end, 10);
    } else if (flag == "--lr") {
      o.lr = std::strtof(value.c_str(), &end);
    } else if (flag == "--seed") {
      o.seed = std::strtoull(value.c_str(), &end, 10);
    } else {
      return make_error(Errc::kInvalidArgument, "unknown flag {}", flag);
    }
    if (end == nullptr || *end != '\0') {
      return make_error(Errc::kInvalidArgument, "{}: '{}' is not a number", flag, value);
    }
  }
  if (o.batch < 1 || o.warmup < 0 || o.steps < 1 || o.profile_steps < 0 || o.top < 1) {
    return make_error(Errc::kInvalidArgument,
                      "need batch >= 1, warmup >= 0, steps >= 1, profile-steps >= 0, top >= 1");
  }
  MP_RETURN_IF_ERROR(o.gpt.validate());
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

/// FLOPs and bytes of one step per op kind (graph::op_flops / op_bytes).
struct KindCost {
  double flops = 0.0;
  double bytes = 0.0;
  int64_t ops = 0;
};

std::map<graph::OpKind, KindCost> cost_by_kind(const graph::Graph& g) {
  std::map<graph::OpKind, KindCost> out;
  for (const graph::Op& op : g.ops()) {
    KindCost& c = out[op.kind];
    c.flops += graph::op_flops(g, op).value();
    c.bytes += static_cast<double>(graph::op_bytes(g, op).value());
    ++c.ops;
  }
  return out;
}

/// Runs `exec` for `steps` steps; returns per-step seconds (and the last loss through `loss`).
Expected<std::vector<double>> run_steps(runtime::Executor& exec, runtime::SyntheticData& data,
                                        int64_t steps, double& loss) {
  std::vector<double> times;
  for (int64_t s = 0; s < steps; ++s) {
    const auto batch = data.next_batch();
    MP_ASSIGN_OR_RETURN(runtime::StepStats st, exec.run(batch));
    times.push_back(st.time.value());
    loss = st.loss;
  }
  return times;
}

/// The profiled breakdown as a JSON array, largest time first: seconds per step per kind,
/// share of the profiled time, op count, FLOPs and achieved GFLOP/s and GB/s.
Expected<std::string> profile_json(const graph::TrainingGraph& tg, const Options& o,
                                   double& profiled_step_s) {
  runtime::ExecutorOptions eo;
  eo.profile = true;
  MP_ASSIGN_OR_RETURN(auto exec, runtime::Executor::create(tg.graph, eo));
  MP_RETURN_IF_ERROR(exec->initialize(o.seed));
  MP_ASSIGN_OR_RETURN(runtime::SyntheticData data,
                      runtime::SyntheticData::create(tg.graph, tg.inputs, o.seed));
  double loss = 0.0;
  MP_RETURN_IF_ERROR(run_steps(*exec, data, /*steps=*/1, loss).status());
  const std::map<graph::OpKind, double> before = exec->profile();
  MP_ASSIGN_OR_RETURN(std::vector<double> times, run_steps(*exec, data, o.profile_steps, loss));
  profiled_step_s = median(times);

  const std::map<graph::OpKind, KindCost> costs = cost_by_kind(tg.graph);
  std::vector<std::pair<double, graph::OpKind>> per_step;
  double total = 0.0;
  for (const auto& [kind, secs] : exec->profile()) {
    auto it = before.find(kind);
    const double s =
        (secs - (it != before.end() ? it->second : 0.0)) / static_cast<double>(o.profile_steps);
    per_step.emplace_back(s, kind);
    total += s;
  }
  std::sort(per_step.rbegin(), per_step.rend());
  std::string out = "[";
  double rest = 0.0;
  for (size_t i = 0; i < per_step.size(); ++i) {
    const auto [s, kind] = per_step[i];
    if (static_cast<int64_t>(i) >= o.top) {
      rest += s;
      continue;
    }
    const KindCost& c = costs.at(kind);
    out += fmt::format(
        "{}{{\"kind\":\"{}\",\"seconds\":{:.6f},\"share\":{:.4f},\"ops\":{},\"gflop\":{:.4f},"
        "\"gflop_per_s\":{:.2f},\"gbyte_per_s\":{:.2f}}}",
        i == 0 ? "" : ",", graph::op_kind_name(kind), s, total > 0 ? s / total : 0.0, c.ops,
        c.flops * 1e-9, s > 0 ? c.flops * 1e-9 / s : 0.0, s > 0 ? c.bytes * 1e-9 / s : 0.0);
  }
  if (rest > 0) {
    out += fmt::format(",{{\"kind\":\"(other)\",\"seconds\":{:.6f},\"share\":{:.4f}}}", rest,
                       total > 0 ? rest / total : 0.0);
  }
  out += fmt::format("],\"profile_total_s\":{:.6f}", total);
  return out;
}

Status run(const Options& o) {
  MP_ASSIGN_OR_RETURN(graph::ForwardGraph fwd,
                      graph::models::build_gpt(o.gpt, o.batch, DType::kF32));
  graph::OptimizerConfig adam;
  adam.kind = graph::OptimizerConfig::Kind::kAdam;
  adam.lr = o.lr;
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg, graph::make_training_graph(std::move(fwd), adam));
  const graph::GraphCost cost = graph::graph_cost(tg.graph);
  const double fwd_bwd_flops = cost.forward.value() + cost.backward.value();

  MP_ASSIGN_OR_RETURN(auto exec, runtime::Executor::create(tg.graph));
  MP_RETURN_IF_ERROR(exec->initialize(o.seed));
  MP_ASSIGN_OR_RETURN(runtime::SyntheticData data,
                      runtime::SyntheticData::create(tg.graph, tg.inputs, o.seed));
  double first_loss = 0.0;
  MP_RETURN_IF_ERROR(run_steps(*exec, data, o.warmup, first_loss).status());
  double last_loss = 0.0;
  MP_ASSIGN_OR_RETURN(std::vector<double> times, run_steps(*exec, data, o.steps, last_loss));
  // The peak of the last step (every step runs the same plan).
  const int64_t peak = exec->memory().peak.value();
  const int64_t persistent = exec->memory().persistent.value();
  exec.reset();

  std::string breakdown = "[],\"profile_total_s\":0";
  double profiled_step_s = 0.0;
  if (o.profile_steps > 0) {
    MP_ASSIGN_OR_RETURN(breakdown, profile_json(tg, o, profiled_step_s));
  }

  const double med = median(times);
  const double best = *std::min_element(times.begin(), times.end());
  const double tokens = static_cast<double>(o.batch * o.gpt.seq_len);
  std::string step_list;
  for (size_t i = 0; i < times.size(); ++i) {
    step_list += fmt::format("{}{:.6f}", i == 0 ? "" : ",", times[i]);
  }
  std::printf(
      "%s\n",
      fmt::format(
          "{{\"bench\":\"step_time\",\"model\":\"gpt\",\"config\":{{\"hidden\":{},\"layers\":{},"
          "\"heads\":{},\"seq_len\":{},\"batch\":{},\"vocab\":{},\"ffn_mult\":{},\"lr\":{},"
          "\"dtype\":\"f32\",\"optimizer\":\"adam\"}},\"threads\":{{\"OPENBLAS_NUM_THREADS\":"
          "\"{}\",\"OMP_NUM_THREADS\":\"{}\"}},\"parameters\":{},\"ops\":{},\"warmup\":{},"
          "\"steps\":{},\"step_s\":[{}],\"median_s\":{:.6f},\"min_s\":{:.6f},"
          "\"tokens_per_s\":{:.1f},\"peak_bytes\":{},\"persistent_bytes\":{},"
          "\"fwd_bwd_flops\":{:.6e},\"update_flops\":{:.6e},\"gflop_per_s\":{:.2f},"
          "\"loss_after_warmup\":{:.6f},\"loss_last\":{:.6f},\"profiled_step_s\":{:.6f},"
          "\"breakdown\":{}}}",
          o.gpt.hidden, o.gpt.layers, o.gpt.heads, o.gpt.seq_len, o.batch, o.gpt.vocab,
          o.gpt.ffn_mult, o.lr, env_or("OPENBLAS_NUM_THREADS", ""), env_or("OMP_NUM_THREADS", ""),
          cost.parameter_count, tg.graph.num_ops(), o.warmup, o.steps, step_list, med, best,
          tokens / med, peak, persistent, fwd_bwd_flops, cost.update.value(),
          fwd_bwd_flops * 1e-9 / med, first_loss, last_loss, profiled_step_s, breakdown)
          .c_str());
  return Status::ok();
}

}  // namespace
}  // namespace meshpipe::bench

int main(int argc, char** argv) {
  using namespace meshpipe;
  Expected<bench::Options> o = bench::parse_args(argc, argv);
  if (!o) {
    std::fprintf(stderr, "bench_step_time: %s\n", o.status().to_string().c_str());
    bench::print_usage();
    return 2;
  }
  const Status s = bench::run(*o);
  if (!s.is_ok()) {
    std::fprintf(stderr, "bench_step_time: %s\n", s.to_string().c_str());
    return 1;
  }
  return 0;
}

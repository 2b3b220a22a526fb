// bench_gpu_layer: one GPT layer's bf16 mixed-precision training step (forward, backward and the
// Adam update of its f32 master weights) on GPU 0 through runtime::Executor, for the GPT-125M,
// 1.3B and 2.6B layer shapes of bench/gpu_torch_layer.py, as model TFLOP/s against the device's
// datasheet bf16 peak (MFU) and against the cuBLASLt bf16 GEMM rate measured in the same run;
// then where the 1.3B layer's step time goes, per op kind (the executor's profile).
//
// A layer's time: the GPT of the zoo (graph/models/gpt.h) is built with 1 and with 2 layers at
// the layer's shape and a small vocabulary (1024), each step timed (3 warm-ups, then the median
// of 10), and the layer is the difference, so the embedding, head and loss drop out, as they do
// from the PyTorch script, which times a bare layer.
//
// FLOPs: "model FLOPs" are Megatron's count that bench/gpu_torch_layer.py uses, per layer
// 3 (24 b s h^2 + 4 b s^2 h): the matrix products only, the backward twice the forward, causal
// attention counted as full. The graph's own cost (graph/cost.h) of the layer's dot ops is the
// same number (printed beside it as a check); its total over all ops (elementwise, softmax,
// norms, converts, Adam) is printed too, never used for the rates. The PyTorch step has no
// optimizer update and bf16 weights; ours updates f32 master weights, so its ratio is
// conservative.
//
// Without a GPU it prints "SKIPPED: <why>" and exits 77 (--device cpu runs the same steps on
// the CPU, to check this program at small shapes). Output: Markdown on stdout, also written to
// --out FILE, both growing as the measurements end; exit 1 when a measurement failed.
//
//   bench_gpu_layer [--out FILE] [--shapes 125m,1.3b,2.6b] [--seq N] [--batch N] [--warmup N]
//                   [--steps N] [--vocab N] [--gemm N] [--top N] [--no-profile]
//                   [--device cuda|cpu]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench_env.h"
#include "graph/cost.h"
#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "graph/training_graph.h"
#include "kernels/backend.h"
#include "kernels/device.h"
#include "kernels/gpu.h"
#include "kernels/half.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::bench {
namespace {

using Clock = std::chrono::steady_clock;

/// One layer shape (bench/gpu_torch_layer.py's CONFIGS: Alpa's GPT sizes).
struct LayerShape {
  std::string key;    ///< --shapes name
  std::string label;  ///< row label, equal to the PyTorch script's
  int64_t hidden = 0;
  int64_t heads = 0;
  int64_t batch = 0;
};

const std::vector<LayerShape>& layer_shapes() {
  static const std::vector<LayerShape> shapes = {
      {.key = "125m", .label = "gpt-125m layer", .hidden = 768, .heads = 12, .batch = 16},
      {.key = "1.3b", .label = "gpt-1.3b layer", .hidden = 2048, .heads = 32, .batch = 8},
      {.key = "2.6b", .label = "gpt-2.6b layer", .hidden = 2560, .heads = 32, .batch = 8},
  };
  return shapes;
}

/// Datasheet dense bf16 tensor-core peaks (TFLOP/s, without sparsity), matched in order against
/// the CUDA device name; unknown devices get only the ratio to the measured GEMM.
struct DatasheetPeak {
  const char* name_part;
  double tflops;
};
constexpr DatasheetPeak kDatasheetPeaks[] = {
    {.name_part = "H100 PCIe", .tflops = 756.0},
    {.name_part = "H100", .tflops = 989.0},
    {.name_part = "H200", .tflops = 989.0},
    {.name_part = "A100", .tflops = 312.0},
};

std::optional<double> datasheet_peak(const std::string& gpu_name) {
  for (const DatasheetPeak& p : kDatasheetPeaks) {
    if (gpu_name.find(p.name_part) != std::string::npos) return p.tflops;
  }
  return std::nullopt;
}

struct Options {
  std::string out;
  std::vector<std::string> shapes = {"125m", "1.3b", "2.6b"};
  int64_t seq = 1024;
  int64_t warmup = 3;
  int64_t steps = 10;
  int64_t vocab = 1024;
  int64_t gemm = 8192;
  int64_t top = 10;
  int64_t batch = 0;  ///< 0: each shape's own micro-batch
  bool profile = true;
  bool cpu = false;  ///< --device cpu: the same steps on the CPU (checks this program)
  uint64_t seed = 1;
};

void print_usage() {
  std::fprintf(
      stderr,
      "usage: bench_gpu_layer [--out FILE] [--shapes 125m,1.3b,2.6b] [--seq N] "
      "[--batch N] [--warmup N] [--steps N] [--vocab N] [--gemm N] [--top N] [--no-profile] "
      "[--device cuda|cpu]\n");
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string::npos ? s.size() : comma;
    if (end > start) parts.push_back(s.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return parts;
}

Expected<Options> parse_args(int argc, char** argv) {
  Options o;
  std::map<std::string, int64_t*> ints = {
      {"--seq", &o.seq},   {"--warmup", &o.warmup}, {"--steps", &o.steps}, {"--vocab", &o.vocab},
      {"--gemm", &o.gemm}, {"--top", &o.top},       {"--batch", &o.batch}};
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      print_usage();
      std::exit(0);
    }
    if (flag == "--no-profile") {
      o.profile = false;
      continue;
    }
    if (i + 1 >= argc) return make_error(Errc::kInvalidArgument, "{} needs a value", flag);
    const std::string value = argv[++i];
    if (flag == "--out") {
      o.out = value;
    } else if (flag == "--device") {
      if (value != "cuda" && value != "cpu") {
        return make_error(Errc::kInvalidArgument, "--device must be cuda or cpu");
      }
      o.cpu = value == "cpu";
    } else if (flag == "--shapes") {
      o.shapes = split_commas(value);
    } else if (auto it = ints.find(flag); it != ints.end()) {
      char* end = nullptr;
      *it->second = std::strtoll(value.c_str(), &end, 10);
      if (end == nullptr || *end != '\0') {
        return make_error(Errc::kInvalidArgument, "{}: '{}' is not a number", flag, value);
      }
    } else {
      return make_error(Errc::kInvalidArgument, "unknown flag {}", flag);
    }
  }
  for (const std::string& s : o.shapes) {
    const auto& all = layer_shapes();
    if (std::none_of(all.begin(), all.end(), [&](const LayerShape& l) { return l.key == s; })) {
      return make_error(Errc::kInvalidArgument, "--shapes: unknown shape '{}' (125m, 1.3b, 2.6b)",
                        s);
    }
  }
  if (o.seq < 1 || o.warmup < 0 || o.steps < 1 || o.vocab < 2 || o.gemm < 16 || o.top < 1 ||
      o.batch < 0) {
    return make_error(
        Errc::kInvalidArgument,
        "need seq >= 1, warmup >= 0, steps >= 1, vocab >= 2, gemm >= 16, top >= 1, batch "
        ">= 0");
  }
  return o;
}

int64_t batch_of(const LayerShape& l, const Options& o) { return o.batch > 0 ? o.batch : l.batch; }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- the GEMM peak ----

/// What the GEMM measurement found.
struct GemmResult {
  double ms = 0.0;
  double tflops = 0.0;
  double check_error = 0.0;  ///< of 64 outputs against the host: max |error| / max |value|
};

/// Times run_kernel(kCuda, kDot) on n x n x n bf16 operands (bf16 out, f32 accumulation)
/// through a GpuDevice of its own: 3 warm-ups, then the median of 5 rounds of 10 products, each
/// round ended by a synchronize. Checks 64 outputs of row 0 against host dot products.
Expected<GemmResult> measure_gemm(int64_t n) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<kernels::GpuDevice> gpu, kernels::GpuDevice::open(0));
  const int64_t elems = n * n;
  const int64_t bytes = elems * dtype_size(DType::kBF16);
  std::vector<uint16_t> ha(static_cast<size_t>(elems));
  std::vector<uint16_t> hb(static_cast<size_t>(elems));
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next_uniform = [&state]() {  // xorshift64*, in [-1, 1)
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    const uint64_t r = state * 0x2545f4914f6cdd1dull;
    return static_cast<float>(static_cast<double>(r >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  };
  for (uint16_t& x : ha) x = kernels::float_to_bf16(next_uniform());
  for (uint16_t& x : hb) x = kernels::float_to_bf16(next_uniform());

  MP_ASSIGN_OR_RETURN(void* a, gpu->allocate(bytes));
  MP_ASSIGN_OR_RETURN(void* b, gpu->allocate(bytes));
  MP_ASSIGN_OR_RETURN(void* c, gpu->allocate(bytes));
  MP_RETURN_IF_ERROR(gpu->copy_to_device(a, ha.data(), bytes));
  MP_RETURN_IF_ERROR(gpu->copy_to_device(b, hb.data(), bytes));

  const kernels::TensorView in[2] = {kernels::TensorView(a, Shape{n, n}, DType::kBF16),
                                     kernels::TensorView(b, Shape{n, n}, DType::kBF16)};
  const kernels::TensorView out[1] = {kernels::TensorView(c, Shape{n, n}, DType::kBF16)};
  OpAttrs attrs;
  attrs.dot = DotDims{.lhs_batch = {}, .rhs_batch = {}, .lhs_contract = {1}, .rhs_contract = {0}};
  const Shape shapes[2] = {Shape{n, n}, Shape{n, n}};
  const int64_t ws_bytes =
      kernels::kernel_workspace_bytes(kernels::Device::kCuda, OpKind::kDot, shapes, attrs);
  void* ws = nullptr;
  if (ws_bytes > 0) {
    MP_ASSIGN_OR_RETURN(ws, gpu->allocate(ws_bytes));
  }
  const kernels::KernelArgs args{
      .ctx = &gpu->context(),
      .in = in,
      .out = out,
      .workspace = ws != nullptr ? kernels::TensorView(ws, Shape{(ws_bytes + 3) / 4}, DType::kF32)
                                 : kernels::TensorView(),
      .attrs = &attrs,
      .row_offset = 0,
      .id_offset = 0};
  for (int i = 0; i < 3; ++i) {
    MP_RETURN_IF_ERROR(kernels::run_kernel(kernels::Device::kCuda, OpKind::kDot, args));
  }
  MP_RETURN_IF_ERROR(gpu->synchronize());
  constexpr int kRounds = 5;
  constexpr int kPerRound = 10;
  std::vector<double> per_product;
  for (int r = 0; r < kRounds; ++r) {
    const Clock::time_point t0 = Clock::now();
    for (int i = 0; i < kPerRound; ++i) {
      MP_RETURN_IF_ERROR(kernels::run_kernel(kernels::Device::kCuda, OpKind::kDot, args));
    }
    MP_RETURN_IF_ERROR(gpu->synchronize());
    per_product.push_back(seconds_since(t0) / kPerRound);
  }
  GemmResult result;
  const double s = median(per_product);
  result.ms = s * 1e3;
  result.tflops =
      2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / s * 1e-12;

  // Row 0, columns 0..63, against the host (the inputs as the GPU read them), as
  // max |got - ref| / max |ref| (bf16 rounding of the output alone is up to 2^-9 of it).
  constexpr int64_t kChecked = 64;
  std::vector<uint16_t> row(static_cast<size_t>(n));
  MP_RETURN_IF_ERROR(gpu->copy_to_host(row.data(), c, n * dtype_size(DType::kBF16)));
  double max_err = 0.0;
  double max_ref = 0.0;
  for (int64_t j = 0; j < std::min(kChecked, n); ++j) {
    double ref = 0.0;
    for (int64_t k = 0; k < n; ++k) {
      ref += static_cast<double>(kernels::bf16_to_float(ha[static_cast<size_t>(k)])) *
             kernels::bf16_to_float(hb[static_cast<size_t>(k * n + j)]);
    }
    const double got = kernels::bf16_to_float(row[static_cast<size_t>(j)]);
    max_err = std::max(max_err, std::fabs(got - ref));
    max_ref = std::max(max_ref, std::fabs(ref));
  }
  result.check_error = max_err / (max_ref + 1e-30);
  if (ws != nullptr) gpu->release(ws);
  gpu->release(c);
  gpu->release(b);
  gpu->release(a);
  return result;
}

// ---- the layer steps ----

/// The zoo's GPT at a layer shape with `layers` layers, as `meshpipe train --precision bf16`
/// builds its step: bf16 activations, f32 master weights, Adam.
Expected<graph::TrainingGraph> layer_graph(const LayerShape& l, const Options& o, int64_t layers) {
  const graph::models::ModelSpec spec{.name = fmt::format("{}-x{}", l.label, layers),
                                      .family = "gpt",
                                      .description = "bench_gpu_layer",
                                      .default_batch = batch_of(l, o),
                                      .dtype = DType::kBF16,
                                      .config = graph::models::GptConfig{.seq_len = o.seq,
                                                                         .hidden = l.hidden,
                                                                         .layers = layers,
                                                                         .heads = l.heads,
                                                                         .vocab = o.vocab,
                                                                         .ffn_mult = 4}};
  const graph::OptimizerConfig adam{.kind = graph::OptimizerConfig::Kind::kAdam,
                                    .lr = 1e-4f,
                                    .momentum = 0.0f,
                                    .beta1 = 0.9f,
                                    .beta2 = 0.999f,
                                    .eps = 1e-8f,
                                    .weight_decay = 0.0f};
  return graph::models::zoo_training_graph(spec, batch_of(l, o), adam, DType::kBF16);
}

/// FLOPs of a graph: all ops, and its dots alone.
struct GraphFlops {
  double all = 0.0;
  double dots = 0.0;
};

GraphFlops graph_flops(const graph::Graph& g) {
  GraphFlops f;
  f.all = graph::graph_cost(g).total().value();
  for (const graph::Op& op : g.ops()) {
    if (op.kind == OpKind::kDot) f.dots += graph::op_flops(g, op).value();
  }
  return f;
}

/// An executor of `g` on GPU 0, initialised, with its data.
struct GpuRun {
  std::unique_ptr<runtime::Executor> exec;
  std::optional<runtime::SyntheticData> data;
};

Expected<GpuRun> open_run(const graph::TrainingGraph& tg, const Options& o, bool profile) {
  const uint64_t seed = o.seed;
  runtime::ExecutorOptions eo;
  eo.device = o.cpu ? kernels::Device::kCpu : kernels::Device::kCuda;
  eo.gpu = 0;
  eo.profile = profile;
  GpuRun r;
  MP_ASSIGN_OR_RETURN(r.exec, runtime::Executor::create(tg.graph, eo));
  MP_RETURN_IF_ERROR(r.exec->initialize(seed));
  MP_ASSIGN_OR_RETURN(runtime::SyntheticData data,
                      runtime::SyntheticData::create(tg.graph, tg.inputs, seed));
  r.data.emplace(std::move(data));
  return r;
}

/// What the timed steps of one graph measured.
struct StepTiming {
  double median_s = 0.0;
  int64_t timed_steps = 0;
  double first_loss = 0.0;
  double last_loss = 0.0;
  double peak_gib = 0.0;
};

/// Seconds the steps of one graph may take: when the first warm-up step shows that warmup +
/// steps would take longer, fewer steps are timed (at least 2; the table says how many), so a
/// slow kernel cannot stop the run before it reports.
constexpr double kStepsBudgetSeconds = 20.0;

Expected<StepTiming> time_steps(const graph::TrainingGraph& tg, const Options& o) {
  MP_ASSIGN_OR_RETURN(GpuRun r, open_run(tg, o, /*profile=*/false));
  StepTiming t;
  std::vector<double> times;
  int64_t warmup = o.warmup;
  int64_t steps = o.steps;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    const auto batch = r.data->next_batch();
    const Clock::time_point t0 = Clock::now();
    MP_ASSIGN_OR_RETURN(runtime::StepStats st, r.exec->run(batch));
    const double secs = seconds_since(t0);  // run() returns with the loss on the host
    if (s == 0) {
      t.first_loss = st.loss;
      if (secs * static_cast<double>(warmup + steps) > kStepsBudgetSeconds) {
        warmup = std::min<int64_t>(warmup, 1);
        steps = std::clamp<int64_t>(static_cast<int64_t>(kStepsBudgetSeconds / secs) - 1, 2, steps);
      }
    }
    t.last_loss = st.loss;
    if (s >= warmup) times.push_back(secs);
  }
  t.timed_steps = static_cast<int64_t>(times.size());
  if (!std::isfinite(t.last_loss)) {
    return make_error(Errc::kInternal, "the loss is {} after {} steps", t.last_loss,
                      o.warmup + o.steps);
  }
  t.median_s = median(times);
  t.peak_gib = static_cast<double>(r.exec->memory().peak.value()) / (1024.0 * 1024.0 * 1024.0);
  return t;
}

/// One row of the layer table.
struct LayerRow {
  const LayerShape* shape = nullptr;
  std::string error;  ///< non-empty: the row failed
  StepTiming one;     ///< the 1-layer model
  StepTiming two;     ///< the 2-layer model
  double layer_s = 0.0;
  double model_flops = 0.0;      ///< Megatron's count for one layer
  double graph_dot_flops = 0.0;  ///< the graph's dots of one layer (= model_flops)
  double graph_all_flops = 0.0;  ///< every op of one layer, Adam included
};

Expected<LayerRow> measure_layer(const LayerShape& l, const Options& o) {
  LayerRow row;
  row.shape = &l;
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph g1, layer_graph(l, o, 1));
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph g2, layer_graph(l, o, 2));
  const GraphFlops f1 = graph_flops(g1.graph);
  const GraphFlops f2 = graph_flops(g2.graph);
  row.graph_dot_flops = f2.dots - f1.dots;
  row.graph_all_flops = f2.all - f1.all;
  const double b = static_cast<double>(batch_of(l, o));
  const double s = static_cast<double>(o.seq);
  const double h = static_cast<double>(l.hidden);
  row.model_flops = 3.0 * (24.0 * b * s * h * h + 4.0 * b * s * s * h);
  MP_ASSIGN_OR_RETURN(row.one, time_steps(g1, o));
  MP_ASSIGN_OR_RETURN(row.two, time_steps(g2, o));
  row.layer_s = row.two.median_s - row.one.median_s;
  return row;
}

// ---- the profile ----

/// The per-kind breakdown of the 1.3B shape's 1-layer step, as Markdown.
Expected<std::string> profile_table(const LayerShape& l, const Options& o) {
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg, layer_graph(l, o, 1));
  MP_ASSIGN_OR_RETURN(GpuRun r, open_run(tg, o, /*profile=*/true));
  MP_RETURN_IF_ERROR(r.exec->run(r.data->next_batch()).status());
  const std::map<graph::OpKind, double> before = r.exec->profile();
  constexpr int kSteps = 3;
  std::vector<double> times;
  for (int s = 0; s < kSteps; ++s) {
    const auto batch = r.data->next_batch();
    const Clock::time_point t0 = Clock::now();
    MP_RETURN_IF_ERROR(r.exec->run(batch).status());
    times.push_back(seconds_since(t0));
  }
  struct KindCost {
    double flops = 0.0;
    double bytes = 0.0;
    int64_t ops = 0;
  };
  std::map<graph::OpKind, KindCost> costs;
  for (const graph::Op& op : tg.graph.ops()) {
    KindCost& c = costs[op.kind];
    c.flops += graph::op_flops(tg.graph, op).value();
    c.bytes += static_cast<double>(graph::op_bytes(tg.graph, op).value());
    ++c.ops;
  }
  std::vector<std::pair<double, graph::OpKind>> per_step;
  double total = 0.0;
  for (const auto& [kind, secs] : r.exec->profile()) {
    const auto it = before.find(kind);
    const double s = (secs - (it != before.end() ? it->second : 0.0)) / kSteps;
    per_step.emplace_back(s, kind);
    total += s;
  }
  std::sort(per_step.rbegin(), per_step.rend());
  std::string t = fmt::format(
      "\n## Where the time goes: {} (b{} s{} h{}), 1-layer model, per step\n\n"
      "The executor's profile (time per op kind) over {} steps after one warm-up; profiled "
      "step {:.2f} ms (median), profiled op time {:.2f} ms. FLOPs and bytes are the graph's "
      "(graph/cost.h).\n\n"
      "| op kind | ms/step | share | ops | GFLOP | TFLOP/s | GB/s |\n"
      "|---|---:|---:|---:|---:|---:|---:|\n",
      l.label, batch_of(l, o), o.seq, l.hidden, kSteps, median(times) * 1e3, total * 1e3);
  double rest = 0.0;
  for (size_t i = 0; i < per_step.size(); ++i) {
    const auto [s, kind] = per_step[i];
    if (static_cast<int64_t>(i) >= o.top) {
      rest += s;
      continue;
    }
    const KindCost& c = costs[kind];
    t += fmt::format("| {} | {:.3f} | {:.1f}% | {} | {:.1f} | {:.1f} | {:.0f} |\n",
                     graph::op_kind_name(kind), s * 1e3, total > 0 ? 100.0 * s / total : 0.0, c.ops,
                     c.flops * 1e-9, s > 0 ? c.flops * 1e-12 / s : 0.0,
                     s > 0 ? c.bytes * 1e-9 / s : 0.0);
  }
  if (rest > 0) {
    t += fmt::format("| (other kinds) | {:.3f} | {:.1f}% | | | | |\n", rest * 1e3,
                     total > 0 ? 100.0 * rest / total : 0.0);
  }
  return t;
}

// ---- the report ----

std::string percent(double x) { return fmt::format("{:.1f}%", 100.0 * x); }

/// The report as it grows: each piece goes to stdout at once and the whole text to --out again,
/// so a run stopped by a time limit leaves what it measured so far.
class Report {
 public:
  explicit Report(std::string path) : path_(std::move(path)) {}
  void add(const std::string& piece) {
    text_ += piece;
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
    if (path_.empty()) return;
    std::ofstream f(path_);
    f << text_;
    if (!f && written_) {
      std::fprintf(stderr, "bench_gpu_layer: cannot write %s\n", path_.c_str());
      written_ = false;
    }
  }
  bool written() const { return written_; }

 private:
  std::string path_;
  std::string text_;
  bool written_ = true;
};

int run(const Options& o) {
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (!o.cpu && (inv.cuda_devices == 0 || inv.gpus.empty())) {
    std::printf("SKIPPED: %s\n", inv.summary.c_str());
    return 77;
  }
  const kernels::GpuInfo gpu = o.cpu ? kernels::GpuInfo{.name = "the CPU (--device cpu)",
                                                        .memory_bytes = 0,
                                                        .major = 0,
                                                        .minor = 0}
                                     : inv.gpus[0];
  const std::optional<double> peak = datasheet_peak(gpu.name);
  int failures = 0;

  Report report(o.out);
  report.add(fmt::format(
      "# bench_gpu_layer: {}, {}\n\n"
      "GPU 0: {} ({:.1f} GiB, sm_{}{}); host {}. Datasheet dense bf16 peak: {}.\n\n",
      gpu.name, utc_now(), gpu.name,
      static_cast<double>(gpu.memory_bytes) / (1024.0 * 1024.0 * 1024.0), gpu.major, gpu.minor,
      machine(), peak ? fmt::format("{:.0f} TFLOP/s", *peak) : "unknown (no MFU column)"));

  const Clock::time_point t_gemm = Clock::now();
  Expected<GemmResult> gemm =
      o.cpu ? Expected<GemmResult>(make_error(Errc::kUnavailable, "not measured on the CPU"))
            : measure_gemm(o.gemm);
  std::fprintf(stderr, "bench_gpu_layer: GEMM %.1f s\n", seconds_since(t_gemm));
  if (gemm.has_value()) {
    report.add(fmt::format(
        "cuBLASLt GEMM through run_kernel(kCuda, kDot), bf16 {}^3 (bf16 in and out, f32 "
        "accumulation, random data), median of 5 rounds of 10: {:.3f} ms, **{:.0f} TFLOP/s**{}; "
        "64 outputs against the host: max error {:.1e} of their max (bf16 rounding: up to "
        "2.0e-03).\n\n",
        o.gemm, gemm->ms, gemm->tflops,
        peak ? fmt::format(" ({} of the datasheet peak)", percent(gemm->tflops / *peak)) : "",
        gemm->check_error));
    if (gemm->check_error > 1e-2) ++failures;
  } else {
    report.add(fmt::format("cuBLASLt GEMM: FAILED: {}\n\n", gemm.status().to_string()));
    failures += o.cpu ? 0 : 1;
  }

  report.add(fmt::format(
      "One GPT layer (zoo GPT, post-LN, GELU MLP 4h), bf16 mixed precision (bf16 activations, "
      "f32 master weights and Adam), one training step = forward + backward + Adam update, "
      "through runtime::Executor on {}. Layer time = median step (of {} after {} warm-ups) "
      "of the 2-layer model minus the 1-layer model (vocabulary {}). Model FLOPs per layer: "
      "3 (24 b s h^2 + 4 b s^2 h), as bench/gpu_torch_layer.py counts.\n\n"
      "| layer | shape | 1-layer step ms | 2-layer step ms | layer ms | model GFLOP | TFLOP/s "
      "| MFU | of GEMM | graph dot GFLOP | graph all-op GFLOP | peak GiB (2 layers) |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
      o.cpu ? "the CPU" : "GPU 0", o.steps, o.warmup, o.vocab));
  std::string notes;
  for (const std::string& key : o.shapes) {
    const LayerShape& l = *std::find_if(layer_shapes().begin(), layer_shapes().end(),
                                        [&](const LayerShape& s) { return s.key == key; });
    const std::string shape = fmt::format("b{} s{} h{}", batch_of(l, o), o.seq, l.hidden);
    const Clock::time_point t0 = Clock::now();
    Expected<LayerRow> row = measure_layer(l, o);
    std::fprintf(stderr, "bench_gpu_layer: %s %.1f s\n", l.label.c_str(), seconds_since(t0));
    if (!row.has_value()) {
      report.add(fmt::format("| {} | {} | FAILED: {} | | | | | | | | | |\n", l.label, shape,
                             row.status().to_string()));
      ++failures;
      continue;
    }
    const double tflops = row->layer_s > 0 ? row->model_flops / row->layer_s * 1e-12 : 0.0;
    report.add(fmt::format(
        "| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.1f} | {:.0f} | {} | {} | {:.1f} | {:.1f} | "
        "{:.2f} |\n",
        l.label, shape, row->one.median_s * 1e3, row->two.median_s * 1e3, row->layer_s * 1e3,
        row->model_flops * 1e-9, tflops, peak ? percent(tflops / *peak) : "-",
        gemm.has_value() ? percent(tflops / gemm->tflops) : "-", row->graph_dot_flops * 1e-9,
        row->graph_all_flops * 1e-9, row->two.peak_gib));
    const double dot_gap =
        std::fabs(row->graph_dot_flops - row->model_flops) / std::max(row->model_flops, 1.0);
    notes += fmt::format(
        "- {}: {} and {} timed steps (1 and 2 layers); the 2-layer model's loss {:.4f} -> "
        "{:.4f}{}\n",
        l.label, row->one.timed_steps, row->two.timed_steps, row->two.first_loss,
        row->two.last_loss,
        dot_gap > 1e-9 ? fmt::format("; the graph's dot FLOPs differ from the model "
                                     "count by {}",
                                     percent(dot_gap))
                       : "; the graph's dot FLOPs equal the model count");
    if (row->layer_s <= 0) ++failures;
  }
  report.add("\n" + notes);

  if (o.profile) {
    const auto it = std::find_if(layer_shapes().begin(), layer_shapes().end(),
                                 [](const LayerShape& s) { return s.key == "1.3b"; });
    const Clock::time_point t0 = Clock::now();
    Expected<std::string> prof = profile_table(*it, o);
    std::fprintf(stderr, "bench_gpu_layer: profile %.1f s\n", seconds_since(t0));
    if (prof.has_value()) {
      report.add(*prof);
    } else {
      report.add(
          fmt::format("\nProfile of the {}: FAILED: {}\n", it->label, prof.status().to_string()));
      ++failures;
    }
  }

  return failures > 0 || !report.written() ? 1 : 0;
}

}  // namespace
}  // namespace meshpipe::bench

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  meshpipe::Expected<meshpipe::bench::Options> o = meshpipe::bench::parse_args(argc, argv);
  if (!o.has_value()) {
    std::fprintf(stderr, "bench_gpu_layer: %s\n", o.status().to_string().c_str());
    meshpipe::bench::print_usage();
    return 2;
  }
  return meshpipe::bench::run(*o);
}

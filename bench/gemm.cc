// bench_gemm: throughput of kernels::dot against direct cblas_sgemm in the same process, on the
// matrix products of the GPT step benchmark. Both run interleaved; each reports its best time.
#include <cblas.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench_env.h"
#include "core/rng.h"
#include "graph/models/gpt.h"
#include "graph/training_graph.h"
#include "kernels/matmul.h"
#include "runtime/host_tensor.h"

namespace meshpipe::bench {
namespace {

using runtime::HostTensor;

/// One matrix product to measure; `per_step` is how often it occurs in one GPT step (0: not
/// counted, a listed shape).
struct Case {
  std::string name;
  Shape lhs;
  Shape rhs;
  DotDims dims;
  int64_t per_step = 0;
};

struct Options {
  int64_t reps = 7;
  bool gpt_dots = true;
  std::string markdown;  ///< write the table here as well
  graph::models::GptConfig gpt{/*seq_len=*/256, /*hidden=*/512,
                               /*layers=*/4,    /*heads=*/8,
                               /*vocab=*/8192,  /*ffn_mult=*/4};
  int64_t batch = 8;
};

/// The shapes named in bench/README.md; the GPT default sizes are B=8, S=256, H=512, V=8192.
std::vector<Case> listed_cases() {
  return {
      {"[2048x512].[512x512] (qkvo projection)", Shape{2048, 512}, Shape{512, 512},
       DotDims{{}, {}, {1}, {0}}},
      {"[2048x512].[512x2048] (mlp fc1)", Shape{2048, 512}, Shape{512, 2048},
       DotDims{{}, {}, {1}, {0}}},
      {"[2048x2048].[2048x512] (mlp fc2)", Shape{2048, 2048}, Shape{2048, 512},
       DotDims{{}, {}, {1}, {0}}},
      {"[8,256,512]^T.[8,256,2048] contract (0,1) (fc1 weight grad)", Shape{8, 256, 512},
       Shape{8, 256, 2048}, DotDims{{}, {}, {0, 1}, {0, 1}}},
      {"[8,8,256,64].[8,8,256,64] contract last (attention scores)", Shape{8, 8, 256, 64},
       Shape{8, 8, 256, 64}, DotDims{{0, 1}, {0, 1}, {3}, {3}}},
      {"[8,256,512].[8192,512]^T (lm head logits)", Shape{8, 256, 512}, Shape{8192, 512},
       DotDims{{}, {}, {2}, {1}}},
      {"1024^3", Shape{1024, 1024}, Shape{1024, 1024}, DotDims{{}, {}, {1}, {0}}},
  };
}

/// Every distinct dot of the GPT training step (forward and gradients), with its count.
Expected<std::vector<Case>> gpt_cases(const Options& o) {
  MP_ASSIGN_OR_RETURN(graph::ForwardGraph fwd,
                      graph::models::build_gpt(o.gpt, o.batch, DType::kF32));
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                      graph::make_training_graph(std::move(fwd), graph::OptimizerConfig{}));
  std::vector<Case> cases;
  for (const graph::Op& op : tg.graph.ops()) {
    if (op.kind != graph::OpKind::kDot) continue;
    const Shape& lhs = tg.graph.value(op.inputs[0]).shape;
    const Shape& rhs = tg.graph.value(op.inputs[1]).shape;
    auto same = [&](const Case& c) {
      return c.lhs == lhs && c.rhs == rhs && c.dims == op.attrs.dot;
    };
    auto it = std::find_if(cases.begin(), cases.end(), same);
    if (it != cases.end()) {
      ++it->per_step;
      continue;
    }
    cases.push_back({op.name, lhs, rhs, op.attrs.dot, 1});
  }
  for (Case& c : cases) {
    if (c.per_step > 1) c.name += fmt::format(" and {} alike", c.per_step - 1);
  }
  return cases;
}

std::string dims_string(const std::vector<int64_t>& v) {
  return fmt::format("({})", fmt::join(v, ","));
}

std::string describe(const Case& c) {
  return fmt::format("{}.{} b{}{} c{}{}", c.lhs.to_string(), c.rhs.to_string(),
                     dims_string(c.dims.lhs_batch), dims_string(c.dims.rhs_batch),
                     dims_string(c.dims.lhs_contract), dims_string(c.dims.rhs_contract));
}

// ---- the reference: cblas_sgemm on operands already laid out for it ----

/// Dims of an operand in the memory order sgemm reads: batch, then free and contract (or
/// contract and free). `in_place` when that order is the operand's own.
struct RefOperand {
  std::vector<int64_t> order;
  bool contract_first = false;
  bool in_place = false;
};

RefOperand ref_operand(const Shape& s, const std::vector<int64_t>& batch,
                       const std::vector<int64_t>& contract, bool copy_contract_first) {
  const std::vector<int64_t> free = dot_free_dims(s.rank(), batch, contract);
  RefOperand r;
  for (bool cf : {false, true}) {
    std::vector<int64_t> order = batch;
    const auto& first = cf ? contract : free;
    const auto& second = cf ? free : contract;
    order.insert(order.end(), first.begin(), first.end());
    order.insert(order.end(), second.begin(), second.end());
    bool identity = true;
    for (size_t i = 0; i < order.size(); ++i) identity = identity && order[i] == int64_t(i);
    if (identity || cf == copy_contract_first) {
      r.order = order;
      r.contract_first = cf;
      r.in_place = identity;
      if (identity) return r;
    }
  }
  return r;
}

/// dst = src with its dims permuted to `order` (untimed set-up of the reference).
HostTensor permuted(const HostTensor& src, const std::vector<int64_t>& order) {
  const Shape& s = src.shape();
  std::vector<int64_t> dims;
  for (int64_t d : order) dims.push_back(s[d]);
  HostTensor dst(Shape(dims), DType::kF32);
  const std::vector<int64_t> strides = s.strides();
  std::vector<int64_t> idx(order.size(), 0);
  const float* in = src.f32();
  float* out = dst.f32();
  for (int64_t i = 0; i < dst.numel(); ++i) {
    int64_t off = 0;
    for (size_t k = 0; k < order.size(); ++k) off += idx[k] * strides[size_t(order[k])];
    out[i] = in[off];
    for (size_t k = order.size(); k-- > 0;) {
      if (++idx[k] < dims[k]) break;
      idx[k] = 0;
    }
  }
  return dst;
}

/// Everything one case needs, allocated once.
struct Prepared {
  DotSizes sz;
  HostTensor lhs;
  HostTensor rhs;
  HostTensor out;
  HostTensor workspace;
  HostTensor ref_a;  // reference operands (aliases of lhs/rhs data when in place)
  HostTensor ref_b;
  HostTensor ref_out;
  RefOperand ra;
  RefOperand rb;
};

HostTensor random_tensor(const Shape& s, uint64_t seed) {
  HostTensor t(s, DType::kF32);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    p[i] = static_cast<float>(2.0 * uniform_at(seed, static_cast<uint64_t>(i)) - 1.0);
  }
  return t;
}

Prepared prepare(const Case& c) {
  Prepared p;
  p.sz = dot_sizes(c.lhs, c.rhs, c.dims);
  p.lhs = random_tensor(c.lhs, 1);
  p.rhs = random_tensor(c.rhs, 2);
  const Expected<Shape> out_shape = dot_output_shape(c.lhs, c.rhs, c.dims);
  MP_CHECK(out_shape.has_value()) << out_shape.status().to_string();
  p.out = HostTensor(*out_shape, DType::kF32);
  const int64_t ws = kernels::dot_workspace_bytes(c.lhs, c.rhs, c.dims);
  p.workspace = HostTensor(Shape{std::max<int64_t>((ws + 3) / 4, 1)}, DType::kF32);
  p.ra = ref_operand(c.lhs, c.dims.lhs_batch, c.dims.lhs_contract, /*copy_contract_first=*/false);
  p.rb = ref_operand(c.rhs, c.dims.rhs_batch, c.dims.rhs_contract, /*copy_contract_first=*/true);
  p.ref_a = p.ra.in_place ? HostTensor() : permuted(p.lhs, p.ra.order);
  p.ref_b = p.rb.in_place ? HostTensor() : permuted(p.rhs, p.rb.order);
  p.ref_out = HostTensor(*out_shape, DType::kF32);
  return p;
}

void run_dot(Prepared& p, const Case& c) {
  kernels::TensorView ws;
  if (kernels::dot_workspace_bytes(c.lhs, c.rhs, c.dims) > 0) ws = p.workspace.view();
  kernels::dot(kernels::KernelContext{}, p.lhs.view(), p.rhs.view(), c.dims, p.out.view(), ws);
}

void run_sgemm(Prepared& p) {
  const DotSizes& z = p.sz;
  const float* a = p.ra.in_place ? p.lhs.f32() : p.ref_a.f32();
  const float* b = p.rb.in_place ? p.rhs.f32() : p.ref_b.f32();
  float* c = p.ref_out.f32();
  const CBLAS_TRANSPOSE ta = p.ra.contract_first ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = p.rb.contract_first ? CblasNoTrans : CblasTrans;
  const int lda = static_cast<int>(p.ra.contract_first ? z.m : z.k);
  const int ldb = static_cast<int>(p.rb.contract_first ? z.n : z.k);
  for (int64_t i = 0; i < z.batch; ++i) {
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(z.m), static_cast<int>(z.n),
                static_cast<int>(z.k), 1.0f, a + i * z.m * z.k, lda, b + i * z.k * z.n, ldb, 0.0f,
                c + i * z.m * z.n, static_cast<int>(z.n));
  }
}

template <class F>
double seconds_of(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Result {
  Case c;
  double flops = 0.0;
  double dot_s = 1e30;
  double sgemm_s = 1e30;
  double max_rel_err = 0.0;
  bool copies = false;  // dot gathers an operand into its workspace
};

Result measure(const Case& c, int64_t reps) {
  Prepared p = prepare(c);
  Result r;
  r.c = c;
  r.flops = 2.0 * static_cast<double>(p.sz.batch) * static_cast<double>(p.sz.m) *
            static_cast<double>(p.sz.n) * static_cast<double>(p.sz.k);
  r.copies = kernels::dot_workspace_bytes(c.lhs, c.rhs, c.dims) > 0;
  run_dot(p, c);  // warm-up: page faults, BLAS thread start
  run_sgemm(p);
  for (int64_t i = 0; i < reps; ++i) {  // interleaved: drift hits both alike
    r.dot_s = std::min(r.dot_s, seconds_of([&] { run_dot(p, c); }));
    r.sgemm_s = std::min(r.sgemm_s, seconds_of([&] { run_sgemm(p); }));
  }
  // Same numbers up to summation order (the output layouts are identical by construction).
  double max_ref = 0.0;
  double max_diff = 0.0;
  for (int64_t i = 0; i < p.out.numel(); ++i) {
    max_ref = std::max(max_ref, std::abs(double(p.ref_out.f32()[i])));
    max_diff = std::max(max_diff, std::abs(double(p.out.f32()[i]) - p.ref_out.f32()[i]));
  }
  r.max_rel_err = max_ref > 0 ? max_diff / max_ref : max_diff;
  return r;
}

// ---- reporting ----

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

/// OPENBLAS_* settings other than the thread count (e.g. OPENBLAS_CORETYPE), or "-".
std::string blas_env() {
  std::vector<std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    if (kv.rfind("OPENBLAS_", 0) == 0 && kv.rfind("OPENBLAS_NUM_THREADS=", 0) != 0) {
      vars.push_back(kv);
    }
  }
  std::sort(vars.begin(), vars.end());
  return vars.empty() ? "-" : fmt::format("{}", fmt::join(vars, ", "));
}

std::string row(const Result& r, bool with_count) {
  const double g_dot = r.flops * 1e-9 / r.dot_s;
  const double g_ref = r.flops * 1e-9 / r.sgemm_s;
  std::string count = with_count ? fmt::format(" {} |", r.c.per_step) : "";
  return fmt::format(
      "| {} | `{}` |{} {:.2f} | {:.2f} | {:.1f} | {:.1f} | **{:.2f}** | {} | {:.0e} |", r.c.name,
      describe(r.c), count, r.flops * 1e-9, r.dot_s * 1e3, g_dot, g_ref, r.dot_s / r.sgemm_s,
      r.copies ? "yes" : "no", r.max_rel_err);
}

std::string report(const Options& o, const std::vector<Result>& listed,
                   const std::vector<Result>& gpt) {
  std::string md = "# GEMM: kernels::dot vs cblas_sgemm\n\n";
  md += fmt::format(
      "| machine | cores | date | OPENBLAS_NUM_THREADS | OMP_NUM_THREADS | other BLAS env | "
      "OpenBLAS | repetitions |\n|---|---|---|---|---|---|---|---|\n"
      "| {} | {} | {} | {} | {} | {} | {} | best of {} (interleaved) |\n\n",
      bench::cpu_model(), bench::cpu_count(), bench::utc_now(),
      env_or("OPENBLAS_NUM_THREADS", "(unset)"), env_or("OMP_NUM_THREADS", "(unset)"), blas_env(),
      fmt::format("{}, core {}", openblas_get_config(), openblas_get_corename()), o.reps);
  md +=
      "Ratio = dot time / sgemm time (1.00 = no overhead; > 1: dot is slower). The reference "
      "calls cblas_sgemm once per batch element on operands already in a layout BLAS reads "
      "(permuted outside the timing when dot has to gather), so a ratio above 1 is the cost of "
      "dot's own work: operand gathers into the workspace and per-call overhead. "
      "\"gathers\" = dot copies an operand into its workspace; err = max |dot - sgemm| / "
      "max |sgemm|.\n\n";
  const std::string head =
      "| case | operands (lhs.rhs, batch dims, contracting dims) |{} GFLOP | dot ms | dot "
      "GFLOP/s | sgemm GFLOP/s | ratio | gathers | err |\n|---|---|{}---|---|---|---|---|---|"
      "---|\n";
  md += "## Listed shapes\n\n" + fmt::format(fmt::runtime(head), "", "");
  for (const Result& r : listed) md += row(r, false) + "\n";
  if (!gpt.empty()) {
    md += fmt::format(
        "\n## Every distinct dot of one GPT training step (hidden {}, layers {}, heads {}, seq "
        "{}, batch {}, vocab {})\n\n",
        o.gpt.hidden, o.gpt.layers, o.gpt.heads, o.gpt.seq_len, o.batch, o.gpt.vocab);
    md += fmt::format(fmt::runtime(head), " per step |", "---|");
    double dot_total = 0.0;
    double ref_total = 0.0;
    double flops = 0.0;
    for (const Result& r : gpt) {
      md += row(r, true) + "\n";
      dot_total += r.dot_s * double(r.c.per_step);
      ref_total += r.sgemm_s * double(r.c.per_step);
      flops += r.flops * double(r.c.per_step);
    }
    md += fmt::format(
        "\nWeighted by count, one step's dots take {:.1f} ms in kernels::dot ({:.1f} GFLOP/s) "
        "and {:.1f} ms as direct sgemm ({:.1f} GFLOP/s): ratio **{:.2f}**, {:.1f} GFLOP.\n",
        dot_total * 1e3, flops * 1e-9 / dot_total, ref_total * 1e3, flops * 1e-9 / ref_total,
        dot_total / ref_total, flops * 1e-9);
  }
  return md;
}

Expected<Options> parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--no-gpt") {
      o.gpt_dots = false;
      continue;
    }
    if (i + 1 >= argc) return make_error(Errc::kInvalidArgument, "{} needs a value", flag);
    const std::string value = argv[++i];
    if (flag == "--markdown") {
      o.markdown = value;
    } else if (flag == "--reps") {
      o.reps = std::strtoll(value.c_str(), nullptr, 10);
    } else {
      return make_error(Errc::kInvalidArgument,
                        "unknown flag {} (flags: --reps N, --markdown PATH, --no-gpt)", flag);
    }
  }
  if (o.reps < 1) return make_error(Errc::kInvalidArgument, "--reps must be >= 1");
  return o;
}

Status run(const Options& o) {
  std::vector<Result> listed;
  for (const Case& c : listed_cases()) {
    listed.push_back(measure(c, o.reps));
    std::fprintf(stderr, "%s\n", row(listed.back(), false).c_str());
  }
  std::vector<Result> gpt;
  if (o.gpt_dots) {
    MP_ASSIGN_OR_RETURN(std::vector<Case> cases, gpt_cases(o));
    for (const Case& c : cases) {
      gpt.push_back(measure(c, o.reps));
      std::fprintf(stderr, "%s\n", row(gpt.back(), true).c_str());
    }
  }
  const std::string md = report(o, listed, gpt);
  std::printf("%s", md.c_str());
  if (!o.markdown.empty()) {
    std::ofstream out(o.markdown);
    out << md;
    if (!out) return make_error(Errc::kIo, "cannot write {}", o.markdown);
  }
  return Status::ok();
}

}  // namespace
}  // namespace meshpipe::bench

int main(int argc, char** argv) {
  using namespace meshpipe;
  Expected<bench::Options> o = bench::parse_args(argc, argv);
  if (!o) {
    std::fprintf(stderr, "bench_gemm: %s\n", o.status().to_string().c_str());
    return 2;
  }
  const Status s = bench::run(*o);
  if (!s.is_ok()) {
    std::fprintf(stderr, "bench_gemm: %s\n", s.to_string().c_str());
    return 1;
  }
  return 0;
}

// backend_ops: every case of backend_ops_cases.cc run on one backend and checked against the CPU
// f32 kernels on the same inputs (ggml's test-backend-ops idea). --backend cpu-half: the CPU
// f16/bf16 storage path, bit for bit; --backend cuda: the CUDA column (SKIPPED without a GPU);
// --backend cpu: the CPU column through cuda's comparisons (a check of this driver).
//
// Tolerances of --backend cuda (and cpu). Per output, error = max|test - ref| / (max|ref| + 1e-6)
// where ref is the CPU f32 kernel on the same inputs (rounded to the dtype where a view is half),
// itself not rounded. An output's tolerance is its case class's f32 tolerance plus, when it is
// stored in f16 or bf16, `roundings` (1 unless a case says why) times the per-rounding one.
//
//   class        f32    why
//   exact        bits   data movement (reshape, transpose, slice, pad, concat, broadcast,
//                       embedding, max_pool2d, constant, convert): each output element is an
//                       input element, a zero or one rounded constant, so it must equal the
//                       CPU's result rounded to the output dtype, bit for bit
//   elementwise  1e-5   one f32 expression per element (CUDA's tanhf, expf: <= 2 ulp)
//   reduction    1e-4   sums of up to ~1e5 terms in another order (tree vs loop); exp/log over rows
//   gemm         1e-4   f32 accumulation in another order and blocking; TF32 (10-bit mantissa,
//                       ~1e-3) fails it on purpose: an f32 GEMM or convolution must not use it
//
//   per rounding of a half output: f16 1e-3 = 2u (u = 2^-11), bf16 8e-3 = 2u (u = 2^-8): one
//   rounding errs by <= u |ref_i| <= u max|ref|, and 2u leaves room for the f32 part.
//   roundings > 1: a layer or batch norm's y computed from its stored half mean and rstd (3:
//   mean, rstd, y), batch_norm_apply's y from its stored rstd (2), batch_norm_grad's dx from its
//   stored dgamma and dbeta (2).
//   Half inputs add nothing: both backends read the same rounded values. Integer outputs must
//   match exactly. --backend cpu-half has no tolerance: the same f32 kernel on the same values.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/backend_ops_cases.h"
#include "kernels/device.h"
#include "kernels/gpu.h"
#include "kernels/half.h"

namespace meshpipe::kernels::backend_ops {
namespace {

constexpr double kF32Tolerance[] = {/*exact=*/0.0, /*elementwise=*/1e-5, /*reduction=*/1e-4,
                                    /*gemm=*/1e-4};
constexpr double kF16PerRounding = 1e-3;
constexpr double kBF16PerRounding = 8e-3;

bool is_half(DType t) { return t == DType::kF16 || t == DType::kBF16; }

double tolerance(const Case& c, DType out) {
  if (c.tol == TolClass::kExact) return 0.0;
  double t = kF32Tolerance[static_cast<int>(c.tol)];
  if (out == DType::kF16) t += c.roundings * kF16PerRounding;
  if (out == DType::kBF16) t += c.roundings * kBF16PerRounding;
  return t;
}

DType view_dtype(bool is_int, const std::optional<DType>& own, DType run) {
  if (is_int) return DType::kI32;
  return own.value_or(run);
}
DType in_dtype(const Case& c, size_t i, DType run) {
  return view_dtype(c.in[i].is_int, c.in[i].dtype, run);
}
DType out_dtype(const Case& c, size_t o, DType run) {
  return view_dtype(c.out[o].is_int, c.out[o].dtype, run);
}

// The attributes of a run: convert names its output's storage type.
OpAttrs run_attrs(const Case& c, DType run) {
  OpAttrs a = c.attrs;
  if (c.kind == OpKind::kConvert) a.dtype = out_dtype(c, 0, run);
  return a;
}

// Storage of f32 values in `t` (f32 or half, rounded to nearest even), and back.
std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> b(v.size() * static_cast<size_t>(dtype_size(t)));
  if (is_half(t)) {
    round_to_half(v.data(), reinterpret_cast<uint16_t*>(b.data()), static_cast<int64_t>(v.size()),
                  t);
  } else {
    std::memcpy(b.data(), v.data(), b.size());
  }
  return b;
}

std::vector<float> decode(const std::vector<uint8_t>& b, DType t) {
  std::vector<float> v(b.size() / static_cast<size_t>(dtype_size(t)));
  if (is_half(t)) {
    widen_from_half(reinterpret_cast<const uint16_t*>(b.data()), v.data(),
                    static_cast<int64_t>(v.size()), t);
  } else {
    std::memcpy(v.data(), b.data(), b.size());
  }
  return v;
}

// The input values both backends see: rounded to the dtype where the view is half.
std::vector<std::vector<float>> rounded_inputs(const Case& c, DType run) {
  std::vector<std::vector<float>> r;
  for (size_t i = 0; i < c.in.size(); ++i) {
    const DType t = in_dtype(c, i, run);
    r.push_back(c.in[i].is_int ? std::vector<float>() : decode(encode(c.in[i].values, t), t));
  }
  return r;
}

std::vector<uint8_t> input_bytes(const Case& c, size_t i, DType run) {
  const Operand& o = c.in[i];
  if (!o.is_int) return encode(o.values, in_dtype(c, i, run));
  std::vector<uint8_t> b(o.ids.size() * sizeof(int32_t));
  std::memcpy(b.data(), o.ids.data(), b.size());
  return b;
}

// ---- the backends' memory ----

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const KernelContext& context() const = 0;
  /// Memory of the backend holding a copy of `bytes`.
  virtual Expected<void*> put(const std::vector<uint8_t>& bytes) = 0;
  /// Copies `bytes.size()` bytes at `p` out.
  virtual Status get(const void* p, std::vector<uint8_t>& bytes) = 0;
  /// Waits for queued work; the first asynchronous error.
  virtual Status finish() = 0;
  /// Frees everything put so far.
  virtual void release_all() = 0;
};

class CpuMemory final : public Backend {
 public:
  Device device() const override { return Device::kCpu; }
  const KernelContext& context() const override { return ctx_; }
  Expected<void*> put(const std::vector<uint8_t>& bytes) override {
    buffers_.push_back(std::make_unique<std::vector<float>>((bytes.size() + 3) / 4));
    std::memcpy(buffers_.back()->data(), bytes.data(), bytes.size());
    return static_cast<void*>(buffers_.back()->data());
  }
  Status get(const void* p, std::vector<uint8_t>& bytes) override {
    std::memcpy(bytes.data(), p, bytes.size());
    return Status::ok();
  }
  Status finish() override { return Status::ok(); }
  void release_all() override { buffers_.clear(); }

 private:
  KernelContext ctx_;
  std::vector<std::unique_ptr<std::vector<float>>> buffers_;
};

class GpuMemory final : public Backend {
 public:
  explicit GpuMemory(std::unique_ptr<GpuDevice> gpu) : gpu_(std::move(gpu)) {}
  ~GpuMemory() override { release_all(); }
  Device device() const override { return Device::kCuda; }
  const KernelContext& context() const override { return gpu_->context(); }
  Expected<void*> put(const std::vector<uint8_t>& bytes) override {
    MP_ASSIGN_OR_RETURN(void* p, gpu_->allocate(static_cast<int64_t>(bytes.size())));
    ptrs_.push_back(p);
    MP_RETURN_IF_ERROR(gpu_->copy_to_device(p, bytes.data(), static_cast<int64_t>(bytes.size())));
    return p;
  }
  Status get(const void* p, std::vector<uint8_t>& bytes) override {
    return gpu_->copy_to_host(bytes.data(), p, static_cast<int64_t>(bytes.size()));
  }
  Status finish() override { return gpu_->synchronize(); }
  void release_all() override {
    for (void* p : ptrs_) gpu_->release(p);
    ptrs_.clear();
  }

 private:
  std::unique_ptr<GpuDevice> gpu_;
  std::vector<void*> ptrs_;
};

// ---- one call ----

struct Alias {
  size_t out = 0;
  size_t in = 0;
};

struct Outcome {
  Status run;   ///< run_kernel's status (or a memory error)
  Status sync;  ///< the device's first asynchronous error
  std::vector<std::vector<uint8_t>> outputs;
};

// Runs `c` in dtype `run` on `b`: inputs copied in, outputs poisoned with 0xff bytes (NaN in
// every floating dtype) unless they alias an input, then the outputs copied back.
Outcome run_once(Backend& b, const Case& c, DType run, const std::vector<Alias>& aliases) {
  Outcome r;
  const auto body = [&]() -> Status {
    std::vector<TensorView> in;
    std::vector<TensorView> out;
    std::vector<Shape> shapes;
    for (size_t i = 0; i < c.in.size(); ++i) {
      MP_ASSIGN_OR_RETURN(void* p, b.put(input_bytes(c, i, run)));
      in.emplace_back(p, c.in[i].shape, in_dtype(c, i, run));
      shapes.push_back(c.in[i].shape);
    }
    for (size_t o = 0; o < c.out.size(); ++o) {
      const DType t = out_dtype(c, o, run);
      void* p = nullptr;
      for (const Alias& a : aliases) {
        if (a.out == o) p = in[a.in].data;
      }
      if (p == nullptr) {
        const auto n = static_cast<size_t>(c.out[o].shape.numel() * dtype_size(t));
        MP_ASSIGN_OR_RETURN(p, b.put(std::vector<uint8_t>(n, 0xff)));
      }
      out.emplace_back(p, c.out[o].shape, t);
    }
    const OpAttrs attrs = run_attrs(c, run);
    KernelArgs args;
    args.ctx = &b.context();
    args.in = in;
    args.out = out;
    args.attrs = &attrs;
    args.row_offset = c.row_offset;
    args.id_offset = c.id_offset;
    const int64_t ws = kernel_workspace_bytes(b.device(), c.kind, shapes, attrs);
    if (ws > 0) {
      MP_ASSIGN_OR_RETURN(void* p, b.put(std::vector<uint8_t>(static_cast<size_t>(ws), 0xff)));
      args.workspace = TensorView(p, Shape{(ws + 3) / 4}, DType::kF32);
    }
    const Status ran = run_kernel(b.device(), c.kind, args);
    r.sync = b.finish();  // also after a failed call: nothing may still run when memory is freed
    if (!ran.is_ok() || !r.sync.is_ok()) return ran;
    for (const TensorView& v : out) {
      r.outputs.emplace_back(static_cast<size_t>(v.bytes()));
      MP_RETURN_IF_ERROR(b.get(v.data, r.outputs.back()));
    }
    return Status::ok();
  };
  r.run = body();
  b.release_all();
  return r;
}

// ---- comparison ----

struct Verdict {
  bool pass = true;
  double error = 0.0;  ///< of the output with the worst error / tolerance
  double tol = 0.0;
  std::string detail;  ///< what failed first
};

void merge(Verdict& into, const Verdict& v, const std::string& where) {
  const double ratio_v = v.tol > 0 ? v.error / v.tol : v.error;
  const double ratio_into = into.tol > 0 ? into.error / into.tol : into.error;
  if (!(ratio_v <= ratio_into)) {
    into.error = v.error;
    into.tol = v.tol;
  }
  if (!v.pass && into.pass) into.detail = where + v.detail;
  into.pass = into.pass && v.pass;
}

// `ref` holds the CPU f32 outputs; bit_exact: got must equal them rounded to the view dtypes.
Verdict compare(const Case& c, DType run, const std::vector<std::vector<float>>& ref,
                const std::vector<std::vector<uint8_t>>& got, bool bit_exact) {
  Verdict all;
  for (size_t o = 0; o < c.out.size(); ++o) {
    const DType t = out_dtype(c, o, run);
    const std::vector<uint8_t> want_bytes = encode(ref[o], t == DType::kI32 ? DType::kF32 : t);
    Verdict v;
    const std::string name = "out " + std::to_string(o) + ": ";
    if (t == DType::kI32 || bit_exact) {
      const size_t size = static_cast<size_t>(dtype_size(t));
      size_t bad = 0;
      size_t first = 0;
      for (size_t i = 0; i * size < got[o].size(); ++i) {
        if (std::memcmp(&got[o][i * size], &want_bytes[i * size], size) != 0 && bad++ == 0) {
          first = i;
        }
      }
      v.pass = bad == 0;
      if (!v.pass) {
        v.detail = std::to_string(bad) + " of " + std::to_string(got[o].size() / size) +
                   " elements differ, first at " + std::to_string(first);
      }
    }
    if (t != DType::kI32) {
      const std::vector<float> g = decode(got[o], t);
      const std::vector<float> w = bit_exact ? decode(want_bytes, t) : ref[o];
      double max_ref = 0.0;
      double max_diff = 0.0;
      size_t worst = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(w[i])));
        const double d = g[i] == w[i] ? 0.0 : std::fabs(static_cast<double>(g[i]) - w[i]);
        if (!(d <= max_diff)) {  // NaN counts as the worst
          max_diff = std::isnan(d) ? INFINITY : d;
          worst = i;
        }
      }
      v.error = max_diff / (max_ref + 1e-6);
      if (!bit_exact) {
        v.tol = tolerance(c, t);
        v.pass = v.error <= v.tol;
      }
      if (!v.pass && !w.empty()) {
        char buf[160];
        std::snprintf(buf, sizeof(buf), "%sworst at %zu: got %.8g, want %.8g (max |ref| %.3g)",
                      v.detail.empty() ? "" : "; ", worst, static_cast<double>(g[worst]),
                      static_cast<double>(w[worst]), max_ref);
        v.detail += buf;
      }
    }
    merge(all, v, name);
  }
  return all;
}

// ---- the driver ----

struct Options {
  std::string backend;
  std::optional<OpKind> op;
  bool list = false;
  bool verbose = false;
};

struct Tally {
  int pass = 0;
  int fail = 0;
  int missing = 0;
};

void report(const Case& c, DType run, const char* status, const Verdict& v, bool show_numbers) {
  const std::string& label = c.label;
  if (show_numbers) {
    std::printf("%-20s %-62s %-5s err %9.2e tol %8.1e %s\n",
                std::string(op_kind_name(c.kind)).c_str(), label.c_str(),
                std::string(dtype_name(run)).c_str(), v.error, v.tol, status);
  } else {
    std::printf("%-20s %-62s %-5s err %9s tol %8s %s\n", std::string(op_kind_name(c.kind)).c_str(),
                label.c_str(), std::string(dtype_name(run)).c_str(), "-", "-", status);
  }
  if (!v.detail.empty()) std::printf("    %s\n", v.detail.c_str());
}

// The in-place runs: each (output, input) pair the backend's row allows, when the two views have
// one dtype and shape; and, when several outputs may alias distinct inputs, all at once.
std::vector<std::vector<Alias>> alias_runs(const Case& c, Device device, DType run) {
  std::vector<std::vector<Alias>> runs;
  std::vector<Alias> together;
  for (size_t o = 0; o < c.out.size(); ++o) {
    bool used = false;
    for (size_t i = 0; i < c.in.size(); ++i) {
      if (!kernel_runs_in_place(device, c.kind, i, o)) continue;
      if (in_dtype(c, i, run) != out_dtype(c, o, run) || !(c.in[i].shape == c.out[o].shape)) {
        continue;
      }
      runs.push_back({Alias{o, i}});
      bool taken = false;
      for (const Alias& a : together) taken = taken || a.in == i;
      if (!used && !taken) {
        together.push_back(Alias{o, i});
        used = true;
      }
    }
  }
  if (together.size() > 1) runs.push_back(together);
  return runs;
}

// One (case, dtype): the base run and the in-place runs against one reference. Returns false
// when the device reported an asynchronous error (its context may be unusable).
bool check(Backend& b, const Case& c, DType run, const Options& opt, Tally& tally) {
  const bool bit_exact = opt.backend == "cpu-half" || c.tol == TolClass::kExact;
  if (opt.verbose) {
    std::printf("RUN  %s | %s | %s\n", std::string(op_kind_name(c.kind)).c_str(), c.label.c_str(),
                std::string(dtype_name(run)).c_str());
  }
  if (find_kernel(b.device(), c.kind) == nullptr) {
    report(c, run, "MISSING", Verdict{}, false);
    ++tally.missing;
    return true;
  }
  const std::vector<std::vector<float>> ref = cpu_reference(c, rounded_inputs(c, run));
  Verdict all;
  for (size_t o = 0; o < ref.size(); ++o) {
    if (c.out[o].is_int) continue;
    for (float x : ref[o]) {
      if (!std::isfinite(x)) {
        all.pass = false;
        all.detail = "the CPU reference has a non-finite value in output " + std::to_string(o) +
                     " (an invalid case, or a CPU kernel left it unwritten)";
        break;
      }
    }
  }
  std::vector<std::vector<Alias>> runs = {{}};
  for (std::vector<Alias>& a : alias_runs(c, b.device(), run)) runs.push_back(std::move(a));
  for (const std::vector<Alias>& aliases : runs) {
    std::string where;
    for (const Alias& a : aliases) {
      where += "in place out " + std::to_string(a.out) + " = in " + std::to_string(a.in) + ", ";
    }
    const Outcome r = run_once(b, c, run, aliases);
    if (!r.sync.is_ok()) {
      Verdict v;
      v.pass = false;
      v.detail = where + "the device failed: " + r.sync.to_string();
      report(c, run, "FAIL", v, false);
      ++tally.fail;
      return false;
    }
    if (!r.run.is_ok()) {
      Verdict v;
      v.pass = false;
      v.detail = where + "run_kernel failed: " + r.run.to_string();
      merge(all, v, "");
      continue;
    }
    merge(all, compare(c, run, ref, r.outputs, bit_exact), where);
    if (opt.verbose && !aliases.empty()) std::printf("     %sdone\n", where.c_str());
  }
  report(c, run, all.pass ? "PASS" : "FAIL", all, true);
  ++(all.pass ? tally.pass : tally.fail);
  return true;
}

std::vector<DType> dtypes_of(const Case& c, const Options& opt) {
  if (c.mixed || opt.backend == "cpu-half") return {DType::kF16, DType::kBF16};
  return {DType::kF32, DType::kF16, DType::kBF16};
}

// Every kind with a CPU kernel needs a case (a new kind cannot go untested).
int uncovered_kinds(const std::vector<Case>& cases, const Options& opt) {
  int missing = 0;
  for (int k = 0; k < kNumOpKinds; ++k) {
    const auto kind = static_cast<OpKind>(k);
    if (find_kernel(Device::kCpu, kind) == nullptr || (opt.op && *opt.op != kind)) continue;
    bool covered = false;
    for (const Case& c : cases) covered = covered || c.kind == kind;
    if (!covered) {
      std::printf("UNCOVERED %s: no case; add one to tests/kernels/backend_ops_cases*.cc\n",
                  std::string(op_kind_name(kind)).c_str());
      ++missing;
    }
  }
  return missing;
}

// The step-wide reductions of the update phase on the backend's memory: all_finite (loss
// scaling's overflow check) and sum_of_squares (clipping's squared norm) against the same sums
// on the host in double, for f32, f16 and bf16 views of 1, 999 and 300000 elements at once.
bool check_reductions(Backend& b, Tally& tally) {
  bool ok = true;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<TensorView> views;
    std::vector<std::vector<uint8_t>> stored;
    double expect = 0.0;
    for (int64_t n : {int64_t{1}, int64_t{999}, int64_t{300000}}) {
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        v[static_cast<size_t>(i)] = 3.0f * std::sin(0.37f * static_cast<float>(i) + n);
      }
      stored.push_back(encode(v, t));
      for (float x : decode(stored.back(), t)) expect += static_cast<double>(x) * x;
      Expected<void*> p = b.put(stored.back());
      if (!p.has_value()) return false;
      views.emplace_back(*p, Shape{n}, t);
    }
    const Expected<double> got = sum_of_squares(b.context(), views);
    const Expected<bool> finite = all_finite(b.context(), views);
    bool good = got.has_value() && std::abs(*got - expect) <= 1e-9 * expect && finite.has_value() &&
                *finite;
    // An infinity in the last element of the largest view: all_finite must see it.
    std::vector<float> last = decode(stored.back(), t);
    last.back() = INFINITY;
    Expected<void*> bad = b.put(encode(last, t));
    if (!bad.has_value()) return false;
    views.back().data = *bad;
    const Expected<bool> seen = all_finite(b.context(), views);
    good = good && seen.has_value() && !*seen;
    std::printf("%s sum_of_squares and all_finite, %s: %s (%.17g, host %.17g)\n",
                good ? "ok" : "FAIL", std::string(dtype_name(t)).c_str(),
                good ? "as the host's" : "differ", got.has_value() ? *got : -1.0, expect);
    (good ? tally.pass : tally.fail) += 1;
    ok = ok && good;
    b.release_all();
  }
  return ok && b.finish().is_ok();
}

int usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: backend_ops --backend cpu-half|cuda|cpu [--op NAME] [--verbose]\n"
               "       backend_ops --list [--op NAME]\n"
               "  cpu-half: the CPU f16/bf16 storage path against the f32 kernels, bit for bit\n"
               "  cuda:     the CUDA kernels against the CPU f32 kernels (exit 77 without a GPU)\n"
               "  cpu:      the CPU column through cuda's comparisons (checks the driver itself)\n",
               why);
  return 2;
}

int run_all(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc) {
      opt.backend = argv[++i];
    } else if (a == "--op" && i + 1 < argc) {
      opt.op = parse_op_kind(argv[++i]);
      if (!opt.op) return usage((std::string("unknown op kind: ") + argv[i]).c_str());
    } else if (a == "--list") {
      opt.list = true;
    } else if (a == "--verbose") {
      opt.verbose = true;
    } else {
      return usage(("unknown argument: " + a).c_str());
    }
  }
  const std::vector<Case> cases = make_cases();
  if (opt.list) {
    for (const Case& c : cases) {
      if (opt.op && *opt.op != c.kind) continue;
      std::printf("%-20s %-62s %-11s %s\n", std::string(op_kind_name(c.kind)).c_str(),
                  c.label.c_str(), tol_class_name(c.tol),
                  c.mixed ? "f16 bf16" : "f32 (cuda) f16 bf16");
    }
    return 0;
  }
  if (opt.backend != "cpu-half" && opt.backend != "cuda" && opt.backend != "cpu") {
    return usage("--backend must be cpu-half, cuda or cpu");
  }
  const bool cuda = opt.backend == "cuda";
  std::unique_ptr<Backend> backend;
  if (cuda) {
    const DeviceInventory& inv = device_inventory();
    if (inv.cuda_devices == 0) {
      std::printf("SKIPPED: %s\n", inv.summary.c_str());
      return 77;
    }
    Expected<std::unique_ptr<GpuDevice>> gpu = GpuDevice::open(0);
    if (!gpu.has_value()) {
      std::printf("FAIL: %s, but GPU 0 does not open: %s\n", inv.summary.c_str(),
                  gpu.status().to_string().c_str());
      return 1;
    }
    std::printf("%s\n", inv.summary.c_str());
    backend = std::make_unique<GpuMemory>(std::move(*gpu));
  } else {
    backend = std::make_unique<CpuMemory>();
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int uncovered = uncovered_kinds(cases, opt);
  Tally tally;
  bool device_ok = true;
  for (const Case& c : cases) {
    if (opt.op && *opt.op != c.kind) continue;
    for (DType d : dtypes_of(c, opt)) {
      device_ok = device_ok && check(*backend, c, d, opt, tally);
      if (!device_ok) break;
    }
    if (!device_ok) {
      std::printf("ABORT: the device reported an error; the remaining cases did not run\n");
      break;
    }
  }
  if (device_ok && !opt.op) device_ok = check_reductions(*backend, tally);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "backend_ops %s: %d checks, %d passed, %d failed, %d missing, %d kinds without a "
      "case (%.1f s)\n",
      opt.backend.c_str(), tally.pass + tally.fail + tally.missing, tally.pass, tally.fail,
      tally.missing, uncovered, secs);
  if (tally.missing > 0) {
    std::string kinds;
    for (int k = 0; k < kNumOpKinds; ++k) {
      const auto kind = static_cast<OpKind>(k);
      if (find_kernel(Device::kCpu, kind) != nullptr &&
          find_kernel(backend->device(), kind) == nullptr && (!opt.op || *opt.op == kind)) {
        kinds += (kinds.empty() ? "" : ", ") + std::string(op_kind_name(kind));
      }
    }
    std::printf("MISSING kernels on %s: %s\n", device_name(backend->device()), kinds.c_str());
  }
  return (tally.fail + tally.missing + uncovered > 0 || !device_ok) ? 1 : 0;
}

}  // namespace
}  // namespace meshpipe::kernels::backend_ops

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a log before a kernel can abort
  return meshpipe::kernels::backend_ops::run_all(argc, argv);
}

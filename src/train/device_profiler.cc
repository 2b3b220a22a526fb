// profile_devices: kernel, concurrency, collective, transfer and per-op measurements of this
// machine for a CPU cluster (see device_profiler.h).
#include "train/device_profiler.h"

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/transport.h"
#include "graph/autodiff.h"
#include "graph/models/zoo.h"
#include "graph/models/zoo_training.h"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "planner/cost_model.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"
#include "shard/iteration_space.h"
#include "shard/op_layout.h"
#include "train/job.h"

namespace meshpipe::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median seconds of one call of `fn`: `reps` repetitions, each of `inner` calls, with `inner`
// grown (after one warm-up call) until a repetition takes at least `min_rep` seconds, so that
// the clock's resolution does not matter for tiny kernels.
double time_call(const std::function<void()>& fn, int reps, double min_rep) {
  fn();  // warm-up: first-touch pages, BLAS buffers
  int64_t inner = 1;
  for (;;) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < inner; ++i) fn();
    const double t = seconds_since(t0);
    if (t >= min_rep || inner >= (int64_t{1} << 20)) break;
    inner *= t > 0 ? std::clamp<int64_t>(static_cast<int64_t>(min_rep / t) + 1, 2, 64) : 64;
  }
  std::vector<double> per_call;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < inner; ++i) fn();
    per_call.push_back(seconds_since(t0) / static_cast<double>(inner));
  }
  return median(per_call);
}

// An f32 GEMM (m x k) . (k x n) with its buffers, as the CPU backend's dot runs it in a training
// step: on operands that come from memory, not from the cache. Each call takes the next of
// several operand sets that together exceed the last-level cache (kColdBytes); timed on one
// warm set, skinny products priced 2-3x too fast (a MoE expert GEMM of m = 16, n = 256,
// k = 1024: 80 GFLOP/s in the cache, 30 in a step, where its weights were last touched a layer
// ago).
class Gemm {
 public:
  static constexpr int64_t kColdBytes = int64_t{64} << 20;

  Gemm(int64_t m, int64_t n, int64_t k) : m_(m), n_(n), k_(k) {
    dims_.lhs_contract = {1};
    dims_.rhs_contract = {0};
    const int64_t ws = kernels::dot_workspace_bytes(Shape{m, k}, Shape{k, n}, dims_);
    workspace_.resize(static_cast<size_t>((ws + 3) / 4));
    const int64_t set_bytes = 4 * (m * k + k * n + m * n);
    const int64_t sets = std::clamp<int64_t>((kColdBytes + set_bytes - 1) / set_bytes, 1, 4096);
    for (int64_t i = 0; i < sets; ++i) {
      sets_.push_back({std::vector<float>(static_cast<size_t>(m * k), 0.5f),
                       std::vector<float>(static_cast<size_t>(k * n), 0.25f),
                       std::vector<float>(static_cast<size_t>(m * n), 0.0f)});
    }
  }
  explicit Gemm(int64_t n) : Gemm(n, n, n) {}
  void operator()() {
    const kernels::KernelContext ctx;
    Operands& s = sets_[next_];
    next_ = (next_ + 1) % sets_.size();
    kernels::dot(ctx, kernels::TensorView(s.lhs.data(), Shape{m_, k_}, DType::kF32),
                 kernels::TensorView(s.rhs.data(), Shape{k_, n_}, DType::kF32), dims_,
                 kernels::TensorView(s.out.data(), Shape{m_, n_}, DType::kF32),
                 kernels::TensorView(workspace_.data(),
                                     Shape{static_cast<int64_t>(workspace_.size())}, DType::kF32));
  }
  double flops() const { return 2.0 * static_cast<double>(m_ * n_ * k_); }

 private:
  struct Operands {
    std::vector<float> lhs, rhs, out;
  };
  int64_t m_, n_, k_;
  DotDims dims_;
  std::vector<Operands> sets_;
  size_t next_ = 0;
  std::vector<float> workspace_;
};

// An elementwise add of n floats: reads 2n, writes n (the bytes OpWork counts).
class Add {
 public:
  explicit Add(int64_t n)
      : n_(n),
        a_(static_cast<size_t>(n), 1.0f),
        b_(static_cast<size_t>(n), 2.0f),
        out_(static_cast<size_t>(n), 0.0f) {}
  void operator()() {
    const kernels::KernelContext ctx;
    kernels::binary(ctx, kernels::BinaryOp::kAdd,
                    kernels::TensorView(a_.data(), Shape{n_}, DType::kF32),
                    kernels::TensorView(b_.data(), Shape{n_}, DType::kF32),
                    kernels::TensorView(out_.data(), Shape{n_}, DType::kF32));
  }
  double bytes() const { return 12.0 * static_cast<double>(n_); }

 private:
  int64_t n_;
  std::vector<float> a_, b_, out_;
};

std::string machine_description() {
  std::string model = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) model = line.substr(colon + 2);
      break;
    }
  }
  const std::time_t now = std::time(nullptr);
  char date[32] = {};
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", &tm);
  return fmt::format("{}, {} cores, {}", model, std::thread::hardware_concurrency(), date);
}

// `n` threads spinning on arithmetic (no memory traffic) until destroyed: devices computing.
class BusyThreads {
 public:
  explicit BusyThreads(int n) {
    for (int k = 0; k < n; ++k) {
      threads_.emplace_back([this] {
        volatile double x = 1.0;
        while (!stop_.load(std::memory_order_relaxed)) {
          for (int i = 0; i < 100000; ++i) x = x * 1.0000001 + 1e-9;
        }
      });
    }
  }
  ~BusyThreads() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
  }
  BusyThreads(const BusyThreads&) = delete;
  BusyThreads& operator=(const BusyThreads&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Pins the calling thread to host `host`'s share of this process's cores among `hosts` (one core
// each, round robin, when there are fewer cores than hosts), as scripts/launch-local.sh pins
// the nodes of a job on one machine. Best effort: a failure leaves the thread where it was.
void pin_to_host(int host, int hosts) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  std::vector<int> cores;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &allowed)) cores.push_back(c);
  }
  const int n = static_cast<int>(cores.size());
  if (n == 0 || hosts < 1) return;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (n < hosts) {
    CPU_SET(cores[static_cast<size_t>(host % n)], &mine);
  } else {
    const int share = n / hosts;
    for (int i = host * share; i < (host + 1) * share; ++i) {
      CPU_SET(cores[static_cast<size_t>(i)], &mine);
    }
  }
  (void)sched_setaffinity(0, sizeof(mine), &mine);
}

// Runs fn(rank) on `n` threads at once and joins them; the first error wins.
Status on_threads(int n, const std::function<Status(int)>& fn) {
  std::vector<Status> results(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] { results[static_cast<size_t>(r)] = fn(r); });
  }
  for (std::thread& t : threads) t.join();
  for (const Status& s : results) MP_RETURN_IF_ERROR(s);
  return Status::ok();
}

// One device's training steps of `g` on the single-device executor, with the synthetic data
// of the graph's inputs.
struct Steps {
  std::unique_ptr<runtime::Executor> exec;
  std::optional<runtime::SyntheticData> data;

  static Expected<Steps> create(const graph::TrainingGraph& g) {
    Steps s;
    MP_ASSIGN_OR_RETURN(s.exec, runtime::Executor::create(g.graph, runtime::ExecutorOptions{}));
    MP_RETURN_IF_ERROR(s.exec->initialize(1));
    MP_ASSIGN_OR_RETURN(auto d, runtime::SyntheticData::create(g.graph, g.inputs, 1));
    s.data.emplace(std::move(d));
    return s;
  }
  Expected<runtime::StepStats> run() { return exec->run(data->next_batch()); }
};

class Profiler {
 public:
  Profiler(const mesh::ClusterSpec& cluster, const DeviceProfileOptions& options)
      : cluster_(cluster), options_(options) {}

  Expected<mesh::DeviceProfile> run() {
    if (cluster_.device.kind != "cpu") {
      return make_error(Errc::kInvalidArgument,
                        "cannot profile '{}': its devices are {}, and the CPU backend is the only "
                        "one that runs here (profile a cpu cluster, e.g. cpu:2x2)",
                        cluster_.name, cluster_.device.kind);
    }
    profile_.source =
        fmt::format("{} (cluster {}, collectives {}, transport {})", machine_description(),
                    cluster_.name, runtime::collective_backend_name(options_.collectives),
                    runtime::transport_kind_name(options_.transport));
    // Every kernel is timed on the BLAS threads the runtime gives each device of this cluster
    // (runtime/in_process_run.cc: cores / devices, at least 1), so that the tables say what one
    // device computes, and the concurrency table what several computing at once cost.
    threads_ = std::max(1, kernels::cpu_cores() / std::max(1, cluster_.num_devices()));
    const int blas_before = kernels::set_blas_threads(threads_);
    const Status s = measure();
    kernels::set_blas_threads(blas_before);
    MP_RETURN_IF_ERROR(s);
    return profile_;
  }

 private:
  Status measure() {
    gemm();
    memory_bound();
    MP_RETURN_IF_ERROR(concurrency());
    MP_RETURN_IF_ERROR(runtime_steps());
    MP_RETURN_IF_ERROR(collectives());
    return transfers();
  }

  int reps() const { return options_.quick ? 3 : 5; }
  double min_rep() const { return options_.quick ? 0.002 : 0.01; }
  void progress(const std::string& phase, int64_t done, int64_t total) const {
    if (options_.progress) options_.progress(phase, done, total);
  }

  void gemm() {
    const std::vector<int64_t> sizes =
        options_.quick ? std::vector<int64_t>{8, 64, 256}
                       : std::vector<int64_t>{8, 16, 32, 64, 128, 256, 512, 1024};
    mesh::ProfileTable& t = profile_.gemm[DType::kF32];
    t.emplace_back(0.0, 0.0);
    for (size_t i = 0; i < sizes.size(); ++i) {
      progress("gemm", static_cast<int64_t>(i), static_cast<int64_t>(sizes.size()));
      Gemm g(sizes[i]);
      t.emplace_back(g.flops(), time_call([&] { g(); }, reps(), min_rep()));
    }
    progress("gemm", static_cast<int64_t>(sizes.size()), static_cast<int64_t>(sizes.size()));
    // By shape: skinny products (a small m, n or k) run far below the square rate.
    const std::vector<int64_t> dims =
        options_.quick ? std::vector<int64_t>{16, 256} : std::vector<int64_t>{16, 64, 256, 1024};
    auto& grid = profile_.gemm_grid[DType::kF32];
    const int64_t total = static_cast<int64_t>(dims.size() * dims.size() * dims.size());
    int64_t done = 0;
    for (int64_t m : dims) {
      for (int64_t n : dims) {
        for (int64_t k : dims) {
          progress("gemm shapes", done++, total);
          Gemm g(m, n, k);
          const double t = time_call([&] { g(); }, reps(), min_rep());
          grid.push_back({static_cast<double>(m), static_cast<double>(n), static_cast<double>(k),
                          std::max(t, 1e-9)});
        }
      }
    }
    progress("gemm shapes", total, total);
  }

  // On a thread of their own, as a device thread of the runtime runs them: OpenMP loops on that
  // thread alone (runtime/in_process_run.cc), which leaves the caller's setting as it was.
  void memory_bound() {
    (void)on_threads(1, [&](int) {
      kernels::set_kernel_threads(1);
      measure_memory_bound();
      return Status::ok();
    });
  }

  void measure_memory_bound() {
    std::vector<int64_t> sizes;
    for (int64_t n = 256; n <= (options_.quick ? (1 << 18) : (1 << 24));
         n *= options_.quick ? 16 : 4)
      sizes.push_back(n);
    mesh::ProfileTable& t = profile_.memory_bound[DType::kF32];
    for (size_t i = 0; i < sizes.size(); ++i) {
      progress("memory-bound kernels", static_cast<int64_t>(i), static_cast<int64_t>(sizes.size()));
      Add a(sizes[i]);
      t.emplace_back(a.bytes(), time_call([&] { a(); }, reps(), min_rep()));
    }
    // The first point also stands for smaller ops (interpolation extrapolates downwards).
    progress("memory-bound kernels", static_cast<int64_t>(sizes.size()),
             static_cast<int64_t>(sizes.size()));
  }

  // k devices computing at once, as the runtime runs them in one process (each on its own
  // thread, OpenMP loops on that thread alone, BLAS on the cluster's threads per device): the
  // step time of a training step (a real mix of GEMMs and
  // memory-bound kernels) on each of k executors at once over one executor alone. Never below
  // the slowdown at fewer devices (the timing of a shared machine is noisy).
  Status concurrency() {
    const int most = std::min(cluster_.num_devices(), 16);
    MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec,
                        graph::models::find_model(options_.quick ? "mlp-small" : "gpt-cpu"));
    MP_ASSIGN_OR_RETURN(
        graph::TrainingGraph tg,
        graph::models::zoo_training_graph(spec, options_.quick ? 16 : 4, graph::OptimizerConfig{}));
    const int steps = options_.quick ? 2 : 4;
    profile_.concurrency.emplace_back(1.0, 1.0);
    double alone = 0.0;
    double worst = 1.0;
    // Each k measured `trials` times, keeping the least disturbed (the machine may be shared).
    const int trials = options_.quick ? 1 : 3;
    for (int k = 1; k <= most; ++k) {
      progress("concurrency (training steps)", k - 1, most);
      std::vector<Steps> runs;
      for (int r = 0; r < k; ++r) {
        MP_ASSIGN_OR_RETURN(Steps one, Steps::create(tg));
        runs.push_back(std::move(one));
      }
      double t = 0.0;
      for (int trial = 0; trial < trials; ++trial) {
        std::barrier start(k);
        std::vector<double> per_step(static_cast<size_t>(k));
        const Status ran = on_threads(k, [&](int r) -> Status {
          kernels::set_kernel_threads(1);
          Steps& mine = runs[static_cast<size_t>(r)];
          MP_RETURN_IF_ERROR(mine.run().status());  // warm-up
          start.arrive_and_wait();
          std::vector<double> times;
          for (int i = 0; i < steps; ++i) {
            MP_ASSIGN_OR_RETURN(runtime::StepStats st, mine.run());
            times.push_back(st.time.value());
          }
          per_step[static_cast<size_t>(r)] = median(times);
          return Status::ok();
        });
        MP_RETURN_IF_ERROR(ran);
        // The mean device (the OS shares the cores unevenly over short spans; a step's
        // slowest device is noisier than the cores' throughput, which is what sharing costs).
        double mean = 0.0;
        for (double x : per_step) mean += x / static_cast<double>(k);
        t = trial == 0 ? mean : std::min(t, mean);
      }
      if (k == 1) {
        alone = t;
      } else if (alone > 0) {
        worst = std::max(worst, t / alone);
        profile_.concurrency.emplace_back(static_cast<double>(k), worst);
      }
    }
    progress("concurrency (training steps)", most, most);
    return Status::ok();
  }

  // Per op kind, and per kernel launched: the runtime's own training steps of the CPU
  // benchmark models on one device (a cpu:1x1 plan of 4 micro-batches run by LocalJob, every
  // kernel timed by its interpreter, on the BLAS threads of one device of this cluster). Each
  // kind's factor is its measured kernel time over what the tables measured so far predict for
  // the same ops; the op overhead is the step time the kernels do not account for (the
  // interpreter's work between kernels, gradient accumulation, buffer handling) per kernel run.
  Status runtime_steps() {
    mesh::ClusterSpec one = cluster_;
    one.name = "cpu:1x1";
    one.hosts = 1;
    one.devices_per_host = 1;
    one.profile = std::make_shared<const mesh::DeviceProfile>(profile_);
    const planner::ProfiledCostModel model(one);
    const mesh::LogicalMesh single = mesh::logical_mesh(1, 1);
    std::map<OpKind, double> measured;
    std::map<OpKind, double> predicted;
    double step_seconds = 0.0;
    double kernel_seconds = 0.0;
    int64_t kernels_run = 0;
    const std::vector<std::string> models =
        options_.quick ? std::vector<std::string>{"gpt-tiny"}
                       : std::vector<std::string>{"gpt-cpu", "moe-cpu", "wresnet-cpu"};
    const int runs = options_.quick ? 2 : 3;
    const int64_t total = static_cast<int64_t>(models.size()) * (runs + 1);
    int64_t done = 0;
    for (const std::string& name : models) {
      MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec, graph::models::find_model(name));
      JobSpec job;
      job.model = spec;
      job.global_batch = spec.default_batch;
      PlanRequest request;
      request.micro_batches = job.global_batch % 4 == 0 ? 4 : 1;
      request.recompute = planner::Recompute::kOff;
      MP_ASSIGN_OR_RETURN(planner::Plan plan, plan_job(job, one, request));
      LocalJobOptions lo;
      lo.run.interpreter.time_kernels = true;
      MP_ASSIGN_OR_RETURN(std::unique_ptr<LocalJob> local, LocalJob::create(job, plan, lo));
      for (int64_t step = 1; step <= runs + 1; ++step) {
        progress("op kinds (runtime steps)", done++, total);
        MP_ASSIGN_OR_RETURN(StepOutcome out, local->run_step(step));
        if (step == 1) continue;  // warm-up
        step_seconds += out.seconds;
        kernels_run += out.kernels_run;
        for (const auto& [kind, t] : out.kernel_seconds) {
          measured[kind] += t;
          kernel_seconds += t;
        }
      }
      // What the tables predict for one step: every op of the micro-batch graph once per
      // micro-batch, the optimizer's once per step.
      MP_ASSIGN_OR_RETURN(
          graph::TrainingGraph tg,
          graph::models::zoo_training_graph(spec, plan.micro_batch, job.optimizer, job.precision));
      const int64_t micro_batches = plan.global_batch / std::max<int64_t>(1, plan.micro_batch);
      // With several micro-batches a sum of two gradient pieces runs once per step, as an
      // accumulate, not as a kernel per micro-batch (runtime/lower.cc find_deferred_sums).
      const std::set<OpId> piece_sums =
          micro_batches > 1 ? graph::gradient_piece_sums(tg.graph) : std::set<OpId>{};
      for (size_t i = 0; i < tg.graph.ops().size(); ++i) {
        const graph::Op& op = tg.graph.ops()[i];
        if (piece_sums.count(OpId(static_cast<int32_t>(i))) != 0) continue;
        MP_ASSIGN_OR_RETURN(shard::IterSpace space, shard::iteration_space(tg.graph, op));
        auto s = shard::shard_op(
            tg.graph, op, space, single,
            std::vector<mesh::DimSharding>(space.sizes.size(), mesh::DimSharding::kR));
        if (!s.has_value()) continue;
        const double times =
            op.phase == graph::OpPhase::kUpdate ? 1.0 : static_cast<double>(micro_batches);
        predicted[op.kind] += runs * times * model.compute(s->work).value();
      }
    }
    for (const auto& [kind, t] : measured) {
      const double p = predicted[kind];
      // Kinds with too little time to time are left to the tables.
      if (p <= 0 || t < 1e-4) continue;
      profile_.kind_factors[kind] = std::clamp(t / p, 0.05, 1000.0);
    }
    if (kernels_run > 0) {
      profile_.op_overhead_seconds =
          std::clamp((step_seconds - kernel_seconds) / static_cast<double>(kernels_run), 0.0, 1.0);
    }
    progress("op kinds (runtime steps)", total, total);
    return Status::ok();
  }

  // How a group of g devices runs its collectives in the setting measured. In-process: shared
  // memory. Gloo or UCX, as a job of one meshpipe-node per host runs them
  // (runtime/in_process_run.cc): a group inside a host in shared memory; one across hosts in two
  // levels when it has the same number (2 or more) of devices on each host it spans (the host's
  // devices, if g exceeds them), else Gloo (or UCX) among all its devices.
  enum class Layout { kInProcess, kFlat, kTwoLevel };  // kFlat: Gloo or UCX among all
  Layout layout(int g, bool inter) const {
    if (options_.collectives == runtime::CollectiveBackend::kInProcess) return Layout::kInProcess;
    const int per_host = cluster_.devices_per_host;
    if (!inter) return g <= per_host ? Layout::kInProcess : Layout::kFlat;
    return per_host >= 2 && g > per_host && g % per_host == 0 ? Layout::kTwoLevel : Layout::kFlat;
  }

  // The communicators of a group of g ranks (threads) laid out as `how`.
  Expected<std::vector<std::unique_ptr<comm::Communicator>>> group_of(int g, Layout how,
                                                                      const std::string& prefix) {
    const auto timeout = std::chrono::milliseconds(60000);
    std::vector<std::unique_ptr<comm::Communicator>> comms(static_cast<size_t>(g));
    if (how == Layout::kInProcess) {
      auto group = comm::InProcessGroup::create(g, timeout);
      for (int r = 0; r < g; ++r) comms[static_cast<size_t>(r)] = group->communicator(r);
      return comms;
    }
    auto store = comm::make_in_process_store();
    const int per = how == Layout::kTwoLevel ? cluster_.devices_per_host : 1;
    const int ranks = g / per;  // Gloo or UCX among all, or among one leader per host
    std::vector<std::unique_ptr<comm::Communicator>> across(static_cast<size_t>(ranks));
    if (options_.collectives == runtime::CollectiveBackend::kUcx) {
      // Over UCX endpoints of their own (kept until the profile is written).
      MP_ASSIGN_OR_RETURN(auto eps, comm::make_ucx_fabric(ranks));
      std::vector<int> peers;
      for (int r = 0; r < ranks; ++r) peers.push_back(r);
      for (int r = 0; r < ranks; ++r) {
        MP_ASSIGN_OR_RETURN(across[static_cast<size_t>(r)],
                            comm::make_transport_communicator(eps[static_cast<size_t>(r)].get(),
                                                              peers, r, 0, timeout));
      }
      fabrics_.push_back(std::move(eps));
    } else {
      MP_RETURN_IF_ERROR(on_threads(ranks, [&](int r) -> Status {
        comm::GlooOptions go;
        go.prefix = prefix;
        go.timeout = timeout;
        MP_ASSIGN_OR_RETURN(across[static_cast<size_t>(r)],
                            comm::make_gloo_communicator(r, ranks, store, go));
        return Status::ok();
      }));
    }
    if (how == Layout::kFlat) return across;
    std::vector<int> process_of;  // hosts of `per` consecutive ranks, named by their first
    for (int r = 0; r < g; ++r) process_of.push_back(r / per * per);
    for (int h = 0; h < ranks; ++h) {
      auto local = comm::InProcessGroup::create(per, timeout);
      for (int l = 0; l < per; ++l) {
        comm::HierarchyParts parts;
        parts.local_group = local;
        parts.local = local->communicator(l);
        if (l == 0) parts.leaders = std::move(across[static_cast<size_t>(h)]);
        MP_ASSIGN_OR_RETURN(
            comms[static_cast<size_t>(h * per + l)],
            comm::make_hierarchical_communicator(h * per + l, process_of, std::move(parts)));
      }
    }
    return comms;
  }

  Status collectives() {
    std::vector<int> groups;
    for (int g = 2; g <= std::min(cluster_.num_devices(), 16); g *= 2) groups.push_back(g);
    const std::vector<int64_t> sizes = options_.quick
                                           ? std::vector<int64_t>{4096, 1 << 20}
                                           : std::vector<int64_t>{4096, 65536, 1 << 20, 1 << 24};
    const std::vector<mesh::CollectiveKind> kinds = {
        mesh::CollectiveKind::kAllReduce, mesh::CollectiveKind::kAllGather,
        mesh::CollectiveKind::kReduceScatter, mesh::CollectiveKind::kAllToAll};
    // Each group size inside a host (if it fits in one) and across hosts; one measurement
    // where both run alike.
    std::vector<std::pair<int, bool>> settings;
    for (int g : groups) {
      const bool fits = g <= cluster_.devices_per_host;
      if (fits) settings.emplace_back(g, false);
      if (!fits || layout(g, true) != layout(g, false)) settings.emplace_back(g, true);
    }
    const int64_t total = static_cast<int64_t>(settings.size() * kinds.size());
    int64_t done = 0;
    for (const auto& [g, inter] : settings) {
      const Layout how = layout(g, inter);
      MP_ASSIGN_OR_RETURN(auto comms, group_of(g, how, fmt::format("profile-{}-{}", g, inter)));
      // Gloo: the cluster's other devices compute meanwhile, as in a step of busy processes
      // (a collective of 2 devices over Gloo while 2 others compute takes several times its time
      // alone). Shared memory is timed alone: spinning threads made its times vary 3x between
      // profiles (wresnet-cpu dp 2 x tp 2 priced at 281 and 922 ms), priced worse on average.
      const BusyThreads others(options_.collectives != runtime::CollectiveBackend::kInProcess
                                   ? cluster_.num_devices() - g
                                   : 0);
      for (mesh::CollectiveKind kind : kinds) {
        progress(fmt::format("collectives ({}{})",
                             runtime::collective_backend_name(options_.collectives),
                             how == Layout::kTwoLevel ? ", two levels across hosts" : ""),
                 done++, total);
        mesh::ProfileTable table;
        // Across hosts each host's ranks on its share of the cores, as scripts/launch-local.sh
        // pins the nodes of a job on one machine (unpinned, the ranks' polling threads met on
        // one core and their times varied 10x between profiles).
        const int per_host = how == Layout::kInProcess  ? 0
                             : how == Layout::kTwoLevel ? cluster_.devices_per_host
                                                        : 1;
        for (int64_t bytes : sizes) {
          MP_ASSIGN_OR_RETURN(double t, time_collective(comms, kind, bytes, per_host));
          table.emplace_back(static_cast<double>(bytes), t);
        }
        profile_.collectives[{kind, g, inter}] = table;
        if (layout(g, true) == layout(g, false)) profile_.collectives[{kind, g, !inter}] = table;
      }
    }
    progress("collectives", total, total);
    return Status::ok();
  }

  // Median seconds of one collective of `bytes` (per device, at the larger end, as
  // mesh::collective_cost counts them) on the group's threads, timed on rank 0.
  // per_host > 0: rank r runs on the cores of host r / per_host (pin_to_host).
  Expected<double> time_collective(std::vector<std::unique_ptr<comm::Communicator>>& comms,
                                   mesh::CollectiveKind kind, int64_t bytes, int per_host) {
    const int g = static_cast<int>(comms.size());
    const int64_t floats = std::max<int64_t>(g, bytes / 4 / g * g);  // divisible by the group
    const int calls = options_.quick ? 3 : (bytes >= (1 << 22) ? 5 : 20);
    std::vector<double> times;
    MP_RETURN_IF_ERROR(on_threads(g, [&](int r) -> Status {
      if (per_host > 0) pin_to_host(r / per_host, g / per_host);
      comm::Communicator& c = *comms[static_cast<size_t>(r)];
      std::vector<float> a(static_cast<size_t>(floats), 1.0f);
      std::vector<float> b(static_cast<size_t>(floats), 0.0f);
      const auto once = [&]() -> Status {
        switch (kind) {
          case mesh::CollectiveKind::kAllReduce:
            return c.all_reduce(a.data(), floats);
          case mesh::CollectiveKind::kAllGather:
            return c.all_gather(a.data(), b.data(), floats / g * 4);
          case mesh::CollectiveKind::kReduceScatter:
            return c.reduce_scatter(a.data(), b.data(), floats / g);
          case mesh::CollectiveKind::kAllToAll:
            return c.all_to_all(a.data(), b.data(), floats / g * 4);
          case mesh::CollectiveKind::kSlice:
            return Status::ok();
        }
        return Status::ok();
      };
      MP_RETURN_IF_ERROR(once());  // warm-up
      for (int k = 0; k < calls; ++k) {
        MP_RETURN_IF_ERROR(c.barrier());
        const auto t0 = Clock::now();
        MP_RETURN_IF_ERROR(once());
        if (r == 0) times.push_back(seconds_since(t0));
      }
      return Status::ok();
    }));
    return median(times);
  }

  Status transfers() {
    const std::vector<int64_t> sizes =
        options_.quick ? std::vector<int64_t>{1024, 1 << 20}
                       : std::vector<int64_t>{1024, 16384, 262144, 1 << 22, 1 << 24};
    std::vector<std::unique_ptr<comm::Transport>> ends;
    std::shared_ptr<comm::InProcessFabric> fabric;
    if (options_.transport == runtime::TransportKind::kInProcess) {
      fabric = comm::InProcessFabric::create(2);
      ends.push_back(fabric->endpoint(0));
      ends.push_back(fabric->endpoint(1));
    } else {
      MP_ASSIGN_OR_RETURN(ends, comm::make_ucx_fabric(2));
    }
    mesh::ProfileTable table;
    uint64_t tag = 1;
    for (size_t i = 0; i < sizes.size(); ++i) {
      progress(fmt::format("transfers ({})", runtime::transport_kind_name(options_.transport)),
               static_cast<int64_t>(i), static_cast<int64_t>(sizes.size()));
      const int64_t bytes = sizes[i];
      const int trips = options_.quick ? 3 : (bytes >= (1 << 22) ? 5 : 20);
      std::vector<double> one_way;
      const uint64_t base = tag;
      tag += static_cast<uint64_t>(2 * (trips + 1));
      MP_RETURN_IF_ERROR(on_threads(2, [&](int r) -> Status {
        comm::Transport& t = *ends[static_cast<size_t>(r)];
        std::vector<char> buf(static_cast<size_t>(bytes), 1);
        const auto wait = [&](Expected<comm::Request> req) -> Status {
          if (!req.has_value()) return req.status();
          return t.wait(*req, std::chrono::milliseconds(60000));
        };
        for (int k = 0; k <= trips; ++k) {  // trip 0 warms up
          const uint64_t there = base + static_cast<uint64_t>(2 * k);
          const auto t0 = Clock::now();
          if (r == 0) {
            MP_RETURN_IF_ERROR(wait(t.send(1, there, buf.data(), bytes)));
            MP_RETURN_IF_ERROR(wait(t.recv(1, there + 1, buf.data(), bytes)));
            if (k > 0) one_way.push_back(seconds_since(t0) / 2.0);
          } else {
            MP_RETURN_IF_ERROR(wait(t.recv(0, there, buf.data(), bytes)));
            MP_RETURN_IF_ERROR(wait(t.send(0, there + 1, buf.data(), bytes)));
          }
        }
        return Status::ok();
      }));
      table.emplace_back(static_cast<double>(bytes), median(one_way));
    }
    profile_.transfers[false] = table;
    profile_.transfers[true] = table;
    progress("transfers", static_cast<int64_t>(sizes.size()), static_cast<int64_t>(sizes.size()));
    return Status::ok();
  }

  const mesh::ClusterSpec& cluster_;
  const DeviceProfileOptions& options_;
  // Endpoints of UCX collectives' groups (declared before the communicators that use them go).
  std::vector<std::vector<std::unique_ptr<comm::Transport>>> fabrics_;
  mesh::DeviceProfile profile_;
  int threads_ = 1;  // BLAS threads of one device of the cluster
};

}  // namespace

Expected<mesh::DeviceProfile> profile_devices(const mesh::ClusterSpec& cluster,
                                              const DeviceProfileOptions& options) {
  return Profiler(cluster, options).run();
}

Expected<mesh::ClusterSpec> with_profile(mesh::ClusterSpec cluster, const std::string& path) {
  MP_ASSIGN_OR_RETURN(mesh::DeviceProfile p, mesh::load_device_profile(path));
  cluster.profile = std::make_shared<const mesh::DeviceProfile>(std::move(p));
  return cluster;
}

}  // namespace meshpipe::train

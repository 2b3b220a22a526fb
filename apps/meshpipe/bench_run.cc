// `meshpipe bench scaling --run`: one point measured on this machine: a coordinator in this
// process on loopback, one `meshpipe-node` process per device (the binary beside this one,
// the job's secret in its environment, its output in a log file of the results folder), the job
// planned for the cluster the nodes form, trained for a few steps; the step time is the median
// of the steps after the first.
#include "meshpipe/bench_run.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "actors/cluster.h"
#include "actors/secret.h"
#include "graph/models/zoo_training.h"
#include "planner/build_plan.h"
#include "train/job.h"
#include "train/session.h"

extern char** environ;

namespace meshpipe::cli {

namespace {

namespace fs = std::filesystem;

// The node processes of one measured point: ended (SIGTERM, then SIGKILL after 5 s) and reaped
// when this goes, so no process outlives the point.
class Nodes {
 public:
  // The coordinator (destroyed before this) has told the nodes the job ended: they exit on
  // their own. One still running after 5 s gets SIGTERM twice (a node leaves its first to the
  // driver), then SIGKILL after 2 s more.
  ~Nodes() {
    auto wait_all = [&](std::chrono::milliseconds limit) {
      const auto deadline = std::chrono::steady_clock::now() + limit;
      bool left = true;
      while (left) {
        left = false;
        for (pid_t& p : pids_) {
          if (p <= 0) continue;
          int status = 0;
          if (::waitpid(p, &status, WNOHANG) != 0) {
            p = -1;
          } else {
            left = true;
          }
        }
        if (!left || std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      return left;
    };
    if (!wait_all(std::chrono::seconds(5))) return;
    for (pid_t p : pids_) {
      if (p > 0) ::kill(p, SIGTERM);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (pid_t p : pids_) {
      if (p > 0) ::kill(p, SIGTERM);
    }
    if (!wait_all(std::chrono::seconds(2))) return;
    for (pid_t p : pids_) {
      if (p <= 0) continue;
      ::kill(p, SIGKILL);
      int status = 0;
      ::waitpid(p, &status, 0);
    }
  }
  // Starts `exe` with `args`, `env` added to this process's environment, output to `log`,
  // pinned to core `cpu` (-1: not pinned).
  Status spawn(const std::string& exe, const std::vector<std::string>& args,
               const std::vector<std::string>& env, const fs::path& log, int cpu) {
    std::vector<std::string> envs = env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      const std::string key = kv.substr(0, kv.find('='));
      bool replaced = false;
      for (const std::string& mine : env) replaced = replaced || mine.rfind(key + "=", 0) == 0;
      if (!replaced) envs.push_back(kv);
    }
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& e : envs) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return make_error(Errc::kIo, "cannot write '{}'", log.string());
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = ::getpid();
    static const char kExecFailed[] = "meshpipe bench: could not execute meshpipe-node\n";
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fd);
      return make_error(Errc::kUnavailable, "cannot start {}: {}", exe, std::strerror(errno));
    }
    if (pid == 0) {
      if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        static_cast<void>(::sched_setaffinity(0, sizeof(set), &set));
      }
      // Only async-signal-safe calls here (the parent has threads). The node dies with this
      // process, reads nothing from the terminal, and inherits no descriptor but its output.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      if (null >= 0) ::dup2(null, 0);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::syscall(SYS_close_range, 3U, ~0U, 0U);
      ::execve(exe.c_str(), argv.data(), envp.data());
      static_cast<void>(::write(2, kExecFailed, sizeof(kExecFailed) - 1));
      ::_exit(127);
    }
    ::close(fd);
    if (null >= 0) ::close(null);
    pids_.push_back(pid);
    return Status::ok();
  }

 private:
  std::vector<pid_t> pids_;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

Expected<std::vector<train::ScalingPoint>> measured_points(
    const std::string& suite, const std::vector<train::ScalingPoint>& listed, bool builtin,
    int32_t max_devices) {
  std::vector<train::ScalingPoint> out;
  if (!builtin) {
    for (const auto& p : listed) {
      if (p.devices <= max_devices) out.push_back(p);
    }
    return out;
  }
  // Alpa's suites scaled to this machine: the family's CPU benchmark model, the global batch
  // growing with the devices (weak scaling).
  const std::string model = suite + "-cpu";
  MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec, graph::models::find_model(model));
  for (int64_t d = 1; d <= std::min<int64_t>(max_devices, mesh::kMaxClusterDevices); d *= 2) {
    out.push_back({model, static_cast<int32_t>(d), spec.default_batch * d});
  }
  return out;
}

Expected<train::PointResult> measure_point(const std::string& suite,
                                           const train::ScalingPoint& point, int steps,
                                           const fs::path& logs, const std::atomic<bool>& stop) {
  const auto t0 = std::chrono::steady_clock::now();
  MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec, graph::models::find_model(point.model));
  train::JobSpec job;
  job.model = spec;
  job.global_batch = point.global_batch > 0 ? point.global_batch : spec.default_batch;
  MP_RETURN_IF_ERROR(job.validate());
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path node = self.parent_path() / "meshpipe-node";
  if (ec || ::access(node.c_str(), X_OK) != 0) {
    return make_error(Errc::kNotFound, "--run needs meshpipe-node beside meshpipe ({})",
                      node.string());
  }
  MP_ASSIGN_OR_RETURN(std::string secret, actors::generate_secret());
  actors::CoordinatorOptions co;
  co.secret = secret;
  co.nodes = point.devices;
  Nodes nodes;  // destroyed after the coordinator, which tells them first
  co.join_timeout = std::chrono::milliseconds(30000);  // on loopback: a node that has not
                                                       // joined by then is not coming
  MP_ASSIGN_OR_RETURN(auto coord, actors::Coordinator::listen(co));
  const std::string address = fmt::format("127.0.0.1:{}", coord->port());
  std::vector<std::string> env = {std::string(actors::kSecretEnvironment) + "=" + secret};
  if (std::getenv("UCX_NET_DEVICES") == nullptr) env.push_back("UCX_NET_DEVICES=lo");
  // Each device on a core of its own when there are enough (every point then gives each device
  // the same machine, so weak-scaling efficiency compares like with like): node k on the k-th
  // core this process may use, its BLAS and kernel threads following (kernels::cpu_cores).
  std::vector<int> cores;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (::sched_getaffinity(0, sizeof(mine), &mine) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &mine)) cores.push_back(c);
    }
  }
  const bool pin = static_cast<int32_t>(cores.size()) >= point.devices;
  for (int32_t k = 0; k < point.devices; ++k) {
    MP_RETURN_IF_ERROR(
        nodes.spawn(node.string(), {"--coordinator", address, "--devices", "1"}, env,
                    logs / fmt::format("{}-{}-devices-batch-{}-node{}.log", point.model,
                                       point.devices, job.global_batch, k),
                    pin ? cores[static_cast<size_t>(k)] : -1));
  }
  auto fail_job = [&](Status why) {
    coord->fail(why);
    return why;
  };
  auto joined = coord->wait_for_nodes();
  if (!joined.has_value()) {
    return fail_job(joined.status().with_context(
        fmt::format("nodes joining (their output: {}/{}-{}-devices-*.log)", logs.string(),
                    point.model, point.devices)));
  }
  MP_ASSIGN_OR_RETURN(mesh::ClusterSpec base, mesh::resolve_cluster("cpu"));
  auto cluster = actors::cluster_from_nodes(*joined, base);
  if (!cluster.has_value()) return fail_job(cluster.status());
  auto plan = train::plan_job(job, *cluster, train::PlanRequest{});
  if (!plan.has_value()) return fail_job(plan.status());
  job.global_batch = plan->global_batch;
  actors::ClusterJob cj;
  cj.spec = job;
  cj.plan = *plan;
  if (Status s = coord->start(cj); !s.is_ok()) return fail_job(s);
  train::SessionOptions so;
  so.steps = steps;
  so.samples_per_step = job.samples_per_step();
  so.tokens_per_step = job.tokens_per_step();
  so.model = spec.name;
  so.seed = job.seed;
  so.lr = job.optimizer.lr;
  so.stop = &stop;
  auto summary = train::run_session(*coord, so);
  if (!summary.has_value()) return fail_job(summary.status());
  coord->shutdown("the point is measured");

  train::PointResult r;
  r.suite = suite;
  r.cluster = "this machine";
  r.mode = "run";
  r.point = point;
  r.global_batch = job.global_batch;
  r.memory_limit = 0;
  train::SystemResult s;
  s.system = "meshpipe";
  s.status = "ok";
  s.detail = fmt::format("{} stages, {} micro-batches of {}, {} process(es)", plan->stages.size(),
                         plan->micro_batches, plan->micro_batch, point.devices);
  std::vector<double> times(summary->step_seconds.begin() + (summary->step_seconds.size() > 1),
                            summary->step_seconds.end());
  s.step_time = median(times);
  s.predicted_step_time = plan->step_time;
  s.stages = static_cast<int64_t>(plan->stages.size());
  s.micro_batches = plan->micro_batches;
  for (const auto& [d, b] : summary->peak_bytes) s.peak_bytes = std::max(s.peak_bytes, b);
  MP_ASSIGN_OR_RETURN(graph::TrainingGraph tg,
                      graph::models::zoo_training_graph(spec, plan->micro_batch,
                                                        graph::OptimizerConfig{}, std::nullopt));
  const double flops =
      planner::model_flops_per_micro_batch(tg.graph) * static_cast<double>(plan->micro_batches);
  if (s.step_time > 0) {
    s.pflops = flops / s.step_time / 1e15;
    s.alpa_pflops = train::alpa_iteration_flops(spec, job.global_batch) / s.step_time / 1e15;
  }
  r.systems.push_back(std::move(s));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace meshpipe::cli

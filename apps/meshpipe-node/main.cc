// meshpipe-node: one per machine of a multi-process job. Proves it knows the job's secret to the
// gate of the coordinator that `meshpipe train --listen PORT --nodes K` publishes, joins it,
// runs its devices' part of every step, and exits when the job ends (non-zero unless it
// finished) or the coordinator goes away. A first SIGINT/SIGTERM leaves the ending to the driver
// (which finishes the step and saves with --save); a second one exits at once. With --driver it
// is that driver as well: it runs `meshpipe train --listen ... --local-devices N` (the
// `meshpipe` binary next to this one) with the train options given after `--`.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "actors/cluster.h"
#include "actors/launch_env.h"
#include "actors/secret.h"
#include "core/crash.h"
#include "mesh/cluster.h"

namespace {

constexpr double kMaxMemoryGib = 1 << 20;  // a PiB per device: beyond any device, within int64

std::atomic<int> g_interrupts{0};    // lock-free: safe in a signal handler
std::atomic<int> g_first_signal{0};  // the signal of the first interrupt

// The first signal is the driver's to act on (it was most likely signalled too, and may be
// saving a checkpoint this node must write its tiles to); the second ends the node at once.
extern "C" void on_interrupt(int sig) {
  if (g_interrupts.fetch_add(1) == 0) {
    g_first_signal.store(sig);
    static const char first[] =
        "meshpipe-node: interrupted; the driver ends the job (it finishes the step, and saves "
        "with --save); interrupt again to exit now\n";
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, first, sizeof(first) - 1);
    return;
  }
  static const char again[] = "meshpipe-node: interrupted again: exiting now\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, again, sizeof(again) - 1);
  ::_exit(128 + sig);
}

void handle_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// Replaces this process with `meshpipe train` driving the job and running this node's devices.
int exec_driver(const meshpipe::actors::NodeOptions& options, double memory_gib,
                const std::string& secret_file, const std::vector<std::string>& train_args) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::filesystem::path meshpipe = self.parent_path() / "meshpipe";
  if (ec || !std::filesystem::exists(meshpipe)) {
    fmt::print(stderr, "meshpipe-node: error: --driver needs the meshpipe binary at {}\n",
               meshpipe.string());
    return 1;
  }
  std::vector<std::string> args = {"meshpipe",           "train",
                                   "--local-devices",    std::to_string(options.devices),
                                   "--local-memory-gib", fmt::format("{}", memory_gib),
                                   "--local-bind",       options.bind};
  if (!secret_file.empty()) {
    args.push_back("--secret-file");
    args.push_back(secret_file);
  }
  args.insert(args.end(), train_args.begin(), train_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(meshpipe.c_str(), argv.data());
  fmt::print(stderr, "meshpipe-node: error: cannot run {}: {}\n", meshpipe.string(),
             std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  meshpipe::install_crash_handlers("meshpipe-node");
  CLI::App app{"meshpipe-node: joins a meshpipe job's coordinator and runs this machine's devices"};
  meshpipe::actors::NodeOptions options;
  double memory_gib = 4.0;
  int64_t connect_ms = 10000;
  bool driver = false;
  std::string secret_file;
  std::vector<std::string> train_args;
  std::string launcher = "auto";
  app.add_option("--launcher", launcher,
                 "take the rank, the process count and rank 0's address from a launcher's "
                 "variables: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) "
                 "or Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST; port "
                 "MASTER_PORT or MESHPIPE_PORT); auto: whichever is set. With --driver rank 0 "
                 "drives (--listen PORT --nodes WORLD_SIZE added to the train options) and the "
                 "other ranks join it, so `srun meshpipe-node --driver -- <train options>` "
                 "starts a whole job; without --driver every rank joins a driver started "
                 "separately. One process per machine. none: ignore the variables")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "slurm", "torchrun", "none"}));
  app.add_option("--coordinator", options.coordinator,
                 "HOST:PORT of the driver (`meshpipe train --listen PORT --nodes K`)");
  app.add_flag("--driver", driver,
               "be the job's driver too: runs `meshpipe train --local-devices N` with the train "
               "options after `--`, which must include --listen PORT and --nodes K (this node "
               "is one of the K)");
  app.add_option("--devices", options.devices,
                 "devices this node runs: virtual CPU devices, or in a job whose driver has "
                 "--device cuda one per GPU of this machine (GPUs 0 .. N-1)")
      ->capture_default_str()
      ->check(CLI::Range(1, static_cast<int>(meshpipe::mesh::kMaxClusterDevices)));
  app.add_option("--memory-gib", memory_gib, "memory per device reported to the planner")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            if (end != text.c_str() && *end == '\0' && std::isfinite(v) && v > 0 &&
                v <= kMaxMemoryGib) {
              return "";
            }
            return fmt::format("must be a finite number in (0, {}], got '{}'", kMaxMemoryGib, text);
          },
          "GIB"));
  app.add_option("--bind", options.bind, "address this node's collectives (Gloo) listen on")
      ->capture_default_str();
  app.add_option("--connect-timeout-ms", connect_ms,
                 "how long reaching the coordinator, proving the secret and registering may "
                 "take")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}));
  app.add_option("--secret-file", secret_file,
                 "file holding the job's shared secret (readable by its owner only; default: the "
                 "MESHPIPE_SECRET environment variable). The driver prints a new one, or writes "
                 "it with --write-secret FILE");
  app.add_option("train-options", train_args, "with --driver: `meshpipe train` options, after --");
  CLI11_PARSE(app, argc, argv);
  // A coordinator given by hand means no launcher (unless one is named): a shell inside a
  // Slurm allocation has SLURM_* set without being started by srun for this job.
  if (!options.coordinator.empty() && app.count("--launcher") == 0) launcher = "none";
  auto env = meshpipe::actors::read_launch_env(
      launcher, [](const char* name) -> const char* { return std::getenv(name); });
  if (!env.has_value()) {
    fmt::print(stderr, "meshpipe-node: error: {}\n", env.status().message());
    return 2;
  }
  if (env->has_value()) {
    const meshpipe::actors::LaunchEnv& e = **env;
    if (!options.coordinator.empty()) {
      fmt::print(stderr,
                 "meshpipe-node: error: the {} launcher's variables name the coordinator "
                 "({}:{}); drop --coordinator (or --launcher none)\n",
                 e.launcher, e.master_addr, e.port);
      return 2;
    }
    // This machine's address towards rank 0: where its collectives listen for the others.
    if (app.count("--bind") == 0) {
      auto local = meshpipe::actors::launch_bind_address(e);
      if (!local.has_value()) {
        fmt::print(stderr, "meshpipe-node: error: {} (give --bind)\n", local.status().message());
        return 2;
      }
      options.bind = *local;
    }
    fmt::print(stderr, "meshpipe-node: {} rank {} of {}, coordinator {}:{}\n", e.launcher, e.rank,
               e.world_size, e.master_addr, e.port);
    if (driver && e.rank == 0) {
      for (const std::string& a : train_args) {
        if (a == "--listen" || a == "--nodes" || a.rfind("--listen=", 0) == 0 ||
            a.rfind("--nodes=", 0) == 0) {
          fmt::print(stderr,
                     "meshpipe-node: error: {} is given by the launcher (rank 0 listens on "
                     "MASTER_PORT for WORLD_SIZE nodes); drop it from the train options\n",
                     a);
          return 2;
        }
      }
      // The gate listens on every interface (the default of --listen-address; only a node that
      // proves the secret gets through), so the other machines reach it whatever MASTER_ADDR
      // resolves to on this one.
      train_args.insert(train_args.end(), {"--listen", std::to_string(e.port), "--nodes",
                                           std::to_string(e.world_size)});
      return exec_driver(options, memory_gib, secret_file, train_args);
    }
    // Every other rank (and every rank when the driver runs on its own) joins rank 0.
    options.coordinator = fmt::format("{}:{}", e.master_addr, e.port);
    train_args.clear();
    driver = false;
  }
  if (driver) {
    if (!options.coordinator.empty()) {
      fmt::print(stderr,
                 "meshpipe-node: error: --driver publishes the coordinator itself; "
                 "drop --coordinator\n");
      return 2;
    }
    return exec_driver(options, memory_gib, secret_file, train_args);
  }
  if (options.coordinator.empty()) {
    fmt::print(stderr, "meshpipe-node: error: --coordinator HOST:PORT is required (or --driver)\n");
    return 2;
  }
  if (!train_args.empty()) {
    fmt::print(stderr, "meshpipe-node: error: train options ({}) are for --driver only\n",
               fmt::join(train_args, " "));
    return 2;
  }
  options.memory_bytes = static_cast<int64_t>(memory_gib * 1073741824.0);
  options.connect_timeout = std::chrono::milliseconds(connect_ms);
  auto secret = meshpipe::actors::find_secret(secret_file);
  if (!secret.has_value()) {
    fmt::print(stderr, "meshpipe-node: error: {}\n", secret.status().to_string());
    return 2;
  }
  options.secret = secret->value;
  handle_interrupts();
  const meshpipe::Status s = meshpipe::actors::run_node(options);
  if (!s.is_ok()) {
    fmt::print(stderr, "meshpipe-node: error: {}\n", s.to_string());
    // Interrupted, and the job then ended as failed: 128 + the signal, as `meshpipe train`.
    if (g_first_signal.load() > 0) return 128 + g_first_signal.load();
    return s.code() == meshpipe::Errc::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

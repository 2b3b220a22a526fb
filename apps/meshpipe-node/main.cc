// meshpipe-node: one per machine of a multi-process job. Joins the coordinator that
// `meshpipe train --listen PORT --nodes K` publishes, runs its devices' part of every step, and
// exits when the job ends or the coordinator goes away. With --driver it is that driver as well:
// it runs `meshpipe train --listen ... --local-devices N` (the `meshpipe` binary next to this
// one) with the train options given after `--`.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "actors/cluster.h"

namespace {

// Replaces this process with `meshpipe train` driving the job and running this node's devices.
int exec_driver(const meshpipe::actors::NodeOptions& options, double memory_gib,
                const std::vector<std::string>& train_args) {
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
  CLI::App app{"meshpipe-node: joins a meshpipe job's coordinator and runs this machine's devices"};
  meshpipe::actors::NodeOptions options;
  double memory_gib = 4.0;
  int64_t connect_ms = 10000;
  bool driver = false;
  std::vector<std::string> train_args;
  app.add_option("--coordinator", options.coordinator,
                 "HOST:PORT of the driver (`meshpipe train --listen PORT --nodes K`)");
  app.add_flag("--driver", driver,
               "be the job's driver too: runs `meshpipe train --local-devices N` with the train "
               "options after `--`, which must include --listen PORT and --nodes K (this node "
               "is one of the K)");
  app.add_option("--devices", options.devices, "virtual CPU devices this node runs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--memory-gib", memory_gib, "memory per device reported to the planner")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--bind", options.bind, "address this node's collectives (Gloo) listen on")
      ->capture_default_str();
  app.add_option("--connect-timeout-ms", connect_ms, "how long registration may take")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("train-options", train_args, "with --driver: `meshpipe train` options, after --");
  CLI11_PARSE(app, argc, argv);
  if (driver) {
    if (!options.coordinator.empty()) {
      fmt::print(stderr,
                 "meshpipe-node: error: --driver publishes the coordinator itself; "
                 "drop --coordinator\n");
      return 2;
    }
    return exec_driver(options, memory_gib, train_args);
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
  const meshpipe::Status s = meshpipe::actors::run_node(options);
  if (!s.is_ok()) {
    fmt::print(stderr, "meshpipe-node: error: {}\n", s.to_string());
    return s.code() == meshpipe::Errc::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

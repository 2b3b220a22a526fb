// meshpipe-node: one per machine of a multi-process job. Joins the coordinator that
// `meshpipe train --listen PORT --nodes K` publishes, runs its devices' part of every step, and
// exits when the job ends or the coordinator goes away.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "actors/cluster.h"

int main(int argc, char** argv) {
  CLI::App app{"meshpipe-node: joins a meshpipe job's coordinator and runs this machine's devices"};
  meshpipe::actors::NodeOptions options;
  double memory_gib = 4.0;
  int64_t connect_ms = 10000;
  app.add_option("--coordinator", options.coordinator,
                 "HOST:PORT of the driver (`meshpipe train --listen PORT --nodes K`)")
      ->required();
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
  CLI11_PARSE(app, argc, argv);
  options.memory_bytes = static_cast<int64_t>(memory_gib * 1073741824.0);
  options.connect_timeout = std::chrono::milliseconds(connect_ms);
  const meshpipe::Status s = meshpipe::actors::run_node(options);
  if (!s.is_ok()) {
    fmt::print(stderr, "meshpipe-node: error: {}\n", s.to_string());
    return s.code() == meshpipe::Errc::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

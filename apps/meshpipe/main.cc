// meshpipe: plans and trains neural networks without a hand-written parallelization plan.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "core/crash.h"
#include "core/logging.h"
#include "meshpipe/commands.h"

int main(int argc, char** argv) {
  meshpipe::install_crash_handlers("meshpipe");
  CLI::App app{
      "meshpipe: automatic inter- and intra-operator parallel training (an Alpa "
      "re-implementation in C++)"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  int exit_code = 0;
  meshpipe::cli::add_models_command(app, exit_code);
  meshpipe::cli::add_train_command(app, exit_code);
  meshpipe::cli::add_shard_command(app, exit_code);
  meshpipe::cli::add_plan_commands(app, exit_code);
  meshpipe::cli::add_simulate_command(app, exit_code);
  meshpipe::cli::add_profile_command(app, exit_code);
  meshpipe::cli::add_bench_command(app, exit_code);
  app.parse_complete_callback([&] { meshpipe::set_log_level(log_level); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}

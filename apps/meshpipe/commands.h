// Sub-commands of the meshpipe CLI; each registers its options and returns an exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace meshpipe::cli {

/// `meshpipe models`: the zoo with parameter counts.
void add_models_command(CLI::App& app, int& exit_code);
/// `meshpipe train`: trains a zoo model on synthetic data.
void add_train_command(CLI::App& app, int& exit_code);
/// `meshpipe shard`: the intra-op sharding pass on one stage.
void add_shard_command(CLI::App& app, int& exit_code);
/// `meshpipe simulate`: a plan's programs on the simulated backend.
void add_simulate_command(CLI::App& app, int& exit_code);
/// `meshpipe profile`: measures the devices at hand into a profile for --profile.
void add_profile_command(CLI::App& app, int& exit_code);
/// `meshpipe plan`, `explain` and `compare`.
void add_plan_commands(CLI::App& app, int& exit_code);
/// `meshpipe bench scaling`: the weak-scaling harness.
void add_bench_command(CLI::App& app, int& exit_code);

}  // namespace meshpipe::cli

// The settings of `meshpipe train` and their command-line options (cmd_train_options.cc).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "meshpipe/plan_common.h"
#include "train/metrics.h"

namespace meshpipe::cli {

/// What `meshpipe train` was asked for.
struct TrainArgs {
  std::string model = "gpt-tiny";
  ModelFileArgs model_file;
  int64_t steps = 50;
  int64_t batch = 0;
  std::string optimizer = "adam";
  float lr = 0.0f;
  bool lr_given = false;
  bool precision_given = false;
  float weight_decay = 0.0f;
  float momentum = 0.0f;
  uint64_t seed = 1234;
  bool check_numerics = false;
  bool breakdown = false;
  std::string device = "auto";      // cpu, cuda, or auto (one GPU for a single-device run)
  std::string precision = "f32";    // f32, or bf16 / f16 (mixed precision)
  std::string loss_scale = "auto";  // auto (dynamic for f16), dynamic, off
  float initial_loss_scale = 65536.0f;
  int64_t loss_scale_window = 2000;
  std::string cluster;  // empty: one device (unless --plan)
  std::string plan;
  std::string profile;  // --profile FILE: the cluster's measured profile
  int64_t micro_batches = 0;
  std::string schedule;
  std::string recompute = "auto";
  std::string collectives;  // "": in-process in one process, ucx between nodes
  std::string transport = "in-process";
  std::string runner = "actors";
  std::string save;
  std::string data;           // --data DIR (.npy arrays) or FILE (tokens)
  double val_fraction = 0.1;  // --val-fraction: a token file's validation share
  std::string metrics;        // --metrics FILE
  int64_t val_every = 0;      // --val-every N: validation passes
  int64_t warmup_steps = 0;   // --warmup-steps
  int64_t decay_steps = 0;    // --decay-steps
  double min_lr_ratio = 0.1;  // --min-lr-ratio
  double clip_grad_norm = 0;  // --clip-grad-norm
  int64_t val_batches = 4;    // --val-batches K
  std::shared_ptr<train::MetricsLog> metrics_log;  // opened before anything runs
  std::string load;
  int64_t save_every = 0;
  int listen = -1;  // >= 0: coordinate `nodes` meshpipe-node processes on this port
  std::string listen_address = "0.0.0.0";
  int32_t local_devices = 0;  // > 0: the driver also runs a node with this many devices
  double local_memory_gib = 4.0;
  std::string local_bind = "127.0.0.1";
  int32_t nodes = 1;
  std::string launcher = "none";  // slurm, torchrun, auto: rank, size and rank 0 from variables
  int64_t join_timeout_ms = 60000;
  int64_t step_timeout_ms = 60000;
  int64_t liveness_ms = 5000;
  std::string secret_file;   // with --listen: the job's secret (else MESHPIPE_SECRET, else new)
  std::string write_secret;  // with --listen: write a new secret here instead of printing it
};

/// Registers every option of `train` on `cmd`, writing into `args`.
void add_train_options(CLI::App* cmd, TrainArgs& args);

}  // namespace meshpipe::cli

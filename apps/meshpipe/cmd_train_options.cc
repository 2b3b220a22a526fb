// The command-line options of `meshpipe train`.
#include <CLI/CLI.hpp>

#include "meshpipe/plan_common.h"
#include "meshpipe/train_args.h"
#include "train/job.h"

namespace meshpipe::cli {

namespace {

CLI::Validator non_empty(const std::string& option, const std::string& what = "a directory") {
  return CLI::Validator(
      [option, what](std::string& text) -> std::string {
        return text.empty() ? option + " needs " + what + ", got an empty string" : std::string();
      },
      "");
}

}  // namespace

void add_train_options(CLI::App* cmd, TrainArgs& args) {
  auto* model = cmd->add_option("--model", args.model, "zoo model name (see `meshpipe models`)")
                    ->capture_default_str();
  add_model_file_options(cmd, args.model_file, model);
  cmd->add_option("--steps", args.steps, "training steps")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("--batch", args.batch, "global batch (default: the model's)")
      ->check(kPositiveInteger);
  cmd->add_option("--optimizer", args.optimizer, "adam or sgd")
      ->capture_default_str()
      ->check(CLI::IsMember({"adam", "sgd"}));
  cmd->add_option("--lr", args.lr,
                  "learning rate (default: 3e-3 Adam for GPT/MoE/Wide-ResNet, 1e-3 "
                  "otherwise; 0.1 SGD, 0.05 for Wide-ResNet)")
      ->check(kFinitePositive);
  cmd->add_option("--warmup-steps", args.warmup_steps,
                  "learning-rate warm-up: step s of the first W trains with lr * s / W")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--decay-steps", args.decay_steps,
                  "cosine decay of the learning rate from the end of the warm-up to step D, "
                  "down to --min-lr-ratio of it (constant after D; 0: no decay)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--min-lr-ratio", args.min_lr_ratio,
                  "the decayed learning rate's floor, as a share of --lr")
      ->capture_default_str()
      ->check(finite_range(0.0, 1.0))
      ->needs("--decay-steps");
  cmd->add_option("--clip-grad-norm", args.clip_grad_norm,
                  "clip the gradient to this global norm (as PyTorch's clip_grad_norm_, over "
                  "the whole model however the plan shards it; 0: off; the metrics record "
                  "each step's norm)")
      ->check(kFiniteNonNegative);
  cmd->add_option("--weight-decay", args.weight_decay, "weight decay (AdamW-style for Adam)")
      ->check(kFiniteNonNegative);
  cmd->add_option("--momentum", args.momentum, "SGD momentum")->check(finite_range(0.0, 0.999));
  cmd->add_option("--seed", args.seed, "seed of parameter init and data")->capture_default_str();
  cmd->add_flag("--check-numerics", args.check_numerics,
                "stop at the first op that writes NaN or Inf, naming it");
  cmd->add_flag("--breakdown", args.breakdown,
                "time every kernel, collective and wait of every device and print where a "
                "step's time goes (timing costs a little; without --cluster or --plan, on one "
                "virtual device)");
  cmd->add_option("--cluster", args.cluster,
                  "plan for this cluster (a preset such as cpu:2x2, or a JSON file) and train on "
                  "its devices as CPU threads")
      ->check(non_empty("--cluster", "a preset or a file"));
  cmd->add_option("--plan", args.plan, "train with this plan (from `meshpipe plan -o`)")
      ->check(CLI::ExistingFile)
      ->excludes("--cluster");
  cmd->add_option("--profile", args.profile,
                  "plan with this measured device profile (`meshpipe profile`) instead of the "
                  "cluster's nominal figures; the step time it predicts is printed beside the "
                  "measured one")
      ->check(CLI::ExistingFile)
      ->excludes("--plan");
  cmd->add_option("--micro-batches", args.micro_batches,
                  "micro-batches per step when planning (default: the planner chooses; a --plan "
                  "fixes its own)")
      ->check(kPositiveInteger)
      ->excludes("--plan");
  cmd->add_option("--schedule", args.schedule, "pipeline schedule (default: the plan's)")
      ->check(CLI::IsMember({"1f1b", "gpipe"}));
  cmd->add_option("--recompute", args.recompute,
                  "activation recomputation when planning (--cluster): off, on, or auto (the "
                  "stage DP chooses per stage)")
      ->capture_default_str()
      ->check(CLI::IsMember({"off", "on", "auto"}))
      ->excludes("--plan");
  cmd->add_option("--collectives", args.collectives,
                  "collectives of the mesh axes: in-process (shared memory; the default in one "
                  "process), gloo (TCP) or ucx (over the UCX transport's endpoints: needs "
                  "--transport ucx in one process). With --listen: between nodes, ucx (the "
                  "default) or gloo; inside a node always shared memory. nccl: with --device "
                  "cuda (its default there and its only choice)")
      ->check(CLI::IsMember({"in-process", "gloo", "ucx", "nccl"}));
  cmd->add_option("--transport", args.transport, "cross-stage transport between threads")
      ->capture_default_str()
      ->check(CLI::IsMember({"in-process", "ucx"}));
  cmd->add_option("--precision", args.precision,
                  "storage of activations: f32, or bf16 / f16 for mixed precision (f32 master "
                  "weights, gradients, optimizer state and loss; half activations; kernels "
                  "compute in f32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--loss-scale", args.loss_scale,
                  "loss scaling: dynamic (the loss times a scale S before the backward pass, "
                  "gradients divided by S before the update; a step whose gradients overflow is "
                  "skipped and halves S, 2000 good steps double it), off, or auto (dynamic for "
                  "--precision f16, off otherwise: bf16 and f32 have f32's range)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "dynamic", "off"}));
  cmd->add_option("--initial-loss-scale", args.initial_loss_scale,
                  "the scale of the first step with loss scaling (a power of two keeps "
                  "the scaling exact)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--loss-scale-window", args.loss_scale_window,
                  "finite steps in a row after which the loss scale doubles")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--device", args.device,
                  "where kernels run: cpu, cuda (a run on one device on GPU 0; a --cluster of "
                  "several devices or a --plan with each device on a GPU of this machine and "
                  "NCCL collectives; an error naming what is missing when there is no GPU, no "
                  "NCCL or too few GPUs; with --listen on the nodes' GPUs; not with --profile or "
                  "--breakdown), or auto (cuda for a single-device run when a GPU is there, else "
                  "cpu)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->add_option("--runner", args.runner,
                  "who drives the devices: actors (planner, mesh-group and stage actors) or "
                  "threads (one per device, no actors)")
      ->capture_default_str()
      ->check(CLI::IsMember({"actors", "threads"}));
  cmd->add_option("--save", args.save,
                  "write a sharded checkpoint (parameters, optimizer state, step) to this "
                  "directory after the last step, and when stopped by SIGINT/SIGTERM; the "
                  "directory must be new, empty or an earlier meshpipe checkpoint (replaced)")
      ->check(non_empty("--save"));
  cmd->add_option("--data", args.data,
                  "train on real data instead of synthetic: a FOLDER of NumPy .npy arrays, one "
                  "per data input named after it (an imported model's input names; the zoo's "
                  "tokens/images/features and labels), each [N, the input's other dims], "
                  "float32 or int32/int64, step s reading rows (s-1)*B .. s*B-1 wrapping at N; "
                  "or a token FILE for a language model (nanoGPT's raw uint16 train.bin or "
                  "llm.c's .bin with its header; windows of sequence + 1 tokens in a fixed "
                  "mixed order, the last --val-fraction kept for validation). B: the global "
                  "batch; every node of a multi-node job reads the same path")
      ->check(CLI::ExistingPath);
  cmd->add_option("--val-every", args.val_every,
                  "with a token file: after every N-th step and the last, the mean loss of the "
                  "first --val-batches validation batches (the same ones each time), computed "
                  "with nothing updated")
      ->check(kPositiveInteger)
      ->needs("--data");
  cmd->add_option("--val-batches", args.val_batches,
                  "validation batches per pass (global batches of the validation windows)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--val-fraction", args.val_fraction,
                  "with a token file: the share of its windows (the last ones) kept out of "
                  "training for validation")
      ->capture_default_str()
      ->check(finite_range(0.0, 0.99));
  cmd->add_option("--metrics", args.metrics,
                  "write one JSON line per step to this file (created, or replaced when the first "
                  "step ends): step, loss at full precision, lr, step time and the plan's "
                  "predicted one, samples/s, tokens/s, peak bytes of every device, loss scale; "
                  "and a summary line at the end")
      ->check(non_empty("--metrics"));
  cmd->add_option("--save-every", args.save_every, "also after every N-th step (with --save)")
      ->check(kPositiveInteger)
      ->needs("--save");
  cmd->add_option("--load", args.load,
                  "resume from a checkpoint directory, under this run's plan (any device count)")
      ->check(non_empty("--load"));
  cmd->add_option("--listen", args.listen,
                  "drive a multi-process job: publish the coordinator on this port (0: any free "
                  "port; only processes that know the job's secret get in, see --secret-file) "
                  "and wait for --nodes meshpipe-node processes; --cluster then gives the "
                  "device speed and links (default cpu); --save/--load directories must be "
                  "visible to every node")
      ->check(CLI::Range(0, 65535))
      ->excludes("--runner");
  cmd->add_option("--listen-address", args.listen_address,
                  "address the coordinator's gate listens on (with --listen; 0.0.0.0: every "
                  "interface, so nodes on other machines can reach it). Only a node that proves "
                  "it knows the job's secret gets through the gate; the coordinator itself "
                  "listens on loopback only. Traffic is not encrypted: keep the job on a private "
                  "network")
      ->capture_default_str();
  cmd->add_option("--secret-file", args.secret_file,
                  "with --listen or --launcher: the job's shared secret, which every node must "
                  "prove it knows, from this file (readable by its owner only, at most 4 KiB). "
                  "Default: the MESHPIPE_SECRET environment variable, else (--listen) a new "
                  "random secret, printed");
  cmd->add_option("--write-secret", args.write_secret,
                  "with --listen: write the new random secret to this new file (mode 0600) for "
                  "the nodes' --secret-file, instead of printing it")
      ->needs("--listen")
      ->excludes("--secret-file");
  cmd->add_option("--local-devices", args.local_devices,
                  "the driver also runs a node with this many virtual devices, one of the "
                  "--nodes (with --listen; `meshpipe-node --driver` starts this); with "
                  "--launcher, the devices of every rank")
      ->check(kPositiveInteger);
  cmd->add_option("--local-memory-gib", args.local_memory_gib,
                  "memory per device of the driver's own node (with --local-devices)")
      ->capture_default_str()
      ->check(kFinitePositive);
  cmd->add_option("--local-bind", args.local_bind,
                  "address the driver's own node's collectives (Gloo) listen on (with "
                  "--local-devices)")
      ->capture_default_str();
  cmd->add_option("--launcher", args.launcher,
                  "started by a launcher on every machine (srun, or torchrun --no-python): "
                  "slurm, torchrun or auto reads the rank, the process count and rank 0's "
                  "address from its variables (as `meshpipe-node --launcher` does); rank 0 "
                  "drives with --listen MASTER_PORT --nodes WORLD_SIZE and runs "
                  "--local-devices (default 1) itself, every other rank becomes a meshpipe-node "
                  "with that many devices. none (the default): a single-process run")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "auto", "slurm", "torchrun"}))
      ->excludes("--listen");
  cmd->add_option("--nodes", args.nodes, "nodes the job waits for (with --listen)")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("--join-timeout-ms", args.join_timeout_ms,
                  "how long to wait for the nodes (with --listen)")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("--step-timeout-ms", args.step_timeout_ms,
                  "a node that does not answer a step within this fails the job (with --listen)")
      ->capture_default_str()
      ->check(kPositiveInteger);
  cmd->add_option("--liveness-ms", args.liveness_ms,
                  "a node whose heartbeat goes unanswered this long fails the job (with --listen)")
      ->capture_default_str()
      ->check(kPositiveInteger);
}

}  // namespace meshpipe::cli

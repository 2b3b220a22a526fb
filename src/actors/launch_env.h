// The launchers people start multi-node jobs with: Slurm (`srun`: SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, SLURM_JOB_NODELIST) and torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT). From their variables a meshpipe process learns its rank, the job's process
// count and where rank 0's coordinator listens, so one command line starts a whole job:
// rank 0 drives (`meshpipe train --listen`), every other rank joins it as a node.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/status.h"

namespace meshpipe::actors {

/// What a launcher told this process.
struct LaunchEnv {
  std::string launcher;  ///< "slurm" or "torchrun"
  int64_t rank = 0;
  int64_t world_size = 1;
  std::string master_addr;  ///< rank 0's host
  int port = 0;             ///< the coordinator's port
};

/// Reads a variable; null when unset (std::getenv, or a map in tests).
using EnvLookup = std::function<const char*(const char*)>;

/// The launcher's view, or empty when neither launcher's variables are set. `which`: "auto"
/// (torchrun's variables first, then Slurm's), "torchrun", "slurm" (that one's must be set), or
/// "none" (always empty). The port is MESHPIPE_PORT, else MASTER_PORT; Slurm's rank 0 host is
/// MASTER_ADDR when set, else the first host of SLURM_JOB_NODELIST (SLURM_NODELIST). Errors
/// name the variable: a missing or malformed number, rank outside [0, world size), a second
/// process on one machine (local rank > 0: meshpipe runs one process per machine, which runs
/// all its devices), no port.
Expected<std::optional<LaunchEnv>> read_launch_env(const std::string& which, const EnvLookup& env);

/// The first host of a Slurm host list: "gpu[07-09,12],cpu1" -> "gpu07" (zero padding kept).
Expected<std::string> first_slurm_host(const std::string& nodelist);

/// The address this process's collectives should listen on under a launcher: its address
/// towards rank 0's host; when that is a loopback address although MASTER_ADDR is not one
/// (rank 0's own host name mapped to 127.0.1.1 in /etc/hosts, as Debian does), the first
/// non-loopback IPv4 address of an interface that is up. Errors name the host.
Expected<std::string> launch_bind_address(const LaunchEnv& env);

/// The address of this machine's interface that routes to `host` (no packet is sent: a UDP
/// socket is connected and asked for its local address), e.g. the address a node's collectives
/// should listen on for the others to reach it. Errors name the host.
Expected<std::string> local_address_towards(const std::string& host, int port);

}  // namespace meshpipe::actors

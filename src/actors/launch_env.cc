// Slurm's and torchrun's variables read into a LaunchEnv.
#include "actors/launch_env.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstring>

#include "core/files.h"

namespace meshpipe::actors {

namespace {

// The variable as a whole number in [lo, hi]; errors name it.
Expected<int64_t> number(const EnvLookup& env, const char* name, int64_t lo, int64_t hi) {
  const char* v = env(name);
  if (v == nullptr) return make_error(Errc::kInvalidArgument, "{} is not set", name);
  const std::string text(v);
  int64_t x = 0;
  // Digits only (no sign, no spaces), the whole text.
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  const bool ok =
      !text.empty() && text[0] != '-' && ec == std::errc() && end == text.data() + text.size();
  if (!ok || x < lo || x > hi) {
    return make_error(Errc::kInvalidArgument, "{}='{}' is not a whole number in [{}, {}]", name,
                      printable(text), lo, hi);
  }
  return x;
}

bool set(const EnvLookup& env, const char* name) { return env(name) != nullptr; }

}  // namespace

Expected<std::string> first_slurm_host(const std::string& nodelist) {
  // "prefix[a-b,c],other": the first host is prefix + a (as written, keeping its zeros).
  const size_t comma = nodelist.find(',');
  const size_t bracket = nodelist.find('[');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket)) {
    std::string host = nodelist.substr(0, comma);
    if (host.empty() || host.find(']') != std::string::npos) {
      return make_error(Errc::kInvalidArgument, "host list '{}' has no first host",
                        printable(nodelist));
    }
    return host;
  }
  const size_t end = nodelist.find_first_of("-,]", bracket + 1);
  std::string first =
      nodelist.substr(bracket + 1, end == std::string::npos ? 0 : end - bracket - 1);
  bool digits = !first.empty();
  for (char c : first) digits = digits && std::isdigit(static_cast<unsigned char>(c)) != 0;
  if (bracket == 0 || !digits || nodelist.find(']', bracket) == std::string::npos) {
    return make_error(Errc::kInvalidArgument, "host list '{}' is malformed", printable(nodelist));
  }
  return nodelist.substr(0, bracket) + first;
}

Expected<std::optional<LaunchEnv>> read_launch_env(const std::string& which, const EnvLookup& env) {
  if (which == "none") return std::optional<LaunchEnv>();
  if (which != "auto" && which != "torchrun" && which != "slurm") {
    return make_error(Errc::kInvalidArgument, "launcher '{}' is not auto, slurm, torchrun or none",
                      printable(which));
  }
  const bool torchrun = set(env, "RANK") && set(env, "WORLD_SIZE");
  const bool slurm = set(env, "SLURM_PROCID") && set(env, "SLURM_NTASKS");
  std::string kind;
  if (which == "torchrun" || (which == "auto" && torchrun)) {
    kind = "torchrun";
  } else if (which == "slurm" || (which == "auto" && slurm)) {
    kind = "slurm";
  } else {
    return std::optional<LaunchEnv>();
  }
  constexpr int64_t kMaxProcesses = 1 << 16;
  LaunchEnv e;
  e.launcher = kind;
  const bool t = kind == "torchrun";
  MP_ASSIGN_OR_RETURN(e.world_size,
                      number(env, t ? "WORLD_SIZE" : "SLURM_NTASKS", 1, kMaxProcesses));
  MP_ASSIGN_OR_RETURN(e.rank, number(env, t ? "RANK" : "SLURM_PROCID", 0, kMaxProcesses));
  if (e.rank >= e.world_size) {
    return make_error(Errc::kInvalidArgument, "{} {} is not below {} {}",
                      t ? "RANK" : "SLURM_PROCID", e.rank, t ? "WORLD_SIZE" : "SLURM_NTASKS",
                      e.world_size);
  }
  const char* local_name = t ? "LOCAL_RANK" : "SLURM_LOCALID";
  if (set(env, local_name)) {
    MP_ASSIGN_OR_RETURN(const int64_t local, number(env, local_name, 0, kMaxProcesses));
    if (local != 0) {
      return make_error(Errc::kInvalidArgument,
                        "{}={}: meshpipe runs one process per machine, which runs all its "
                        "devices (--devices); start one task per node ({})",
                        local_name, local,
                        t ? "torchrun --nproc-per-node 1" : "srun --ntasks-per-node 1");
    }
  }
  if (set(env, "MASTER_ADDR")) {
    e.master_addr = env("MASTER_ADDR");
  } else if (t) {
    return make_error(Errc::kInvalidArgument, "MASTER_ADDR is not set");
  } else {
    const char* list =
        set(env, "SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST");
    if (list == nullptr) {
      return make_error(Errc::kInvalidArgument,
                        "neither MASTER_ADDR nor SLURM_JOB_NODELIST is set: rank 0's host is "
                        "unknown");
    }
    MP_ASSIGN_OR_RETURN(e.master_addr, first_slurm_host(list));
  }
  if (e.master_addr.empty() || e.master_addr.size() > 253) {
    return make_error(Errc::kInvalidArgument, "MASTER_ADDR '{}' is not a host name",
                      printable(e.master_addr));
  }
  // MESHPIPE_PORT, when set, wins: torchrun's static rendezvous keeps MASTER_PORT for its own
  // store.
  const char* port_name = set(env, "MESHPIPE_PORT") ? "MESHPIPE_PORT" : "MASTER_PORT";
  if (!set(env, port_name)) {
    return make_error(Errc::kInvalidArgument,
                      "the coordinator's port is not set: export MASTER_PORT (or MESHPIPE_PORT)");
  }
  MP_ASSIGN_OR_RETURN(const int64_t port, number(env, port_name, 1, 65535));
  e.port = static_cast<int>(port);
  return std::optional<LaunchEnv>(e);
}

Expected<std::string> launch_bind_address(const LaunchEnv& env) {
  MP_ASSIGN_OR_RETURN(std::string local, local_address_towards(env.master_addr, env.port));
  const bool loopback = local.rfind("127.", 0) == 0;
  const bool asked_loopback =
      env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0;
  if (!loopback || asked_loopback || env.world_size <= 1) return local;
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return local;
  std::string found;
  for (ifaddrs* a = all; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                sizeof(text));
    found = text;
  }
  ::freeifaddrs(all);
  return found.empty() ? local : found;
}

Expected<std::string> local_address_towards(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return make_error(Errc::kNotFound, "cannot resolve '{}': {}", printable(host),
                      ::gai_strerror(rc));
  }
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(found);
    return make_error(Errc::kIo, "socket: {}", std::strerror(errno));
  }
  UniqueFd owned(fd);
  const int rc = ::connect(fd, found->ai_addr, found->ai_addrlen);
  ::freeaddrinfo(found);
  if (rc != 0) {
    return make_error(Errc::kUnavailable, "no route to '{}': {}", printable(host),
                      std::strerror(errno));
  }
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    return make_error(Errc::kIo, "getsockname: {}", std::strerror(errno));
  }
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text));
  return std::string(text);
}

}  // namespace meshpipe::actors

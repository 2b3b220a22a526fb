// comm_pair: the two-process checks ctest runs (docs/style.md rule 22). It forks into two processes
// before any thread exists. `comm_pair ucx`: the endpoints exchange worker addresses through
// pipes and bounce patterned buffers over UCX. `comm_pair gloo`: both ranks join a Gloo group
// through a file-backed RendezvousStore and run collectives. Exits 0 only if both processes
// verified every byte; each process is killed by SIGALRM after 30 s, so nothing hangs.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/transport.h"

namespace meshpipe::comm {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kWait{10000};

// ---- out-of-band channel: a pipe in each direction --------------------------------------

struct Pipes {
  int read_fd = -1;
  int write_fd = -1;
};

Status write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::write(fd, p, n);
    if (k <= 0) return make_error(Errc::kIo, "pipe write failed");
    p += k;
    n -= size_t(k);
  }
  return Status::ok();
}

Status read_all(int fd, void* data, size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, int(kWait.count())) <= 0) {
      return make_error(Errc::kTimeout, "peer sent nothing within {} ms", kWait.count());
    }
    const ssize_t k = ::read(fd, p, n);
    if (k <= 0) return make_error(Errc::kIo, "peer closed the pipe");
    p += k;
    n -= size_t(k);
  }
  return Status::ok();
}

Status send_blob(const Pipes& pipes, const std::string& blob) {
  const uint64_t n = blob.size();
  MP_RETURN_IF_ERROR(write_all(pipes.write_fd, &n, sizeof(n)));
  return write_all(pipes.write_fd, blob.data(), blob.size());
}

Expected<std::string> recv_blob(const Pipes& pipes) {
  uint64_t n = 0;
  MP_RETURN_IF_ERROR(read_all(pipes.read_fd, &n, sizeof(n)));
  if (n > (1u << 20)) return make_error(Errc::kIo, "implausible blob of {} bytes", n);
  std::string blob(n, '\0');
  MP_RETURN_IF_ERROR(read_all(pipes.read_fd, blob.data(), n));
  return blob;
}

// Both processes reach this point before either goes on.
Status oob_barrier(const Pipes& pipes) {
  MP_RETURN_IF_ERROR(send_blob(pipes, "barrier"));
  MP_ASSIGN_OR_RETURN(std::string got, recv_blob(pipes));
  return got == "barrier" ? Status::ok() : make_error(Errc::kIo, "bad barrier token");
}

std::vector<uint8_t> pattern(size_t bytes, int seed) {
  std::vector<uint8_t> v(bytes);
  for (size_t i = 0; i < bytes; ++i) v[i] = uint8_t((i * 7 + size_t(seed) * 13 + (i >> 10)) & 0xff);
  return v;
}

// ---- UCX: rank 0 sends, rank 1 checks and answers with every byte incremented ------------

Status run_ucx(int rank, const Pipes& pipes) {
  const int peer = 1 - rank;
  MP_ASSIGN_OR_RETURN(auto context, UcxContext::create());
  MP_ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport, context->create_endpoint(rank, 2));
  auto& endpoint = static_cast<UcxEndpoint&>(*transport);
  MP_RETURN_IF_ERROR(send_blob(pipes, endpoint.address()));
  MP_ASSIGN_OR_RETURN(std::string peer_address, recv_blob(pipes));
  MP_RETURN_IF_ERROR(endpoint.connect(peer, peer_address));
  for (size_t bytes : {size_t{100}, size_t{8} << 20}) {
    const std::vector<uint8_t> original = pattern(bytes, int(bytes % 251));
    std::vector<uint8_t> buf(bytes);
    if (rank == 0) {
      MP_ASSIGN_OR_RETURN(Request s, endpoint.send(peer, 1, original.data(), int64_t(bytes)));
      MP_RETURN_IF_ERROR(endpoint.wait(s, kWait));
      MP_ASSIGN_OR_RETURN(Request r, endpoint.recv(peer, 2, buf.data(), int64_t(bytes)));
      MP_RETURN_IF_ERROR(endpoint.wait(r, kWait));
      for (size_t i = 0; i < bytes; ++i) {
        if (buf[i] != uint8_t(original[i] + 1)) {
          return make_error(Errc::kInternal, "rank 0: byte {} of the {}-byte answer is wrong", i,
                            bytes);
        }
      }
    } else {
      MP_ASSIGN_OR_RETURN(Request r, endpoint.recv(peer, 1, buf.data(), int64_t(bytes)));
      MP_RETURN_IF_ERROR(endpoint.wait(r, kWait));
      if (buf != original) {
        return make_error(Errc::kInternal, "rank 1: the {}-byte message differs", bytes);
      }
      for (uint8_t& b : buf) ++b;
      MP_ASSIGN_OR_RETURN(Request s, endpoint.send(peer, 2, buf.data(), int64_t(bytes)));
      MP_RETURN_IF_ERROR(endpoint.wait(s, kWait));
    }
  }
  // Neither side closes its endpoint while the other may still be receiving.
  return oob_barrier(pipes);
}

// ---- Gloo: a RendezvousStore of files in a shared directory ------------------------------

class FileStore final : public RendezvousStore {
 public:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}

  // Written under a temporary name and renamed, so a reader never sees half a value.
  void set(const std::string& key, const std::string& value) override {
    const std::string path = path_of(key);
    const std::string tmp = fmt::format("{}.tmp{}", path, ::getpid());
    {
      std::ofstream out(tmp, std::ios::binary);
      out.write(value.data(), std::streamsize(value.size()));
    }
    std::filesystem::rename(tmp, path);
  }

  Expected<std::string> get(const std::string& key, milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::string path = path_of(key);
    while (!std::filesystem::exists(path)) {
      if (std::chrono::steady_clock::now() > deadline) {
        return make_error(Errc::kTimeout, "file store: '{}' did not appear within {} ms", key,
                          timeout.count());
      }
      std::this_thread::sleep_for(milliseconds(2));
    }
    std::ifstream in(path, std::ios::binary);
    std::ostringstream buf;
    buf << in.rdbuf();
    return buf.str();
  }

 private:
  std::string path_of(std::string key) const {
    for (char& c : key) c = c == '/' ? '_' : c;
    return dir_ + "/" + key;
  }

  std::string dir_;
};

Status run_gloo(int rank, const std::string& dir) {
  GlooOptions options;
  options.timeout = kWait;
  options.prefix = "pair";
  MP_ASSIGN_OR_RETURN(auto comm,
                      make_gloo_communicator(rank, 2, std::make_shared<FileStore>(dir), options));
  std::vector<float> data(1001);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float((rank + 1) * 1000 + int(i % 13));
  MP_RETURN_IF_ERROR(comm->all_reduce(data.data(), int64_t(data.size())));
  for (size_t i = 0; i < data.size(); ++i) {
    const float expected = float(1000 + int(i % 13)) + float(2000 + int(i % 13));
    if (data[i] != expected) {
      return make_error(Errc::kInternal, "rank {}: all-reduce element {} is {}, expected {}", rank,
                        i, data[i], expected);
    }
  }
  const std::vector<uint8_t> mine = pattern(333, rank);
  std::vector<uint8_t> all(666);
  MP_RETURN_IF_ERROR(comm->all_gather(mine.data(), all.data(), 333));
  for (int k = 0; k < 2; ++k) {
    if (!std::equal(all.begin() + k * 333, all.begin() + (k + 1) * 333, pattern(333, k).begin())) {
      return make_error(Errc::kInternal, "rank {}: all-gather chunk {} differs", rank, k);
    }
  }
  return comm->barrier();
}

int run(const std::string& mode) {
  if (mode != "ucx" && mode != "gloo") {
    std::fprintf(stderr, "usage: comm_pair ucx|gloo\n");
    return 2;
  }
  if (mode == "ucx" && !ucx_available()) {
    std::printf("comm_pair: this build has no UCX; nothing to check\n");
    return 0;
  }
  if (mode == "gloo" && !gloo_available()) {
    std::printf("comm_pair: this build has no Gloo; nothing to check\n");
    return 0;
  }
  setenv("UCX_NET_DEVICES", "lo", /*overwrite=*/0);
  char dir_template[] = "/tmp/comm_pair_XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  int down[2];  // parent -> child
  int up[2];    // child -> parent
  if (dir == nullptr || ::pipe(down) != 0 || ::pipe(up) != 0) {
    std::perror("comm_pair: setup");
    return 1;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    std::perror("comm_pair: fork");
    return 1;
  }
  const int rank = child == 0 ? 1 : 0;
  ::alarm(30);
  Pipes pipes = rank == 0 ? Pipes{up[0], down[1]} : Pipes{down[0], up[1]};
  ::close(rank == 0 ? up[1] : down[1]);
  ::close(rank == 0 ? down[0] : up[0]);
  const Status status = mode == "ucx" ? run_ucx(rank, pipes) : run_gloo(rank, dir);
  std::printf("comm_pair %s rank %d: %s\n", mode.c_str(), rank, status.to_string().c_str());
  std::fflush(stdout);
  if (rank == 1) std::_Exit(status.is_ok() ? 0 : 1);
  ::close(pipes.write_fd);
  int child_status = 0;
  ::waitpid(child, &child_status, 0);
  std::filesystem::remove_all(dir);
  const bool child_ok = WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0;
  if (!child_ok) std::printf("comm_pair: rank 1 failed (wait status %d)\n", child_status);
  return status.is_ok() && child_ok ? 0 : 1;
}

}  // namespace
}  // namespace meshpipe::comm

int main(int argc, char** argv) { return meshpipe::comm::run(argc > 1 ? argv[1] : ""); }

// Collectives between two processes as a training step meets them: all-reduces of 4 KiB .. 1 MiB
// with 0, 0.3 or 2 ms of compute between calls, over Gloo's TCP pairs and over the UCX endpoints
// (comm::make_transport_communicator, the runtime's default between nodes), with the two
// processes pinned to one core each (as scripts/launch-local.sh pins nodes) and unpinned.
// Times the collective alone (not the compute) on rank 0: median, mean and 90th percentile.
//
//   bench_collectives [--markdown PATH] [--quick]
//
// The second process is forked before any thread exists; the two find each other through files
// in a private temporary directory (Gloo's rendezvous keys, UCX's worker addresses).
#include <fmt/format.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_env.h"
#include "bench_ucx.h"
#include "comm/communicator.h"
#include "comm/transport.h"

using namespace meshpipe;

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTimeout{30000};

// A rendezvous store in a directory both processes see: a key is a file, written atomically.
class FileStore final : public comm::RendezvousStore {
 public:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}
  void set(const std::string& key, const std::string& value) override {
    const std::string path = file(key);
    const std::string tmp = path + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::binary);
      out << value;
    }
    std::filesystem::rename(tmp, path);
  }
  Expected<std::string> get(const std::string& key, std::chrono::milliseconds timeout) override {
    const auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      std::ifstream in(file(key), std::ios::binary);
      if (in) {
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return make_error(Errc::kTimeout, "no value for '{}'", key);
  }

 private:
  std::string file(std::string key) const {
    for (char& c : key) {
      if (c == '/') c = '_';
    }
    return dir_ + "/" + key;
  }
  std::string dir_;
};

volatile double g_sink = 0;
// Scalar arithmetic for about `iters` iterations (no memory traffic).
void compute(int64_t iters) {
  double x = 1.0;
  for (int64_t i = 0; i < iters; ++i) x = x * 1.0000001 + 1e-9;
  g_sink = x;
}

struct Row {
  std::string backend;
  bool pinned = false;
  int64_t bytes = 0;
  int compute_us = 0;
  double median_us = 0, mean_us = 0, p90_us = 0;
};

// One process's part: joins the group, runs every case, and (rank 0) returns the rows.
Expected<std::vector<Row>> run_rank(int rank, const std::string& dir, const std::string& backend,
                                    bool pinned, bool quick) {
  if (pinned) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(rank % std::max(1, static_cast<int>(std::thread::hardware_concurrency())), &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      return make_error(Errc::kIo, "sched_setaffinity: {}", std::strerror(errno));
    }
  }
  auto store = std::make_shared<FileStore>(dir);
  std::shared_ptr<comm::UcxContext> ctx;
  std::unique_ptr<comm::Transport> endpoint;
  std::unique_ptr<comm::Communicator> comm;
  if (backend == "ucx") {
    MP_ASSIGN_OR_RETURN(ctx, comm::UcxContext::create());
    MP_ASSIGN_OR_RETURN(endpoint, ctx->create_endpoint(rank, 2));
    auto* ep = static_cast<comm::UcxEndpoint*>(endpoint.get());
    std::string hex;
    for (unsigned char c : ep->address()) hex += fmt::format("{:02x}", c);
    store->set(fmt::format("{}-{}-address-{}", backend, pinned, rank), hex);
    MP_ASSIGN_OR_RETURN(
        std::string other,
        store->get(fmt::format("{}-{}-address-{}", backend, pinned, 1 - rank), kTimeout));
    std::string address;
    for (size_t i = 0; i + 1 < other.size(); i += 2) {
      address += static_cast<char>(std::stoi(other.substr(i, 2), nullptr, 16));
    }
    MP_RETURN_IF_ERROR(ep->connect(1 - rank, address));
    MP_ASSIGN_OR_RETURN(
        comm, comm::make_transport_communicator(endpoint.get(), {0, 1}, rank, 0, kTimeout));
  } else {
    comm::GlooOptions go;
    go.timeout = kTimeout;
    go.prefix = fmt::format("gloo-{}", pinned);
    MP_ASSIGN_OR_RETURN(comm, comm::make_gloo_communicator(rank, 2, store, go));
  }
  // Iterations of compute() per microsecond on this core.
  const auto t0 = Clock::now();
  compute(20'000'000);
  const double per_us = 20e6 / std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  const int calls = quick ? 30 : 100;
  std::vector<Row> rows;
  for (int64_t bytes : {int64_t{4096}, int64_t{65536}, int64_t{1} << 20}) {
    for (int us : {0, 300, 2000}) {
      std::vector<float> buf(static_cast<size_t>(bytes / 4), 1.0f);
      std::vector<double> t;
      MP_RETURN_IF_ERROR(comm->barrier());
      for (int k = 0; k < calls; ++k) {
        compute(static_cast<int64_t>(us * per_us));
        const auto a = Clock::now();
        MP_RETURN_IF_ERROR(comm->all_reduce(buf.data(), bytes / 4));
        t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      }
      std::sort(t.begin(), t.end());
      rows.push_back({backend, pinned, bytes, us, t[t.size() / 2],
                      std::accumulate(t.begin(), t.end(), 0.0) / double(t.size()),
                      t[t.size() * 9 / 10]});
    }
  }
  MP_RETURN_IF_ERROR(comm->barrier());
  return rows;
}

// Forks the second rank, runs rank 0 here, and returns rank 0's rows.
Expected<std::vector<Row>> run_pair(const std::string& backend, bool pinned, bool quick) {
  char tmpl[] = "/tmp/bench_collectives_XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return make_error(Errc::kIo, "mkdtemp failed");
  const std::string dir = tmpl;
  const pid_t child = ::fork();
  if (child < 0) return make_error(Errc::kIo, "fork failed");
  if (child == 0) {
    auto r = run_rank(1, dir, backend, pinned, quick);
    if (!r.has_value()) fmt::print(stderr, "rank 1: {}\n", r.status().to_string());
    std::_Exit(r.has_value() ? 0 : 1);
  }
  auto rows = run_rank(0, dir, backend, pinned, quick);
  int status = 0;
  ::waitpid(child, &status, 0);
  std::filesystem::remove_all(dir);
  if (!rows.has_value()) return rows.status();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return make_error(Errc::kInternal, "the second process of {} failed", backend);
  }
  return rows;
}

std::string us(double x) {
  return x >= 1000 ? fmt::format("{:.2f} ms", x / 1000) : fmt::format("{:.0f} us", x);
}

}  // namespace

int main(int argc, char** argv) {
  std::string markdown;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--markdown" && i + 1 < argc) {
      markdown = argv[++i];
    } else if (a == "--quick") {
      quick = true;
    } else {
      fmt::print(stderr, "unknown flag {} (flags: --markdown PATH, --quick)\n", a);
      return 2;
    }
  }
  setenv("UCX_NET_DEVICES", "lo", 0);
  const std::string load_before = bench::load_average();
  std::vector<Row> rows;
  std::vector<std::string> backends;
  if (comm::gloo_available()) backends.push_back("gloo");
  if (comm::ucx_available()) backends.push_back("ucx");
  for (bool pinned : {true, false}) {
    for (const std::string& b : backends) {
      auto r = run_pair(b, pinned, quick);
      if (!r.has_value()) {
        fmt::print(stderr, "{}: {}\n", b, r.status().to_string());
        return 1;
      }
      rows.insert(rows.end(), r->begin(), r->end());
    }
  }
  std::string out;
  out += "# Collectives between two processes: Gloo and UCX\n\n";
  out += fmt::format("Date: {}. Machine: {}. Load average before: {}; after: {}.\n\n",
                     bench::utc_now(), bench::machine(), load_before, bench::load_average());
  out +=
      "Two processes (the second forked), a sum all-reduce of fp32 repeated "
      "`calls` times with a fixed amount of scalar compute before each call (0, 0.3 or 2 ms), "
      "as a training step calls collectives between kernels; rank 0 times the all-reduce "
      "alone. Gloo: `gloo::allreduce` over its TCP pairs on 127.0.0.1 (rendezvous through "
      "files). UCX: `comm::make_transport_communicator` over one UCX endpoint per process "
      "(UCX_NET_DEVICES=lo, shared memory), the runtime's default for groups that span "
      "`meshpipe-node`s. Pinned: each process on a core of its own (as "
      "`scripts/launch-local.sh` pins nodes). Produced by `bench/collectives.sh`.\n\n";
  out +=
      "| pinned | size | compute between | Gloo median | Gloo mean | Gloo p90 | UCX median | "
      "UCX mean | UCX p90 | Gloo / UCX (median) |\n";
  out += "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Row& g : rows) {
    if (g.backend != "gloo") continue;
    for (const Row& u : rows) {
      if (u.backend != "ucx" || u.pinned != g.pinned || u.bytes != g.bytes ||
          u.compute_us != g.compute_us) {
        continue;
      }
      out += fmt::format("| {} | {} KiB | {} us | {} | {} | {} | {} | {} | {} | {:.0f}x |\n",
                         g.pinned ? "yes" : "no", g.bytes / 1024, g.compute_us, us(g.median_us),
                         us(g.mean_us), us(g.p90_us), us(u.median_us), us(u.mean_us), us(u.p90_us),
                         g.median_us / std::max(u.median_us, 1e-3));
    }
  }
  fmt::print("{}", out);
  if (!markdown.empty()) {
    std::ofstream f(markdown);
    f << out;
    if (!f) {
      fmt::print(stderr, "cannot write {}\n", markdown);
      return 1;
    }
  }
  return 0;
}

// Communication bandwidth: sum all-reduce bus bandwidth of the in-process and Gloo communicators
// (2 and 4 ranks as threads of this process) and UCX tag-transfer bandwidth between two
// processes on this host, each against single-thread memcpy bandwidth measured here.
//
//   bench_comm [--markdown PATH] [--perftest PATH] [--quick]
//
// --perftest names a file of `<bytes> <MB/s>` lines from ucx_perftest tag_bw (bench/comm.sh
// writes it; lines starting with '#' are notes) to show beside meshpipe's UCX numbers.
#include <fmt/format.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_env.h"
#include "bench_ucx.h"
#include "comm/communicator.h"
#include "comm/transport.h"

using namespace meshpipe;
using namespace meshpipe::comm;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * kKiB;
constexpr milliseconds kTimeout{60000};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Repetitions that move about `budget` bytes per timed batch, within [lo, hi].
int reps_for(int64_t bytes, int64_t budget, int lo, int hi) {
  return int(std::clamp<int64_t>(budget / std::max<int64_t>(bytes, 1), lo, hi));
}

// "1 KiB", "64 MiB".
std::string size_name(int64_t bytes) {
  return bytes >= kMiB ? fmt::format("{} MiB", bytes / kMiB) : fmt::format("{} KiB", bytes / kKiB);
}

// ---- memcpy -------------------------------------------------------------------------------

// Single-thread memcpy GB/s (1e9 bytes/s) of `bytes`, best of 3 batches.
double memcpy_gbps(int64_t bytes, int64_t budget) {
  std::vector<char> src(size_t(bytes), 1);
  std::vector<char> dst(size_t(bytes), 0);
  const int reps = reps_for(bytes, budget, 3, 100000);
  double best = 1e30;
  for (int batch = 0; batch < 4; ++batch) {  // batch 0 warms up
    const auto start = Clock::now();
    for (int i = 0; i < reps; ++i) {
      std::memcpy(dst.data(), src.data(), size_t(bytes));
      src[size_t(i) % size_t(bytes)] = dst[size_t(bytes) - 1];  // keeps each copy live
    }
    if (batch > 0) best = std::min(best, seconds_since(start));
  }
  return double(bytes) * reps / best / 1e9;
}

// ---- all-reduce ---------------------------------------------------------------------------

// Runs fn(rank) on one thread per rank; the first failure, if any.
Status on_threads(int n, const std::function<Status(int)>& fn) {
  std::vector<Status> results(size_t(n), Status::ok());
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back([&, r] { results[size_t(r)] = fn(r); });
  for (std::thread& t : threads) t.join();
  for (const Status& s : results) MP_RETURN_IF_ERROR(s);
  return Status::ok();
}

Expected<std::vector<std::unique_ptr<Communicator>>> make_comms(const std::string& backend, int n) {
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<size_t>(n));
  if (backend == "in-process") {
    auto group = InProcessGroup::create(n, kTimeout);
    for (int r = 0; r < n; ++r) comms[size_t(r)] = group->communicator(r);
    return comms;
  }
  auto store = make_in_process_store();
  GlooOptions options;
  options.timeout = kTimeout;
  options.prefix = fmt::format("bench{}", n);
  MP_RETURN_IF_ERROR(on_threads(n, [&](int r) {
    MP_ASSIGN_OR_RETURN(comms[size_t(r)], make_gloo_communicator(r, n, store, options));
    return Status::ok();
  }));
  return comms;
}

// Seconds per all-reduce of `bytes` of floats. A checked warm-up and one timed all-reduce pick
// the batch length (about `batch_seconds`, 2 to 200 all-reduces); then the best of 5 batches of
// back-to-back all-reduces, each batch between two barriers.
Expected<double> time_all_reduce(std::vector<std::unique_ptr<Communicator>>& comms, int64_t bytes,
                                 double batch_seconds) {
  const int n = int(comms.size());
  const int64_t count = bytes / int64_t(sizeof(float));
  std::vector<std::vector<float>> data(static_cast<size_t>(n));
  double once = 0;
  MP_RETURN_IF_ERROR(on_threads(n, [&](int r) {
    Communicator& c = *comms[size_t(r)];
    std::vector<float>& d = data[size_t(r)];
    d.assign(size_t(count), float(r + 1));
    MP_RETURN_IF_ERROR(c.all_reduce(d.data(), count));
    const float expected = float(n * (n + 1) / 2);
    if (d.front() != expected || d.back() != expected) {
      return make_error(Errc::kInternal, "{}: all-reduce of {} floats gave {}, expected {}",
                        c.backend(), count, d.front(), expected);
    }
    std::fill(d.begin(), d.end(), 0.0f);  // sums stay 0: no overflow, no denormals
    MP_RETURN_IF_ERROR(c.barrier());
    const auto start = Clock::now();
    MP_RETURN_IF_ERROR(c.all_reduce(d.data(), count));
    MP_RETURN_IF_ERROR(c.barrier());
    if (r == 0) once = seconds_since(start);
    return Status::ok();
  }));
  const int reps = int(std::clamp(batch_seconds / std::max(once, 1e-6), 2.0, 200.0));
  double best = 1e30;
  MP_RETURN_IF_ERROR(on_threads(n, [&](int r) {
    Communicator& c = *comms[size_t(r)];
    std::vector<float>& d = data[size_t(r)];
    for (int batch = 0; batch < 5; ++batch) {
      MP_RETURN_IF_ERROR(c.barrier());
      const auto start = Clock::now();
      for (int i = 0; i < reps; ++i) MP_RETURN_IF_ERROR(c.all_reduce(d.data(), count));
      MP_RETURN_IF_ERROR(c.barrier());
      if (r == 0) best = std::min(best, seconds_since(start));
    }
    return Status::ok();
  }));
  return best / reps;
}

// Bus bandwidth (GB/s) of an all-reduce of `bytes` among n ranks taking `seconds`: the data each
// rank sends and receives in a ring all-reduce, 2 (n - 1) / n * bytes, over the time.
double bus_gbps(int n, int64_t bytes, double seconds) {
  return 2.0 * (n - 1) / n * double(bytes) / seconds / 1e9;
}

// ---- UCX between two processes ------------------------------------------------------------

// Exchanges worker addresses over the pipes and connects.
Status connect_over_pipes(UcxEndpoint& endpoint, int peer, int read_fd, int write_fd) {
  MP_RETURN_IF_ERROR(bench::write_string(write_fd, endpoint.address()));
  MP_ASSIGN_OR_RETURN(std::string theirs, bench::read_string(read_fd));
  return endpoint.connect(peer, theirs);
}

constexpr uint64_t kDataTag = 1;
constexpr uint64_t kReadyTag = 2;
constexpr uint64_t kAckTag = 3;

// One side of the UCX transfers. Per size, a warm-up batch and then 9 timed ones; in each the
// receiver (rank 1) posts `window` receives and says "ready", the sender (rank 0) starts its
// clock, posts `window` sends of `bytes`, waits for them and for the receiver's 1-byte ack.
// Rank 0 returns the best GB/s per size; rank 1 returns an empty vector.
Expected<std::vector<double>> ucx_side(int rank, int read_fd, int write_fd,
                                       const std::vector<int64_t>& sizes, int64_t budget) {
  const int peer = 1 - rank;
  MP_ASSIGN_OR_RETURN(std::shared_ptr<UcxContext> context, UcxContext::create());
  MP_ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport, context->create_endpoint(rank, 2));
  auto& ep = static_cast<UcxEndpoint&>(*transport);
  MP_RETURN_IF_ERROR(connect_over_pipes(ep, peer, read_fd, write_fd));
  std::vector<double> gbps;
  uint8_t token = 0;
  for (int64_t bytes : sizes) {
    std::vector<char> buffer(size_t(bytes), char(rank + 1));
    const int window = reps_for(bytes, budget, 1, 256);
    double best = 1e30;
    for (int batch = 0; batch < 10; ++batch) {
      std::vector<Request> requests;
      if (rank == 1) {
        for (int i = 0; i < window; ++i) {
          MP_ASSIGN_OR_RETURN(Request r, ep.recv(peer, kDataTag, buffer.data(), bytes));
          requests.push_back(r);
        }
        MP_ASSIGN_OR_RETURN(Request ready, ep.send(peer, kReadyTag, &token, 1));
        MP_RETURN_IF_ERROR(ep.wait(ready, kTimeout));
        for (Request& r : requests) MP_RETURN_IF_ERROR(ep.wait(r, kTimeout));
        MP_ASSIGN_OR_RETURN(Request ack, ep.send(peer, kAckTag, &token, 1));
        MP_RETURN_IF_ERROR(ep.wait(ack, kTimeout));
        continue;
      }
      MP_ASSIGN_OR_RETURN(Request ready, ep.recv(peer, kReadyTag, &token, 1));
      MP_RETURN_IF_ERROR(ep.wait(ready, kTimeout));
      MP_ASSIGN_OR_RETURN(Request ack, ep.recv(peer, kAckTag, &token, 1));
      const auto start = Clock::now();
      for (int i = 0; i < window; ++i) {
        MP_ASSIGN_OR_RETURN(Request r, ep.send(peer, kDataTag, buffer.data(), bytes));
        requests.push_back(r);
      }
      for (Request& r : requests) MP_RETURN_IF_ERROR(ep.wait(r, kTimeout));
      MP_RETURN_IF_ERROR(ep.wait(ack, kTimeout));
      if (batch > 0) best = std::min(best, seconds_since(start));
    }
    if (rank == 0) gbps.push_back(double(bytes) * window / best / 1e9);
  }
  // Neither side tears down while the other may still be progressing its last transfer.
  MP_RETURN_IF_ERROR(bench::write_all(write_fd, &token, 1));
  MP_RETURN_IF_ERROR(bench::read_all(read_fd, &token, 1));
  return gbps;
}

// Forks a receiver process and measures from this one. Call before any thread exists.
Expected<std::vector<double>> ucx_two_process_gbps(const std::vector<int64_t>& sizes,
                                                   int64_t budget) {
  if (!ucx_available()) return make_error(Errc::kUnavailable, "this build has no UCX");
  int down[2];  // parent -> child
  int up[2];    // child -> parent
  if (::pipe(down) != 0 || ::pipe(up) != 0) return make_error(Errc::kIo, "pipe failed");
  const pid_t child = ::fork();
  if (child < 0) return make_error(Errc::kIo, "fork failed");
  if (child == 0) {
    ::alarm(100);  // the receiver never outlives a stuck benchmark
    ::close(down[1]);
    ::close(up[0]);
    Expected<std::vector<double>> done = ucx_side(1, down[0], up[1], sizes, budget);
    if (!done) fmt::print(stderr, "bench_comm: UCX receiver: {}\n", done.status().to_string());
    std::_Exit(done ? 0 : 1);
  }
  ::close(down[0]);
  ::close(up[1]);
  Expected<std::vector<double>> result = ucx_side(0, up[0], down[1], sizes, budget);
  ::close(up[0]);
  ::close(down[1]);
  int child_status = 0;
  ::waitpid(child, &child_status, 0);
  if (result && !(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0)) {
    return make_error(Errc::kInternal, "the UCX receiver process failed (status {})", child_status);
  }
  return result;
}

// ---- output -------------------------------------------------------------------------------

struct Options {
  std::string markdown;
  std::string perftest;
  bool quick = false;
};

std::string cell(const Expected<double>& gbps) {
  if (gbps) return fmt::format("{:.2f}", *gbps);
  return gbps.status().code() == Errc::kUnavailable ? "not in this build" : "failed";
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--quick") {
      o.quick = true;
    } else if ((flag == "--markdown" || flag == "--perftest") && i + 1 < argc) {
      (flag == "--markdown" ? o.markdown : o.perftest) = argv[++i];
    } else {
      fmt::print(stderr, "unknown flag {} (flags: --markdown PATH, --perftest PATH, --quick)\n",
                 flag);
      return 2;
    }
  }
  setenv("UCX_NET_DEVICES", "lo", /*overwrite=*/0);
  const int64_t budget = o.quick ? 16 * kMiB : 64 * kMiB;  // bytes per timed batch
  std::vector<int64_t> sizes;                              // 1 KiB .. 64 MiB in steps of 4
  for (int64_t b = kKiB; b <= 64 * kMiB; b *= 4) sizes.push_back(b);
  const std::vector<int64_t> ucx_sizes(sizes.begin() + 1, sizes.end());  // from 4 KiB
  const auto start = Clock::now();
  const std::string load_before = bench::load_average();

  std::map<int64_t, double> memcpy_rate;
  for (int64_t bytes : sizes) memcpy_rate[bytes] = memcpy_gbps(bytes, 4 * budget);
  // UCX first: the receiver is forked while this process has no threads yet.
  Expected<std::vector<double>> ucx = ucx_two_process_gbps(ucx_sizes, budget);
  if (!ucx) fmt::print(stderr, "bench_comm: UCX: {}\n", ucx.status().to_string());

  struct Column {
    std::string backend;
    int n;
  };
  std::vector<Column> columns = {{"in-process", 2}, {"in-process", 4}};
  if (gloo_available()) columns.insert(columns.end(), {{"gloo", 2}, {"gloo", 4}});
  std::map<std::pair<size_t, int64_t>, Expected<double>> seconds;
  for (size_t c = 0; c < columns.size(); ++c) {
    auto comms = make_comms(columns[c].backend, columns[c].n);
    for (int64_t bytes : sizes) {
      Expected<double> t = comms ? time_all_reduce(*comms, bytes, o.quick ? 0.02 : 0.06)
                                 : Expected<double>(comms.status());
      if (!t)
        fmt::print(stderr, "bench_comm: {}: {}\n", columns[c].backend, t.status().to_string());
      seconds.emplace(std::pair{c, bytes}, t);
    }
  }

  std::string perftest_notes;
  const std::map<int64_t, double> perftest = bench::read_perftest(o.perftest, &perftest_notes);
  const char* tls = std::getenv("UCX_TLS");
  std::string md = fmt::format(
      "# Communication: all-reduce bus bandwidth and UCX tag bandwidth\n\n"
      "Machine: {}, {} cores; date {}. Release build. Every figure is GB/s (1e9 bytes/s), best of "
      "several batches; memcpy is one thread copying the same size in this program. Produced by "
      "`bench/comm.sh` (`bench_comm{}`) in {:.0f} s. The machine is shared: 1-minute load "
      "average {} before and {} after the run (a load above the core count means other work "
      "competed for the cores, and small-message and 4-rank figures suffer most).\n\n",
      bench::cpu_model(), bench::cpu_count(), bench::utc_now(), o.quick ? " --quick" : "",
      seconds_since(start), load_before, bench::load_average());
  md +=
      "## Sum all-reduce of fp32, ranks as threads of one process\n\n"
      "busbw = 2 (n - 1) / n x bytes / time (the per-rank traffic of a ring all-reduce). "
      "In-process: shared memory, each rank sums its 1/n of the elements over all ranks, then "
      "every rank copies the result. Gloo: `gloo::allreduce` over its TCP transport on "
      "127.0.0.1. Time = mean of back-to-back all-reduces in the best of 5 batches of about 60 ms; "
      "n > cores means "
      "ranks share cores.\n\n| size | memcpy |";
  for (const Column& col : columns)
    md += fmt::format(" {} n={} busbw | time |", col.backend, col.n);
  md += "\n|---|---|";
  for (size_t c = 0; c < columns.size(); ++c) md += "---|---|";
  md += "\n";
  for (int64_t bytes : sizes) {
    md += fmt::format("| {} | {:.2f} |", size_name(bytes), memcpy_rate[bytes]);
    for (size_t c = 0; c < columns.size(); ++c) {
      const Expected<double>& t = seconds.at({c, bytes});
      md += t ? fmt::format(" {:.2f} | {:.1f} us |", bus_gbps(columns[c].n, bytes, *t), *t * 1e6)
              : std::string(" failed | |");
    }
    md += "\n";
  }
  md += fmt::format(
      "\n## UCX tag transfers between two processes (fork), UCX_NET_DEVICES={}, UCX_TLS={}\n\n"
      "meshpipe: `UcxContext` endpoints, worker addresses exchanged over pipes; per batch the "
      "receiver posts a window of receives (about {} MiB in all, at most 256) and signals, the "
      "sender times its window of sends plus a 1-byte ack. ucx_perftest: `-t tag_bw` between a "
      "server and a client process on 127.0.0.1{}.\n\n"
      "| size | memcpy | meshpipe UCX | vs memcpy | ucx_perftest tag_bw | meshpipe / perftest |\n"
      "|---|---|---|---|---|---|\n",
      std::getenv("UCX_NET_DEVICES"), tls != nullptr ? tls : "(default)", budget / kMiB,
      perftest_notes.empty()
          ? ""
          : fmt::format(" ({})", perftest_notes.substr(0, perftest_notes.size() - 1)));
  for (size_t i = 0; i < ucx_sizes.size(); ++i) {
    const int64_t bytes = ucx_sizes[i];
    const Expected<double> mine =
        ucx ? Expected<double>((*ucx)[i]) : Expected<double>(ucx.status());
    const auto pt = perftest.find(bytes);
    md +=
        fmt::format("| {} | {:.2f} | {} | {} | {} | {} |\n", size_name(bytes), memcpy_rate[bytes],
                    cell(mine), mine ? fmt::format("{:.2f}", *mine / memcpy_rate[bytes]) : "",
                    pt != perftest.end() ? fmt::format("{:.2f}", pt->second) : "not run",
                    mine && pt != perftest.end() ? fmt::format("{:.2f}", *mine / pt->second) : "");
  }
  fmt::print("{}", md);
  if (!o.markdown.empty()) {
    std::ofstream out(o.markdown);
    out << md;
    if (!out) return fmt::print(stderr, "bench_comm: cannot write {}\n", o.markdown), 1;
  }
  return ucx || !ucx_available() ? 0 : 1;
}

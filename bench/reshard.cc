// Cross-process resharding bandwidth: a tensor laid out on a source mesh in one process moves to
// a destination mesh (another layout) in another process over UCX, the way the runtime moves
// activations between pipeline stages (lower.cc): mesh::plan_cross_mesh gives the pieces, each
// source device packs its pieces (kernels::copy_box, unless a piece is its whole tile) and sends
// them from its own endpoint, each destination device receives and unpacks into its tile.
//
//   bench_reshard [--markdown PATH] [--perftest PATH] [--quick] [--piece-sizes]
//
// --piece-sizes prints the piece sizes in bytes (one per line) for bench/reshard.sh, which runs
// ucx_perftest tag_bw at those sizes and passes the results with --perftest (`<bytes> <MB/s>`
// lines, '#' notes). Every case checks the received tiles element by element.
#include <fmt/format.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_env.h"
#include "bench_ucx.h"
#include "comm/transport.h"
#include "kernels/layout.h"
#include "mesh/cross_mesh.h"
#include "mesh/sharding.h"

using namespace meshpipe;

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTimeout{60000};  // a transfer
constexpr int64_t kMiB = 1 << 20;
// Batches per size (the first is a warm-up and the correctness check): about 256 MiB in all.
int batches(int64_t n) { return int(std::clamp<int64_t>(256 * kMiB / (n * n * 4), 5, 50)) + 1; }

struct Case {
  std::string name;
  mesh::LogicalMesh src;
  std::string from;
  mesh::LogicalMesh dst;
  std::string to;
};

mesh::LogicalMesh logical(int64_t d0, int64_t d1) {
  mesh::LogicalMesh m;
  m.shape[0] = d0;
  m.shape[1] = d1;
  return m;
}

std::vector<Case> cases() {
  return {
      {"one pair: R (1, 1) -> R (1, 1)", logical(1, 1), "R,R", logical(1, 1), "R,R"},
      {"same layout: S0,R (2, 1) -> S0,R (2, 1)", logical(2, 1), "S0,R", logical(2, 1), "S0,R"},
      {"all-to-all: S0,R (2, 1) -> R,S1 (1, 2)", logical(2, 1), "S0,R", logical(1, 2), "R,S1"},
  };
}

struct Planned {
  Shape shape;
  mesh::CrossMeshPlan plan;
  mesh::ShardingSpec from;
  mesh::ShardingSpec to;
};

Expected<Planned> plan_case(const Case& c, int64_t n) {
  Planned p;
  p.shape = Shape({n, n});
  MP_ASSIGN_OR_RETURN(p.from, mesh::parse_sharding(c.from));
  MP_ASSIGN_OR_RETURN(p.to, mesh::parse_sharding(c.to));
  std::vector<int64_t> load(size_t(c.src.num_devices()), 0);
  mesh::CrossMeshOptions o;
  o.local_allgather = false;  // everything crosses; no collective in the destination mesh
  MP_ASSIGN_OR_RETURN(
      p.plan, mesh::plan_cross_mesh(p.shape, DType::kF32, p.from, c.src, p.to, c.dst, &load, o));
  return p;
}

// The value of element (r, c) of the whole tensor.
float element(int64_t r, int64_t c) { return float((r * 7919 + c * 104729) % 65521); }

std::vector<mesh::DimRange> tile_of(const Planned& p, const mesh::ShardingSpec& spec,
                                    const mesh::LogicalMesh& m, int64_t k) {
  return mesh::tile_ranges(p.shape, spec, m, k / m.shape[1], k % m.shape[1]);
}

std::vector<int64_t> extent(const std::vector<mesh::DimRange>& r) {
  return {r[0].end - r[0].begin, r[1].end - r[1].begin};
}

std::vector<int64_t> offset(const std::vector<mesh::DimRange>& piece,
                            const std::vector<mesh::DimRange>& tile) {
  return {piece[0].begin - tile[0].begin, piece[1].begin - tile[1].begin};
}

// ---- pipes and endpoints ---------------------------------------------------------------------

// One process's side: endpoints `first` and `first + 1` of a fabric of 4 (the source process
// holds 0-1, the destination process 2-3), connected to the other process's two.
struct Side {
  std::shared_ptr<comm::UcxContext> context;
  std::vector<std::unique_ptr<comm::Transport>> endpoints;
  int first = 0;
  int rfd = -1;
  int wfd = -1;
  comm::UcxEndpoint& ep(int k) { return static_cast<comm::UcxEndpoint&>(*endpoints[size_t(k)]); }
};

Status connect(Side& s) {
  MP_ASSIGN_OR_RETURN(s.context, comm::UcxContext::create());
  for (int k = 0; k < 2; ++k) {
    MP_ASSIGN_OR_RETURN(auto ep, s.context->create_endpoint(s.first + k, 4));
    s.endpoints.push_back(std::move(ep));
  }
  for (int k = 0; k < 2; ++k) MP_RETURN_IF_ERROR(bench::write_string(s.wfd, s.ep(k).address()));
  const int other = s.first == 0 ? 2 : 0;
  for (int j = 0; j < 2; ++j) {
    MP_ASSIGN_OR_RETURN(std::string address, bench::read_string(s.rfd));
    for (int k = 0; k < 2; ++k) MP_RETURN_IF_ERROR(s.ep(k).connect(other + j, address));
  }
  return Status::ok();
}

// ---- the transfer ----------------------------------------------------------------------------

// Source side of one case: per batch, wait for "ready", time the devices' sends until the
// destination says "done". Returns the best batch's seconds.
Expected<double> send_case(Side& s, const Case& c, const Planned& p) {
  const kernels::KernelContext ctx;
  const int64_t devices = c.src.num_devices();
  std::vector<std::vector<float>> tiles(static_cast<size_t>(devices));
  for (int64_t k = 0; k < devices; ++k) {
    const auto t = tile_of(p, p.from, c.src, k);
    auto& v = tiles[size_t(k)];
    v.resize(size_t((t[0].end - t[0].begin) * (t[1].end - t[1].begin)));
    size_t i = 0;
    for (int64_t r = t[0].begin; r < t[0].end; ++r) {
      for (int64_t col = t[1].begin; col < t[1].end; ++col) v[i++] = element(r, col);
    }
  }
  // Staging buffers per piece, allocated once (the runtime's buffer pool reuses its blocks).
  std::vector<std::vector<float>> staging(p.plan.pieces.size());
  for (size_t i = 0; i < p.plan.pieces.size(); ++i) {
    const mesh::TransferPiece& piece = p.plan.pieces[i];
    if (piece.region != tile_of(p, p.from, c.src, piece.src)) {
      staging[i].assign(size_t(piece.bytes / 4), 0.0f);
    }
  }
  double best = 1e30;
  char token = 0;
  for (int batch = 0; batch < batches(p.shape[0]); ++batch) {
    MP_RETURN_IF_ERROR(bench::read_all(s.rfd, &token, 1));  // the receives are posted
    const auto start = Clock::now();
    std::vector<Status> status(static_cast<size_t>(devices));
    std::vector<std::thread> threads;
    for (int64_t k = 0; k < devices; ++k) {
      threads.emplace_back([&, k] {
        status[size_t(k)] = [&]() -> Status {
          const auto tile = tile_of(p, p.from, c.src, k);
          const kernels::TensorView tv(tiles[size_t(k)].data(), Shape(extent(tile)), DType::kF32);
          std::vector<comm::Request> requests;
          for (size_t i = 0; i < p.plan.pieces.size(); ++i) {
            const mesh::TransferPiece& piece = p.plan.pieces[i];
            if (piece.src != k) continue;
            const void* data = tiles[size_t(k)].data();
            if (piece.region != tile) {
              auto& buf = staging[i];
              kernels::copy_box(
                  ctx, tv, offset(piece.region, tile),
                  kernels::TensorView(buf.data(), Shape(extent(piece.region)), DType::kF32), {0, 0},
                  extent(piece.region));
              data = buf.data();
            }
            MP_ASSIGN_OR_RETURN(comm::Request r,
                                s.endpoints[size_t(k)]->send(2 + piece.dst, i, data, piece.bytes));
            requests.push_back(r);
          }
          for (comm::Request& r : requests)
            MP_RETURN_IF_ERROR(s.endpoints[size_t(k)]->wait(r, kTimeout));
          return Status::ok();
        }();
      });
    }
    for (auto& t : threads) t.join();
    for (const Status& st : status) MP_RETURN_IF_ERROR(st);
    MP_RETURN_IF_ERROR(bench::read_all(s.rfd, &token, 1));  // every tile is complete
    if (token != 1) return make_error(Errc::kInternal, "the destination tiles are wrong");
    if (batch > 0)
      best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return best;
}

// Destination side: per batch, post the receives, say "ready", wait, unpack, check (first
// batch), say "done".
Status recv_case(Side& s, const Case& c, const Planned& p) {
  const kernels::KernelContext ctx;
  const int64_t devices = c.dst.num_devices();
  std::vector<std::vector<float>> tiles(static_cast<size_t>(devices));
  for (int64_t k = 0; k < devices; ++k) {
    const auto t = tile_of(p, p.to, c.dst, k);
    tiles[size_t(k)].assign(size_t((t[0].end - t[0].begin) * (t[1].end - t[1].begin)), -1.0f);
  }
  // Staging buffers per piece, allocated once; empty: received straight into the tile.
  std::vector<std::vector<float>> staging(p.plan.pieces.size());
  for (size_t i = 0; i < p.plan.pieces.size(); ++i) {
    const mesh::TransferPiece& piece = p.plan.pieces[i];
    if (piece.region != tile_of(p, p.to, c.dst, piece.dst)) {
      staging[i].assign(size_t(piece.bytes / 4), 0.0f);
    }
  }
  for (int batch = 0; batch < batches(p.shape[0]); ++batch) {
    struct Posted {
      size_t piece;
      std::vector<float>* buf;
      comm::Request request;
    };
    std::vector<std::vector<Posted>> posted(static_cast<size_t>(devices));
    for (int64_t k = 0; k < devices; ++k) {
      const auto tile = tile_of(p, p.to, c.dst, k);
      for (size_t i = 0; i < p.plan.pieces.size(); ++i) {
        const mesh::TransferPiece& piece = p.plan.pieces[i];
        if (piece.dst != k) continue;
        Posted& q = posted[size_t(k)].emplace_back();
        q.piece = i;
        q.buf = &staging[i];
        void* into = q.buf->empty() ? tiles[size_t(k)].data() : q.buf->data();
        MP_ASSIGN_OR_RETURN(q.request,
                            s.endpoints[size_t(k)]->recv(int(piece.src), i, into, piece.bytes));
      }
    }
    char token = 0;
    MP_RETURN_IF_ERROR(bench::write_all(s.wfd, &token, 1));
    std::vector<Status> status(static_cast<size_t>(devices));
    std::vector<std::thread> threads;
    for (int64_t k = 0; k < devices; ++k) {
      threads.emplace_back([&, k] {
        status[size_t(k)] = [&]() -> Status {
          const auto tile = tile_of(p, p.to, c.dst, k);
          const kernels::TensorView tv(tiles[size_t(k)].data(), Shape(extent(tile)), DType::kF32);
          for (Posted& q : posted[size_t(k)]) {
            MP_RETURN_IF_ERROR(s.endpoints[size_t(k)]->wait(q.request, kTimeout));
            if (q.buf->empty()) continue;
            const auto& region = p.plan.pieces[q.piece].region;
            kernels::copy_box(
                ctx, kernels::TensorView(q.buf->data(), Shape(extent(region)), DType::kF32), {0, 0},
                tv, offset(region, tile), extent(region));
          }
          return Status::ok();
        }();
      });
    }
    for (auto& t : threads) t.join();
    for (const Status& st : status) MP_RETURN_IF_ERROR(st);
    token = 1;
    if (batch == 0) {
      for (int64_t k = 0; k < devices && token == 1; ++k) {
        const auto t = tile_of(p, p.to, c.dst, k);
        size_t i = 0;
        for (int64_t r = t[0].begin; r < t[0].end; ++r) {
          for (int64_t col = t[1].begin; col < t[1].end; ++col) {
            if (tiles[size_t(k)][i++] != element(r, col)) token = 2;
          }
        }
      }
    }
    MP_RETURN_IF_ERROR(bench::write_all(s.wfd, &token, 1));
  }
  return Status::ok();
}

std::vector<int64_t> sides(bool quick) {
  return quick ? std::vector<int64_t>{512, 2048} : std::vector<int64_t>{512, 1024, 2048, 4096};
}

struct Row {
  std::string name;
  int64_t bytes = 0;
  size_t pieces = 0;
  int64_t piece_bytes = 0;   // the largest piece
  int64_t sender_bytes = 0;  // the busiest sender's
  double seconds = 0;
};

// Runs every case and size; the destination process is forked first (no threads yet).
Expected<std::vector<Row>> run_all(bool quick) {
  int down[2];
  int up[2];
  if (::pipe(down) != 0 || ::pipe(up) != 0) return make_error(Errc::kIo, "pipe failed");
  const pid_t child = ::fork();
  if (child < 0) return make_error(Errc::kIo, "fork failed");
  if (child == 0) {
    ::alarm(300);  // never outlives a stuck benchmark
    Side s;
    s.first = 2;
    s.rfd = down[0];
    s.wfd = up[1];
    Status st = connect(s);
    for (const Case& c : cases()) {
      for (int64_t n : sides(quick)) {
        if (!st.is_ok()) break;
        auto p = plan_case(c, n);
        st = p.has_value() ? recv_case(s, c, *p) : p.status();
      }
    }
    if (!st.is_ok()) fmt::print(stderr, "bench_reshard: destination: {}\n", st.to_string());
    char token = 0;  // neither side tears down while the other may still progress
    (void)bench::write_all(s.wfd, &token, 1);
    (void)bench::read_all(s.rfd, &token, 1);
    std::_Exit(st.is_ok() ? 0 : 1);
  }
  Side s;
  s.first = 0;
  s.rfd = up[0];
  s.wfd = down[1];
  std::vector<Row> rows;
  Status st = connect(s);
  for (const Case& c : cases()) {
    for (int64_t n : sides(quick)) {
      if (!st.is_ok()) break;
      auto p = plan_case(c, n);
      if (!p.has_value()) {
        st = p.status();
        break;
      }
      auto secs = send_case(s, c, *p);
      if (!secs.has_value()) {
        st = secs.status().with_context(c.name);
        break;
      }
      Row r{c.name, n * n * 4, p->plan.pieces.size(), 0, 0, *secs};
      std::map<int32_t, int64_t> per_sender;
      for (const auto& piece : p->plan.pieces) {
        r.piece_bytes = std::max(r.piece_bytes, piece.bytes);
        per_sender[piece.src] += piece.bytes;
      }
      for (const auto& [k, b] : per_sender) r.sender_bytes = std::max(r.sender_bytes, b);
      fmt::print(stderr, "{} {} MiB: {:.2f} ms\n", c.name, r.bytes / kMiB, *secs * 1e3);
      rows.push_back(r);
    }
  }
  char token = 0;
  (void)bench::read_all(s.rfd, &token, 1);
  (void)bench::write_all(s.wfd, &token, 1);
  int child_status = 0;
  ::waitpid(child, &child_status, 0);
  MP_RETURN_IF_ERROR(st);
  if (!(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0)) {
    return make_error(Errc::kInternal, "the destination process failed (status {})", child_status);
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  std::string markdown;
  std::string perftest_path;
  bool quick = false;
  bool piece_sizes = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--quick") {
      quick = true;
    } else if (flag == "--piece-sizes") {
      piece_sizes = true;
    } else if ((flag == "--markdown" || flag == "--perftest") && i + 1 < argc) {
      (flag == "--markdown" ? markdown : perftest_path) = argv[++i];
    } else {
      fmt::print(stderr,
                 "unknown flag {} (flags: --markdown PATH, --perftest PATH, --quick, "
                 "--piece-sizes)\n",
                 flag);
      return 2;
    }
  }
  if (piece_sizes) {
    std::set<int64_t> sizes;
    for (const Case& c : cases()) {
      for (int64_t n : sides(quick)) {
        auto p = plan_case(c, n);
        if (!p.has_value()) return fmt::print(stderr, "{}\n", p.status().to_string()), 1;
        for (const auto& piece : p->plan.pieces) sizes.insert(piece.bytes);
      }
    }
    for (int64_t b : sizes) fmt::print("{}\n", b);
    return 0;
  }
  if (!comm::ucx_available()) {
    fmt::print(stderr, "bench_reshard: this build has no UCX\n");
    return 1;
  }
  setenv("UCX_NET_DEVICES", "lo", /*overwrite=*/0);
  const auto start = Clock::now();
  const std::string load_before = bench::load_average();
  auto rows = run_all(quick);
  if (!rows.has_value()) {
    fmt::print(stderr, "bench_reshard: {}\n", rows.status().to_string());
    return 1;
  }
  std::string notes;
  const auto perftest = bench::read_perftest(perftest_path, &notes);
  const char* tls = std::getenv("UCX_TLS");
  std::string md = fmt::format(
      "# Cross-process resharding over UCX\n\n"
      "Machine: {}, {} cores; date {}. Release build. Produced by `bench/reshard.sh` "
      "(`bench_reshard{}`) in {:.0f} s; 1-minute load average {} before and {} after. "
      "UCX_NET_DEVICES={}, UCX_TLS={}.\n\n"
      "A square fp32 tensor moves from a source mesh in one process to a destination mesh in "
      "another, as the runtime moves activations between pipeline stages: "
      "`mesh::plan_cross_mesh` pieces (no local all-gather), one UCX endpoint and thread per "
      "device, a piece packed with `copy_box` unless it is the sender's whole tile and unpacked "
      "unless it is the receiver's whole tile; every element is checked. Time: from the "
      "destination's \"receives posted\" to its \"all tiles complete\" (pipe messages), best "
      "of 5 to 50 batches (about 256 MiB moved per size). GB/s = tensor bytes / time; per sender = "
      "the busiest sender's bytes / time, "
      "set against ucx_perftest `tag_bw` (one client, one server process) at the piece "
      "size{}. Source and destination threads share the 2 cores.\n\n"
      "| case | tensor | pieces | piece | time | GB/s | per sender GB/s | ucx_perftest "
      "GB/s | per sender / perftest |\n|---|---|---|---|---|---|---|---|---|\n",
      bench::cpu_model(), bench::cpu_count(), bench::utc_now(), quick ? " --quick" : "",
      std::chrono::duration<double>(Clock::now() - start).count(), load_before,
      bench::load_average(), std::getenv("UCX_NET_DEVICES"), tls != nullptr ? tls : "(default)",
      notes.empty() ? "" : fmt::format(" ({})", notes.substr(0, notes.size() - 1)));
  const auto size_name = [](int64_t b) {
    return b >= kMiB ? fmt::format("{} MiB", b / kMiB) : fmt::format("{} KiB", b / 1024);
  };
  for (const Row& r : *rows) {
    const double gbps = double(r.bytes) / r.seconds / 1e9;
    const double sender = double(r.sender_bytes) / r.seconds / 1e9;
    const auto pt = perftest.find(r.piece_bytes);
    md += fmt::format("| {} | {} | {} | {} | {:.2f} ms | {:.2f} | {:.2f} | {} | {} |\n", r.name,
                      size_name(r.bytes), r.pieces, size_name(r.piece_bytes), r.seconds * 1e3, gbps,
                      sender, pt != perftest.end() ? fmt::format("{:.2f}", pt->second) : "not run",
                      pt != perftest.end() ? fmt::format("{:.2f}", sender / pt->second) : "");
  }
  fmt::print("{}", md);
  if (!markdown.empty()) {
    std::ofstream out(markdown);
    out << md;
    if (!out) return fmt::print(stderr, "bench_reshard: cannot write {}\n", markdown), 1;
  }
  return 0;
}

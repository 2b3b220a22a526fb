// `meshpipe profile`: measures this machine's devices for a cluster (kernels, devices computing
// at once, collectives, transfers, the runtime's cost per op) and writes the profile that
// `plan`, `compare`, `simulate` and `train` read with --profile.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "core/files.h"
#include "core/units.h"
#include "mesh/cluster.h"
#include "mesh/device_profile.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "runtime/in_process_run.h"
#include "train/device_profiler.h"

namespace meshpipe::cli {
namespace {

struct ProfileArgs {
  std::string cluster = "cpu:2x2";
  std::string output;
  bool quick = false;
  bool quiet = false;
  std::string collectives = "in-process";
  std::string transport = "in-process";
};

// The table's time at its largest x, for the summary.
std::string last_point(const mesh::ProfileTable& t, const char* unit, double scale) {
  if (t.empty()) return "-";
  return fmt::format("{} at {:.3g} {}", format_seconds(Seconds(t.back().second)),
                     t.back().first / scale, unit);
}

int run_profile(const ProfileArgs& args) {
  auto cluster = mesh::resolve_cluster(args.cluster);
  if (!cluster.has_value()) return fail(cluster.status());
  {
    // Refused before measuring what could not be written (write_text_file says the same after).
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path out(args.output);
    const fs::file_status st = fs::symlink_status(out, ec);
    if (fs::exists(st) && !fs::is_regular_file(st)) {
      return fail(make_error(Errc::kInvalidArgument,
                             "cannot write profile file '{}': it exists and is not a regular file",
                             args.output));
    }
    const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
    if (!fs::is_directory(dir, ec)) {
      return fail(make_error(Errc::kNotFound,
                             "cannot write profile file '{}': directory '{}' does not exist",
                             args.output, dir.string()));
    }
  }
  train::DeviceProfileOptions o;
  o.quick = args.quick;
  o.collectives = *runtime::parse_collective_backend(args.collectives);
  o.transport = *runtime::parse_transport_kind(args.transport);
  if (!args.quiet) {
    auto last = std::make_shared<std::string>();
    const bool tty = isatty(fileno(stderr)) != 0;
    o.progress = [last, tty](const std::string& phase, int64_t done, int64_t total) {
      if (done >= total) {
        fmt::print(stderr, "{}{:<34} done\n", tty ? "\r" : "", phase);
      } else if (tty) {
        fmt::print(stderr, "\r{:<34} {}/{}", phase, done, total);
      } else if (*last != phase) {
        fmt::print(stderr, "{} ...\n", phase);
      }
      *last = phase;
      std::fflush(stderr);
    };
  }
  fmt::print("meshpipe profile: {} ({} devices, {}), collectives {}, transport {}{}\n",
             cluster->name, cluster->num_devices(), cluster->device.kind, args.collectives,
             args.transport, args.quick ? ", quick" : "");
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  auto profile = train::profile_devices(*cluster, o);
  if (!profile.has_value()) return fail(profile.status());
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const mesh::DeviceProfile& p = *profile;
  fmt::print("machine: {}\n", p.source);
  if (auto g = p.gemm.find(DType::kF32); g != p.gemm.end() && !g->second.empty()) {
    const auto& [flops, secs] = g->second.back();
    fmt::print("gemm f32: {} ({:.1f} GFLOP/s)\n", last_point(g->second, "GFLOP", 1e9),
               secs > 0 ? flops / secs / 1e9 : 0.0);
  }
  if (auto m = p.memory_bound.find(DType::kF32); m != p.memory_bound.end() && !m->second.empty()) {
    const auto& [bytes, secs] = m->second.back();
    fmt::print("memory-bound f32: {} ({:.1f} GB/s)\n", last_point(m->second, "MB", 1e6),
               secs > 0 ? bytes / secs / 1e9 : 0.0);
  }
  if (!p.concurrency.empty()) {
    fmt::print("devices computing at once: {} -> each {:.2f}x slower\n", p.concurrency.back().first,
               p.concurrency.back().second);
  }
  for (const auto& [key, t] : p.collectives) {
    const auto& [kind, group, inter] = key;
    if (t.empty()) continue;
    // A link measured alike on both (in-process) is printed once.
    const auto other = p.collectives.find({kind, group, !inter});
    if (inter && other != p.collectives.end() && other->second == t) continue;
    const bool both = other != p.collectives.end() && other->second == t;
    fmt::print("{} of {}{}: {}\n", mesh::collective_name(kind), group,
               both ? "" : (inter ? " across hosts" : " inside a host"),
               last_point(t, "MB per device", 1e6));
  }
  if (auto t = p.transfers.find(false); t != p.transfers.end()) {
    fmt::print("transfer: {}\n", last_point(t->second, "MB", 1e6));
  }
  fmt::print("runtime cost per kernel beyond it: {}\n",
             format_seconds(Seconds(p.op_overhead_seconds)));
  if (Status w = write_text_file(args.output, mesh::device_profile_to_json(p), "profile file");
      !w.is_ok()) {
    return fail(w);
  }
  fmt::print("wrote {} in {:.1f} s (use it with --profile {})\n", args.output, took, args.output);
  return 0;
}

}  // namespace

void add_profile_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Measure this machine's devices for a cluster (GEMM and memory-bound kernels, devices "
      "computing at once, collectives, transfers, the runtime's cost per op) and write the "
      "profile that plan, compare, simulate and train read with --profile");
  cmd->add_option("--cluster", args->cluster,
                  "the cluster whose devices run here (a cpu preset such as cpu:2x2, or a JSON "
                  "file of cpu devices): group sizes and concurrency go up to its device count")
      ->capture_default_str();
  cmd->add_option("-o,--output", args->output, "write the profile (JSON) here")->required();
  cmd->add_flag(
      "--quick", args->quick,
      "fewer sizes, models and repetitions (a few seconds instead of about twenty; rougher)");
  cmd->add_flag("--quiet", args->quiet, "no progress output");
  cmd->add_option("--collectives", args->collectives,
                  "the communicator to measure: in-process (`train`'s default in one process), "
                  "or ucx (the default between nodes) or gloo as a job of one meshpipe-node per "
                  "host runs it (shared memory inside a host; across hosts UCX or Gloo, in two "
                  "levels when a group has 2 or more devices on each host)")
      ->capture_default_str()
      ->check(CLI::IsMember({"in-process", "gloo", "ucx"}));
  cmd->add_option("--transport", args->transport,
                  "the transport to measure (the one `train --transport` will use)")
      ->capture_default_str()
      ->check(CLI::IsMember({"in-process", "ucx"}));
  cmd->callback([args, &exit_code] { exit_code = run_profile(*args); });
}

}  // namespace meshpipe::cli

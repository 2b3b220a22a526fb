// `meshpipe bench scaling`: a weak-scaling suite (Alpa's, or a file) on a described cluster,
// every point planned by meshpipe and by every baseline and run on the simulated backend;
// results as JSON lines (resumable), a Markdown table and an SVG figure in the output folder.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "core/crash.h"
#include "kernels/device.h"
#include "mesh/cluster.h"
#include "meshpipe/bench_run.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "train/scaling.h"

namespace meshpipe::cli {

namespace {

namespace fs = std::filesystem;

struct BenchArgs {
  std::string suite = "gpt";
  std::string cluster = "p3.16xlarge";
  bool simulate = false;
  bool run = false;
  int steps = 6;
  std::string out;
  int32_t max_devices = 0;  // 0: 64 with --simulate, this machine's cores with --run
  std::string systems;
  int threads = 0;
  double memory_fraction = 0.9;
  bool quiet = false;
};

// A name fit for a folder: letters, digits, '.', '-', '_' kept, the rest '-'.
std::string folder_name(const std::string& s) {
  std::string out;
  for (char c : s)
    out +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '-';
  return out;
}

// Writes `text` to `path` through a temporary file and a rename (never half a file).
Status write_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) return make_error(Errc::kIo, "cannot write '{}'", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return make_error(Errc::kIo, "cannot rename '{}': {}", tmp.string(), ec.message());
  return Status::ok();
}

// The first of `names` found in PATH (empty: none).
std::string find_program(std::initializer_list<const char*> names) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (const char* name : names) {
    std::stringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      if (dir.empty()) continue;
      const fs::path p = fs::path(dir) / name;
      if (::access(p.c_str(), X_OK) == 0) return p.string();
    }
  }
  return "";
}

// The SVG as PNG with rsvg-convert when it is installed (no shell: the paths are arguments).
// Returns "" when it wrote the PNG, else why not (a stale PNG is removed).
std::string render_png(const fs::path& svg, const fs::path& png) {
  std::error_code ec;
  fs::remove(png, ec);
  const std::string tool = find_program({"rsvg-convert"});
  if (tool.empty()) return "rsvg-convert is not installed";
  const std::string out = png.string();
  const std::string in = svg.string();
  const pid_t pid = ::fork();
  if (pid < 0) return "cannot start rsvg-convert";
  if (pid == 0) {
    ::execl(tool.c_str(), tool.c_str(), "-o", out.c_str(), in.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fs::remove(png, ec);
    return "rsvg-convert failed";
  }
  return "";
}

// Holds an exclusive lock on `path` while it lives (two runs writing one results folder would
// lose each other's points).
class FolderLock {
 public:
  static Expected<std::unique_ptr<FolderLock>> take(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return make_error(Errc::kIo, "cannot open '{}'", path.string());
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      return make_error(Errc::kUnavailable, "another run is writing to '{}'",
                        path.parent_path().string());
    }
    return std::unique_ptr<FolderLock>(new FolderLock(fd));
  }
  ~FolderLock() { ::close(fd_); }
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  explicit FolderLock(int fd) : fd_(fd) {}
  int fd_;
};

int run_scaling(const BenchArgs& args) {
  if (args.simulate == args.run) {
    return fail(make_error(Errc::kInvalidArgument,
                           "say how to run the points: --simulate (the simulated backend of the "
                           "described cluster) or --run (measured on this machine's CPU devices)"));
  }
  const std::string mode = args.run ? "run" : "simulate";
  // Where the points run: the described cluster, or this machine.
  const std::string cluster_label = args.run ? "this machine" : args.cluster;
  const int32_t max_devices = args.max_devices > 0
                                  ? args.max_devices
                                  : (args.run ? static_cast<int32_t>(kernels::cpu_cores()) : 64);
  const auto& stop = install_stop_handlers("meshpipe");
  // The suite: a built-in name, or a file.
  std::string suite_name = args.suite;
  Expected<std::vector<train::ScalingPoint>> points = train::builtin_suite(args.suite);
  const bool builtin = points.has_value();
  if (!points.has_value()) {
    std::error_code ec;
    if (!fs::is_regular_file(args.suite, ec)) return fail(points.status());
    points = train::load_suite_file(args.suite);
    if (!points.has_value()) return fail(points.status());
    suite_name = fs::path(args.suite).stem().string();
    for (const std::string& b : train::builtin_suite_names()) {
      if (suite_name == b) suite_name = "file-" + suite_name;  // not Alpa's points
    }
  }
  std::vector<train::ScalingPoint> todo;
  if (args.run) {
    auto m = measured_points(args.suite, *points, builtin, max_devices);
    if (!m.has_value()) return fail(m.status());
    todo = std::move(*m);
  } else {
    for (const auto& p : *points) {
      if (p.devices <= max_devices) todo.push_back(p);
    }
  }
  if (todo.empty()) {
    return fail(make_error(Errc::kInvalidArgument, "no point of suite '{}' has at most {} devices",
                           suite_name, max_devices));
  }
  // Every point's cluster first: a bad cluster or device count is reported before any work.
  for (const auto& p : todo) {
    if (args.run) break;
    auto c = train::cluster_for_point(args.cluster, p.devices);
    if (!c.has_value())
      return fail(
          c.status().with_context(fmt::format("point {} on {} devices", p.model, p.devices)));
  }
  std::vector<std::string> systems;  // empty: all
  if (!args.systems.empty()) {
    const std::vector<std::string> known = train::scaling_systems();
    std::stringstream in(args.systems);
    for (std::string item; std::getline(in, item, ',');) {
      const size_t a = item.find_first_not_of(' ');
      if (a == std::string::npos) continue;
      item = item.substr(a, item.find_last_not_of(' ') - a + 1);
      if (std::find(known.begin(), known.end(), item) == known.end()) {
        return fail(make_error(Errc::kInvalidArgument, "--systems: no system '{}' (known: {})",
                               item, fmt::join(known, ", ")));
      }
      systems.push_back(item);
    }
    if (systems.empty()) return fail(make_error(Errc::kInvalidArgument, "--systems names none"));
    if (args.run) {
      return fail(make_error(Errc::kInvalidArgument,
                             "--systems is for --simulate: --run measures meshpipe's own plan"));
    }
  }
  const std::vector<std::string> wanted = systems.empty() ? train::scaling_systems() : systems;
  const fs::path out =
      args.out.empty()
          ? fs::path("meshpipe-bench") /
                folder_name("scaling-" + suite_name + "-" +
                            (args.run ? std::string("run")
                                      : fs::path(args.cluster).filename().string() + "-simulate"))
          : fs::path(args.out);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return fail(make_error(Errc::kIo, "cannot create '{}': {}", out.string(), ec.message()));
  const fs::path results_path = out / "results.jsonl";
  auto lock = FolderLock::take(out / ".lock");
  if (!lock.has_value()) return fail(lock.status());
  auto results = train::load_results(results_path.string());
  if (!results.has_value()) return fail(results.status());
  // A point is done when a result of this suite, cluster and memory fraction holds every system
  // asked for; a result made with other settings is replaced.
  auto same_run = [&](const train::PointResult& r, const train::ScalingPoint& p) {
    return r.point == p && r.cluster == cluster_label && r.mode == mode && r.suite == suite_name &&
           (args.run || std::abs(r.memory_fraction - args.memory_fraction) < 1e-12);
  };
  // The systems of point p asked for, and those of them an earlier result of this run lacks.
  auto asked = [&](const train::ScalingPoint& p) {
    std::vector<std::string> out;
    const std::vector<std::string> apply =
        args.run ? std::vector<std::string>{"meshpipe"} : train::point_systems(args.cluster, p);
    for (const std::string& s : apply) {
      if (std::find(wanted.begin(), wanted.end(), s) != wanted.end()) out.push_back(s);
    }
    return out;
  };
  auto earlier = [&](const train::ScalingPoint& p) {
    return std::find_if(results->begin(), results->end(),
                        [&](const train::PointResult& r) { return same_run(r, p); });
  };
  // The whole file is written again after each point (through a rename: never half a file,
  // and a line cut off by a stopped run is gone).
  auto save = [&]() {
    std::string all;
    for (const auto& r : *results) all += train::to_json_line(r) + "\n";
    return write_file(results_path, all);
  };
  if (fs::exists(results_path, ec)) {
    if (Status s = save(); !s.is_ok()) return fail(s);
  }
  train::ScalingOptions options;
  options.memory_fraction = args.memory_fraction;
  options.threads = args.threads;
  options.systems = systems;
  const size_t n = todo.size();
  for (size_t k = 0; k < n; ++k) {
    const auto& p = todo[k];
    const auto before = earlier(p);
    std::vector<std::string> need;
    for (const std::string& s : asked(p)) {
      if (before == results->end() || before->find(s) == nullptr) need.push_back(s);
    }
    if (need.empty()) {
      if (!args.quiet) {
        fmt::print(stderr, "[{}/{}] {} on {} devices: in {} already\n", k + 1, n, p.model,
                   p.devices, results_path.string());
      }
      continue;
    }
    // A point with some systems already: only the missing ones run, added to its line.
    options.systems = before == results->end() ? systems : need;
    if (stop.load()) break;
    if (!args.quiet) {
      options.progress = [&, k](const std::string& what, int d, int total) {
        fmt::print(stderr, "[{}/{}] {} on {} devices: {} ({}/{} systems)\n", k + 1, n, p.model,
                   p.devices, what, d, total);
      };
    }
    if (args.run && !args.quiet) {
      fmt::print(stderr, "[{}/{}] {} on {} devices: measuring {} steps ({} processes)\n", k + 1, n,
                 p.model, p.devices, args.steps, p.devices);
    }
    auto r = args.run ? measure_point(suite_name, p, args.steps, out, stop)
                      : train::simulate_point(suite_name, p, args.cluster, options);
    if (!r.has_value() && r.status().code() == Errc::kCancelled) break;  // a stop request
    if (!r.has_value()) {
      return fail(
          r.status().with_context(fmt::format("point {} on {} devices", p.model, p.devices)));
    }
    const auto again = earlier(p);  // (results may not have changed, but look again)
    if (again == results->end()) {
      results->push_back(std::move(*r));
    } else {
      for (train::SystemResult& sr : r->systems) {
        if (again->find(sr.system) == nullptr) again->systems.push_back(std::move(sr));
      }
      again->seconds += r->seconds;
    }
    if (Status s = save(); !s.is_ok()) return fail(s);
  }
  std::vector<train::PointResult> mine;
  for (const auto& r : *results) {
    if (r.cluster == cluster_label && r.suite == suite_name && r.mode == mode) mine.push_back(r);
  }
  const std::string title =
      args.run
          ? fmt::format("meshpipe bench scaling: {} measured on this machine", suite_name)
          : fmt::format("meshpipe bench scaling: {} on {} (simulated)", suite_name, args.cluster);
  const std::string how =
      args.run ? "Each point planned by meshpipe for the CPU devices of this machine and trained "
                 "with one `meshpipe-node` process per device (UCX between them, a coordinator "
                 "in the harness); step time: the median of the steps after the first. "
                 "Weak-scaling efficiency: per-device throughput against one device."
               : "Each point planned by meshpipe and by every baseline under the same cost model, "
                 "lowered and run on the simulated backend of the cluster.";
  const std::string table = fmt::format(
      "# {}\n\n{} PFLOPS: aggregate; *model*: the training graph's FLOPs; *Alpa's counting*: "
      "benchmark/alpa/util.py's formula (GPT, MoE, with recomputation counted). *paper*: Fig. 7 "
      "of the Alpa paper, read off the figure.\n\n{}",
      title, how, train::scaling_markdown(mine));
  if (Status s = write_file(out / "table.md", table); !s.is_ok()) return fail(s);
  if (args.run) {
    const std::string svg = train::scaling_svg(mine, title, train::figure_systems(7));
    if (Status s = write_file(out / "figure.svg", svg); !s.is_ok()) return fail(s);
    const std::string no_png = render_png(out / "figure.svg", out / "figure.png");
    fmt::print("{}\n", table);
    fmt::print("results: {}/results.jsonl, table.md, figure.svg{}\n", out.string(),
               no_png.empty() ? ", figure.png" : " (no PNG: " + no_png + ")");
    if (stop.load()) {
      fmt::print(stderr, "stopped: the points done are saved; run again to continue\n");
      return exit_code_of(make_error(Errc::kCancelled, "stopped"));
    }
    return 0;
  }
  // Fig. 7 (every system), and the ablations: Fig. 8 on the points of one host, Fig. 9, Fig. 11.
  auto cluster = mesh::resolve_cluster(args.cluster);
  if (!cluster.has_value()) return fail(cluster.status());
  std::vector<train::PointResult> one_host;
  for (const auto& r : mine) {
    if (r.point.devices <= cluster->devices_per_host) one_host.push_back(r);
  }
  const struct {
    const char* file;
    int figure;
    const std::vector<train::PointResult>* points;
    std::string title;
  } figures[] = {
      {"figure.svg", 7, &mine, title},
      {"fig8-intra-op.svg", 8, &one_host,
       fmt::format("intra-op ablation: {} on one {} host (simulated)", suite_name, args.cluster)},
      {"fig9-inter-op.svg", 9, &mine,
       fmt::format("inter-op ablation: {} on {} (simulated)", suite_name, args.cluster)},
      {"fig11-resharding.svg", 11, &mine,
       fmt::format("cross-mesh resharding: {} on {} (simulated)", suite_name, args.cluster)},
  };
  for (const auto& f : figures) {
    const std::string svg = train::scaling_svg(*f.points, f.title, train::figure_systems(f.figure));
    if (Status s = write_file(out / f.file, svg); !s.is_ok()) return fail(s);
  }
  const std::string no_png = render_png(out / "figure.svg", out / "figure.png");
  fmt::print("{}\n", table);
  fmt::print(
      "results: {}/results.jsonl, table.md, figure.svg{}, fig8-intra-op.svg, fig9-inter-op.svg, "
      "fig11-resharding.svg\n",
      out.string(), no_png.empty() ? ", figure.png" : " (no PNG: " + no_png + ")");
  if (stop.load()) {
    fmt::print(stderr, "stopped: the points done are saved; run again to continue\n");
    return exit_code_of(make_error(Errc::kCancelled, "stopped"));
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmark harnesses");
  bench->require_subcommand(1);
  auto args = std::make_shared<BenchArgs>();
  CLI::App* scaling = bench->add_subcommand(
      "scaling",
      "Weak scaling: each point of a suite planned by meshpipe and by every baseline (data "
      "parallel, ZeRO-2/3, Megatron grid, equal layers, equal operators, intra-op only, "
      "inter-op only) and run on the simulated backend of the cluster (--simulate; a table "
      "beside Alpa's published numbers, Fig. 7, 8, 9 and 11 as SVG), or meshpipe measured on "
      "this machine's CPU devices (--run). Resumable: points already in the results are "
      "skipped");
  scaling
      ->add_option("--suite", args->suite,
                   "gpt, moe, wresnet (Alpa's points, 1-64 GPUs, and 128/256 on larger clusters) "
                   "or a file of lines 'MODEL DEVICES [GLOBAL_BATCH]'")
      ->capture_default_str();
  scaling
      ->add_option("--cluster", args->cluster,
                   "host kind: a preset (p3.16xlarge, dgx-h100, cpu:1xD) or a cluster JSON file; "
                   "each point gets as many of its hosts as its devices fill")
      ->capture_default_str();
  scaling->add_flag("--simulate", args->simulate,
                    "run every plan on the simulated backend (the cost model's clock)");
  scaling->add_flag("--run", args->run,
                    "measure meshpipe on this machine's CPU devices, one meshpipe-node process "
                    "per device: a suite file's points, or for gpt/moe/wresnet the family's CPU "
                    "model (gpt-cpu, ...) on 1, 2, 4, ... devices with the batch growing with "
                    "them");
  scaling->add_option("--steps", args->steps, "with --run: steps trained per point")
      ->check(CLI::Range(2, 1000))
      ->capture_default_str();
  scaling->add_option("--out", args->out,
                      "results folder (default: meshpipe-bench/scaling-SUITE-CLUSTER-simulate, "
                      "or scaling-SUITE-run, under the current directory)");
  scaling
      ->add_option("--max-devices", args->max_devices,
                   "skip points with more devices (default: 64 with --simulate, this machine's "
                   "cores with --run)")
      ->check(kPositiveInteger);
  scaling->add_option("--systems", args->systems,
                      "comma-separated systems to run (default: all; names as in the table)");
  scaling->add_option("--threads", args->threads, "planner threads (default: every core)")
      ->check(CLI::Range(0, 1024));
  scaling
      ->add_option("--memory-fraction", args->memory_fraction,
                   "share of each device's memory the plans may use")
      ->check(finite_range(0.05, 1.0))
      ->capture_default_str();
  scaling->add_flag("-q,--quiet", args->quiet, "no progress lines");
  scaling->callback([args, &exit_code] { exit_code = run_scaling(*args); });
}

}  // namespace meshpipe::cli

// The scaling harness's outputs (train/scaling.h): results as JSON lines and back, the
// Markdown table beside the paper's values, and the throughput figure as SVG.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/units.h"
#include "train/scaling.h"

namespace meshpipe::train {

namespace {

using nlohmann::json;

constexpr size_t kMaxResultLine = size_t{1} << 20;
constexpr size_t kMaxResultLines = 100000;

// The value of `key`, or an error naming the key: strings as they are, whole numbers in
// [lo, hi], finite numbers.
Expected<std::string> text_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return make_error(Errc::kInvalidArgument, "missing field '{}'", key);
  if (!it->is_string()) return make_error(Errc::kInvalidArgument, "field '{}' is not text", key);
  return it->get<std::string>();
}

Expected<int64_t> int_field(const json& j, const char* key, int64_t lo, int64_t hi) {
  auto it = j.find(key);
  if (it == j.end()) return make_error(Errc::kInvalidArgument, "missing field '{}'", key);
  if (!it->is_number_integer()) {
    return make_error(Errc::kInvalidArgument, "field '{}' is not a whole number", key);
  }
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) {
      return make_error(Errc::kInvalidArgument, "field '{}' = {} is above {}", key, u, hi);
    }
    v = static_cast<int64_t>(u);
  } else {
    v = it->get<int64_t>();
  }
  if (v < lo || v > hi) {
    return make_error(Errc::kInvalidArgument, "field '{}' = {} is outside [{}, {}]", key, v, lo,
                      hi);
  }
  return v;
}

Expected<double> number_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return make_error(Errc::kInvalidArgument, "missing field '{}'", key);
  if (!it->is_number())
    return make_error(Errc::kInvalidArgument, "field '{}' is not a number", key);
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) {
    return make_error(Errc::kInvalidArgument, "field '{}' is not a finite number >= 0", key);
  }
  return v;
}

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

// Four significant digits: tiny models run at a few FLOP/s where big ones run at PFLOPS.
std::string sig(double v) { return fmt::format("{:.4g}", v); }

// Escapes text for SVG.
std::string xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// The throughput a figure shows: Alpa's counting where the model has one, else model FLOPs.
double shown(const SystemResult& s) { return s.alpa_pflops > 0 ? s.alpa_pflops : s.pflops; }

}  // namespace

std::vector<PublishedValue> paper_values(const PointResult& r) {
  if (r.cluster.rfind("p3.16xlarge", 0) != 0) return {};
  return published_values(r.suite, r.point.devices);
}

std::string to_json_line(const PointResult& r) {
  json j;
  j["suite"] = r.suite;
  j["cluster"] = r.cluster;
  j["mode"] = r.mode;
  j["model"] = r.point.model;
  j["devices"] = r.point.devices;
  j["point_batch"] = r.point.global_batch;
  j["global_batch"] = r.global_batch;
  j["memory_limit"] = r.memory_limit;
  j["seconds"] = r.seconds;
  j["memory_fraction"] = r.memory_fraction;
  json systems = json::array();
  for (const SystemResult& s : r.systems) {
    systems.push_back({{"system", s.system},
                       {"status", s.status},
                       {"detail", s.detail},
                       {"step_time", s.step_time},
                       {"predicted_step_time", s.predicted_step_time},
                       {"pflops", s.pflops},
                       {"alpa_pflops", s.alpa_pflops},
                       {"peak_bytes", s.peak_bytes},
                       {"stages", s.stages},
                       {"micro_batches", s.micro_batches}});
  }
  j["systems"] = std::move(systems);
  // Text that is not UTF-8 (a file name) is written with replacement characters, not thrown on.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Expected<PointResult> parse_json_line(std::string_view line) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    return make_error(Errc::kInvalidArgument, "not JSON: {}", e.what());
  }
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "not a JSON object");
  PointResult r;
  MP_ASSIGN_OR_RETURN(r.suite, text_field(j, "suite"));
  MP_ASSIGN_OR_RETURN(r.cluster, text_field(j, "cluster"));
  MP_ASSIGN_OR_RETURN(r.mode, text_field(j, "mode"));
  MP_ASSIGN_OR_RETURN(r.point.model, text_field(j, "model"));
  MP_ASSIGN_OR_RETURN(const int64_t devices, int_field(j, "devices", 1, 1 << 20));
  r.point.devices = static_cast<int32_t>(devices);
  MP_ASSIGN_OR_RETURN(r.point.global_batch, int_field(j, "point_batch", 0, kMaxInt));
  MP_ASSIGN_OR_RETURN(r.global_batch, int_field(j, "global_batch", 1, kMaxInt));
  MP_ASSIGN_OR_RETURN(r.memory_limit, int_field(j, "memory_limit", 0, kMaxInt));
  MP_ASSIGN_OR_RETURN(r.seconds, number_field(j, "seconds"));
  if (j.contains("memory_fraction")) {  // absent in the first results files: the default
    MP_ASSIGN_OR_RETURN(r.memory_fraction, number_field(j, "memory_fraction"));
  }
  auto systems = j.find("systems");
  if (systems == j.end()) return make_error(Errc::kInvalidArgument, "missing field 'systems'");
  if (!systems->is_array()) return make_error(Errc::kInvalidArgument, "'systems' is not a list");
  for (const json& s : *systems) {
    if (!s.is_object()) return make_error(Errc::kInvalidArgument, "a system is not an object");
    SystemResult x;
    MP_ASSIGN_OR_RETURN(x.system, text_field(s, "system"));
    MP_ASSIGN_OR_RETURN(x.status, text_field(s, "status"));
    MP_ASSIGN_OR_RETURN(x.detail, text_field(s, "detail"));
    MP_ASSIGN_OR_RETURN(x.step_time, number_field(s, "step_time"));
    MP_ASSIGN_OR_RETURN(x.predicted_step_time, number_field(s, "predicted_step_time"));
    MP_ASSIGN_OR_RETURN(x.pflops, number_field(s, "pflops"));
    MP_ASSIGN_OR_RETURN(x.alpa_pflops, number_field(s, "alpa_pflops"));
    MP_ASSIGN_OR_RETURN(x.peak_bytes, int_field(s, "peak_bytes", 0, kMaxInt));
    MP_ASSIGN_OR_RETURN(x.stages, int_field(s, "stages", 0, kMaxInt));
    MP_ASSIGN_OR_RETURN(x.micro_batches, int_field(s, "micro_batches", 0, kMaxInt));
    r.systems.push_back(std::move(x));
  }
  if (r.point.devices < 1) return make_error(Errc::kInvalidArgument, "devices must be >= 1");
  return r;
}

Expected<std::vector<PointResult>> load_results(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::vector<PointResult>{};
  std::vector<std::string> lines;
  std::string line;
  bool last_complete = true;
  while (std::getline(f, line)) {
    if (line.size() > kMaxResultLine) {
      return make_error(Errc::kInvalidArgument, "{}:{}: a line over {} bytes", path,
                        lines.size() + 1, kMaxResultLine);
    }
    if (lines.size() == kMaxResultLines) {
      return make_error(Errc::kInvalidArgument, "{}: more than {} lines", path, kMaxResultLines);
    }
    lines.push_back(line);
    last_complete = !f.eof();
  }
  std::vector<PointResult> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    auto r = parse_json_line(lines[i]);
    if (!r.has_value()) {
      // The last line of a run stopped while writing it: dropped, the point runs again.
      if (i + 1 == lines.size() && !last_complete) break;
      return r.status().with_context(fmt::format("{}:{}", path, i + 1));
    }
    out.push_back(std::move(*r));
  }
  return out;
}

std::string scaling_markdown(const std::vector<PointResult>& results) {
  const bool measured = !results.empty() && results.front().mode == "run";
  std::string out =
      std::string("| model | devices | system | status | step time s ") +
      (measured ? "(measured)" : "(simulated)") +
      " | planner's estimate s | "
      "PFLOPS (model) | PFLOPS (Alpa's counting) | paper | ours / paper | weak-scaling "
      "efficiency | memory per device | configuration |\n"
      "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  // Per system, the per-device throughput of its first (fewest devices) point that ran.
  std::map<std::string, double> base;
  std::vector<const PointResult*> order;
  for (const PointResult& r : results) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(), [](const PointResult* a, const PointResult* b) {
    return a->point.devices < b->point.devices;
  });
  for (const PointResult* r : order) {
    for (const SystemResult& s : r->systems) {
      if (s.status == "ok" && base.count(s.system) == 0) {
        base[s.system] = shown(s) / static_cast<double>(r->point.devices);
      }
    }
  }
  for (const PointResult* r : order) {
    const auto paper = paper_values(*r);
    for (const SystemResult& s : r->systems) {
      std::string paper_cell = "";
      std::string ratio = "";
      for (const PublishedValue& p : paper) {
        if (p.system != s.system) continue;
        paper_cell = fmt::format("{:.2f} ({})", p.pflops, p.paper_name);
        // Alpa's counting where it has one (GPT, MoE), else model FLOPs (Wide-ResNet, which
        // Alpa's benchmark counts from the model too).
        if (s.status == "ok" && shown(s) > 0) ratio = fmt::format("{:.2f}", shown(s) / p.pflops);
      }
      std::string eff = "";
      if (s.status == "ok" && base.count(s.system) != 0 && base[s.system] > 0) {
        eff = fmt::format(
            "{:.0f}%", 100.0 * shown(s) / static_cast<double>(r->point.devices) / base[s.system]);
      }
      const bool ok = s.status == "ok";
      out += fmt::format(
          "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r->point.model,
          r->point.devices, s.system, s.status == "oom" ? "**OOM**" : s.status,
          ok ? sig(s.step_time) : "-", s.predicted_step_time > 0 ? sig(s.predicted_step_time) : "-",
          ok ? sig(s.pflops) : "-", ok && s.alpa_pflops > 0 ? sig(s.alpa_pflops) : "-", paper_cell,
          ratio, eff, s.peak_bytes > 0 ? format_bytes(Bytes(s.peak_bytes)) : "-", s.detail);
    }
  }
  return out;
}

std::vector<std::string> figure_systems(int figure) {
  switch (figure) {
    case 8:
      return {"intra-op only", "data parallel", "ZeRO-2", "ZeRO-3"};
    case 9:
      return {"inter-op only", "equal layers", "equal operators"};
    case 11:
      return {"meshpipe", kWithoutLocalAllGather, kSignalSendRecv};
    default:
      return {"meshpipe",     "data parallel",   "ZeRO-2",        "ZeRO-3",        "Megatron grid",
              "equal layers", "equal operators", "intra-op only", "inter-op only", kAlpasPlan};
  }
}

std::string scaling_svg(const std::vector<PointResult>& results, const std::string& title,
                        const std::vector<std::string>& wanted) {
  const double width = 780, height = 480, left = 70, right = 220, top = 40, bottom = 60;
  const double pw = width - left - right, ph = height - top - bottom;
  std::set<int32_t> xs;
  double ymax = 0;
  std::vector<std::string> systems;  // those of `wanted` with a result
  for (const std::string& s : wanted) {
    for (const PointResult& r : results) {
      if (r.find(s) != nullptr && std::find(systems.begin(), systems.end(), s) == systems.end()) {
        systems.push_back(s);
      }
    }
  }
  const bool paper = std::find(systems.begin(), systems.end(), "meshpipe") != systems.end();
  for (const PointResult& r : results) {
    xs.insert(r.point.devices);
    for (const SystemResult& s : r.systems) {
      if (std::find(systems.begin(), systems.end(), s.system) != systems.end()) {
        ymax = std::max(ymax, shown(s));
      }
    }
    for (const PublishedValue& p : paper_values(r)) {
      if (paper && p.system == "meshpipe") ymax = std::max(ymax, p.pflops);
    }
  }
  // The linear-scaling line: the first system's first point, times the device ratio.
  double lin_x0 = 0, lin_y0 = 0;
  for (int32_t x : xs) {
    for (const PointResult& r : results) {
      const SystemResult* m = systems.empty() ? nullptr : r.find(systems[0]);
      if (r.point.devices == x && m != nullptr && m->status == "ok" && lin_y0 == 0) {
        lin_x0 = x;
        lin_y0 = shown(*m);
      }
    }
  }
  if (lin_y0 > 0 && !xs.empty()) ymax = std::max(ymax, lin_y0 * *xs.rbegin() / lin_x0);
  if (ymax <= 0) ymax = 1;
  ymax *= 1.08;
  const double lx0 = xs.empty() ? 0 : std::log2(static_cast<double>(*xs.begin()));
  const double lx1 = xs.empty() ? 1 : std::log2(static_cast<double>(*xs.rbegin()));
  auto px = [&](double devices) {
    const double span = lx1 > lx0 ? lx1 - lx0 : 1.0;
    return left + pw * (std::log2(devices) - lx0) / span;
  };
  auto py = [&](double v) { return top + ph * (1.0 - v / ymax); };
  // One colour per line of the largest figure (Fig. 7: meshpipe, eight baselines, Alpa's plan).
  static const char* colours[] = {"#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
                                  "#e377c2", "#7f7f7f", "#17becf", "#000000", "#bcbd22", "#aec7e8"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"15\">{3}</text>\n",
      width, height, left, xml(title));
  // Axes, ticks and grid.
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", left,
                     top, top + ph);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", left,
                     top + ph, left + pw);
  for (int32_t x : xs) {
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
        px(x), top, top + ph, top + ph + 18, x);
  }
  for (int k = 0; k <= 5; ++k) {
    const double v = ymax * k / 5.0;
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:.3g}</text>\n",
        left, py(v), left + pw, left - 6, py(v) + 4, v);
  }
  svg += fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">devices</text>\n"
      "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">PFLOPS"
      "</text>\n",
      left + pw / 2, height - 16, top + ph / 2, top + ph / 2);
  if (lin_y0 > 0 && xs.size() > 1) {
    const double x1 = *xs.rbegin();
    svg += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#444\" "
        "stroke-dasharray=\"6 4\"/>\n",
        px(lin_x0), py(lin_y0), px(x1), py(lin_y0 * x1 / lin_x0));
  }
  double legend_y = top + 8;
  auto legend = [&](const std::string& colour, const std::string& label, bool dashed) {
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"{3}\" "
        "stroke-width=\"2\"{4}/><text x=\"{5}\" y=\"{6:.1f}\">{7}</text>\n",
        left + pw + 14, legend_y, left + pw + 40, colour, dashed ? " stroke-dasharray=\"6 4\"" : "",
        left + pw + 46, legend_y + 4, xml(label));
    legend_y += 18;
  };
  // Drawn last to first, so the first system (meshpipe) lies on top where lines meet.
  std::vector<std::string> layers(systems.size());
  for (size_t k = 0; k < systems.size(); ++k) {
    const std::string colour = colours[k % std::size(colours)];
    std::string& layer = layers[k];
    std::string points;
    for (int32_t x : xs) {
      for (const PointResult& r : results) {
        const SystemResult* s = r.find(systems[k]);
        if (r.point.devices != x || s == nullptr) continue;
        if (s->status == "ok") {
          points += fmt::format("{:.1f},{:.1f} ", px(x), py(shown(*s)));
          layer += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", px(x),
                               py(shown(*s)), colour);
        } else if (s->status == "oom") {  // a cross on the axis
          layer += fmt::format(
              "<path d=\"M{0:.1f},{1:.1f} l8,8 m0,-8 l-8,8\" stroke=\"{2}\" stroke-width=\"2\"/>\n",
              px(x) - 4, top + ph - 12, colour);
        }
      }
    }
    if (!points.empty()) {
      layer +=
          fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
                      colour, points);
    }
    legend(colour, systems[k], false);
  }
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) svg += *it;
  if (lin_y0 > 0) legend("#444", "linear scaling", true);
  // The paper's Alpa points (Fig. 7), as open squares.
  bool drawn = false;
  for (const PointResult& r : results) {
    for (const PublishedValue& p : paper_values(r)) {
      if (!paper || p.system != "meshpipe") continue;
      drawn = true;
      svg += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"8\" height=\"8\" fill=\"none\" "
          "stroke=\"black\" stroke-width=\"1.5\"/>\n",
          px(r.point.devices) - 4, py(p.pflops) - 4);
    }
  }
  if (drawn) {
    svg += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"8\" height=\"8\" fill=\"none\" stroke=\"black\"/>"
        "<text x=\"{}\" y=\"{:.1f}\">Alpa (paper)</text>\n",
        left + pw + 23, legend_y - 4, left + pw + 46, legend_y + 4);
    legend_y += 18;
  }
  svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" fill=\"#555\">x: out of memory</text>\n",
                     left + pw + 14, legend_y + 4);
  svg += "</svg>\n";
  return svg;
}

}  // namespace meshpipe::train

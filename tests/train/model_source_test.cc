// Tests of train/model_source.h (an ONNX file as a job's model), job data from .npy arrays and
// the metrics file: a file with a Pad trains on one device to the losses computed by hand; the
// job's JSON carries the file so another process builds the same model; bad sources are named
// errors; metrics lines read back as the same doubles.
#include "train/model_source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "core/json.h"
#include "onnx/encoder.h"
#include "runtime/npy_writer.h"
#include "train/job.h"
#include "train/metrics.h"
#include "train/single_device.h"

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;
using onnx::test::Enc;
using onnx::test::int_tensor;
using onnx::test::node;
using onnx::test::tensor;
using onnx::test::value_info;

fs::path fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("meshpipe_model_source_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// loss = sum(Pad(x, one column before, two after) * c): x [2, 3] data, c [2, 6] a parameter.
// d loss / d c = the padded x, so SGD moves only c's columns 1..3.
std::vector<float> initial_c(float offset = -1.0f) {
  std::vector<float> c(12);
  for (size_t k = 0; k < c.size(); ++k) c[k] = 0.25f * static_cast<float>(k) + offset;
  return c;
}

std::string write_pad_model(const fs::path& dir, float offset = -1.0f) {
  const std::vector<Enc> nodes = {
      node("Constant", "/pads", {}, {"pads"},
           {onnx::test::attr_t("value", int_tensor("", {4}, {0, 1, 0, 2}))}),
      node("Pad", "/Pad", {"x", "pads"}, {"p"}), node("Mul", "/Mul", {"p", "c"}, {"m"}),
      node("ReduceSum", "/ReduceSum", {"m"}, {"loss"}, {onnx::test::attr_i("keepdims", 0)})};
  const std::string path = (dir / "pad.onnx").string();
  std::ofstream(path, std::ios::binary)
      << onnx::test::model_bytes(nodes, {tensor("c", {2, 6}, initial_c(offset))},
                                 {value_info("x", 1, {2, 3})}, {value_info("loss", 1, {})});
  return path;
}

TEST_CASE("an imported file with a Pad trains on .npy data to the losses computed by hand",
          "[train][onnx]") {
  const fs::path dir = fresh_dir("pad");
  ModelFile file;
  file.path = write_pad_model(dir);
  auto spec = model_from_file(file);
  INFO(spec.status().to_string());
  REQUIRE(spec.has_value());
  CHECK(spec->name == "onnx:pad.onnx");
  CHECK(spec->family == "onnx");
  CHECK(spec->default_batch == 2);
  CHECK(graph::models::formula_parameter_count(*spec) == 12);
  // Two batches of x, 4 rows.
  std::vector<float> x(12);
  for (size_t k = 0; k < x.size(); ++k) x[k] = 0.5f * static_cast<float>(k) - 2.0f;
  const fs::path data = dir / "data";
  fs::create_directories(data);
  test::write_npy((data / "x.npy").string(), "<f4", {4, 3}, x);

  JobSpec job;
  job.model = *spec;
  job.optimizer.kind = graph::OptimizerConfig::Kind::kSgd;
  job.optimizer.lr = 0.125f;
  job.data_path = data.string();
  auto runner = SingleDeviceJob::create(job);
  INFO(runner.status().to_string());
  REQUIRE(runner.has_value());
  // By hand: loss_s = sum_{r,j} x_s[r, j] * c_s[r, j + 1]; c_2 = c_1 - lr * padded x_1.
  const std::vector<float> c0 = initial_c();
  std::vector<double> c(c0.begin(), c0.end());
  for (int64_t step = 1; step <= 3; ++step) {
    const size_t first = static_cast<size_t>(((step - 1) % 2) * 6);  // rows wrap after 2 steps
    double want = 0.0;
    for (size_t r = 0; r < 2; ++r) {
      for (size_t j = 0; j < 3; ++j) want += x[first + r * 3 + j] * c[r * 6 + j + 1];
    }
    auto out = (*runner)->run_step(step);
    REQUIRE(out.has_value());
    CHECK(out->loss == Approx(want).epsilon(1e-6));
    for (size_t r = 0; r < 2; ++r) {
      for (size_t j = 0; j < 3; ++j) c[r * 6 + j + 1] -= 0.125 * x[first + r * 3 + j];
    }
  }
}

TEST_CASE("a job's JSON carries an imported file: the other process builds the same graph",
          "[train][onnx]") {
  const fs::path dir = fresh_dir("json");
  ModelFile file;
  file.path = write_pad_model(dir);
  auto spec = model_from_file(file);
  REQUIRE(spec.has_value());
  JobSpec job;
  job.model = *spec;
  job.data_path = "/some/data";
  const std::string text = job_spec_to_json(job);
  auto back = job_spec_from_json(text);
  INFO(back.status().to_string());
  REQUIRE(back.has_value());
  CHECK(back->model.name == "onnx:pad.onnx");
  CHECK(back->data_path == "/some/data");
  auto g1 = graph::models::build_model(job.model, {.batch = 2, .dtype = {}});
  auto g2 = graph::models::build_model(back->model, {.batch = 2, .dtype = {}});
  REQUIRE(g1.has_value());
  REQUIRE(g2.has_value());
  CHECK(g1->graph.num_ops() == g2->graph.num_ops());
  CHECK(g2->graph.value(g2->inputs[0]).shape == Shape{2, 3});
  // Mixed precision is for zoo models.
  auto half = graph::models::build_model(job.model, {.batch = 2, .dtype = DType::kBF16});
  REQUIRE_FALSE(half.has_value());
  CHECK(half.status().message().find("built in float32") != std::string::npos);
  // Another file at the path (another size or checksum) is refused by name.
  write_pad_model(dir, -2.0f);  // the same size, other weights
  auto changed = job_spec_from_json(text);
  REQUIRE_FALSE(changed.has_value());
  CHECK(changed.status().message().find("is not the file the job was planned with") !=
        std::string::npos);
  // The file gone: the other process names it.
  fs::remove(file.path);
  auto gone = job_spec_from_json(text);
  REQUIRE_FALSE(gone.has_value());
  CHECK(gone.status().message().find("pad.onnx") != std::string::npos);
  // A source that names another model than "model" is refused.
  write_pad_model(dir);
  std::string other = text;
  other.replace(other.find("\"onnx:pad.onnx\""), 15, "\"onnx:xyz.onnx\"");
  auto mismatch = job_spec_from_json(other);
  REQUIRE_FALSE(mismatch.has_value());
  CHECK(mismatch.status().message().find("is the model 'onnx:pad.onnx'") != std::string::npos);
  CHECK_FALSE(parse_loss_kind("mse").has_value());
  CHECK_FALSE(model_from_file(ModelFile{}).has_value());
}

TEST_CASE("the metrics file: a JSON line per step and a summary, doubles read back exactly",
          "[train]") {
  const fs::path dir = fresh_dir("metrics");
  const std::string path = (dir / "m.jsonl").string();
  auto log = MetricsLog::open(path);
  REQUIRE(log.has_value());
  StepReport r;
  r.step = 3;
  r.loss = 0.1 + 0.2;  // 0.30000000000000004: 4 decimals would lose it
  r.time = Seconds(0.0125);
  r.samples_per_second = 640.0;
  r.tokens_per_second = 10240.0;
  r.peak = Bytes(123456);
  r.device_peaks = {{0, 100}, {3, 123456}};
  log->set_predicted_step_time(0.01);
  REQUIRE(log->write_step(r, 1e-3f).is_ok());
  r.step = 4;
  r.loss = std::nan("");
  REQUIRE(log->write_step(r, 1e-3f).is_ok());
  SessionSummary sum;
  sum.first_step = 3;
  sum.last_step = 5;
  sum.losses = {2.5, 2.25, 2.0};
  sum.step_seconds = {0.5, 0.125, 0.25};
  sum.total_time = Seconds(0.875);
  sum.peak_bytes = {{0, 100}, {3, 123456}};
  REQUIRE(log->write_summary(sum).is_ok());
  std::ifstream in(path);
  std::string line;
  std::vector<Json> lines;
  while (std::getline(in, line)) {
    auto j = parse_json(line, "metrics line");
    REQUIRE(j.has_value());
    lines.push_back(*j);
  }
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["event"].get<std::string>() == "step");
  CHECK(lines[0]["step"].get<int64_t>() == 3);
  CHECK(lines[0]["predicted_step_time_s"].get<double>() == 0.01);
  CHECK(lines[0]["peak_bytes_per_device"]["3"].get<int64_t>() == 123456);
  CHECK(lines[0]["peak_bytes_per_device"].size() == 2);
  CHECK(lines[2]["event"].get<std::string>() == "summary");
  CHECK(lines[2]["first_loss"].get<double>() == 2.5);
  CHECK(lines[2]["last_loss"].get<double>() == 2.0);
  CHECK(lines[2]["median_step_time_s"].get<double>() == 0.25);
  CHECK(lines[2]["total_time_s"].get<double>() == 0.875);
  CHECK(lines[2]["peak_bytes_per_device"]["0"].get<int64_t>() == 100);
  CHECK(lines[0]["loss"].get<double>() == 0.1 + 0.2);
  CHECK(lines[0]["peak_bytes"].get<int64_t>() == 123456);
  CHECK(lines[0]["step_time_s"].get<double>() == 0.0125);
  CHECK(lines[0]["lr"].get<double>() == 0.001);  // the float as given, not 0.0010000000474974513
  CHECK(lines[1]["loss"].is_null());
  // Opened but never written (the run failed before its first step): the old file stays.
  { std::ofstream(path) << "an older run\n"; }
  { REQUIRE(MetricsLog::open(path).has_value()); }
  std::ifstream again(path);
  std::getline(again, line);
  CHECK(line == "an older run");
  // A directory or a FIFO at the path is refused (opening a FIFO would block).
  CHECK_FALSE(MetricsLog::open(dir.string()).has_value());
  const std::string fifo = (dir / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto f = MetricsLog::open(fifo);
  REQUIRE_FALSE(f.has_value());
  CHECK(f.status().message().find("not a regular file") != std::string::npos);
  // A file the run reads, under its own name or a hard link, is not overwritten.
  const std::string data = (dir / "data.bin").string();
  { std::ofstream(data) << "tokens"; }
  const std::string link = (dir / "link.bin").string();
  REQUIRE(::link(data.c_str(), link.c_str()) == 0);
  for (const std::string& p : {data, link}) {
    auto same = MetricsLog::open(p, {{"--plan", path}, {"--data", data}});
    REQUIRE_FALSE(same.has_value());
    CHECK(same.status().message().find("is the file of --data") != std::string::npos);
  }
  std::ifstream kept(data);
  std::getline(kept, line);
  CHECK(line == "tokens");
  CHECK(MetricsLog::open(path, {{"--data", data}, {"--plan", ""}}).has_value());
}

}  // namespace
}  // namespace meshpipe::train

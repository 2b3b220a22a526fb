// End-to-end single-device training through the session loop: the loss of every tiny zoo model
// falls, runs are deterministic, and a single-device checkpoint resumes under any plan.
#include "train/single_device.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "kernels/device.h"
#include "train/job.h"
#include "train/session.h"

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;

JobSpec job_of(const std::string& model, float lr, uint64_t seed = 1234) {
  auto spec = graph::models::find_model(model);
  REQUIRE(spec.has_value());
  JobSpec job;
  job.model = *spec;
  job.optimizer.lr = lr;
  job.seed = seed;
  return job;
}

SessionSummary train_single(const JobSpec& job, int64_t steps, const std::string& save = "",
                            const SingleDeviceOptions& options = {}) {
  auto runner = SingleDeviceJob::create(job, options);
  INFO(runner.status().to_string());
  REQUIRE(runner.has_value());
  SessionOptions so;
  so.first_step = (*runner)->first_step();
  so.steps = steps;
  so.save_dir = save;
  so.model = job.model.name;
  so.seed = job.seed;
  auto s = run_session(**runner, so);
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  return *s;
}

// Mean of the last n losses (single batches are noisy).
double tail_mean(const SessionSummary& s, size_t n) {
  double sum = 0;
  for (size_t i = s.losses.size() - n; i < s.losses.size(); ++i) sum += s.losses[i];
  return sum / static_cast<double>(n);
}

TEST_CASE("gpt-tiny trains: loss from ln(64) = 4.16 to below 2.6 in 50 Adam steps", "[train]") {
  // The synthetic stream follows a fixed permutation with probability 0.8: the best possible
  // loss is about 0.8 * -ln(0.8 + 0.2/64) - 0.2 * ln(0.2/64) = 1.33.
  const JobSpec job = job_of("gpt-tiny", 3e-3f);
  auto runner = SingleDeviceJob::create(job);
  REQUIRE(runner.has_value());
  SessionOptions so;
  so.steps = 50;
  auto s = run_session(**runner, so);
  REQUIRE(s.has_value());
  CHECK(s->losses.front() == Approx(4.16).margin(0.1));
  CHECK(s->losses.back() < 2.6);
  REQUIRE(s->peak_bytes.count(0) == 1);
  CHECK(s->peak_bytes.at(0) > (*runner)->persistent_bytes().value());
  // Parameters + Adam's two moments: three times the parameter bytes (plus the step counters).
  const RunInfo info = (*runner)->info();
  CHECK(info.optimizer_state_bytes.value() >= 2 * info.parameter_bytes.value());
  CHECK(info.forward_ops > 0);
  CHECK(info.backward_ops > 0);
  CHECK(info.update_ops > 0);
}

TEST_CASE("moe-tiny, wresnet-tiny and mlp-tiny train", "[train]") {
  const SessionSummary moe = train_single(job_of("moe-tiny", 3e-3f), 40);
  CHECK(moe.losses.front() == Approx(4.16).margin(0.1));
  CHECK(tail_mean(moe, 5) < 3.0);
  const SessionSummary wr = train_single(job_of("wresnet-tiny", 3e-3f), 30);
  CHECK(tail_mean(wr, 5) < 0.6 * wr.losses.front());
  const SessionSummary mlp = train_single(job_of("mlp-tiny", 1e-2f), 60);
  CHECK(tail_mean(mlp, 5) < 0.6 * mlp.losses.front());
}

TEST_CASE("training runs are deterministic", "[train]") {
  const SessionSummary a = train_single(job_of("gpt-tiny", 3e-3f), 5);
  const SessionSummary b = train_single(job_of("gpt-tiny", 3e-3f), 5);
  CHECK(a.losses == b.losses);
}

TEST_CASE("a huge learning rate stops the session naming the step, or the op with checks on",
          "[train]") {
  // SGD with a step of 1e30 overflows the weights after the first update.
  JobSpec job = job_of("gpt-tiny", 1e30f);
  job.optimizer.kind = graph::OptimizerConfig::Kind::kSgd;
  auto runner = SingleDeviceJob::create(job);
  REQUIRE(runner.has_value());
  SessionOptions so;
  so.steps = 5;
  so.lr = job.optimizer.lr;
  auto s = run_session(**runner, so);
  REQUIRE_FALSE(s.has_value());
  CHECK_THAT(s.status().message(), Catch::StartsWith("step 2: the loss is"));
  CHECK_THAT(s.status().message(), Catch::Contains("lower the learning rate (now 1e+30)"));
  job.check_finite = true;
  auto checked = SingleDeviceJob::create(job);
  REQUIRE(checked.has_value());
  auto c = run_session(**checked, so);
  REQUIRE_FALSE(c.has_value());
  CHECK_THAT(c.status().message(), Catch::StartsWith("step 2: op '"));
  CHECK_THAT(c.status().message(), Catch::Contains("wrote a non-finite value"));
}

TEST_CASE("a single-device checkpoint resumes under a plan with the same losses", "[train]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_single_device_ckpt";
  fs::remove_all(dir);
  const JobSpec job = job_of("gpt-tiny", 1e-3f, /*seed=*/5);
  const SessionSummary whole = train_single(job, 6);
  const SessionSummary first = train_single(job, 3, dir.string());
  REQUIRE(fs::exists(dir / "manifest.json"));
  auto cluster = mesh::cluster_preset("cpu:1x2");
  REQUIRE(cluster.has_value());
  auto plan = plan_job(job, *cluster, {.micro_batches = 2, .schedule = {}});
  REQUIRE(plan.has_value());
  LocalJobOptions lo;
  lo.load_dir = dir.string();
  auto local = LocalJob::create(job, *plan, lo);
  INFO(local.status().to_string());
  REQUIRE(local.has_value());
  CHECK((*local)->first_step() == 4);
  SessionOptions so;
  so.first_step = (*local)->first_step();
  so.steps = 3;
  auto rest = run_session(**local, so);
  REQUIRE(rest.has_value());
  std::vector<double> got = first.losses;
  got.insert(got.end(), rest->losses.begin(), rest->losses.end());
  REQUIRE(got.size() == whole.losses.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::abs(got[i] - whole.losses[i]) <= 1e-4 * whole.losses[i]);
  }
  fs::remove_all(dir);
}

// Saves after 3 of 6 steps on `save_on`, resumes on `load_on` (a new job from the checkpoint)
// and compares the 6 losses with an uninterrupted run on `load_on`.
void check_resume(kernels::Device save_on, kernels::Device load_on, double rel,
                  const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / name;
  fs::remove_all(dir);
  const JobSpec job = job_of("gpt-tiny", 1e-3f, /*seed=*/5);
  SingleDeviceOptions saver;
  saver.device = save_on;
  SingleDeviceOptions loader;
  loader.device = load_on;
  const SessionSummary whole = train_single(job, 6, "", loader);
  const SessionSummary first = train_single(job, 3, dir.string(), saver);
  REQUIRE(fs::exists(dir / "manifest.json"));
  loader.load_dir = dir.string();
  const SessionSummary rest = train_single(job, 3, "", loader);
  CHECK(rest.first_step == 4);
  std::vector<double> got = first.losses;
  got.insert(got.end(), rest.losses.begin(), rest.losses.end());
  REQUIRE(got.size() == whole.losses.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("step " << i + 1 << ": resumed " << got[i] << ", whole " << whole.losses[i]);
    CHECK(std::abs(got[i] - whole.losses[i]) <= rel * whole.losses[i]);
  }
  fs::remove_all(dir);
}

TEST_CASE("a single-device job resumes from its own checkpoint", "[train]") {
  check_resume(kernels::Device::kCpu, kernels::Device::kCpu, 1e-6, "meshpipe_single_resume");
  // Another model's checkpoint is refused before anything is built.
  const fs::path dir = fs::temp_directory_path() / "meshpipe_single_resume_other";
  fs::remove_all(dir);
  train_single(job_of("mlp-tiny", 1e-3f), 1, dir.string());
  SingleDeviceOptions so;
  so.load_dir = dir.string();
  auto other = SingleDeviceJob::create(job_of("gpt-tiny", 1e-3f), so);
  REQUIRE_FALSE(other.has_value());
  CHECK_THAT(other.status().message(), Catch::Contains("is of model 'mlp-tiny', not 'gpt-tiny'"));
  fs::remove_all(dir);
}

// Label `gpu` (src/train/CMakeLists.txt: names containing "GPU"); passes with a warning without
// one. A GPU job's checkpoint goes through host copies (get_value/set_value).
TEST_CASE("GPU single-device job: checkpoints cross between GPU and CPU", "[train][gpu]") {
  const kernels::DeviceInventory& inv = kernels::device_inventory();
  if (inv.cuda_devices == 0) {
    WARN("no GPU, not run: " << inv.summary);
    return;
  }
  // Saved on the GPU, resumed on the GPU (the same kernels: tight), and on the CPU (other
  // kernels after step 3: the f32 tolerance of gpu_executor_test.cc).
  check_resume(kernels::Device::kCuda, kernels::Device::kCuda, 1e-6, "meshpipe_gpu_resume");
  check_resume(kernels::Device::kCuda, kernels::Device::kCpu, 1e-4, "meshpipe_gpu_cpu_resume");
  auto job = SingleDeviceJob::create(job_of("gpt-tiny", 1e-3f),
                                     {.device = kernels::Device::kCuda, .gpu = 0, .load_dir = ""});
  REQUIRE(job.has_value());
  CHECK_THAT((*job)->info().device, Catch::StartsWith("1 GPU: "));
}

}  // namespace
}  // namespace meshpipe::train

// End-to-end single-device training through the session loop: the loss of every tiny zoo model
// falls, runs are deterministic, and a single-device checkpoint resumes under any plan.
#include "train/single_device.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

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

SessionSummary train_single(const JobSpec& job, int64_t steps, const std::string& save = "") {
  auto runner = SingleDeviceJob::create(job);
  INFO(runner.status().to_string());
  REQUIRE(runner.has_value());
  SessionOptions so;
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

}  // namespace
}  // namespace meshpipe::train

// Tests of validation (StepRunner::validate, SessionOptions::val_every): on a token file, a
// validation pass changes nothing (the training losses after it are those of a run without
// it, to the bit), repeats its value, equals on a 2 x 2 plan what one device computes, and runs
// after every N-th step and the last; runners and data without a validation split say why.
// The learning-rate schedule's factors by hand, its JSON and its errors.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "mesh/cluster.h"
#include "train/job.h"
#include "train/session.h"
#include "train/single_device.h"

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;

// A raw uint16 token file of 4000 tokens below 64 (gpt-tiny's vocabulary), with structure.
std::string token_file() {
  const fs::path p = fs::temp_directory_path() / "meshpipe_validation_tokens.bin";
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  uint16_t t = 1;
  for (int k = 0; k < 4000; ++k) {
    t = static_cast<uint16_t>((t * 5 + (k % 3)) % 64);
    f.write(reinterpret_cast<const char*>(&t), 2);
  }
  return p.string();
}

JobSpec tiny_job() {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  JobSpec job;
  job.model = *spec;
  job.optimizer.lr = 3e-3f;
  job.data_path = token_file();
  job.val_fraction = 0.2;
  return job;
}

SessionSummary run(StepRunner& runner, int64_t steps, int64_t val_every) {
  SessionOptions so;
  so.steps = steps;
  so.val_every = val_every;
  so.val_batches = 2;
  auto s = run_session(runner, so);
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  return *s;
}

TEST_CASE("a validation pass changes nothing and repeats its value", "[train]") {
  const JobSpec job = tiny_job();
  auto plain = SingleDeviceJob::create(job);
  auto checked = SingleDeviceJob::create(job);
  REQUIRE(plain.has_value());
  REQUIRE(checked.has_value());
  const SessionSummary a = run(**plain, 5, 0);
  const SessionSummary b = run(**checked, 5, 2);
  CHECK(a.losses == b.losses);        // bit for bit: validation updated nothing
  REQUIRE(b.validation.size() == 3);  // after steps 2, 4 and 5 (the last)
  CHECK(b.validation[0].step == 2);
  CHECK(b.validation[2].step == 5);
  CHECK(b.validation[1].batches == 2);
  auto again = (*checked)->validate(0);
  auto twice = (*checked)->validate(0);
  REQUIRE(again.has_value());
  REQUIRE(twice.has_value());
  CHECK(*again == *twice);
  // Validation after training is below the untrained model's (the stream is learnable).
  auto fresh = SingleDeviceJob::create(job);
  REQUIRE(fresh.has_value());
  auto before = (*fresh)->validate(0);
  REQUIRE(before.has_value());
  CHECK(*before > *again);
}

TEST_CASE("validation on a 2 x 2 plan equals one device's, and leaves its training alone",
          "[train]") {
  const JobSpec job = tiny_job();
  auto cluster = mesh::resolve_cluster("cpu:2x2");
  REQUIRE(cluster.has_value());
  auto plan = plan_job(job, *cluster, {.micro_batches = 2, .schedule = {}});
  REQUIRE(plan.has_value());
  auto local = LocalJob::create(job, *plan, {});
  auto plain = LocalJob::create(job, *plan, {});
  auto single = SingleDeviceJob::create(job);
  REQUIRE(local.has_value());
  REQUIRE(plain.has_value());
  REQUIRE(single.has_value());
  const SessionSummary a = run(**plain, 3, 0);
  const SessionSummary b = run(**local, 3, 1);
  CHECK(a.losses == b.losses);
  const SessionSummary c = run(**single, 3, 1);
  REQUIRE(b.validation.size() == 3);
  REQUIRE(c.validation.size() == 3);
  for (size_t k = 0; k < 3; ++k) {
    CHECK(b.validation[k].loss == Approx(c.validation[k].loss).epsilon(1e-5));
  }
}

TEST_CASE("without a validation split, validation says what it needs", "[train]") {
  JobSpec job = tiny_job();
  job.data_path.clear();  // synthetic data
  auto single = SingleDeviceJob::create(job);
  REQUIRE(single.has_value());
  SessionOptions so;
  so.steps = 2;
  so.val_every = 1;
  const fs::path ck = fs::temp_directory_path() / "meshpipe_validation_ck";
  fs::remove_all(ck);
  so.save_dir = ck.string();
  so.model = job.model.name;
  auto s = run_session(**single, so);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().message().find("validation after step 1") != std::string::npos);
  CHECK(s.status().message().find("needs a token file") != std::string::npos);
  // The step that trained before the failed validation is kept in a checkpoint.
  CHECK(fs::exists(ck / "manifest.json"));
  so.save_dir.clear();
  so.val_batches = 0;
  CHECK_FALSE(so.validate().is_ok());
}

}  // namespace
}  // namespace meshpipe::train

namespace meshpipe::train {
namespace {

TEST_CASE("the learning-rate schedule: warm-up, cosine decay, floor; its JSON and its errors",
          "[train]") {
  LrSchedule s;
  CHECK(s.constant());
  CHECK(s.factor(7) == 1.0);
  s.warmup_steps = 4;
  s.decay_steps = 12;
  s.min_ratio = 0.2;
  CHECK(s.factor(1) == 0.25);
  CHECK(s.factor(4) == 1.0);
  CHECK(s.factor(8) == Approx(0.2 + 0.8 * 0.5));  // half way: cos(pi / 2) = 0
  CHECK(s.factor(12) == Approx(0.2));
  CHECK(s.factor(100) == Approx(0.2));
  CHECK(s.validate().is_ok());
  JobSpec job = tiny_job();
  job.schedule = s;
  auto back = job_spec_from_json(job_spec_to_json(job));
  REQUIRE(back.has_value());
  CHECK(back->schedule.warmup_steps == 4);
  CHECK(back->schedule.decay_steps == 12);
  CHECK(back->schedule.min_ratio == 0.2);
  // Other processes compare the data they read with the driver's.
  const std::string text = job_spec_to_json(job);
  CHECK(text.find("\"data_identity\":\"tokens meshpipe_validation_tokens.bin 8000") !=
        std::string::npos);
  CHECK(job_spec_from_json(text).has_value());
  {
    std::ofstream f(job.data_path, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(10);
    f.put('\x3f');  // the same size, another token
  }
  auto other = job_spec_from_json(text);
  REQUIRE_FALSE(other.has_value());
  CHECK(other.status().message().find("the driver's is 'tokens") != std::string::npos);
  s.decay_steps = 4;  // must end after the warm-up
  CHECK_FALSE(s.validate().is_ok());
  s.decay_steps = 12;
  s.min_ratio = 1.5;
  CHECK_FALSE(s.validate().is_ok());
}

}  // namespace
}  // namespace meshpipe::train

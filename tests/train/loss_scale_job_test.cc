// f16 loss scaling in jobs (issue 15, item 2): the job's JSON carries it (on by default for f16
// only), and its state survives a checkpoint: a run saved and resumed skips the same steps with
// the same scales and reaches the same losses as one that was not interrupted, on one device
// and on threads under a plan.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "graph/models/zoo.h"
#include "train/job.h"
#include "train/session.h"
#include "train/single_device.h"

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;

JobSpec gpt_tiny_f16() {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  JobSpec job;
  job.model = *spec;
  job.global_batch = 8;
  job.seed = 21;
  job.precision = DType::kF16;
  job.loss_scale.enabled = true;
  job.loss_scale.initial = std::ldexp(1.0f, 24);  // overflows for the first steps
  job.loss_scale.interval = 4;                    // and grows again after 4 good ones
  return job;
}

struct Record {
  std::vector<double> losses;
  std::vector<float> scales;
  std::vector<bool> skipped;
};

void run(StepRunner& runner, int64_t first, int64_t steps, Record& rec,
         const std::string& save = "") {
  SessionOptions so;
  so.first_step = first;
  so.steps = steps;
  so.save_dir = save;
  so.model = "gpt-tiny";
  so.on_step = [&](const StepReport& r) {
    rec.scales.push_back(r.loss_scale);
    rec.skipped.push_back(r.skipped);
  };
  auto s = run_session(runner, so);
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  rec.losses.insert(rec.losses.end(), s->losses.begin(), s->losses.end());
}

void check_same(const Record& got, const Record& want) {
  REQUIRE(got.losses.size() == want.losses.size());
  int skipped = 0;
  int grown = 0;
  for (size_t k = 0; k < want.losses.size(); ++k) {
    INFO("step " << k + 1);
    CHECK(got.scales[k] == want.scales[k]);
    CHECK(got.skipped[k] == want.skipped[k]);
    CHECK(std::abs(got.losses[k] - want.losses[k]) <= 1e-4 * want.losses[k]);
    skipped += want.skipped[k] ? 1 : 0;
    grown += k > 0 && want.scales[k] > want.scales[k - 1] ? 1 : 0;
  }
  // The run went through overflows and a growth, so the state saved mattered.
  CHECK(skipped >= 2);
  CHECK(grown >= 1);
}

TEST_CASE("a job's loss scaling travels in its JSON, on by default for f16 only",
          "[train][loss_scale]") {
  JobSpec job = gpt_tiny_f16();
  job.loss_scale.initial = 1024.0f;
  job.loss_scale.interval = 77;
  auto back = job_spec_from_json(job_spec_to_json(job));
  REQUIRE(back.has_value());
  CHECK(back->loss_scale.enabled);
  CHECK(back->loss_scale.initial == 1024.0f);
  CHECK(back->loss_scale.interval == 77);
  // Without the field (a coordinator from before it): f16 scales, bf16 and f32 do not.
  const std::string base =
      R"({"model": "gpt-tiny", "global_batch": 8, "seed": 1, "check_finite": false,
          "optimizer": {"kind": "adam", "lr": 0.003, "momentum": 0, "beta1": 0.9,
                        "beta2": 0.999, "eps": 1e-8, "weight_decay": 0}, )";
  for (const auto& [precision, on] :
       std::vector<std::pair<std::string, bool>>{{"f16", true}, {"bf16", false}, {"f32", false}}) {
    auto j = job_spec_from_json(base + R"("precision": ")" + precision + "\"}");
    REQUIRE(j.has_value());
    CHECK(j->loss_scale.enabled == on);
  }
  for (const char* hostile :
       {R"("loss_scale": 3)", R"("loss_scale": {"enabled": true, "initial": -1})",
        R"("loss_scale": {"enabled": true, "interval": 0})",
        R"("loss_scale": {"enabled": true, "initial": 1e300})", R"("loss_scale": {})"}) {
    INFO(hostile);
    auto r = job_spec_from_json(base + R"("precision": "f16", )" + hostile + "}");
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.status().message(), Catch::StartsWith("job field 'loss_scale"));
  }
}

TEST_CASE("the loss scale survives a checkpoint: a resumed run skips and scales as one run",
          "[train][loss_scale]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_loss_scale_ckpt";
  const JobSpec job = gpt_tiny_f16();
  SECTION("one device") {
    fs::remove_all(dir);
    Record want;
    auto whole = SingleDeviceJob::create(job);
    REQUIRE(whole.has_value());
    run(**whole, 1, 14, want);
    Record got;
    auto first = SingleDeviceJob::create(job);
    REQUIRE(first.has_value());
    run(**first, 1, 7, got, dir.string());
    SingleDeviceOptions so;
    so.load_dir = dir.string();
    auto second = SingleDeviceJob::create(job, so);
    REQUIRE(second.has_value());
    REQUIRE((*second)->first_step() == 8);
    run(**second, 8, 7, got);
    check_same(got, want);
  }
  SECTION("threads under a 2x2 plan") {
    fs::remove_all(dir);
    auto cl = mesh::cluster_preset("cpu:2x2");
    REQUIRE(cl.has_value());
    auto plan = plan_job(job, *cl, {.micro_batches = 2, .schedule = {}});
    REQUIRE(plan.has_value());
    Record want;
    auto whole = LocalJob::create(job, *plan, {});
    REQUIRE(whole.has_value());
    run(**whole, 1, 14, want);
    Record got;
    auto first = LocalJob::create(job, *plan, {});
    REQUIRE(first.has_value());
    run(**first, 1, 7, got, dir.string());
    LocalJobOptions lo;
    lo.load_dir = dir.string();
    auto second = LocalJob::create(job, *plan, lo);
    REQUIRE(second.has_value());
    REQUIRE((*second)->first_step() == 8);
    run(**second, 8, 7, got);
    check_same(got, want);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace meshpipe::train

// Jobs: the JobSpec's JSON form, planning a job, checking a given plan, and a LocalJob that
// trains like one device on threads, saves and resumes, and reports a bad checkpoint before it
// builds anything.
#include "train/job.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "graph/models/zoo_training.h"
#include "planner/cost_model.h"
#include "runtime/lower.h"
#include "train/session.h"
#include "train/single_device.h"

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;

JobSpec gpt_tiny(uint64_t seed = 11) {
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  JobSpec job;
  job.model = *spec;
  job.global_batch = 8;
  job.seed = seed;
  return job;
}

mesh::ClusterSpec cpu(const std::string& preset) {
  auto c = mesh::cluster_preset(preset);
  REQUIRE(c.has_value());
  return *c;
}

std::vector<double> run(StepRunner& runner, int64_t first, int64_t steps,
                        const std::string& save = "") {
  SessionOptions so;
  so.first_step = first;
  so.steps = steps;
  so.save_dir = save;
  so.model = "gpt-tiny";
  auto s = run_session(runner, so);
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  return s->losses;
}

TEST_CASE("a job spec survives its JSON form, and bad fields are named", "[train][job]") {
  JobSpec job = gpt_tiny(/*seed=*/99);
  job.optimizer.kind = graph::OptimizerConfig::Kind::kSgd;
  job.optimizer.lr = 0.1f;
  job.optimizer.momentum = 0.9f;
  job.optimizer.weight_decay = 3e-4f;
  job.check_finite = true;
  auto back = job_spec_from_json(job_spec_to_json(job));
  REQUIRE(back.has_value());
  CHECK(back->model.name == "gpt-tiny");
  CHECK(back->global_batch == 8);
  CHECK(back->seed == 99);
  CHECK(back->check_finite);
  CHECK(back->optimizer.kind == graph::OptimizerConfig::Kind::kSgd);
  CHECK(back->optimizer.lr == 0.1f);  // floats round-trip exactly through the JSON double
  CHECK(back->optimizer.momentum == 0.9f);
  CHECK(back->optimizer.weight_decay == 3e-4f);
  CHECK_THAT(job_spec_from_json("{").status().message(),
             Catch::StartsWith("job JSON is malformed"));
  CHECK_THAT(job_spec_from_json("[]").status().message(), Catch::Contains("must be an object"));
  const std::string text = job_spec_to_json(job);
  std::string bad = text;
  bad.replace(bad.find("gpt-tiny"), 8, "gpt-huge");
  CHECK_THAT(job_spec_from_json(bad).status().message(), Catch::Contains("gpt-huge"));
  bad = text;
  bad.replace(bad.find("\"seed\""), 6, "\"sede\"");
  CHECK(job_spec_from_json(bad).status().message() == "job field 'seed' is missing");
  bad = text;
  bad.replace(bad.find("\"sgd\""), 5, "\"lamb\"");
  CHECK_THAT(job_spec_from_json(bad).status().message(),
             Catch::StartsWith("job field 'optimizer.kind'"));
  // The precision travels to every node (each builds the same mixed graph); a missing field is
  // f32 (a coordinator from before it), anything but f32, f16 or bf16 is refused.
  CHECK(back->precision == DType::kF32);
  job.precision = DType::kBF16;
  auto mixed = job_spec_from_json(job_spec_to_json(job));
  REQUIRE(mixed.has_value());
  CHECK(mixed->precision == DType::kBF16);
  const std::string bf16 = job_spec_to_json(job);
  const size_t at = bf16.find("\"bf16\"");
  REQUIRE(at != std::string::npos);
  for (const char* hostile : {"\"i32\"", "\"f64\"", "\"\"", "\"BF16\"", "16"}) {
    INFO(hostile);
    bad = bf16;
    bad.replace(at, 6, hostile);
    auto r = job_spec_from_json(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.status().message(), Catch::StartsWith("job field 'precision'"));
  }
  bad = text;
  const size_t p = bad.find("\"precision\"");
  REQUIRE(p != std::string::npos);
  bad.erase(p, bad.find(',', p) + 1 - p);  // the field and its comma (a later key follows)
  auto missing = job_spec_from_json(bad);
  REQUIRE(missing.has_value());
  CHECK(missing->precision == DType::kF32);
}

TEST_CASE("a job's batch and optimizer numbers are bounded and finite", "[train][job]") {
  JobSpec job = gpt_tiny();
  job.global_batch = kMaxGlobalBatch;
  CHECK(job.validate().is_ok());
  job.global_batch = kMaxGlobalBatch + 1;
  CHECK(job.validate().code() == Errc::kOutOfRange);
  CHECK(job.validate().message().find("more than the 1048576 samples") != std::string::npos);
  job = gpt_tiny();
  for (float bad : {std::nanf(""), INFINITY, 0.0f, -1.0f}) {
    job.optimizer.lr = bad;
    CHECK(job.validate().message().find("learning rate must be finite and > 0") == 0);
  }
  job = gpt_tiny();
  job.optimizer.momentum = std::nanf("");
  CHECK_FALSE(job.validate().is_ok());
  job = gpt_tiny();
  job.optimizer.weight_decay = std::nanf("");
  CHECK_FALSE(job.validate().is_ok());
  job = gpt_tiny();
  job.optimizer.eps = INFINITY;
  CHECK_FALSE(job.validate().is_ok());
}

TEST_CASE("a run that cannot fit in this machine's memory is refused before allocating",
          "[train][job]") {
  // gpt-1.3b at a batch of 100,000: its largest op alone needs terabytes.
  JobSpec job;
  job.model = *graph::models::find_model("gpt-1.3b");
  job.global_batch = 100000;
  auto single = SingleDeviceJob::create(job);
  REQUIRE_FALSE(single.has_value());
  CHECK(single.status().code() == Errc::kResourceExhausted);
  CHECK(single.status().message().find("this machine has available") != std::string::npos);
  // The same check passes for a run that fits, and its figure is the sum it names: the
  // persistent bytes of gpt-tiny plus its largest op, times the devices.
  auto g = graph::models::zoo_training_graph(gpt_tiny().model, 8, gpt_tiny().optimizer);
  REQUIRE(g.has_value());
  CHECK(check_fits_host_memory(g->graph, 4, "gpt-tiny").is_ok());
  const Status huge = check_fits_host_memory(g->graph, int64_t{1} << 40, "gpt-tiny");
  CHECK(huge.code() == Errc::kResourceExhausted);
}

TEST_CASE("plan_job plans with the micro-batch count asked for, and checks it divides",
          "[train][job]") {
  const JobSpec job = gpt_tiny();
  auto plan = plan_job(job, cpu("cpu:1x4"), {.micro_batches = 2, .schedule = {}});
  REQUIRE(plan.has_value());
  CHECK(plan->model == "gpt-tiny");
  CHECK(plan->global_batch == 8);
  CHECK(plan->micro_batches == 2);
  auto bad = plan_job(job, cpu("cpu:1x4"), {.micro_batches = 3, .schedule = {}});
  REQUIRE_FALSE(bad.has_value());
  CHECK_THAT(bad.status().message(), Catch::Contains("does not split into 3 micro-batches"));
  // A planner given in place of make_plan is the one asked.
  int asked = 0;
  auto counted = plan_job(
      job, cpu("cpu:1x2"), {.micro_batches = 1, .schedule = {}},
      [&](const graph::Graph& g, const mesh::ClusterSpec& c, const planner::PlannerOptions& o) {
        ++asked;
        const planner::AnalyticCostModel cost(c.device);
        return planner::make_plan(g, c, cost, o);
      });
  REQUIRE(counted.has_value());
  CHECK(asked == 1);
}

TEST_CASE("a given plan is checked against the job's model and batch", "[train][job]") {
  const JobSpec job = gpt_tiny();
  auto plan = plan_job(job, cpu("cpu:1x2"), {.micro_batches = 1, .schedule = {}});
  REQUIRE(plan.has_value());
  CHECK(check_plan_for_job(*plan, job, true, "p.json").is_ok());
  JobSpec other = job;
  other.global_batch = 16;
  CHECK(check_plan_for_job(*plan, other, true, "p.json").message() ==
        "the plan is for a global batch of 8, --batch asks for 16");
  CHECK(check_plan_for_job(*plan, other, false, "p.json").is_ok());
  auto moe = graph::models::find_model("moe-tiny");
  REQUIRE(moe.has_value());
  other.model = *moe;
  CHECK(check_plan_for_job(*plan, other, false, "p.json").message() ==
        "p.json is a plan for model 'gpt-tiny', not 'moe-tiny'");
}

TEST_CASE("a local job on threads trains like one device, and resumes from its checkpoint",
          "[train][job]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_local_job_ckpt";
  fs::remove_all(dir);
  const JobSpec job = gpt_tiny(/*seed=*/13);
  auto single = SingleDeviceJob::create(job);
  REQUIRE(single.has_value());
  const std::vector<double> want = run(**single, 1, 5);
  auto plan = plan_job(job, cpu("cpu:2x2"), {.micro_batches = 2, .schedule = {}});
  REQUIRE(plan.has_value());
  auto first = LocalJob::create(job, *plan, {});
  REQUIRE(first.has_value());
  CHECK((*first)->first_step() == 1);
  CHECK((*first)->fingerprint() != 0);
  std::vector<double> got = run(**first, 1, 3, dir.string());
  // Resumed under a data-parallel plan on another cluster.
  auto dp = plan_job(job, cpu("cpu:1x2"), {.micro_batches = 1, .schedule = {}});
  REQUIRE(dp.has_value());
  LocalJobOptions lo;
  lo.load_dir = dir.string();
  auto second = LocalJob::create(job, *dp, lo);
  REQUIRE(second.has_value());
  CHECK((*second)->first_step() == 4);
  const std::vector<double> rest = run(**second, 4, 2);
  got.insert(got.end(), rest.begin(), rest.end());
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::abs(got[i] - want[i]) <= 1e-4 * want[i]);
  }
  fs::remove_all(dir);
}

TEST_CASE("a local job with many micro-batches runs its compact program like one device",
          "[train][job]") {
  // 16 micro-batches of 1: the job holds each device's tasks as templates (lower_compact) and
  // its interpreters instantiate them per micro-batch.
  JobSpec job = gpt_tiny(/*seed=*/5);
  job.global_batch = 16;
  auto single = SingleDeviceJob::create(job);
  REQUIRE(single.has_value());
  const std::vector<double> want = run(**single, 1, 2);
  auto plan = plan_job(job, cpu("cpu:1x4"), {.micro_batches = 16, .schedule = {}});
  REQUIRE(plan.has_value());
  auto local = LocalJob::create(job, *plan, {});
  REQUIRE(local.has_value());
  const std::vector<double> got = run(**local, 1, 2);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::abs(got[i] - want[i]) <= 1e-4 * want[i]);
  }
  // The instructions it reports are those lower() gives for the whole step.
  auto flat = runtime::lower(*plan, (*local)->graph());
  REQUIRE(flat.has_value());
  int64_t count = 0;
  for (const runtime::DeviceProgram& d : flat->devices) {
    count += static_cast<int64_t>(d.instructions.size());
  }
  CHECK((*local)->instructions() == count);
  CHECK(count > 0);
}

TEST_CASE("a local job refuses a checkpoint of another model before building devices",
          "[train][job]") {
  const fs::path dir = fs::temp_directory_path() / "meshpipe_local_job_other_model";
  fs::remove_all(dir);
  auto moe = graph::models::find_model("moe-tiny");
  REQUIRE(moe.has_value());
  JobSpec other = gpt_tiny();
  other.model = *moe;
  auto single = SingleDeviceJob::create(other);
  REQUIRE(single.has_value());
  SessionOptions so;
  so.steps = 1;
  so.save_dir = dir.string();
  so.model = "moe-tiny";
  REQUIRE(run_session(**single, so).has_value());
  const JobSpec job = gpt_tiny();
  auto plan = plan_job(job, cpu("cpu:1x2"), {.micro_batches = 1, .schedule = {}});
  REQUIRE(plan.has_value());
  LocalJobOptions lo;
  lo.load_dir = dir.string();
  auto local = LocalJob::create(job, *plan, lo);
  REQUIRE_FALSE(local.has_value());
  CHECK_THAT(local.status().message(), Catch::Contains("is of model 'moe-tiny', not 'gpt-tiny'"));
  fs::remove_all(dir);
}

TEST_CASE("a GPU run needs a GPU per device of a mesh; single-device stages may share",
          "[train][job]") {
  const auto inventory = [](int n) {
    kernels::DeviceInventory inv;
    inv.cuda_built = true;
    inv.cuda_devices = n;
    inv.gpus.resize(static_cast<size_t>(n));
    inv.summary = "test";
    return inv;
  };
  planner::Plan mesh;  // one stage of 2 x 2 devices
  mesh.stages.resize(1);
  mesh.stages[0].devices = {0, 1, 2, 3};
  CHECK(check_plan_gpus(mesh, inventory(4)).is_ok());
  CHECK(check_plan_gpus(mesh, inventory(8)).is_ok());
  const Status few = check_plan_gpus(mesh, inventory(2));
  CHECK(few.code() == Errc::kUnavailable);
  CHECK(few.message() ==
        "--device cuda: the plan runs 4 devices in meshes, one per GPU, and this machine has 2 "
        "(test); plan for at most 2 devices or use --device cpu");
  planner::Plan pipeline;  // two stages of one device: they may share one GPU
  pipeline.stages.resize(2);
  pipeline.stages[0].devices = {0};
  pipeline.stages[1].devices = {1};
  CHECK(check_plan_gpus(pipeline, inventory(1)).is_ok());
  CHECK(check_plan_gpus(pipeline, inventory(0)).code() == Errc::kUnavailable);
}

}  // namespace
}  // namespace meshpipe::train

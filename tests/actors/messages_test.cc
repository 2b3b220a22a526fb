// The protocol's JSON payloads (job, job info, step reports) and its error bridge: round trips,
// and malformed payloads answered with errors naming the field, never exceptions.
#include "actors/internal/messages.h"

#include <catch2/catch.hpp>
#include <cmath>

#include "actors/internal/protocol.h"
#include "mesh/cluster.h"

namespace meshpipe::actors::internal {
namespace {

JobMessage gpt_tiny_job() {
  JobMessage m;
  auto spec = graph::models::find_model("gpt-tiny");
  REQUIRE(spec.has_value());
  m.spec.model = *spec;
  m.spec.global_batch = 8;
  auto cluster = mesh::cluster_preset("cpu:1x2");
  REQUIRE(cluster.has_value());
  auto plan = train::plan_job(m.spec, *cluster, {.micro_batches = 2, .schedule = {}});
  REQUIRE(plan.has_value());
  m.plan = *plan;
  m.timeout = std::chrono::milliseconds(1234);
  m.load_dir = "ck";
  return m;
}

TEST_CASE("a job message survives its JSON form", "[actors][messages]") {
  const JobMessage m = gpt_tiny_job();
  auto back = job_message_from_json(job_message_to_json(m));
  INFO(back.status().to_string());
  REQUIRE(back.has_value());
  CHECK(back->plan == m.plan);
  CHECK(back->spec.model.name == "gpt-tiny");
  CHECK(back->timeout.count() == 1234);
  CHECK(back->load_dir == "ck");
  CHECK_FALSE(back->time_kernels);
  JobMessage timed = m;
  timed.time_kernels = true;
  auto timed_back = job_message_from_json(job_message_to_json(timed));
  REQUIRE(timed_back.has_value());
  CHECK(timed_back->time_kernels);
  CHECK(back->collectives == runtime::CollectiveBackend::kUcx);  // the default between nodes
  JobMessage gloo = m;
  gloo.collectives = runtime::CollectiveBackend::kGloo;
  auto gloo_back = job_message_from_json(job_message_to_json(gloo));
  REQUIRE(gloo_back.has_value());
  CHECK(gloo_back->collectives == runtime::CollectiveBackend::kGloo);
}

TEST_CASE("a malformed job message is an error naming the field", "[actors][messages]") {
  CHECK_THAT(job_message_from_json("not json").status().message(),
             Catch::StartsWith("the job is malformed"));
  CHECK_THAT(job_message_from_json("[1, 2]").status().message(), Catch::Contains("not an object"));
  CHECK(job_message_from_json(R"({"plan": "", "timeout_ms": 1, "load": ""})").status().message() ==
        "job field 'spec' is missing");
  Json j = Json::parse(job_message_to_json(gpt_tiny_job()));
  j["timeout_ms"] = "soon";
  CHECK(job_message_from_json(j.dump()).status().message() ==
        "job field 'timeout_ms' must be an integer");
  j["timeout_ms"] = 0;
  CHECK(job_message_from_json(j.dump()).status().message() ==
        "job field 'timeout_ms' must be positive");
  j["timeout_ms"] = 10;
  j["plan"] = "{}";
  CHECK_THAT(job_message_from_json(j.dump()).status().message(),
             Catch::StartsWith("plan field 'version' is missing"));
  j = Json::parse(job_message_to_json(gpt_tiny_job()));
  j["time_kernels"] = "yes";
  CHECK_THAT(job_message_from_json(j.dump()).status().message(),
             Catch::StartsWith("job field 'time_kernels' must be"));
  j = Json::parse(job_message_to_json(gpt_tiny_job()));
  j["collectives"] = "in-process";
  CHECK(job_message_from_json(j.dump()).status().message() ==
        "job field 'collectives' must be \"ucx\", \"gloo\" or \"nccl\"");
  j["collectives"] = 3;
  CHECK_THAT(job_message_from_json(j.dump()).status().message(),
             Catch::StartsWith("job field 'collectives' must be"));
  j = Json::parse(job_message_to_json(gpt_tiny_job()));
  j["colour"] = "red";
  CHECK(job_message_from_json(j.dump()).status().message() ==
        "job field 'colour' is not a known field");
}

TEST_CASE("job info and step reports survive their JSON forms", "[actors][messages]") {
  JobInfo info;
  info.program = "00ff00ff00ff00ff";
  info.devices = 4;
  info.instructions = 1836;
  info.first_step = 7;
  info.schedule = planner::Schedule::kGPipe;
  auto back = job_info_from_json(Json::parse(job_info_to_json(info)), "");
  REQUIRE(back.has_value());
  CHECK(back->program == info.program);
  CHECK(back->devices == 4);
  CHECK(back->instructions == 1836);
  CHECK(back->first_step == 7);
  CHECK(back->schedule == planner::Schedule::kGPipe);

  // Two nodes: the second holds the loss device; peaks merge, seconds are the slowest node's.
  train::StepOutcome a;
  a.seconds = 0.5;
  a.peak_bytes = {{0, 100}, {1, 200}};
  train::StepOutcome b;
  b.losses = {2.0, 4.0};
  b.seconds = 0.25;
  b.peak_bytes = {{2, 300}};
  auto merged =
      merge_step_reports("[" + step_report_to_json(a) + "," + step_report_to_json(b) + "]");
  REQUIRE(merged.has_value());
  CHECK(merged->loss == 3.0);
  CHECK(merged->losses == std::vector<double>{2.0, 4.0});
  CHECK(merged->seconds == 0.5);
  CHECK(merged->peak_bytes == std::map<int32_t, int64_t>{{0, 100}, {1, 200}, {2, 300}});
  CHECK(merged->other_seconds.empty());

  // Time breakdowns (--breakdown) of the nodes add up, the kernels under "kernel KIND".
  a.kernel_seconds = {{OpKind::kDot, 0.25}};
  a.other_seconds = {{"wait for receives", 0.125}};
  b.kernel_seconds = {{OpKind::kDot, 0.5}};
  b.other_seconds = {{"collective all-reduce: communicator", 0.0625}};
  merged = merge_step_reports("[" + step_report_to_json(a) + "," + step_report_to_json(b) + "]");
  REQUIRE(merged.has_value());
  CHECK(merged->other_seconds ==
        std::map<std::string, double>{{"kernel dot", 0.75},
                                      {"wait for receives", 0.125},
                                      {"collective all-reduce: communicator", 0.0625}});
  CHECK(merge_step_reports(
            R"([{"losses": [1.0], "seconds": 1, "peaks": [], "breakdown": {"x": -1}}])")
            .status()
            .message() == "step report field '[0].breakdown' must hold non-negative seconds");
  CHECK(merge_step_reports(R"([{"losses": [1.0], "seconds": 1, "peaks": [], "breakdown": [1]}])")
            .status()
            .message() ==
        "step report field '[0].breakdown' must be an object of at most 512 numbers");
  // Names a node sends are bounded (they are printed by the driver).
  const std::string long_name(300, 'x');
  CHECK(merge_step_reports(R"([{"losses": [1.0], "seconds": 1, "peaks": [], "breakdown": {")" +
                           long_name + R"(": 1}}])")
            .status()
            .message() == "step report field '[0].breakdown' names must have 1 to 256 bytes");
  CHECK(
      merge_step_reports(R"([{"losses": [1.0], "seconds": 1, "peaks": [], "breakdown": {"": 1}}])")
          .status()
          .message() == "step report field '[0].breakdown' names must have 1 to 256 bytes");
}

TEST_CASE("malformed step reports are errors naming the field", "[actors][messages]") {
  CHECK_THAT(merge_step_reports("{").status().message(), Catch::Contains("malformed"));
  CHECK_THAT(merge_step_reports("{}").status().message(), Catch::Contains("not a list"));
  CHECK(merge_step_reports(R"([{"losses": [1.0], "seconds": 1}])").status().message() ==
        "step report field '[0].peaks' is missing");
  CHECK(merge_step_reports(R"([{"losses": [1.0], "seconds": 1, "peaks": [[0]]}])")
            .status()
            .message() == "step report field '[0].peaks' must hold [device, bytes] pairs");
  CHECK(merge_step_reports(R"([{"losses": [], "seconds": 1, "peaks": []}])").status().message() ==
        "no node reported the loss");
  CHECK(
      merge_step_reports(R"([{"losses": ["x"], "seconds": 1, "peaks": []}])").status().message() ==
      "step report field '[0].losses' must hold numbers (or \"nan\", \"inf\", \"-inf\")");
}

TEST_CASE("a diverged loss crosses the step report as the non-finite value it is",
          "[actors][messages]") {
  // JSON has no NaN: the report must not turn a diverged loss into a malformed message.
  train::StepOutcome o;
  o.losses = {std::nan(""), INFINITY, -INFINITY, 1.5};
  auto back = merge_step_reports("[" + step_report_to_json(o) + "]");
  REQUIRE(back.has_value());
  REQUIRE(back->losses.size() == 4);
  CHECK(std::isnan(back->losses[0]));
  CHECK(back->losses[1] == INFINITY);
  CHECK(back->losses[2] == -INFINITY);
  CHECK(back->losses[3] == 1.5);
  CHECK_FALSE(std::isfinite(back->loss));
}

TEST_CASE("clipping's gradient norm crosses the step report, finite or not", "[actors][messages]") {
  train::StepOutcome o;
  o.losses = {2.0};
  auto off = merge_step_reports("[" + step_report_to_json(o) + "]");
  REQUIRE(off.has_value());
  CHECK(off->grad_norm == -1.0);  // clipping off: no norm
  o.grad_norm = 0.8125;
  auto on = merge_step_reports("[" + step_report_to_json(o) + "]");
  REQUIRE(on.has_value());
  CHECK(on->grad_norm == 0.8125);
  for (double bad : {static_cast<double>(INFINITY), std::nan("")}) {
    o.grad_norm = bad;  // an overflowed step's: null in JSON, not finite again
    auto back = merge_step_reports("[" + step_report_to_json(o) + "]");
    REQUIRE(back.has_value());
    CHECK(back->grad_norm == INFINITY);
  }
  CHECK_THAT(
      merge_step_reports(R"([{"losses": [1.0], "seconds": 1, "peaks": [], "grad_norm": -3}])")
          .status()
          .message(),
      Catch::Contains("grad_norm"));
}

TEST_CASE("a Status crosses caf::error and back unchanged", "[actors][protocol]") {
  caf::actor_system_config cfg;
  configure(cfg, /*scheduler_threads=*/1, /*network=*/false);
  caf::actor_system sys{cfg};
  const Status s = make_error(Errc::kResourceExhausted, "device 3: out of memory");
  const Status back = from_caf(sys, to_caf(s));
  CHECK(back.code() == Errc::kResourceExhausted);
  CHECK(back.message() == "device 3: out of memory");
  CHECK(from_caf(sys, caf::make_error(caf::sec::request_timeout)).code() == Errc::kTimeout);
  CHECK(from_caf(sys, caf::make_error(caf::sec::remote_linking_failed)).code() ==
        Errc::kUnavailable);
}

TEST_CASE("ask returns the answer, the handler's error, or a timeout", "[actors][protocol]") {
  caf::actor_system_config cfg;
  configure(cfg, /*scheduler_threads=*/2, /*network=*/false);
  caf::actor_system sys{cfg};
  auto echo = sys.spawn([]() -> caf::behavior {
    return {[](step_atom, int64_t n) -> caf::result<std::string> {
              if (n < 0) return to_caf(make_error(Errc::kInvalidArgument, "negative step {}", n));
              return std::to_string(n * 2);
            },
            [](save_atom, const std::string&) {
              // never answers: the caller's request times out
              return caf::delegated<std::string>();
            }};
  });
  const auto t = std::chrono::milliseconds(2000);
  auto ok = ask_text(sys, echo, t, caf::make_message(step_atom::value, int64_t{21}));
  REQUIRE(ok.has_value());
  CHECK(*ok == "42");
  auto bad = ask_text(sys, echo, t, caf::make_message(step_atom::value, int64_t{-1}));
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().code() == Errc::kInvalidArgument);
  CHECK(bad.status().message() == "negative step -1");
  auto late = ask_text(sys, echo, std::chrono::milliseconds(100),
                       caf::make_message(save_atom::value, std::string("d")));
  REQUIRE_FALSE(late.has_value());
  CHECK(late.status().code() == Errc::kTimeout);
  caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
}

}  // namespace
}  // namespace meshpipe::actors::internal

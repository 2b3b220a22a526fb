// The embedded training service (issue 18, item 4; actors/service.h): two jobs at once on
// disjoint devices of the pool train to the losses each has alone (and a plan over two devices
// to the single device's), a job that needs devices in use waits for them, events come in
// order with a terminal event last, cancel stops a running job after its step (saving a
// checkpoint) and a queued one at once, the program's own graph builder trains on threads, and
// bad jobs are refused naming why.
#include "actors/service.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>

#include "graph/builder.h"
#include "graph/models/zoo.h"

namespace meshpipe::actors {
namespace {

struct Recorded {
  int64_t seq = 0;
  JobEvent event;
};

// Every event, in the order the service delivered them.
struct Recorder {
  std::mutex mu;
  std::vector<Recorded> events;
  std::function<void(const JobEvent&)> hook;  // called first (may cancel)
  std::function<void(const JobEvent&)> callback() {
    return [this](const JobEvent& e) {
      if (hook) hook(e);
      const std::lock_guard<std::mutex> lock(mu);
      events.push_back({static_cast<int64_t>(events.size()), e});
    };
  }
  std::vector<JobEvent> of(int64_t job) {
    const std::lock_guard<std::mutex> lock(mu);
    std::vector<JobEvent> out;
    for (const Recorded& r : events) {
      if (r.event.job == job) out.push_back(r.event);
    }
    return out;
  }
  int64_t seq_of(int64_t job, JobEventKind kind) {
    const std::lock_guard<std::mutex> lock(mu);
    for (const Recorded& r : events) {
      if (r.event.job == job && r.event.kind == kind) return r.seq;
    }
    return -1;
  }
};

ServiceJob zoo_job(const std::string& model, const std::string& cluster, int64_t steps) {
  ServiceJob j;
  auto spec = graph::models::find_model(model);
  REQUIRE(spec.has_value());
  j.spec.model = *spec;
  j.spec.optimizer.lr = 0.003f;
  j.cluster = cluster;
  j.steps = steps;
  j.request.micro_batches = 2;
  return j;
}

// The events of a job that ran to the end: queued, planned, one step event per step, finished.
void check_complete(const std::vector<JobEvent>& ev, int64_t steps) {
  REQUIRE(ev.size() == static_cast<size_t>(steps) + 3);
  CHECK(ev.front().kind == JobEventKind::kQueued);
  CHECK(ev[1].kind == JobEventKind::kPlanned);
  for (int64_t s = 1; s <= steps; ++s) {
    CHECK(ev[static_cast<size_t>(s) + 1].kind == JobEventKind::kStep);
    CHECK(ev[static_cast<size_t>(s) + 1].step == s);
  }
  CHECK(ev.back().kind == JobEventKind::kFinished);
  CHECK(ev.back().step == steps);
}

std::vector<double> step_losses(const std::vector<JobEvent>& ev) {
  std::vector<double> out;
  for (const JobEvent& e : ev) {
    if (e.kind == JobEventKind::kStep) out.push_back(e.loss);
  }
  return out;
}

TEST_CASE("two jobs at once on disjoint devices train as each does alone", "[service]") {
  Recorder rec;
  ServiceOptions o;
  o.devices = 4;
  o.on_event = rec.callback();
  auto svc = TrainingService::create(o);
  REQUIRE(svc.has_value());
  auto a = (*svc)->submit(zoo_job("gpt-tiny", "cpu:1x2", 4));
  auto b = (*svc)->submit(zoo_job("mlp-tiny", "cpu:1x2", 4));
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  auto ra = (*svc)->wait(*a);
  auto rb = (*svc)->wait(*b);
  REQUIRE(ra.has_value());
  REQUIRE(rb.has_value());
  INFO(ra->status.to_string() << " / " << rb->status.to_string());
  REQUIRE(ra->kind == JobEventKind::kFinished);
  REQUIRE(rb->kind == JobEventKind::kFinished);
  const auto ea = rec.of(*a);
  const auto eb = rec.of(*b);
  check_complete(ea, 4);
  check_complete(eb, 4);
  CHECK(ea[1].name == "job 1");
  // Disjoint devices, two each.
  REQUIRE(ea[1].devices.size() == 2);
  REQUIRE(eb[1].devices.size() == 2);
  std::set<int32_t> used(ea[1].devices.begin(), ea[1].devices.end());
  for (int32_t d : eb[1].devices) CHECK(used.insert(d).second);
  CHECK(step_losses(ea) == ra->losses);
  CHECK((*svc)->free_devices() == 4);

  // Each alone (a pool of 2: one after the other) gives the same losses, and so does the GPT
  // on one device.
  Recorder solo;
  ServiceOptions o2;
  o2.devices = 2;
  o2.on_event = solo.callback();
  auto one = TrainingService::create(o2);
  REQUIRE(one.has_value());
  auto a2 = (*one)->submit(zoo_job("gpt-tiny", "cpu:1x2", 4));
  auto a1 = (*one)->submit(zoo_job("gpt-tiny", "cpu:1x1", 4));
  REQUIRE(a2.has_value());
  REQUIRE(a1.has_value());
  auto r2 = (*one)->wait(*a2);
  auto r1 = (*one)->wait(*a1);
  REQUIRE(r2.has_value());
  REQUIRE(r1.has_value());
  // (Within float rounding rather than bit for bit: the planner's ILP has a wall-clock limit,
  // so a loaded machine may give the two runs different, equally valid, shardings.)
  REQUIRE(r2->losses.size() == 4);
  REQUIRE(r1->losses.size() == 4);
  for (size_t k = 0; k < 4; ++k) {
    CHECK(r2->losses[k] == Approx(ra->losses[k]).epsilon(1e-5));
    CHECK(r1->losses[k] == Approx(ra->losses[k]).epsilon(1e-5));
  }
  CHECK(ra->losses.back() < ra->losses.front());
}

TEST_CASE("a job waits until the devices it needs are free", "[service]") {
  Recorder rec;
  ServiceOptions o;
  o.devices = 2;
  o.on_event = rec.callback();
  auto svc = TrainingService::create(o);
  REQUIRE(svc.has_value());
  auto a = (*svc)->submit(zoo_job("gpt-tiny", "cpu:1x2", 3));
  auto b = (*svc)->submit(zoo_job("gpt-tiny", "cpu:1x2", 3));
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  REQUIRE((*svc)->wait(*b).has_value());
  REQUIRE((*svc)->wait(*a).has_value());
  // The first in line runs first; the second is planned only after the first has finished.
  CHECK(rec.seq_of(*a, JobEventKind::kFinished) >= 0);
  CHECK(rec.seq_of(*b, JobEventKind::kPlanned) > rec.seq_of(*a, JobEventKind::kFinished));
}

TEST_CASE("cancel stops a running job after its step and a queued one at once", "[service]") {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("meshpipe_service_cancel_" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  Recorder rec;
  ServiceOptions o;
  o.devices = 2;
  o.on_event = rec.callback();
  auto svc = TrainingService::create(o);
  REQUIRE(svc.has_value());
  TrainingService* s = svc->get();
  int64_t running = 0;
  // From the callback, as a program would: the running job after its second step.
  rec.hook = [&](const JobEvent& e) {
    if (e.job == running && e.kind == JobEventKind::kStep && e.step == 2) {
      CHECK(s->cancel(e.job).is_ok());
    }
  };
  ServiceJob long_job = zoo_job("gpt-tiny", "cpu:1x2", 100000);
  long_job.save_dir = dir;
  long_job.name = "long";
  // The queued job is submitted first in line after the long one, and cancelled while waiting.
  auto a = s->submit(long_job);
  REQUIRE(a.has_value());
  running = *a;
  auto b = s->submit(zoo_job("mlp-tiny", "cpu:1x2", 3));
  REQUIRE(b.has_value());
  REQUIRE(s->cancel(*b).is_ok());
  auto rb = s->wait(*b);
  auto ra = s->wait(*a);
  REQUIRE(ra.has_value());
  REQUIRE(rb.has_value());
  CHECK(rb->kind == JobEventKind::kCancelled);
  CHECK(rec.seq_of(*b, JobEventKind::kPlanned) == -1);
  CHECK(ra->kind == JobEventKind::kCancelled);
  INFO(ra->status.to_string());
  CHECK(ra->status.code() == Errc::kCancelled);
  CHECK(ra->last_step >= 2);
  CHECK(ra->last_step < 100);
  const auto ea = rec.of(*a);
  REQUIRE(!ea.empty());
  CHECK(ea.back().kind == JobEventKind::kCancelled);
  CHECK(ea.back().name == "long");
  CHECK(ea.back().text.find("checkpoint saved to") != std::string::npos);
  CHECK(rec.seq_of(*a, JobEventKind::kCheckpoint) >= 0);
  CHECK(std::filesystem::exists(std::filesystem::path(dir) / "manifest.json"));
  CHECK(!s->cancel(12345).is_ok());
  std::filesystem::remove_all(dir);
}

// A two-layer MLP written with the builder, at any batch: the program's own graph.
graph::models::ModelSpec program_model() {
  graph::models::ModelSpec m;
  m.name = "program-mlp";
  m.family = "program";
  m.default_batch = 8;
  graph::models::ExternalConfig c;
  c.parameters = 16 * 32 + 32 + 32 * 4 + 4;
  c.build = [](int64_t batch) -> Expected<graph::ForwardGraph> {
    graph::Builder b;
    ValueId x = b.input("features", Shape{batch, 16}, DType::kF32);
    ValueId labels = b.input("labels", Shape{batch}, DType::kI32);
    b.set_layer(0);
    ValueId w1 = b.parameter("w1", Shape{16, 32}, graph::InitSpec::normal(0.3f));
    ValueId b1 = b.parameter("b1", Shape{32}, graph::InitSpec::zeros());
    ValueId h = b.relu(b.linear(x, w1, b1, "fc1"));
    b.set_layer(1);
    ValueId w2 = b.parameter("w2", Shape{32, 4}, graph::InitSpec::normal(0.1f));
    ValueId b2 = b.parameter("b2", Shape{4}, graph::InitSpec::zeros());
    ValueId loss = b.cross_entropy(b.linear(h, w2, b2, "fc2"), labels, "loss");
    return std::move(b).finish(loss);
  };
  m.config = std::move(c);
  return m;
}

TEST_CASE("the program's own graph trains on threads; bad jobs are refused", "[service]") {
  Recorder rec;
  ServiceOptions o;
  o.devices = 4;
  o.on_event = rec.callback();
  auto svc = TrainingService::create(o);
  REQUIRE(svc.has_value());
  ServiceJob mine;
  mine.spec.model = program_model();
  mine.spec.optimizer.lr = 0.01f;
  mine.cluster = "cpu:1x2";
  mine.steps = 6;
  // Actors would rebuild the model from its description, which a builder has not.
  mine.runner = JobRunner::kActors;
  auto refused = (*svc)->submit(mine);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.status().message().find("JobRunner::kThreads") != std::string::npos);
  mine.runner = JobRunner::kAuto;
  auto id = (*svc)->submit(mine);
  REQUIRE(id.has_value());
  auto r = (*svc)->wait(*id);
  REQUIRE(r.has_value());
  INFO(r->status.to_string());
  REQUIRE(r->kind == JobEventKind::kFinished);
  check_complete(rec.of(*id), 6);
  CHECK(r->losses.back() < r->losses.front());

  // More devices than the pool, a cluster that does not exist, no steps: refused at submit.
  auto big = (*svc)->submit(zoo_job("gpt-tiny", "cpu:2x4", 2));
  REQUIRE_FALSE(big.has_value());
  CHECK(big.status().code() == Errc::kResourceExhausted);
  CHECK(big.status().message().find("needs 8 devices; the service has 4") != std::string::npos);
  CHECK_FALSE((*svc)->submit(zoo_job("gpt-tiny", "no-such-cluster", 2)).has_value());
  CHECK_FALSE((*svc)->submit(zoo_job("gpt-tiny", "cpu:1x2", 0)).has_value());
  // A job that fails while it runs (its data does not exist) ends with a failed event.
  ServiceJob bad = zoo_job("gpt-tiny", "cpu:1x2", 2);
  bad.spec.data_path = "/nonexistent/meshpipe-service-data.bin";
  auto f = (*svc)->submit(bad);
  REQUIRE(f.has_value());
  auto rf = (*svc)->wait(*f);
  REQUIRE(rf.has_value());
  CHECK(rf->kind == JobEventKind::kFailed);
  const auto ef = rec.of(*f);
  REQUIRE(!ef.empty());
  CHECK(ef.back().kind == JobEventKind::kFailed);
  CHECK(ef.back().text.find("meshpipe-service-data.bin") != std::string::npos);
  CHECK((*svc)->free_devices() == 4);
  // Options that make no sense.
  ServiceOptions none;
  none.devices = 0;
  CHECK_FALSE(TrainingService::create(none).has_value());
}

}  // namespace
}  // namespace meshpipe::actors

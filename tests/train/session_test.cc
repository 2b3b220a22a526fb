// The session loop against a scripted StepRunner: which steps run, when checkpoints are saved,
// how peaks and reports are kept, how failures stop it naming the step, how a stop request
// ends it with a checkpoint, and that a save directory is checked before the first step.
#include "train/session.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace meshpipe::train {
namespace {

namespace fs = std::filesystem;

// The save directory the scripted runner expects: absent, under the temp directory.
std::string save_dir() {
  const fs::path p = fs::temp_directory_path() / "meshpipe_session_test_ck";
  fs::remove_all(p);
  return p.string();
}

// Step n reports loss 10 / n and device d's peak 100 * n + d; records what it was asked.
class ScriptedRunner final : public StepRunner {
 public:
  int64_t fail_at = -1;
  int64_t nan_at = -1;
  int64_t stop_at = -1;  // run_step sets `stop` during this step
  std::atomic<bool> stop{false};
  std::vector<int64_t> steps;
  std::vector<int64_t> saved;
  Status save_status;

  Expected<StepOutcome> run_step(int64_t step) override {
    steps.push_back(step);
    if (step == stop_at) stop = true;
    if (step == fail_at) return make_error(Errc::kUnavailable, "device 1 stopped");
    StepOutcome o;
    o.loss = step == nan_at ? std::numeric_limits<double>::quiet_NaN()
                            : 10.0 / static_cast<double>(step);
    o.losses = {o.loss};
    o.seconds = 0.5;
    for (int32_t d = 0; d < 2; ++d) o.peak_bytes[d] = 100 * step + d;
    return o;
  }
  Status save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) override {
    CHECK(dir == save_dir());
    saved.push_back(info.step);
    return save_status;
  }
};

TEST_CASE("a session runs its steps in order from the first step", "[train][session]") {
  ScriptedRunner r;
  SessionOptions o;
  o.first_step = 4;
  o.steps = 3;
  o.samples_per_step = 8;
  o.tokens_per_step = 128;
  std::vector<StepReport> reports;
  o.on_step = [&](const StepReport& rep) { reports.push_back(rep); };
  auto s = run_session(r, o);
  REQUIRE(s.has_value());
  CHECK(r.steps == std::vector<int64_t>{4, 5, 6});
  CHECK(s->losses == std::vector<double>{10.0 / 4, 10.0 / 5, 10.0 / 6});
  CHECK(s->first_step == 4);
  CHECK(s->last_step == 6);
  CHECK(s->total_time.value() == Approx(1.5));
  // Peaks: the largest of any step, per device.
  CHECK(s->peak_bytes == std::map<int32_t, int64_t>{{0, 600}, {1, 601}});
  REQUIRE(reports.size() == 3);
  CHECK(reports[0].step == 4);
  CHECK(reports[0].total_steps == 6);
  CHECK(reports[0].samples_per_second == Approx(16.0));  // 8 samples in 0.5 s
  CHECK(reports[0].tokens_per_second == Approx(256.0));
  CHECK(reports[2].peak.value() == 601);
  CHECK(r.saved.empty());
}

TEST_CASE("checkpoints are saved every N steps and after the last", "[train][session]") {
  ScriptedRunner r;
  SessionOptions o;
  o.steps = 7;
  o.save_dir = save_dir();
  o.save_every = 3;
  REQUIRE(run_session(r, o).has_value());
  CHECK(r.saved == std::vector<int64_t>{3, 6, 7});
}

TEST_CASE("a failed step, a non-finite loss or a failed save stop the session naming the step",
          "[train][session]") {
  SessionOptions o;
  o.steps = 5;
  o.lr = 0.5f;
  {
    ScriptedRunner r;
    r.fail_at = 3;
    auto s = run_session(r, o);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().code() == Errc::kUnavailable);
    CHECK(s.status().message() == "step 3: device 1 stopped");
    CHECK(r.steps == std::vector<int64_t>{1, 2, 3});
  }
  {
    ScriptedRunner r;
    r.nan_at = 2;
    auto s = run_session(r, o);
    REQUIRE_FALSE(s.has_value());
    CHECK_THAT(s.status().message(),
               Catch::StartsWith("step 2: the loss is nan; lower the learning rate (now 0.5)"));
  }
  {
    ScriptedRunner r;
    r.save_status = make_error(Errc::kIo, "disk full");
    SessionOptions so = o;
    so.save_dir = save_dir();
    so.save_every = 2;
    auto s = run_session(r, so);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().message() == "saving after step 2: disk full");
  }
}

TEST_CASE("bad session options are rejected", "[train][session]") {
  ScriptedRunner r;
  SessionOptions o;
  o.steps = 0;
  CHECK_FALSE(run_session(r, o).has_value());
  o.steps = 1;
  o.first_step = 0;
  CHECK_FALSE(run_session(r, o).has_value());
  o.first_step = 1;
  o.save_every = -1;
  CHECK_FALSE(run_session(r, o).has_value());
  o.save_every = 2;
  auto s = run_session(r, o);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().code() == Errc::kInvalidArgument);
  CHECK(s.status().message() == "save_every needs a save directory");
  CHECK(r.steps.empty());
}

TEST_CASE("a save directory that cannot take a checkpoint is refused before the first step",
          "[train][session]") {
  const fs::path file = fs::temp_directory_path() / "meshpipe_session_test_notes.txt";
  std::ofstream(file) << "notes";
  ScriptedRunner r;
  SessionOptions o;
  o.steps = 3;
  o.save_dir = file.string();
  auto s = run_session(r, o);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().code() == Errc::kInvalidArgument);
  CHECK(s.status().message() ==
        file.string() + " is a file, not a checkpoint directory; not overwritten");
  CHECK(r.steps.empty());
  CHECK(r.saved.empty());
  fs::remove(file);
  o.save_dir = "/sys/meshpipe_session_test_ck";  // not writable, even by root
  s = run_session(r, o);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().code() == Errc::kIo);
  CHECK(r.steps.empty());
}

TEST_CASE("a stop request ends the session after the step under way, saving a checkpoint",
          "[train][session]") {
  struct Case {
    const char* name;
    int64_t stop_at;  // 0: set before the session starts
    bool save;
    int64_t save_every;
    std::vector<int64_t> steps;
    std::vector<int64_t> saved;
    std::string want;  // DIR stands for the save directory
  };
  const std::vector<Case> cases = {
      {"mid-run with a save directory",
       3,
       true,
       0,
       {1, 2, 3},
       {3},
       "interrupted after step 3; checkpoint saved to DIR"},
      {"on a step that was saved anyway (saved once)",
       4,
       true,
       2,
       {1, 2, 3, 4},
       {2, 4},
       "interrupted after step 4; checkpoint saved to DIR"},
      {"mid-run without a save directory",
       3,
       false,
       0,
       {1, 2, 3},
       {},
       "interrupted after step 3; nothing saved (no --save)"},
      {"during the last step",
       6,
       true,
       0,
       {1, 2, 3, 4, 5, 6},
       {6},
       "interrupted after step 6; checkpoint saved to DIR"},
      {"before the first step",
       0,
       true,
       0,
       {},
       {},
       "interrupted before step 1; nothing saved (no step finished)"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    ScriptedRunner r;
    r.stop_at = c.stop_at;
    r.stop = c.stop_at == 0;
    SessionOptions o;
    o.steps = 6;
    o.save_dir = c.save ? save_dir() : "";
    o.save_every = c.save_every;
    o.stop = &r.stop;
    auto s = run_session(r, o);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().code() == Errc::kCancelled);
    std::string want = c.want;
    if (want.find("DIR") != std::string::npos) want.replace(want.find("DIR"), 3, save_dir());
    CHECK(s.status().message() == want);
    CHECK(r.steps == c.steps);
    CHECK(r.saved == c.saved);
  }
  // A save that fails when stopping is the error, named.
  ScriptedRunner r;
  r.stop_at = 2;
  r.save_status = make_error(Errc::kIo, "disk full");
  SessionOptions o;
  o.steps = 6;
  o.save_dir = save_dir();
  o.stop = &r.stop;
  auto s = run_session(r, o);
  REQUIRE_FALSE(s.has_value());
  CHECK(s.status().code() == Errc::kIo);
  CHECK(s.status().message() == "interrupted after step 2; saving a checkpoint: disk full");
  // An unset flag changes nothing.
  ScriptedRunner quiet;
  o.stop = &quiet.stop;
  o.save_dir.clear();
  REQUIRE(run_session(quiet, o).has_value());
  CHECK(quiet.steps.size() == 6);
}

}  // namespace
}  // namespace meshpipe::train

// End-to-end single-device training: the loss of every tiny zoo model falls.
#include <catch2/catch.hpp>

#include "runtime/trainer.h"

namespace meshpipe::runtime {
namespace {

TrainSummary train(const std::string& model, int64_t steps, float lr) {
  auto spec = graph::models::find_model(model);
  REQUIRE(spec.has_value());
  TrainOptions opts;
  opts.steps = steps;
  opts.optimizer.lr = lr;
  auto s = train_single_device(*spec, opts);
  INFO(s.status().to_string());
  REQUIRE(s.has_value());
  return *s;
}

TEST_CASE("gpt-tiny trains: loss from ln(64) = 4.16 to below 2.6 in 50 Adam steps",
          "[runtime][train]") {
  // The synthetic stream follows a fixed permutation with probability 0.8: the best possible
  // loss is about 0.8 * -ln(0.8 + 0.2/64) - 0.2 * ln(0.2/64) = 1.33.
  const TrainSummary s = train("gpt-tiny", 50, 3e-3f);
  CHECK(s.losses.front() == Approx(4.16).margin(0.1));
  CHECK(s.losses.back() < 2.6);
  CHECK(s.peak_bytes.value() > s.persistent_bytes.value());
}

// Mean of the last n losses (single batches are noisy).
double tail_mean(const TrainSummary& s, size_t n) {
  double sum = 0;
  for (size_t i = s.losses.size() - n; i < s.losses.size(); ++i) sum += s.losses[i];
  return sum / static_cast<double>(n);
}

TEST_CASE("moe-tiny, wresnet-tiny and mlp-tiny train", "[runtime][train]") {
  const TrainSummary moe = train("moe-tiny", 40, 3e-3f);
  CHECK(moe.losses.front() == Approx(4.16).margin(0.1));
  CHECK(tail_mean(moe, 5) < 3.0);
  const TrainSummary wr = train("wresnet-tiny", 30, 3e-3f);
  CHECK(tail_mean(wr, 5) < 0.6 * wr.losses.front());
  const TrainSummary mlp = train("mlp-tiny", 60, 1e-2f);
  CHECK(tail_mean(mlp, 5) < 0.6 * mlp.losses.front());
}

TEST_CASE("training runs are deterministic", "[runtime][train]") {
  const TrainSummary a = train("gpt-tiny", 5, 3e-3f);
  const TrainSummary b = train("gpt-tiny", 5, 3e-3f);
  CHECK(a.losses == b.losses);
}

TEST_CASE("bad training options are rejected", "[runtime][train]") {
  TrainOptions opts;
  opts.steps = 0;
  CHECK_FALSE(opts.validate().is_ok());
  opts.steps = 1;
  opts.optimizer.lr = 0;
  CHECK_FALSE(opts.validate().is_ok());
}

}  // namespace
}  // namespace meshpipe::runtime

// Behaviour only the in-process group promises: bit-identical, rank-ordered sums, abort, the
// wording of its timeout, refusal after a failure, mismatched calls; and the in-process store.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "comm/comm_test_util.h"

namespace meshpipe::comm {
namespace {

using std::chrono::milliseconds;
using testing::on_each_rank;

// Values of very different magnitudes, so the summation order changes the float result.
std::vector<std::vector<float>> spread_values(int n, int64_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-20, 20);
  std::vector<std::vector<float>> out(static_cast<size_t>(n));
  for (auto& v : out) {
    for (int64_t i = 0; i < count; ++i) v.push_back(std::ldexp(mantissa(rng), exponent(rng)));
  }
  return out;
}

TEST_CASE("in-process all-reduce equals the sequential float sum in rank order, on every rank",
          "[comm]") {
  const int n = GENERATE(2, 3, 4, 5);
  const int64_t count = 4099;
  auto group = InProcessGroup::create(n, milliseconds(10000));
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(group->communicator(r));
  const auto inputs = spread_values(n, count, 7);
  auto data = inputs;
  for (const Status& s : on_each_rank(
           n, [&](int r) { return comms[size_t(r)]->all_reduce(data[size_t(r)].data(), count); })) {
    REQUIRE(s.is_ok());
  }
  int order_mattered = 0;
  for (int64_t i = 0; i < count; ++i) {
    float sequential = inputs[0][size_t(i)];
    for (int k = 1; k < n; ++k) sequential += inputs[size_t(k)][size_t(i)];
    float reversed = inputs[size_t(n - 1)][size_t(i)];
    for (int k = n - 2; k >= 0; --k) reversed += inputs[size_t(k)][size_t(i)];
    order_mattered += sequential != reversed ? 1 : 0;
    for (int r = 0; r < n; ++r) {
      REQUIRE(std::memcmp(&data[size_t(r)][size_t(i)], &sequential, sizeof(float)) == 0);
    }
  }
  // With three or more ranks the order matters for some elements, so the check above would
  // catch another order; with two, a + b == b + a always.
  if (n >= 3) REQUIRE(order_mattered > 0);
}

TEST_CASE("in-process reduce-scatter sums each chunk in rank order", "[comm]") {
  const int n = 3;
  const int64_t count = 1000;
  auto group = InProcessGroup::create(n, milliseconds(10000));
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(group->communicator(r));
  const auto inputs = spread_values(n, count * n, 11);
  std::vector<std::vector<float>> out(static_cast<size_t>(n),
                                      std::vector<float>(static_cast<size_t>(count)));
  for (const Status& s : on_each_rank(n, [&](int r) {
         return comms[size_t(r)]->reduce_scatter(inputs[size_t(r)].data(), out[size_t(r)].data(),
                                                 count);
       })) {
    REQUIRE(s.is_ok());
  }
  for (int r = 0; r < n; ++r) {
    for (int64_t i = 0; i < count; ++i) {
      float sequential = inputs[0][size_t(r * count + i)];
      for (int k = 1; k < n; ++k) sequential += inputs[size_t(k)][size_t(r * count + i)];
      REQUIRE(std::memcmp(&out[size_t(r)][size_t(i)], &sequential, sizeof(float)) == 0);
    }
  }
}

TEST_CASE("abort wakes every rank blocked in a collective with kUnavailable and the reason",
          "[comm]") {
  const int n = 4;
  auto group = InProcessGroup::create(n, milliseconds(20000));
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(group->communicator(r));
  std::thread aborter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    group->abort("peer host lost");
  });
  const auto start = std::chrono::steady_clock::now();
  // Rank 3 never arrives: ranks 0-2 stay blocked until the abort.
  std::vector<Status> statuses =
      on_each_rank(n - 1, [&](int r) { return comms[size_t(r)]->barrier(); });
  aborter.join();
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  for (const Status& s : statuses) {
    REQUIRE(s.code() == Errc::kUnavailable);
    REQUIRE_THAT(s.message(), Catch::Contains("peer host lost"));
  }
  float x = 1.0f;
  Status later = comms[3]->all_reduce(&x, 1);
  REQUIRE(later.code() == Errc::kUnavailable);
  REQUIRE_THAT(later.message(), Catch::Contains("peer host lost"));
}

TEST_CASE("an in-process timeout names the collective, the count and the missing ranks", "[comm]") {
  auto group = InProcessGroup::create(4, milliseconds(300));
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < 4; ++r) comms.push_back(group->communicator(r));
  std::vector<float> a(1024), b(1024);
  // Ranks 0 and 1 arrive; 2 and 3 never do.
  std::vector<Status> statuses = on_each_rank(
      2, [&](int r) { return comms[size_t(r)]->all_reduce(r == 0 ? a.data() : b.data(), 1024); });
  // The first rank to time out reports kTimeout; the other may instead see the group fail.
  int timeouts = 0;
  for (const Status& s : statuses) {
    REQUIRE_FALSE(s.is_ok());
    if (s.code() != Errc::kTimeout) continue;
    ++timeouts;
    REQUIRE_THAT(s.message(),
                 Catch::Contains("all-reduce of 1024 floats: 2 of 4 ranks did not arrive within "
                                 "300 ms (missing: 2, 3)"));
  }
  REQUIRE(timeouts >= 1);
  SECTION("and the group refuses later collectives") {
    Status later = comms[2]->barrier();
    REQUIRE(later.code() == Errc::kUnavailable);
    REQUIRE_THAT(later.message(), Catch::Contains("did not arrive"));
  }
}

TEST_CASE("ranks calling different collectives fail with kInvalidArgument instead of mixing",
          "[comm]") {
  auto group = InProcessGroup::create(2, milliseconds(5000));
  auto c0 = group->communicator(0);
  auto c1 = group->communicator(1);
  std::vector<float> x(10);
  std::vector<float> y(12);
  std::vector<Status> statuses = on_each_rank(2, [&](int r) {
    if (r == 0) return c0->all_reduce(x.data(), 10);
    std::this_thread::sleep_for(milliseconds(50));
    return c1->all_reduce(y.data(), 12);
  });
  REQUIRE(statuses[1].code() == Errc::kInvalidArgument);
  REQUIRE_THAT(statuses[1].message(),
               Catch::Contains("rank 1 called all-reduce of 12 floats but rank 0 called "
                               "all-reduce of 10 floats"));
  REQUIRE(statuses[0].code() == Errc::kUnavailable);
}

TEST_CASE("the in-process store hands a value set by one thread to a waiting reader", "[comm]") {
  auto store = make_in_process_store();
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(50));
    store->set("group/0", std::string("addr\0ess", 8));
  });
  Expected<std::string> value = store->get("group/0", milliseconds(5000));
  writer.join();
  REQUIRE(value.has_value());
  REQUIRE(*value == std::string("addr\0ess", 8));
}

TEST_CASE("the in-process store reports a key that is never set as kTimeout naming the key",
          "[comm]") {
  auto store = make_in_process_store();
  Expected<std::string> value = store->get("group/3", milliseconds(100));
  REQUIRE(value.status().code() == Errc::kTimeout);
  REQUIRE_THAT(value.status().message(), Catch::Contains("group/3"));
}

}  // namespace
}  // namespace meshpipe::comm

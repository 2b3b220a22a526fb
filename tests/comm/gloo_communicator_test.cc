// Behaviour particular to the Gloo communicator: the kUnavailable answer of a build without
// Gloo, rendezvous timeouts, groups sharing one store under different prefixes, and refusal of
// collectives after a failure.
#include <catch2/catch.hpp>

#include "comm/comm_test_util.h"

namespace meshpipe::comm {
namespace {

using std::chrono::milliseconds;
using testing::on_each_rank;

TEST_CASE("without Gloo in the build, make_gloo_communicator says so with kUnavailable", "[comm]") {
  if (gloo_available()) return;  // this build has Gloo; the other tests cover it
  auto comm = make_gloo_communicator(0, 1, make_in_process_store(), GlooOptions{});
  REQUIRE(comm.status().code() == Errc::kUnavailable);
  REQUIRE_THAT(comm.status().message(), Catch::Contains("no Gloo"));
}

TEST_CASE("a Gloo rendezvous that a rank never joins fails with kTimeout naming the key",
          "[comm]") {
  if (!gloo_available()) return;
  GlooOptions options;
  options.timeout = milliseconds(300);
  options.prefix = "lonely";
  const auto start = std::chrono::steady_clock::now();
  auto comm = make_gloo_communicator(0, 2, make_in_process_store(), options);
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
  INFO(comm.status().to_string());
  REQUIRE(comm.status().code() == Errc::kTimeout);
  REQUIRE_THAT(comm.status().message(), Catch::Contains("lonely/"));
}

TEST_CASE("two Gloo groups can share one store under different prefixes", "[comm]") {
  if (!gloo_available()) return;
  auto store = make_in_process_store();
  std::vector<float> sums(4, 0.0f);
  std::vector<Status> statuses = on_each_rank(4, [&](int t) {
    GlooOptions options;
    options.timeout = milliseconds(10000);
    options.prefix = t < 2 ? "first" : "second";
    const int rank = t % 2;
    MP_ASSIGN_OR_RETURN(auto comm, make_gloo_communicator(rank, 2, store, options));
    float x = float(t + 1);
    MP_RETURN_IF_ERROR(comm->all_reduce(&x, 1));
    sums[size_t(t)] = x;
    return Status::ok();
  });
  for (const Status& s : statuses) REQUIRE(s.is_ok());
  REQUIRE(sums == std::vector<float>{3.0f, 3.0f, 7.0f, 7.0f});
}

TEST_CASE("after a failed collective a Gloo communicator refuses further collectives", "[comm]") {
  if (!gloo_available()) return;
  std::string error;
  auto comms = testing::make_group("gloo", 2, milliseconds(300), &error);
  REQUIRE(comms.size() == 2);
  std::vector<Status> statuses = on_each_rank(2, [&](int r) {
    if (r == 1) return Status::ok();  // never joins the all-reduce
    float x = 1.0f;
    Status first = comms[0]->all_reduce(&x, 1);
    if (first.is_ok()) return make_error(Errc::kInternal, "all-reduce without rank 1 succeeded");
    return comms[0]->barrier();
  });
  REQUIRE(statuses[0].code() == Errc::kUnavailable);
  REQUIRE_THAT(statuses[0].message(), Catch::Contains("failed earlier"));
}

}  // namespace
}  // namespace meshpipe::comm

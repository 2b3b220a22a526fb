// Tests of make_hierarchical_communicator's checks on its parts (the collectives themselves run
// the shared checks of communicator_test.cc as backend "hierarchical").
#include <catch2/catch.hpp>

#include "comm/communicator.h"

namespace meshpipe::comm {
namespace {

using std::chrono::milliseconds;

TEST_CASE("a two-level group refuses uneven processes and parts of the wrong size or rank",
          "[comm]") {
  auto local = InProcessGroup::create(2, milliseconds(1000));
  auto leaders = InProcessGroup::create(2, milliseconds(1000));
  auto parts = [&](int local_rank, bool leader) {
    HierarchyParts p;
    p.local_group = local;
    p.local = local->communicator(local_rank);
    if (leader) p.leaders = leaders->communicator(0);
    return p;
  };
  // Processes of 2 and 1 ranks.
  auto uneven = make_hierarchical_communicator(0, {1, 1, 2}, parts(0, true));
  CHECK(uneven.status().message() ==
        "a two-level group needs as many ranks in every process (2 and 1)");
  local = InProcessGroup::create(2, milliseconds(1000));
  leaders = InProcessGroup::create(2, milliseconds(1000));
  // Rank 1 is its process's second rank: it needs local rank 1 and no leaders' communicator.
  auto wrong_local = make_hierarchical_communicator(1, {0, 0, 1, 1}, parts(0, false));
  CHECK(wrong_local.status().message() == "rank 1 needs a local communicator of rank 1 of 2");
  auto leader_too = make_hierarchical_communicator(1, {0, 0, 1, 1}, parts(1, true));
  CHECK(leader_too.status().message() ==
        "rank 1 does not lead its process: it takes no leaders' communicator");
  local = InProcessGroup::create(2, milliseconds(1000));
  auto no_leaders = make_hierarchical_communicator(2, {0, 0, 1, 1}, parts(0, false));
  CHECK(no_leaders.status().message() ==
        "rank 2 leads its process: it needs the leaders' communicator as rank 1 of 2");
  auto bad_rank = make_hierarchical_communicator(4, {0, 0, 1, 1}, HierarchyParts{});
  CHECK(bad_rank.status().message() == "rank 4 is not one of a group of 4");
  auto bad_process = make_hierarchical_communicator(0, {0, -1}, HierarchyParts{});
  CHECK(bad_process.status().message() == "rank 1's process -1 is out of range");
}

}  // namespace
}  // namespace meshpipe::comm

// The checks every Communicator passes, run on each backend of this build (in-process with 1-4
// ranks, Gloo with 2 and 4 ranks as threads, two levels of 2 x 2 and 3 x 2, over transport
// endpoints in-process with 1-4 ranks and UCX with 2 and 3): results against values computed
// here, odd and zero sizes, consecutive collectives, and a rank that never arrives.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <numeric>
#include <thread>

#include "comm/comm_test_util.h"

namespace meshpipe::comm {
namespace {

using std::chrono::milliseconds;
using testing::make_group;
using testing::on_each_rank;

// Collectives of correct programs finish long before this; the timeout test uses its own.
constexpr milliseconds kTimeout{10000};

// Integer-valued inputs, so every summation order gives the same float: rank r, element i.
float value(int r, int64_t i) { return float((r + 1) * 100 + i % 17); }
uint8_t byte_value(int r, int64_t i) { return uint8_t(r * 31 + i * 7 + 1); }

struct Fixture {
  std::string backend;
  int n = 0;
  std::vector<std::unique_ptr<Communicator>> comms;
};

Fixture make_fixture(milliseconds timeout = kTimeout) {
  auto [backend, n] = GENERATE(from_range(testing::communicator_backends()));
  std::string error;
  Fixture f{backend, n, make_group(backend, n, timeout, &error)};
  INFO(backend << " with " << n << " ranks: " << error);
  REQUIRE(f.comms.size() == size_t(n));
  return f;
}

void require_all_ok(const std::vector<Status>& statuses) {
  for (size_t r = 0; r < statuses.size(); ++r) {
    INFO("rank " << r << ": " << statuses[r].to_string());
    REQUIRE(statuses[r].is_ok());
  }
}

TEST_CASE("all-reduce leaves the element-wise sum over ranks on every rank", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  for (int64_t count : {int64_t{1}, int64_t{1001}, int64_t{0}, int64_t{70000}, int64_t{300007}}) {
    CAPTURE(count);
    std::vector<std::vector<float>> data(size_t(f.n));
    for (int r = 0; r < f.n; ++r) {
      for (int64_t i = 0; i < count; ++i) data[size_t(r)].push_back(value(r, i));
    }
    require_all_ok(on_each_rank(
        f.n, [&](int r) { return f.comms[size_t(r)]->all_reduce(data[size_t(r)].data(), count); }));
    for (int r = 0; r < f.n; ++r) {
      for (int64_t i = 0; i < count; ++i) {
        double expected = 0;
        for (int k = 0; k < f.n; ++k) expected += value(k, i);
        REQUIRE(data[size_t(r)][size_t(i)] == float(expected));
      }
    }
  }
}

TEST_CASE("all-gather concatenates every rank's bytes in rank order", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  for (int64_t bytes : {int64_t{37}, int64_t{0}, int64_t{4096}}) {
    CAPTURE(bytes);
    std::vector<std::vector<uint8_t>> in(size_t(f.n)), out(size_t(f.n));
    for (int r = 0; r < f.n; ++r) {
      for (int64_t i = 0; i < bytes; ++i) in[size_t(r)].push_back(byte_value(r, i));
      out[size_t(r)].assign(size_t(bytes * f.n), 0);
    }
    require_all_ok(on_each_rank(f.n, [&](int r) {
      return f.comms[size_t(r)]->all_gather(in[size_t(r)].data(), out[size_t(r)].data(), bytes);
    }));
    for (int r = 0; r < f.n; ++r) {
      for (int k = 0; k < f.n; ++k) {
        for (int64_t i = 0; i < bytes; ++i) {
          REQUIRE(out[size_t(r)][size_t(k * bytes + i)] == byte_value(k, i));
        }
      }
    }
  }
}

TEST_CASE("all-gather works in place, with the input at the rank's own chunk of the output",
          "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  const int64_t bytes = 23;
  std::vector<std::vector<uint8_t>> buf(size_t(f.n), std::vector<uint8_t>(size_t(bytes * f.n)));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < bytes; ++i) buf[size_t(r)][size_t(r * bytes + i)] = byte_value(r, i);
  }
  require_all_ok(on_each_rank(f.n, [&](int r) {
    uint8_t* b = buf[size_t(r)].data();
    return f.comms[size_t(r)]->all_gather(b + r * bytes, b, bytes);
  }));
  for (int r = 0; r < f.n; ++r) {
    for (int k = 0; k < f.n; ++k) {
      for (int64_t i = 0; i < bytes; ++i) {
        REQUIRE(buf[size_t(r)][size_t(k * bytes + i)] == byte_value(k, i));
      }
    }
  }
}

TEST_CASE("reduce-scatter gives rank r the sum over ranks of chunk r", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  for (int64_t count : {int64_t{13}, int64_t{0}, int64_t{5000}}) {
    CAPTURE(count);
    std::vector<std::vector<float>> in(size_t(f.n)), out(size_t(f.n));
    for (int r = 0; r < f.n; ++r) {
      for (int64_t i = 0; i < count * f.n; ++i) in[size_t(r)].push_back(value(r, i));
      out[size_t(r)].assign(size_t(count), -1.0f);
    }
    require_all_ok(on_each_rank(f.n, [&](int r) {
      return f.comms[size_t(r)]->reduce_scatter(in[size_t(r)].data(), out[size_t(r)].data(), count);
    }));
    for (int r = 0; r < f.n; ++r) {
      for (int64_t i = 0; i < count; ++i) {
        double expected = 0;
        for (int k = 0; k < f.n; ++k) expected += value(k, r * count + i);
        REQUIRE(out[size_t(r)][size_t(i)] == float(expected));
      }
    }
  }
}

TEST_CASE("reduce-scatter works in place, with the output at the rank's own chunk of the input",
          "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  const int64_t count = 257;
  std::vector<std::vector<float>> buf(size_t(f.n));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < count * f.n; ++i) buf[size_t(r)].push_back(value(r, i));
  }
  require_all_ok(on_each_rank(f.n, [&](int r) {
    float* b = buf[size_t(r)].data();
    return f.comms[size_t(r)]->reduce_scatter(b, b + r * count, count);
  }));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < count; ++i) {
      double expected = 0;
      for (int k = 0; k < f.n; ++k) expected += value(k, r * count + i);
      REQUIRE(buf[size_t(r)][size_t(r * count + i)] == float(expected));
    }
  }
}

TEST_CASE(
    "all-gather and reduce-scatter give the right result when input and output overlap "
    "elsewhere than the rank's own chunk",
    "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  const int64_t bytes = 16;
  // All-gather with the input at the start of the output, whatever the rank.
  std::vector<std::vector<uint8_t>> gather(size_t(f.n), std::vector<uint8_t>(size_t(bytes * f.n)));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < bytes; ++i) gather[size_t(r)][size_t(i)] = byte_value(r, i);
  }
  require_all_ok(on_each_rank(f.n, [&](int r) {
    uint8_t* b = gather[size_t(r)].data();
    return f.comms[size_t(r)]->all_gather(b, b, bytes);
  }));
  for (int r = 0; r < f.n; ++r) {
    for (int k = 0; k < f.n; ++k) {
      for (int64_t i = 0; i < bytes; ++i) {
        REQUIRE(gather[size_t(r)][size_t(k * bytes + i)] == byte_value(k, i));
      }
    }
  }
  // Reduce-scatter with the output at the start of the input, whatever the rank.
  const int64_t count = 33;
  std::vector<std::vector<float>> scatter(size_t(f.n));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < count * f.n; ++i) scatter[size_t(r)].push_back(value(r, i));
  }
  require_all_ok(on_each_rank(f.n, [&](int r) {
    float* b = scatter[size_t(r)].data();
    return f.comms[size_t(r)]->reduce_scatter(b, b, count);
  }));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < count; ++i) {
      double expected = 0;
      for (int k = 0; k < f.n; ++k) expected += value(k, r * count + i);
      REQUIRE(scatter[size_t(r)][size_t(i)] == float(expected));
    }
  }
}

TEST_CASE("all-to-all sends chunk j of rank i to chunk i of rank j", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  for (int64_t bytes : {int64_t{11}, int64_t{0}, int64_t{3000}}) {
    CAPTURE(bytes);
    std::vector<std::vector<uint8_t>> in(size_t(f.n)), out(size_t(f.n));
    for (int r = 0; r < f.n; ++r) {
      for (int64_t i = 0; i < bytes * f.n; ++i) in[size_t(r)].push_back(byte_value(r, i));
      out[size_t(r)].assign(size_t(bytes * f.n), 0);
    }
    require_all_ok(on_each_rank(f.n, [&](int r) {
      return f.comms[size_t(r)]->all_to_all(in[size_t(r)].data(), out[size_t(r)].data(), bytes);
    }));
    for (int j = 0; j < f.n; ++j) {
      for (int i = 0; i < f.n; ++i) {
        for (int64_t b = 0; b < bytes; ++b) {
          REQUIRE(out[size_t(j)][size_t(i * bytes + b)] == byte_value(i, j * bytes + b));
        }
      }
    }
  }
}

TEST_CASE("all-to-all works in place", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  const int64_t bytes = 9;
  std::vector<std::vector<uint8_t>> buf(size_t(f.n));
  for (int r = 0; r < f.n; ++r) {
    for (int64_t i = 0; i < bytes * f.n; ++i) buf[size_t(r)].push_back(byte_value(r, i));
  }
  require_all_ok(on_each_rank(f.n, [&](int r) {
    return f.comms[size_t(r)]->all_to_all(buf[size_t(r)].data(), buf[size_t(r)].data(), bytes);
  }));
  for (int j = 0; j < f.n; ++j) {
    for (int i = 0; i < f.n; ++i) {
      for (int64_t b = 0; b < bytes; ++b) {
        REQUIRE(buf[size_t(j)][size_t(i * bytes + b)] == byte_value(i, j * bytes + b));
      }
    }
  }
}

TEST_CASE("broadcast copies the root's bytes to every rank, from every root", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  for (int root = 0; root < f.n; ++root) {
    for (int64_t bytes : {int64_t{29}, int64_t{0}, int64_t{100000}}) {
      CAPTURE(root, bytes);
      std::vector<std::vector<uint8_t>> data(size_t(f.n));
      for (int r = 0; r < f.n; ++r) {
        for (int64_t i = 0; i < bytes; ++i) data[size_t(r)].push_back(byte_value(r, i));
      }
      require_all_ok(on_each_rank(f.n, [&](int r) {
        return f.comms[size_t(r)]->broadcast(data[size_t(r)].data(), bytes, root);
      }));
      for (int r = 0; r < f.n; ++r) {
        for (int64_t i = 0; i < bytes; ++i)
          REQUIRE(data[size_t(r)][size_t(i)] == byte_value(root, i));
      }
    }
  }
}

TEST_CASE("small and large collectives, in place or not, give the values computed here", "[comm]") {
  // Every kind at 1.2 KB and 360 KB a rank, with separate and with shared input and output
  // buffers (the interpreter gathers, scatters and exchanges straight in its tiles). Mismatches
  // are counted, not REQUIREd element by element.
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  const int n = f.n;
  for (int64_t count : {int64_t{300}, int64_t{90000}}) {  // floats: 1.2 KB and 360 KB a rank
    for (bool in_place : {false, true}) {
      CAPTURE(count, in_place);
      std::vector<int64_t> wrong(static_cast<size_t>(n), 0);
      require_all_ok(on_each_rank(n, [&](int r) {
        Communicator& c = *f.comms[size_t(r)];
        int64_t& bad = wrong[size_t(r)];
        // all-reduce
        std::vector<float> a(static_cast<size_t>(count));
        for (int64_t i = 0; i < count; ++i) a[size_t(i)] = value(r, i);
        MP_RETURN_IF_ERROR(c.all_reduce(a.data(), count));
        for (int64_t i = 0; i < count; ++i) {
          double want = 0;
          for (int k = 0; k < n; ++k) want += value(k, i);
          bad += a[size_t(i)] != float(want);
        }
        // all-gather of count floats a rank
        std::vector<float> g(size_t(count * n), -1.0f);
        std::vector<float> mine(static_cast<size_t>(count));
        float* gin = in_place ? g.data() + r * count : mine.data();
        for (int64_t i = 0; i < count; ++i) gin[i] = value(r, i);
        MP_RETURN_IF_ERROR(c.all_gather(gin, g.data(), count * int64_t(sizeof(float))));
        for (int k = 0; k < n; ++k) {
          for (int64_t i = 0; i < count; ++i) bad += g[size_t(k * count + i)] != value(k, i);
        }
        // reduce-scatter of count floats a rank
        std::vector<float> rs(size_t(count * n));
        for (int64_t i = 0; i < count * n; ++i) rs[size_t(i)] = value(r, i);
        std::vector<float> part(static_cast<size_t>(count), -1.0f);
        float* rout = in_place ? rs.data() + r * count : part.data();
        MP_RETURN_IF_ERROR(c.reduce_scatter(rs.data(), rout, count));
        for (int64_t i = 0; i < count; ++i) {
          double want = 0;
          for (int k = 0; k < n; ++k) want += value(k, r * count + i);
          bad += rout[i] != float(want);
        }
        // all-to-all of count floats a pair
        const int64_t bytes = count * int64_t(sizeof(float));
        std::vector<uint8_t> t(size_t(bytes * n));
        for (int64_t i = 0; i < bytes * n; ++i) t[size_t(i)] = byte_value(r, i);
        std::vector<uint8_t> t_out(size_t(bytes * n), 0);
        uint8_t* tout = in_place ? t.data() : t_out.data();
        MP_RETURN_IF_ERROR(c.all_to_all(t.data(), tout, bytes));
        for (int i = 0; i < n; ++i) {
          for (int64_t b = 0; b < bytes; ++b) {
            bad += tout[size_t(i * bytes + b)] != byte_value(i, r * bytes + b);
          }
        }
        return Status::ok();
      }));
      for (int r = 0; r < n; ++r) {
        INFO("rank " << r);
        CHECK(wrong[size_t(r)] == 0);
      }
    }
  }
}

TEST_CASE("hundreds of back-to-back collectives of mixed kinds and sizes do not mix", "[comm]") {
  // A rank may enter the next collective while a slow one still copies out of the last;
  // irregular pauses shake the interleavings.
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  const int n = f.n;
  const int rounds = f.backend == "gloo" ? 60 : 400;
  std::vector<std::string> wrong(static_cast<size_t>(n));
  require_all_ok(on_each_rank(n, [&](int r) {
    Communicator& c = *f.comms[size_t(r)];
    for (int round = 0; round < rounds; ++round) {
      if ((round * 7 + r * 3) % 11 == 0) std::this_thread::yield();
      if ((round + r) % 29 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
      // Mostly small, every 16th large.
      const int64_t count = round % 16 == 15 ? 70000 : 1 + (round * 53) % 900;
      std::vector<float> a(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) a[size_t(i)] = value(r, i + round);
      if (round % 3 == 2) {
        std::vector<float> g(size_t(count * n));
        MP_RETURN_IF_ERROR(c.all_gather(a.data(), g.data(), count * int64_t(sizeof(float))));
        for (int k = 0; k < n && wrong[size_t(r)].empty(); ++k) {
          for (int64_t i = 0; i < count; ++i) {
            if (g[size_t(k * count + i)] != value(k, i + round)) {
              wrong[size_t(r)] = fmt::format("all-gather {}", round);
              break;
            }
          }
        }
        continue;
      }
      MP_RETURN_IF_ERROR(c.all_reduce(a.data(), count));
      for (int64_t i = 0; i < count && wrong[size_t(r)].empty(); ++i) {
        double want = 0;
        for (int k = 0; k < n; ++k) want += value(k, i + round);
        if (a[size_t(i)] != float(want)) wrong[size_t(r)] = fmt::format("all-reduce {}", round);
      }
    }
    return c.barrier();
  }));
  for (int r = 0; r < n; ++r) {
    INFO("rank " << r);
    CHECK(wrong[size_t(r)] == "");
  }
}

TEST_CASE("no rank leaves a barrier before every rank has entered it", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  std::atomic<int> entered{0};
  std::vector<int> seen(size_t(f.n), -1);
  require_all_ok(on_each_rank(f.n, [&](int r) {
    // Late ranks make an early leaver likely to be caught.
    std::this_thread::sleep_for(milliseconds(5 * r));
    ++entered;
    Status s = f.comms[size_t(r)]->barrier();
    seen[size_t(r)] = entered.load();
    return s;
  }));
  for (int r = 0; r < f.n; ++r) REQUIRE(seen[size_t(r)] == f.n);
}

TEST_CASE("consecutive collectives of different kinds and sizes do not mix", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  constexpr int kRounds = 12;
  // Each rank records the first wrong value it sees, as (round, what).
  std::vector<std::string> wrong(size_t(f.n));
  require_all_ok(on_each_rank(f.n, [&](int r) {
    Communicator& c = *f.comms[size_t(r)];
    for (int round = 0; round < kRounds; ++round) {
      const int64_t count = 1 + round * 37;
      std::vector<float> data(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) data[size_t(i)] = value(r, i + round);
      MP_RETURN_IF_ERROR(c.all_reduce(data.data(), count));
      for (int64_t i = 0; i < count && wrong[size_t(r)].empty(); ++i) {
        double expected = 0;
        for (int k = 0; k < f.n; ++k) expected += value(k, i + round);
        if (data[size_t(i)] != float(expected))
          wrong[size_t(r)] = fmt::format("all-reduce {}", round);
      }
      uint8_t mine = uint8_t(round * 10 + r);
      std::vector<uint8_t> all(size_t(f.n));
      MP_RETURN_IF_ERROR(c.all_gather(&mine, all.data(), 1));
      for (int k = 0; k < f.n && wrong[size_t(r)].empty(); ++k) {
        if (all[size_t(k)] != uint8_t(round * 10 + k))
          wrong[size_t(r)] = fmt::format("all-gather {}", round);
      }
      uint8_t b = uint8_t(r == round % f.n ? 200 + round : 0);
      MP_RETURN_IF_ERROR(c.broadcast(&b, 1, round % f.n));
      if (b != uint8_t(200 + round) && wrong[size_t(r)].empty()) {
        wrong[size_t(r)] = fmt::format("broadcast {}", round);
      }
    }
    return c.barrier();
  }));
  for (int r = 0; r < f.n; ++r) {
    INFO("rank " << r);
    REQUIRE(wrong[size_t(r)] == "");
  }
}

TEST_CASE("a rank that never arrives makes the others fail with kTimeout within the timeout",
          "[comm]") {
  constexpr milliseconds kShort{400};
  Fixture f = make_fixture(kShort);
  CAPTURE(f.backend, f.n);
  if (f.n == 1) return;  // nobody to wait for
  const int absent = f.n - 1;
  std::vector<double> seconds(size_t(f.n), 0.0);
  std::vector<Status> statuses = on_each_rank(f.n, [&](int r) {
    if (r == absent) return Status::ok();  // stays alive until the others return (join)
    std::vector<float> data(1024, 1.0f);
    const auto start = std::chrono::steady_clock::now();
    Status s = f.comms[size_t(r)]->all_reduce(data.data(), 1024);
    seconds[size_t(r)] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return s;
  });
  int timeouts = 0;
  for (int r = 0; r < absent; ++r) {
    INFO("rank " << r << ": " << statuses[size_t(r)].to_string());
    REQUIRE_FALSE(statuses[size_t(r)].is_ok());
    REQUIRE(seconds[size_t(r)] < 0.4 + 2.0);
    if (statuses[size_t(r)].code() == Errc::kTimeout) {
      ++timeouts;
      REQUIRE_THAT(statuses[size_t(r)].message(), Catch::Contains("all-reduce of 1024 floats"));
    }
  }
  REQUIRE(timeouts >= 1);
}

TEST_CASE("invalid arguments fail at once with kInvalidArgument", "[comm]") {
  Fixture f = make_fixture();
  CAPTURE(f.backend, f.n);
  Communicator& c = *f.comms[0];
  uint8_t byte = 0;
  REQUIRE(c.broadcast(&byte, 1, f.n).code() == Errc::kInvalidArgument);
  REQUIRE(c.broadcast(&byte, 1, -1).code() == Errc::kInvalidArgument);
  REQUIRE(c.all_reduce(nullptr, 4).code() == Errc::kInvalidArgument);
  REQUIRE(c.all_gather(&byte, &byte, -1).code() == Errc::kInvalidArgument);
}

TEST_CASE("rank, size and backend describe the communicator", "[comm]") {
  Fixture f = make_fixture();
  for (int r = 0; r < f.n; ++r) {
    REQUIRE(f.comms[size_t(r)]->rank() == r);
    REQUIRE(f.comms[size_t(r)]->size() == f.n);
    REQUIRE(f.comms[size_t(r)]->backend() == f.backend);
  }
}

}  // namespace
}  // namespace meshpipe::comm

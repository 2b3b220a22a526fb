// Tests of CachingAllocator (kernels/caching_allocator.h) over a fake raw allocator with a byte
// limit and counters: each rule by hand (rounding, pools, best fit, splitting, coalescing, empty
// cache, retry, errors, stats), then seeded random sequences against an independent model, and
// four threads at once.
#include "kernels/caching_allocator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "kernels/fake_raw_allocator.h"

namespace meshpipe::kernels {
namespace {

using testing::FakeRaw;

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * 1024;

char* must_allocate(CachingAllocator& allocator, int64_t bytes) {
  Expected<void*> result = allocator.allocate(bytes);
  INFO("allocating " << bytes << ": " << result.status().to_string());
  REQUIRE(result.has_value());
  return static_cast<char*>(*result);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A pattern byte that depends on the block's id and the offset, so that two blocks sharing memory
// (or a block moved or cleared) disagree at almost every byte.
uint8_t pattern_byte(uint64_t id, int64_t offset) {
  return static_cast<uint8_t>(mix64(id * 0x10001ull + static_cast<uint64_t>(offset >> 3)) >>
                              (8 * (offset & 7)));
}

// Blocks up to 64 KiB are patterned whole; larger ones in 64-byte runs every 4 KiB and at the end
// (keeping thousands of multi-MiB blocks cheap).
template <class F>
void for_each_patterned_byte(int64_t n, F f) {
  if (n <= 64 * kKiB) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  for (int64_t run = 0; run < n; run += 4 * kKiB) {
    for (int64_t i = run; i < std::min(run + 64, n); ++i) f(i);
  }
  for (int64_t i = n - 64; i < n; ++i) f(i);
}

void fill_pattern(char* p, int64_t n, uint64_t id) {
  for_each_patterned_byte(n, [&](int64_t i) { p[i] = static_cast<char>(pattern_byte(id, i)); });
}

int64_t pattern_mismatches(const char* p, int64_t n, uint64_t id) {
  int64_t bad = 0;
  for_each_patterned_byte(
      n, [&](int64_t i) { bad += static_cast<uint8_t>(p[i]) != pattern_byte(id, i) ? 1 : 0; });
  return bad;
}

TEST_CASE("sizes round up to 512 bytes and requested keeps the bytes asked for",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* a = must_allocate(allocator, 1);
  char* b = must_allocate(allocator, 512);
  char* c = must_allocate(allocator, 513);
  char* d = must_allocate(allocator, kMiB - 511);
  // One 2 MiB small segment carved front to back: 512 + 512 + 1024 + 1 MiB.
  CHECK(b == a + 512);
  CHECK(c == b + 512);
  CHECK(d == c + 1024);
  const AllocatorStats stats = allocator.stats();
  CHECK(stats.in_use == 2048 + kMiB);
  CHECK(stats.requested == 1 + 512 + 513 + kMiB - 511);
  CHECK(stats.reserved == 2 * kMiB);
  CHECK(stats.largest_free == 2 * kMiB - 2048 - kMiB);
  CHECK(stats.segments == 1);
  CHECK(stats.raw_allocations == 1);
  CHECK(stats.allocations == 4);
  CHECK(stats.cache_hits == 3);
  CHECK(fake.last_request() == 2 * kMiB);
}

TEST_CASE("requests of at most 1 MiB share 2 MiB small segments", "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* a = must_allocate(allocator, kMiB);
  CHECK(fake.last_request() == 2 * kMiB);
  char* b = must_allocate(allocator, kMiB);
  CHECK(b == a + kMiB);
  CHECK(allocator.stats().raw_allocations == 1);
  CHECK(allocator.stats().largest_free == 0);
  char* c = must_allocate(allocator, 1);
  CHECK(fake.last_request() == 2 * kMiB);
  CHECK(fake.segment_of(c, 512).first != fake.segment_of(a, 512).first);
  const AllocatorStats stats = allocator.stats();
  CHECK(stats.raw_allocations == 2);
  CHECK(stats.reserved == 4 * kMiB);
  CHECK(stats.segments == 2);
  CHECK(stats.cache_hits == 1);
}

TEST_CASE("larger requests take segments of the request rounded up to 2 MiB",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  must_allocate(allocator, kMiB + 1);
  CHECK(fake.last_request() == 2 * kMiB);
  // The rest (1 MiB - 512) is under 1 MiB, so the block keeps it.
  CHECK(allocator.stats().in_use == 2 * kMiB);
  CHECK(allocator.stats().largest_free == 0);
  must_allocate(allocator, 5 * kMiB);
  CHECK(fake.last_request() == 6 * kMiB);
  CHECK(allocator.stats().in_use == 7 * kMiB);
  CHECK(allocator.stats().largest_free == kMiB);
  must_allocate(allocator, 6 * kMiB);
  CHECK(fake.last_request() == 6 * kMiB);
  must_allocate(allocator, 20 * kMiB + 1);
  CHECK(fake.last_request() == 22 * kMiB);
  const AllocatorStats stats = allocator.stats();
  // 20 MiB + 512 leaves 2 MiB - 512 of its 22 MiB segment: split off.
  CHECK(stats.in_use == 2 * kMiB + 5 * kMiB + 6 * kMiB + 20 * kMiB + 512);
  CHECK(stats.largest_free == 2 * kMiB - 512);
  CHECK(stats.requested == kMiB + 1 + 5 * kMiB + 6 * kMiB + 20 * kMiB + 1);
  CHECK(stats.reserved == 36 * kMiB);
  CHECK(stats.segments == 4);
  CHECK(stats.cache_hits == 0);
}

TEST_CASE("the small and large pools never share blocks", "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* small = must_allocate(allocator, 512 * kKiB);
  allocator.release(small);
  // A free 2 MiB small block does not serve a 1.5 MiB request.
  char* large = must_allocate(allocator, 3 * kMiB / 2);
  CHECK(allocator.stats().raw_allocations == 2);
  CHECK(fake.segment_of(large, 3 * kMiB / 2).first != fake.segment_of(small, 1).first);
  allocator.release(large);
  // Small requests come from the small segment; once it is full, not from the free large one.
  CHECK(must_allocate(allocator, kMiB) == small);
  CHECK(must_allocate(allocator, kMiB) == small + kMiB);
  CHECK(allocator.stats().raw_allocations == 2);
  must_allocate(allocator, 512);
  CHECK(allocator.stats().raw_allocations == 3);
  CHECK(allocator.stats().largest_free == 2 * kMiB);  // the large block, untouched
}

TEST_CASE("a request takes the smallest free block that fits, the lowest address among equals",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  // Free holes of 4 KiB, 1 KiB, 2 KiB and 1 KiB, separated by live 512-byte blocks, then the
  // segment's free tail.
  std::vector<char*> holes;
  for (const int64_t size : {4 * kKiB, kKiB, 2 * kKiB, kKiB}) {
    holes.push_back(must_allocate(allocator, size));
    must_allocate(allocator, 512);
  }
  for (char* hole : holes) allocator.release(hole);
  CHECK(allocator.stats().largest_free == 2 * kMiB - 4 * 512 - 8 * kKiB);
  CHECK(must_allocate(allocator, 1000) == holes[1]);
  CHECK(must_allocate(allocator, 1024) == holes[3]);
  CHECK(must_allocate(allocator, 1500) == holes[2]);  // 1536 bytes: leaves 512 of the 2 KiB
  CHECK(must_allocate(allocator, 2049) == holes[0]);  // 2560 bytes: splits the 4 KiB hole
  CHECK(must_allocate(allocator, 1536) == holes[0] + 2560);
  CHECK(must_allocate(allocator, 1) == holes[2] + 1536);       // 512-byte rest beats the tail
  CHECK(must_allocate(allocator, 1) - holes[0] == 10 * kKiB);  // the tail after the holes
  CHECK(allocator.stats().raw_allocations == 1);
}

TEST_CASE("a small block splits when the rest is at least 512 bytes",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* a = must_allocate(allocator, kMiB - 512);
  char* b = must_allocate(allocator, kMiB);
  CHECK(b == a + kMiB - 512);
  CHECK(allocator.stats().in_use == 2 * kMiB - 512);
  CHECK(allocator.stats().largest_free == 512);
  CHECK(must_allocate(allocator, 1) == b + kMiB);
  CHECK(allocator.stats().in_use == 2 * kMiB);
  CHECK(allocator.stats().largest_free == 0);
  CHECK(allocator.stats().raw_allocations == 1);
}

TEST_CASE("a large block splits only when the rest is at least 1 MiB",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* a = must_allocate(allocator, 4 * kMiB);
  allocator.release(a);
  // 3 MiB + 512 leaves 1 MiB - 512: kept by the block.
  CHECK(must_allocate(allocator, 3 * kMiB + 1) == a);
  CHECK(allocator.stats().in_use == 4 * kMiB);
  CHECK(allocator.stats().largest_free == 0);
  allocator.release(a);
  // 3 MiB leaves exactly 1 MiB: split off.
  CHECK(must_allocate(allocator, 3 * kMiB) == a);
  CHECK(allocator.stats().in_use == 3 * kMiB);
  CHECK(allocator.stats().largest_free == kMiB);
  allocator.release(a);
  CHECK(allocator.stats().largest_free == 4 * kMiB);
  CHECK(must_allocate(allocator, 2 * kMiB) == a);
  CHECK(must_allocate(allocator, 2 * kMiB) == a + 2 * kMiB);
  const AllocatorStats stats = allocator.stats();
  CHECK(stats.raw_allocations == 1);
  CHECK(stats.cache_hits == 4);
  CHECK(stats.in_use == 4 * kMiB);
}

TEST_CASE("a released block merges with its free neighbours, in any order",
          "[kernels][caching_allocator]") {
  // Four 512 KiB blocks fill a small segment; each order of releasing them is checked against
  // the longest run of released neighbours.
  std::array<int, 4> order = {0, 1, 2, 3};
  int orders = 0;
  do {
    FakeRaw fake(64 * kMiB);
    CachingAllocator allocator(fake.raw(), "cuda:0");
    std::array<char*, 4> blocks{};
    for (char*& block : blocks) block = must_allocate(allocator, 512 * kKiB);
    std::array<bool, 4> released = {false, false, false, false};
    for (const int index : order) {
      allocator.release(blocks[static_cast<size_t>(index)]);
      released[static_cast<size_t>(index)] = true;
      int64_t longest = 0;
      int64_t run = 0;
      int64_t free = 0;
      for (const bool r : released) {
        run = r ? run + 1 : 0;
        longest = std::max(longest, run);
        free += r ? 1 : 0;
      }
      const AllocatorStats stats = allocator.stats();
      INFO("order " << order[0] << order[1] << order[2] << order[3] << " after " << index);
      CHECK(stats.largest_free == longest * 512 * kKiB);
      CHECK(stats.fragmentation() ==
            Approx(static_cast<double>((free - longest) * 512 * kKiB) / (2.0 * kMiB)));
    }
    // Whole again: a 1 MiB request lands at the front, and the segment can be returned.
    CHECK(allocator.stats().largest_free == 2 * kMiB);
    CHECK(must_allocate(allocator, kMiB) == blocks[0]);
    allocator.release(blocks[0]);
    allocator.empty_cache();
    CHECK(fake.live_count() == 0);
    ++orders;
  } while (std::next_permutation(order.begin(), order.end()));
  CHECK(orders == 24);
}

TEST_CASE("blocks never merge across segments that touch in memory",
          "[kernels][caching_allocator]") {
  FakeRaw fake(4 * kMiB, FakeRaw::Mode::kArena);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* a = must_allocate(allocator, kMiB);
  char* b = must_allocate(allocator, kMiB);
  char* c = must_allocate(allocator, kMiB);
  char* d = must_allocate(allocator, kMiB);
  REQUIRE(c == a + 2 * kMiB);  // the arena put the second segment right after the first
  allocator.release(b);
  allocator.release(c);
  CHECK(allocator.stats().largest_free == kMiB);
  allocator.release(a);
  allocator.release(d);
  AllocatorStats stats = allocator.stats();
  CHECK(stats.largest_free == 2 * kMiB);
  CHECK(stats.segments == 2);
  CHECK(stats.fragmentation() == Approx(0.5));
  // Neither free small block serves 1.5 MiB and the arena is full: both segments go back and
  // the retry gets a large one.
  char* e = must_allocate(allocator, 3 * kMiB / 2);
  stats = allocator.stats();
  CHECK(stats.segments == 1);
  CHECK(stats.reserved == 2 * kMiB);
  CHECK(fake.releases() == 2);
  CHECK(fake.failures() == 1);
  allocator.release(e);
}

TEST_CASE("empty_cache returns wholly free segments and keeps the others",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  char* a = must_allocate(allocator, 512 * kKiB);
  fill_pattern(a, 512 * kKiB, 7);
  char* l1 = must_allocate(allocator, 3 * kMiB);
  char* l2 = must_allocate(allocator, 8 * kMiB);
  allocator.release(l1);
  allocator.release(l2);
  CHECK(allocator.stats().reserved == 14 * kMiB);
  allocator.empty_cache();
  AllocatorStats stats = allocator.stats();
  CHECK(stats.reserved == 2 * kMiB);
  CHECK(stats.segments == 1);
  CHECK(stats.largest_free == 3 * kMiB / 2);
  CHECK(fake.live_count() == 1);
  CHECK(fake.live_bytes() == 2 * kMiB);
  CHECK(pattern_mismatches(a, 512 * kKiB, 7) == 0);
  allocator.release(a);
  CHECK(allocator.stats().reserved == 2 * kMiB);  // cached until asked
  allocator.empty_cache();
  stats = allocator.stats();
  CHECK(stats.reserved == 0);
  CHECK(stats.segments == 0);
  CHECK(stats.largest_free == 0);
  CHECK(fake.live_count() == 0);
  CHECK(fake.bad_releases() == 0);
}

TEST_CASE("when the raw allocator fails, free segments are returned and the request retried",
          "[kernels][caching_allocator]") {
  FakeRaw fake(8 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  SECTION("every segment is free") {
    allocator.release(must_allocate(allocator, kMiB));
    allocator.release(must_allocate(allocator, 6 * kMiB));
    CHECK(fake.live_bytes() == 8 * kMiB);
    char* c = must_allocate(allocator, 7 * kMiB);  // an 8 MiB segment: fits only after both go
    const AllocatorStats stats = allocator.stats();
    CHECK(stats.reserved == 8 * kMiB);
    CHECK(stats.segments == 1);
    CHECK(stats.raw_allocations == 3);
    CHECK(stats.cache_hits == 0);
    CHECK(stats.in_use == 7 * kMiB);  // the 1 MiB rest is split off
    CHECK(stats.largest_free == kMiB);
    CHECK(fake.failures() == 1);
    CHECK(fake.releases() == 2);
    CHECK(fake.segment_of(c, 7 * kMiB).second == 8 * kMiB);
  }
  SECTION("a segment with a live block stays") {
    char* a = must_allocate(allocator, kMiB);
    allocator.release(must_allocate(allocator, 4 * kMiB));
    must_allocate(allocator, 5 * kMiB);  // 6 MiB: 2 + 4 + 6 > 8, but 2 + 6 fits
    const AllocatorStats stats = allocator.stats();
    CHECK(stats.reserved == 8 * kMiB);
    CHECK(stats.segments == 2);
    CHECK(stats.in_use == kMiB + 5 * kMiB);
    CHECK(fake.failures() == 1);
    CHECK(fake.releases() == 1);
    CHECK(fake.segment_of(a, kMiB).second == 2 * kMiB);
  }
}

TEST_CASE("out of memory after the retry names the request, in use, reserved and largest free",
          "[kernels][caching_allocator]") {
  FakeRaw fake(4 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  must_allocate(allocator, 512 * kKiB);          // small segment, 1.5 MiB of it free
  char* b = must_allocate(allocator, 2 * kMiB);  // large segment, all of it in use
  const AllocatorStats before = allocator.stats();
  const int64_t calls = fake.calls();
  Expected<void*> result = allocator.allocate(5 * kMiB);
  REQUIRE_FALSE(result.has_value());
  CHECK(result.status().code() == Errc::kResourceExhausted);
  const std::string message = result.status().message();
  INFO(message);
  CHECK(contains(message, "cuda:0"));
  CHECK(contains(message, "5242880"));        // the request
  CHECK(contains(message, "2621440 bytes"));  // in use: 0.5 + 2 MiB
  CHECK(contains(message, "4194304 bytes"));  // reserved
  CHECK(contains(message, "1572864 bytes"));  // largest free block
  CHECK(contains(message, "in use"));
  CHECK(contains(message, "reserved"));
  CHECK(contains(message, "largest free block"));
  CHECK(fake.calls() == calls + 2);  // the first try and the retry
  const AllocatorStats after = allocator.stats();
  CHECK(after.in_use == before.in_use);
  CHECK(after.reserved == before.reserved);
  CHECK(after.allocations == before.allocations);
  CHECK(after.segments == 2);
  // Still usable.
  allocator.release(b);
  CHECK(must_allocate(allocator, 2 * kMiB) == b);
}

TEST_CASE("non-positive and unrepresentable sizes are invalid arguments",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  const int64_t max = std::numeric_limits<int64_t>::max();
  const int64_t largest_segment = max / (2 * kMiB) * (2 * kMiB);
  for (const int64_t bytes : {int64_t{0}, int64_t{-1}, std::numeric_limits<int64_t>::min(), max,
                              max - 511, largest_segment + 1}) {
    Expected<void*> result = allocator.allocate(bytes);
    INFO(bytes);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.status().code() == Errc::kInvalidArgument);
    CHECK(contains(result.status().message(), "cuda:0"));
    CHECK(contains(result.status().message(), std::to_string(bytes)));
  }
  CHECK(fake.calls() == 0);
  CHECK(allocator.stats().allocations == 0);
  // Representable but more than the device has: out of memory, not a bad argument.
  for (const int64_t bytes : {largest_segment, int64_t{1} << 62, 65 * kMiB}) {
    Expected<void*> result = allocator.allocate(bytes);
    REQUIRE_FALSE(result.has_value());
    CHECK(result.status().code() == Errc::kResourceExhausted);
    CHECK(contains(result.status().message(), std::to_string(bytes)));
  }
  CHECK(allocator.stats().reserved == 0);
}

TEST_CASE("stats count allocations, raw allocations, cache hits and peaks",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  allocator.release(must_allocate(allocator, 1000));
  char* b = must_allocate(allocator, 1000);
  AllocatorStats stats = allocator.stats();
  CHECK(stats.allocations == 2);
  CHECK(stats.raw_allocations == 1);
  CHECK(stats.cache_hits == 1);
  CHECK(stats.in_use == 1024);
  CHECK(stats.requested == 1000);
  CHECK(stats.peak_in_use == 1024);
  char* c = must_allocate(allocator, 3 * kMiB);
  allocator.release(c);
  allocator.empty_cache();
  stats = allocator.stats();
  CHECK(stats.in_use == 1024);
  CHECK(stats.peak_in_use == 1024 + 3 * kMiB);
  CHECK(stats.reserved == 2 * kMiB);
  CHECK(stats.peak_reserved == 6 * kMiB);
  CHECK(stats.segments == 1);
  CHECK(stats.largest_free == 2 * kMiB - 1024);
  CHECK(stats.fragmentation() == 0.0);
  CHECK_FALSE(allocator.allocate(100 * kMiB).has_value());
  CHECK(allocator.stats().allocations == 3);
  allocator.reset_peaks();
  stats = allocator.stats();
  CHECK(stats.peak_in_use == 1024);
  CHECK(stats.peak_reserved == 2 * kMiB);
  allocator.release(b);
  CHECK(allocator.stats().peak_in_use == 1024);
  CHECK(allocator.stats().requested == 0);
}

TEST_CASE("fragmentation is the free memory outside the largest free block, over reserved",
          "[kernels][caching_allocator]") {
  AllocatorStats stats;
  CHECK(stats.fragmentation() == 0.0);
  stats.reserved = 8;
  stats.in_use = 2;
  stats.largest_free = 4;
  CHECK(stats.fragmentation() == Approx(0.25));
  stats.largest_free = 6;
  CHECK(stats.fragmentation() == 0.0);
}

TEST_CASE("the destructor returns every segment, live blocks included",
          "[kernels][caching_allocator]") {
  FakeRaw fake(64 * kMiB);
  {
    CachingAllocator allocator(fake.raw(), "cuda:0");
    must_allocate(allocator, 100);
    must_allocate(allocator, 3 * kMiB);
    allocator.release(must_allocate(allocator, 5 * kMiB));
    char* d = must_allocate(allocator, kMiB);
    must_allocate(allocator, 512);
    allocator.release(d);
    CHECK(fake.live_count() == 3);  // small, 4 MiB and the cached 6 MiB
  }
  CHECK(fake.live_count() == 0);
  CHECK(fake.releases() == fake.successes());
  CHECK(fake.bad_releases() == 0);
}

// The random sequences' request sizes: mostly small, a quarter large, some on the boundaries.
int64_t random_request(Rng& rng) {
  const double u = rng.uniform();
  if (u < 0.45) return 1 + rng.below(64 * kKiB);
  if (u < 0.70) return 64 * kKiB + 1 + rng.below(kMiB - 64 * kKiB);
  if (u < 0.75) {
    constexpr std::array<int64_t, 8> kEdges = {1,          511,  512,      513,
                                               kMiB - 511, kMiB, kMiB + 1, 2 * kMiB};
    return kEdges[static_cast<size_t>(rng.below(kEdges.size()))];
  }
  return kMiB + 1 + rng.below(9 * kMiB);
}

struct LiveBlock {
  int64_t requested = 0;
  int64_t size = 0;  // as measured by in_use
  uint64_t id = 0;
};

// The independent model: what the allocator's counters must read, from the live blocks and the
// fake's own books.
struct Model {
  std::map<uintptr_t, LiveBlock> live;  // by address
  int64_t in_use = 0;
  int64_t peak_in_use = 0;
  int64_t requested = 0;
  int64_t allocations = 0;
  int64_t cache_hits = 0;
};

void check_against_model(const CachingAllocator& allocator, const FakeRaw& fake,
                         const Model& model) {
  const AllocatorStats stats = allocator.stats();
  REQUIRE(stats.in_use == model.in_use);
  REQUIRE(stats.peak_in_use == model.peak_in_use);
  REQUIRE(stats.requested == model.requested);
  REQUIRE(stats.allocations == model.allocations);
  REQUIRE(stats.cache_hits == model.cache_hits);
  REQUIRE(stats.raw_allocations == fake.successes());
  REQUIRE(stats.reserved == fake.live_bytes());
  REQUIRE(stats.peak_reserved == fake.peak_bytes());
  REQUIRE(stats.segments == fake.live_count());
  const int64_t free = stats.reserved - stats.in_use;
  REQUIRE(free >= 0);
  REQUIRE(stats.largest_free <= free);
  REQUIRE((stats.largest_free > 0) == (free > 0));
  REQUIRE(stats.fragmentation() >= 0.0);
  REQUIRE(stats.fragmentation() < 1.0);
}

void run_random_sequence(uint64_t seed, FakeRaw::Mode mode, int steps) {
  FakeRaw fake(48 * kMiB, mode);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  Rng rng(seed);
  Model model;
  uint64_t next_id = 1;
  int64_t out_of_memory = 0;
  int64_t releases = 0;
  auto release_one = [&](std::map<uintptr_t, LiveBlock>::iterator it) {
    char* p = reinterpret_cast<char*>(it->first);
    REQUIRE(pattern_mismatches(p, it->second.requested, it->second.id) == 0);
    const int64_t in_use = allocator.stats().in_use;
    allocator.release(p);
    REQUIRE(allocator.stats().in_use == in_use - it->second.size);
    model.in_use -= it->second.size;
    model.requested -= it->second.requested;
    model.live.erase(it);
    ++releases;
  };
  for (int step = 0; step < steps; ++step) {
    INFO("seed " << seed << " step " << step);
    const double u = rng.uniform();
    if (u < 0.01) {
      allocator.empty_cache();
    } else if (u < 0.015) {
      allocator.reset_peaks();
      fake.reset_peak();
      model.peak_in_use = model.in_use;
    } else if (model.live.empty() || u < 0.55) {
      const int64_t bytes = random_request(rng);
      const int64_t rounded = (bytes + 511) / 512 * 512;
      const int64_t raw_before = fake.successes();
      const AllocatorStats before = allocator.stats();
      Expected<void*> result = allocator.allocate(bytes);
      if (!result.has_value()) {
        ++out_of_memory;
        REQUIRE(result.status().code() == Errc::kResourceExhausted);
        REQUIRE(contains(result.status().message(), std::to_string(bytes)));
        // Every wholly free segment went back before giving up, and (malloc: no fragmentation
        // of the device) the segment really did not fit.
        const int64_t reserved = allocator.stats().reserved;
        allocator.empty_cache();
        REQUIRE(allocator.stats().reserved == reserved);
        const int64_t segment =
            rounded <= kMiB ? 2 * kMiB : (rounded + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
        if (mode == FakeRaw::Mode::kMalloc) {
          REQUIRE(fake.live_bytes() + segment > fake.limit());
        }
        REQUIRE(allocator.stats().in_use == before.in_use);
      } else {
        char* p = static_cast<char*>(*result);
        const int64_t size = allocator.stats().in_use - before.in_use;
        if (rounded <= kMiB) {
          REQUIRE(size == rounded);
        } else {
          REQUIRE(size >= rounded);
          REQUIRE(size < rounded + kMiB);
          REQUIRE(size % 512 == 0);
        }
        // (a) inside one segment of the fake, 512-aligned from its base, overlapping no block.
        const auto [base, segment_size] = fake.segment_of(p, size);
        REQUIRE(segment_size > 0);
        REQUIRE((reinterpret_cast<uintptr_t>(p) - base) % 512 == 0);
        const uintptr_t address = reinterpret_cast<uintptr_t>(p);
        auto next = model.live.lower_bound(address);
        if (next != model.live.end())
          REQUIRE(address + static_cast<uintptr_t>(size) <= next->first);
        if (next != model.live.begin()) {
          const auto prev = std::prev(next);
          REQUIRE(prev->first + static_cast<uintptr_t>(prev->second.size) <= address);
        }
        // (b) a pattern to check on release.
        const uint64_t id = next_id++;
        fill_pattern(p, bytes, id);
        model.live.emplace(address, LiveBlock{.requested = bytes, .size = size, .id = id});
        model.in_use += size;
        model.peak_in_use = std::max(model.peak_in_use, model.in_use);
        model.requested += bytes;
        ++model.allocations;
        if (fake.successes() == raw_before) ++model.cache_hits;
      }
    } else {
      auto it = model.live.begin();
      std::advance(it, rng.below(static_cast<int64_t>(model.live.size())));
      release_one(it);
    }
    // (c) the counters against the model.
    check_against_model(allocator, fake, model);
  }
  // Both paths ran: hits and raw allocations, successes and failures.
  CHECK(out_of_memory > 0);
  CHECK(model.allocations > steps / 3);
  CHECK(model.cache_hits > 0);
  CHECK(fake.successes() > 1);
  CHECK(releases > steps / 4);
  // (d) released in a random order, every segment is one free block again and goes back.
  while (!model.live.empty()) {
    auto it = model.live.begin();
    std::advance(it, rng.below(static_cast<int64_t>(model.live.size())));
    release_one(it);
  }
  check_against_model(allocator, fake, model);
  const AllocatorStats stats = allocator.stats();
  CHECK(stats.in_use == 0);
  CHECK(stats.requested == 0);
  CHECK(stats.largest_free == fake.largest_live_segment());
  allocator.empty_cache();
  CHECK(allocator.stats().reserved == 0);
  CHECK(allocator.stats().segments == 0);
  CHECK(allocator.stats().largest_free == 0);
  CHECK(fake.live_count() == 0);
  CHECK(fake.bad_releases() == 0);
}

TEST_CASE("random sequences keep blocks disjoint, intact and counted (malloc segments)",
          "[kernels][caching_allocator]") {
  for (const uint64_t seed : {1u, 2u, 3u}) run_random_sequence(seed, FakeRaw::Mode::kMalloc, 3000);
}

TEST_CASE("random sequences keep blocks disjoint, intact and counted (touching segments)",
          "[kernels][caching_allocator]") {
  for (const uint64_t seed : {11u, 12u, 13u}) {
    run_random_sequence(seed, FakeRaw::Mode::kArena, 3000);
  }
}

TEST_CASE("four threads allocating and releasing at once keep blocks intact",
          "[kernels][caching_allocator]") {
  FakeRaw fake(128 * kMiB);
  CachingAllocator allocator(fake.raw(), "cuda:0");
  constexpr int kThreads = 4;
  constexpr int kSteps = 4000;
  std::atomic<int64_t> successes{0};
  std::atomic<int64_t> failures{0};
  std::atomic<int64_t> corrupted{0};
  std::atomic<int64_t> unexpected_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(100 + static_cast<uint64_t>(t));
      std::vector<std::pair<char*, LiveBlock>> live;
      uint64_t next_id = static_cast<uint64_t>(t) << 32;
      for (int step = 0; step < kSteps; ++step) {
        const double u = rng.uniform();
        if (u < 0.005) {
          allocator.empty_cache();
        } else if (u < 0.01) {
          (void)allocator.stats();
        } else if (live.empty() || (u < 0.55 && live.size() < 24)) {
          const int64_t bytes =
              rng.uniform() < 0.9 ? 1 + rng.below(256 * kKiB) : kMiB + 1 + rng.below(4 * kMiB);
          Expected<void*> result = allocator.allocate(bytes);
          if (!result.has_value()) {
            ++failures;
            if (result.status().code() != Errc::kResourceExhausted) ++unexpected_errors;
            continue;
          }
          const uint64_t id = next_id++;
          char* p = static_cast<char*>(*result);
          fill_pattern(p, bytes, id);
          live.emplace_back(p, LiveBlock{.requested = bytes, .size = 0, .id = id});
          ++successes;
        } else {
          const size_t index = static_cast<size_t>(rng.below(static_cast<int64_t>(live.size())));
          const auto [p, block] = live[index];
          if (pattern_mismatches(p, block.requested, block.id) != 0) ++corrupted;
          allocator.release(p);
          live[index] = live.back();
          live.pop_back();
        }
      }
      for (const auto& [p, block] : live) {
        if (pattern_mismatches(p, block.requested, block.id) != 0) ++corrupted;
        allocator.release(p);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(corrupted.load() == 0);
  CHECK(unexpected_errors.load() == 0);
  CHECK(successes.load() > kThreads * kSteps / 3);
  const AllocatorStats stats = allocator.stats();
  CHECK(stats.allocations == successes.load());
  CHECK(stats.in_use == 0);
  CHECK(stats.requested == 0);
  CHECK(stats.reserved == fake.live_bytes());
  CHECK(stats.raw_allocations == fake.successes());
  CHECK(stats.peak_reserved == fake.peak_bytes());
  allocator.empty_cache();
  CHECK(allocator.stats().reserved == 0);
  CHECK(fake.live_count() == 0);
  CHECK(fake.bad_releases() == 0);
}

}  // namespace
}  // namespace meshpipe::kernels

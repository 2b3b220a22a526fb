// FakeRaw: a host stand-in for cudaMalloc/cudaFree under kernels::CachingAllocator in tests, with
// a byte limit, counters, and an arena mode whose segments touch in memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/caching_allocator.h"

namespace meshpipe::kernels::testing {

// The raw allocator underneath, as a GPU driver would be: it refuses a request that would take
// its live bytes past `limit`. kMalloc gives each segment its own aligned_alloc; kArena carves
// segments first-fit out of one buffer, so consecutive segments usually touch in memory (which a
// wrong coalescing across segments would exploit). Thread-safe; counts everything.
class FakeRaw {
 public:
  /// Where segments come from: one aligned_alloc each, or first fit in one buffer.
  enum class Mode { kMalloc, kArena };

  /// Gives at most `limit` live bytes (in kArena mode, also the buffer's size).
  explicit FakeRaw(int64_t limit, Mode mode = Mode::kMalloc) : limit_(limit), mode_(mode) {
    if (mode_ == Mode::kArena) {
      arena_ = static_cast<char*>(std::aligned_alloc(4096, static_cast<size_t>(limit)));
      arena_free_.emplace(0, limit);
    }
  }
  ~FakeRaw() {
    for (const auto& [address, size] : live_) {
      if (mode_ == Mode::kMalloc) std::free(reinterpret_cast<void*>(address));
    }
    std::free(arena_);
  }
  FakeRaw(const FakeRaw&) = delete;
  FakeRaw& operator=(const FakeRaw&) = delete;

  /// The callbacks for a CachingAllocator; the fake must outlive it.
  CachingAllocator::RawAllocator raw() {
    return CachingAllocator::RawAllocator{
        .allocate = [this](int64_t bytes) { return allocate(bytes); },
        .release = [this](void* ptr) { release(ptr); },
    };
  }

  /// A 256-aligned segment of `bytes`, or null past the limit.
  void* allocate(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++calls_;
    last_request_ = bytes;
    void* ptr = nullptr;
    if (bytes > 0 && bytes <= limit_ - live_bytes_) {
      ptr = mode_ == Mode::kMalloc
                ? std::aligned_alloc(256, static_cast<size_t>((bytes + 255) / 256 * 256))
                : arena_take(bytes);
    }
    if (ptr == nullptr) {
      ++failures_;
      return nullptr;
    }
    live_.emplace(reinterpret_cast<uintptr_t>(ptr), bytes);
    live_bytes_ += bytes;
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
    ++successes_;
    return ptr;
  }

  /// Takes a segment back; an unknown pointer only counts in bad_releases().
  void release(void* ptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = live_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == live_.end()) {
      ++bad_releases_;
      return;
    }
    live_bytes_ -= it->second;
    if (mode_ == Mode::kMalloc) {
      std::free(ptr);
    } else {
      arena_give(static_cast<char*>(ptr) - arena_, it->second);
    }
    live_.erase(it);
    ++releases_;
  }

  /// The live segment holding [p, p + n), as (base, size); size 0 when none does.
  std::pair<uintptr_t, int64_t> segment_of(const void* p, int64_t n) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    auto it = live_.upper_bound(address);
    if (it == live_.begin()) return {0, 0};
    --it;
    if (address + static_cast<uintptr_t>(n) > it->first + static_cast<uintptr_t>(it->second)) {
      return {0, 0};
    }
    return *it;
  }

  /// Bytes of the largest live segment (0 when none).
  int64_t largest_live_segment() const {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t largest = 0;
    for (const auto& [address, size] : live_) largest = std::max(largest, size);
    return largest;
  }

  /// Sets peak_bytes() to live_bytes(), as CachingAllocator::reset_peaks does.
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_bytes_ = live_bytes_;
  }

  /// Counters: live and peak bytes, live segments, calls to allocate (successes and failures),
  /// releases, releases of unknown pointers, and the size of the last request.
  int64_t limit() const { return limit_; }
  int64_t live_bytes() const { return locked(live_bytes_); }
  int64_t peak_bytes() const { return locked(peak_bytes_); }
  int64_t live_count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(live_.size());
  }
  int64_t calls() const { return locked(calls_); }
  int64_t successes() const { return locked(successes_); }
  int64_t failures() const { return locked(failures_); }
  int64_t releases() const { return locked(releases_); }
  int64_t bad_releases() const { return locked(bad_releases_); }
  int64_t last_request() const { return locked(last_request_); }

 private:
  int64_t locked(const int64_t& field) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return field;
  }

  // First fit over free ranges of the arena (offset -> size), lowest offset first.
  void* arena_take(int64_t bytes) {
    const int64_t size = (bytes + 255) / 256 * 256;
    for (auto it = arena_free_.begin(); it != arena_free_.end(); ++it) {
      if (it->second < size) continue;
      const int64_t offset = it->first;
      const int64_t rest = it->second - size;
      arena_free_.erase(it);
      if (rest > 0) arena_free_.emplace(offset + size, rest);
      return arena_ + offset;
    }
    return nullptr;
  }

  void arena_give(int64_t offset, int64_t bytes) {
    int64_t size = (bytes + 255) / 256 * 256;
    auto next = arena_free_.lower_bound(offset);
    if (next != arena_free_.end() && next->first == offset + size) {
      size += next->second;
      next = arena_free_.erase(next);
    }
    if (next != arena_free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += size;
        return;
      }
    }
    arena_free_.emplace(offset, size);
  }

  const int64_t limit_;
  const Mode mode_;
  mutable std::mutex mutex_;
  std::map<uintptr_t, int64_t> live_;  // base address -> bytes asked for
  int64_t live_bytes_ = 0;
  int64_t peak_bytes_ = 0;
  int64_t calls_ = 0;
  int64_t successes_ = 0;
  int64_t failures_ = 0;
  int64_t releases_ = 0;
  int64_t bad_releases_ = 0;
  int64_t last_request_ = 0;
  char* arena_ = nullptr;
  std::map<int64_t, int64_t> arena_free_;
};

}  // namespace meshpipe::kernels::testing

// A caching allocator for device memory (used per GPU by kernels::GpuDevice, testable on the
// host): segments come from a raw allocator (cudaMalloc on a GPU, malloc in tests) and are
// carved into blocks that are cached when released instead of returned, so a training step's
// allocations after the first cost no driver call. Design (the facts follow PyTorch's CUDA
// caching allocator; the code is ours):
//  - sizes round up to 512 bytes; requests of at most 1 MiB come from 2 MiB "small" segments,
//    larger ones from "large" segments of the request rounded up to 2 MiB;
//  - a request takes the smallest cached free block of its pool that fits (best fit) and
//    splits off the rest when the rest is at least 512 bytes (small pool) or 1 MiB (large);
//  - a released block merges with free neighbours of its segment;
//  - when the raw allocator fails, every wholly free segment is returned and the request tried
//    once more; then the error (kResourceExhausted) names the request, what is in use, what is
//    reserved and the largest free block.
// Memory is stream-ordered by the caller: release a block only once the work that uses it is
// ordered before the next user (one compute stream, or an event the caller waited on).
// Thread-safe (one mutex).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"

namespace meshpipe::kernels {

/// Counters of a CachingAllocator, in bytes unless named otherwise.
struct AllocatorStats {
  /// bytes of blocks handed out: rounded sizes, plus the tail (under 1 MiB) of a large block
  /// that was too small to split off
  int64_t in_use = 0;
  int64_t peak_in_use = 0;      ///< high-water mark of in_use
  int64_t requested = 0;        ///< bytes asked for by live blocks (unrounded)
  int64_t reserved = 0;         ///< bytes of segments held from the raw allocator
  int64_t peak_reserved = 0;    ///< high-water mark of reserved
  int64_t largest_free = 0;     ///< largest cached free block
  int64_t allocations = 0;      ///< successful allocate() calls
  int64_t raw_allocations = 0;  ///< segments obtained from the raw allocator
  int64_t cache_hits = 0;       ///< allocate() calls served without the raw allocator
  int64_t segments = 0;         ///< segments held now
  /// Free bytes inside held segments that the largest free block does not cover, as a fraction
  /// of the reserved bytes: 0 when all free memory is one block (or none is free).
  double fragmentation() const {
    const int64_t free = reserved - in_use;
    return reserved > 0 && free > largest_free
               ? static_cast<double>(free - largest_free) / static_cast<double>(reserved)
               : 0.0;
  }
};

class CachingAllocator {
 public:
  /// The raw allocator underneath: `allocate` returns null when it cannot give `bytes` (its
  /// pointers must be aligned to at least 256 bytes); `release` takes back what it gave.
  struct RawAllocator {
    std::function<void*(int64_t bytes)> allocate;
    std::function<void(void* ptr)> release;
  };

  /// `name` prefixes error messages ("cuda:0").
  CachingAllocator(RawAllocator raw, std::string name);
  /// Returns every segment to the raw allocator (blocks still in use are a caller bug: they are
  /// returned too).
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  /// A block of at least `bytes` (> 0), aligned to 512 bytes relative to its segment's base.
  /// Errors: bytes <= 0 (kInvalidArgument), no memory (kResourceExhausted, see above).
  Expected<void*> allocate(int64_t bytes);
  /// Caches a block allocate() returned; aborts on a pointer it did not return or one already
  /// released.
  void release(void* ptr);
  /// Returns every wholly free segment to the raw allocator.
  void empty_cache();
  AllocatorStats stats() const;
  /// Zeroes the peak counters (peak_in_use = in_use, peak_reserved = reserved).
  void reset_peaks();

 private:
  struct Impl;  // caching_allocator.cc
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshpipe::kernels

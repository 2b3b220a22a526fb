// BufferPool: per-device memory with exact-size free lists. A static graph asks for the same
// sizes every step, so after the first step every allocation is a reuse. Reports live, peak and
// reserved bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "core/units.h"
#include "runtime/host_tensor.h"

namespace meshpipe::runtime {

/// A block handed out by the pool.
struct Block {
  void* data = nullptr;
  int64_t bytes = 0;
};

/// Memory figures of a pool.
struct PoolStats {
  Bytes live;      ///< handed out now
  Bytes peak;      ///< largest `live` since the last reset_peak()
  Bytes reserved;  ///< obtained from the system (live + cached free blocks)
};

/// Exact-size caching allocator (64-byte aligned blocks).
class BufferPool {
 public:
  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  /// The size of the block allocate(bytes) hands out (64-byte multiples, at least 64).
  static int64_t block_bytes(int64_t bytes) { return (std::max<int64_t>(bytes, 1) + 63) / 64 * 64; }
  /// A block of at least `bytes` (a cached block of the same rounded size when one is free).
  Block allocate(int64_t bytes);
  /// Returns a block to the cache.
  void release(Block block);
  /// Frees every cached (not live) block.
  void trim();
  PoolStats stats() const { return {Bytes(live_), Bytes(peak_), Bytes(reserved_)}; }
  /// Starts a new peak measurement at the current live bytes.
  void reset_peak() { peak_ = live_; }

 private:
  std::map<int64_t, std::vector<void*>> free_;  // rounded size -> cached blocks
  std::map<void*, std::unique_ptr<void, AlignedFree>> owned_;
  int64_t live_ = 0;
  int64_t peak_ = 0;
  int64_t reserved_ = 0;
};

}  // namespace meshpipe::runtime

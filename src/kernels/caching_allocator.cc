// CachingAllocator (kernels/caching_allocator.h): segments from a raw allocator carved into
// blocks kept in two best-fit pools (small, large) and coalesced with free segment neighbours.
#include "kernels/caching_allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <mutex>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/check.h"

namespace meshpipe::kernels {
namespace {

constexpr int64_t kMinBlockSize = 512;            // every size rounds up to this
constexpr int64_t kSmallSize = int64_t{1} << 20;  // largest request of the small pool
constexpr int64_t kSmallSegment = int64_t{2} << 20;
constexpr int64_t kLargeRound = int64_t{2} << 20;  // large segments are multiples of this
constexpr int64_t kMinLargeSplit = kSmallSize;     // a large block splits off at least this
// The largest request whose large segment (rounded up to 2 MiB) is still an int64_t.
constexpr int64_t kMaxRequest = std::numeric_limits<int64_t>::max() / kLargeRound * kLargeRound;

int64_t round_up(int64_t bytes, int64_t multiple) {
  return (bytes + multiple - 1) / multiple * multiple;
}

std::string format_bytes(int64_t bytes) {
  return fmt::format("{} bytes ({:.2f} MiB)", bytes,
                     static_cast<double>(bytes) / static_cast<double>(kSmallSize));
}

struct Block {
  char* ptr = nullptr;
  int64_t size = 0;       // bytes of this block (a multiple of 512)
  int64_t requested = 0;  // bytes asked for while allocated
  bool small = false;     // pool (and segment kind)
  bool allocated = false;
  Block* prev = nullptr;  // neighbours within the same segment, by address
  Block* next = nullptr;
};

// Pools order blocks by (size, address): lower_bound of (size, 0) is the best fit, and among
// equal sizes the lowest address wins, which keeps the choice deterministic.
struct BlockLess {
  bool operator()(const Block* a, const Block* b) const {
    if (a->size != b->size) return a->size < b->size;
    return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
  }
};

using Pool = std::set<Block*, BlockLess>;

}  // namespace

struct CachingAllocator::Impl {
  RawAllocator raw;
  std::string name;
  mutable std::mutex mutex;
  Pool small_pool;
  Pool large_pool;
  std::unordered_map<void*, Block*> live;  // allocated blocks by pointer
  // The first block of each segment. Merging keeps the lower block and splitting keeps the
  // block at the front, so a segment's head block lives as long as the segment.
  std::unordered_set<Block*> segment_heads;
  AllocatorStats stats;

  Pool& pool_of(bool small) { return small ? small_pool : large_pool; }

  Block* take_best_fit(Pool& pool, int64_t size) {
    Block key;
    key.size = size;
    const auto it = pool.lower_bound(&key);
    if (it == pool.end()) return nullptr;
    Block* block = *it;
    pool.erase(it);
    return block;
  }

  Block* new_segment(int64_t segment_size, bool small) {
    void* ptr = raw.allocate(segment_size);
    if (ptr == nullptr) return nullptr;
    MP_CHECK(reinterpret_cast<uintptr_t>(ptr) % 256 == 0)
        << name << ": the raw allocator returned a pointer not aligned to 256 bytes";
    Block* block = new Block{.ptr = static_cast<char*>(ptr),
                             .size = segment_size,
                             .requested = 0,
                             .small = small,
                             .allocated = false,
                             .prev = nullptr,
                             .next = nullptr};
    segment_heads.insert(block);
    stats.reserved += segment_size;
    stats.peak_reserved = std::max(stats.peak_reserved, stats.reserved);
    ++stats.segments;
    ++stats.raw_allocations;
    return block;
  }

  // Returns every segment that is one free block; true when any was returned.
  bool release_free_segments() {
    bool released = false;
    for (Pool* pool : {&small_pool, &large_pool}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* block = *it;
        if (block->prev != nullptr || block->next != nullptr) {
          ++it;
          continue;
        }
        it = pool->erase(it);
        segment_heads.erase(block);
        stats.reserved -= block->size;
        --stats.segments;
        raw.release(block->ptr);
        delete block;
        released = true;
      }
    }
    return released;
  }

  // Splits `block` (out of its pool) to `size` when the rest reaches the pool's minimum; the
  // rest goes back to the pool.
  void maybe_split(Block* block, int64_t size) {
    const int64_t rest = block->size - size;
    if (rest < (block->small ? kMinBlockSize : kMinLargeSplit)) return;
    Block* tail = new Block{.ptr = block->ptr + size,
                            .size = rest,
                            .requested = 0,
                            .small = block->small,
                            .allocated = false,
                            .prev = block,
                            .next = block->next};
    if (block->next != nullptr) block->next->prev = tail;
    block->next = tail;
    block->size = size;
    pool_of(block->small).insert(tail);
  }

  // `into` absorbs its free successor `from` (both out of the pool).
  static void absorb(Block* into, Block* from) {
    into->size += from->size;
    into->next = from->next;
    if (from->next != nullptr) from->next->prev = into;
    delete from;
  }

  int64_t largest_free() const {
    int64_t largest = 0;
    if (!small_pool.empty()) largest = (*small_pool.rbegin())->size;
    if (!large_pool.empty()) largest = std::max(largest, (*large_pool.rbegin())->size);
    return largest;
  }

  Status out_of_memory(int64_t bytes, int64_t size) const {
    return make_error(Errc::kResourceExhausted,
                      "{}: out of memory allocating {} (rounded to {}): {} in use, {} reserved, "
                      "largest free block {}",
                      name, format_bytes(bytes), format_bytes(size), format_bytes(stats.in_use),
                      format_bytes(stats.reserved), format_bytes(largest_free()));
  }
};

CachingAllocator::CachingAllocator(RawAllocator raw, std::string name)
    : impl_(std::make_unique<Impl>()) {
  impl_->raw = std::move(raw);
  impl_->name = std::move(name);
}

CachingAllocator::~CachingAllocator() {
  for (Block* head : impl_->segment_heads) {
    void* base = head->ptr;
    for (Block* block = head; block != nullptr;) {
      Block* next = block->next;
      delete block;
      block = next;
    }
    impl_->raw.release(base);
  }
}

Expected<void*> CachingAllocator::allocate(int64_t bytes) {
  Impl& s = *impl_;
  if (bytes <= 0) {
    return make_error(Errc::kInvalidArgument, "{}: cannot allocate {} bytes (must be positive)",
                      s.name, bytes);
  }
  if (bytes > kMaxRequest) {
    return make_error(Errc::kInvalidArgument,
                      "{}: cannot allocate {} bytes (more than the largest segment, {} bytes)",
                      s.name, bytes, kMaxRequest);
  }
  const int64_t size = round_up(bytes, kMinBlockSize);
  const bool small = size <= kSmallSize;
  const int64_t segment_size = small ? kSmallSegment : round_up(size, kLargeRound);

  std::lock_guard<std::mutex> lock(s.mutex);
  Block* block = s.take_best_fit(s.pool_of(small), size);
  if (block != nullptr) {
    ++s.stats.cache_hits;
  } else {
    block = s.new_segment(segment_size, small);
    if (block == nullptr) {
      s.release_free_segments();
      block = s.new_segment(segment_size, small);
    }
    if (block == nullptr) return s.out_of_memory(bytes, size);
  }
  s.maybe_split(block, size);
  block->allocated = true;
  block->requested = bytes;
  s.live.emplace(block->ptr, block);
  s.stats.in_use += block->size;
  s.stats.peak_in_use = std::max(s.stats.peak_in_use, s.stats.in_use);
  s.stats.requested += bytes;
  ++s.stats.allocations;
  return static_cast<void*>(block->ptr);
}

void CachingAllocator::release(void* ptr) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mutex);
  const auto it = s.live.find(ptr);
  MP_CHECK(it != s.live.end()) << s.name << ": release of " << ptr
                               << ", which this allocator did not hand out or already released";
  Block* block = it->second;
  s.live.erase(it);
  s.stats.in_use -= block->size;
  s.stats.requested -= block->requested;
  block->allocated = false;
  block->requested = 0;
  Pool& pool = s.pool_of(block->small);
  if (block->prev != nullptr && !block->prev->allocated) {
    Block* prev = block->prev;
    pool.erase(prev);
    Impl::absorb(prev, block);
    block = prev;
  }
  if (block->next != nullptr && !block->next->allocated) {
    pool.erase(block->next);
    Impl::absorb(block, block->next);
  }
  pool.insert(block);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->release_free_segments();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  AllocatorStats stats = impl_->stats;
  stats.largest_free = impl_->largest_free();
  return stats;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stats.peak_in_use = impl_->stats.in_use;
  impl_->stats.peak_reserved = impl_->stats.reserved;
}

}  // namespace meshpipe::kernels

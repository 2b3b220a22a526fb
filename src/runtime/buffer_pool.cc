// BufferPool implementation.
#include "runtime/buffer_pool.h"

#include <algorithm>

#include "core/check.h"

namespace meshpipe::runtime {
Block BufferPool::allocate(int64_t bytes) {
  const int64_t size = block_bytes(bytes);
  void* p = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
  } else {
    auto mem = aligned_bytes(size);
    p = mem.get();
    owned_.emplace(p, std::move(mem));
    reserved_ += size;
  }
  live_ += size;
  peak_ = std::max(peak_, live_);
  return {p, size};
}

void BufferPool::release(Block block) {
  MP_CHECK(block.data != nullptr && owned_.count(block.data) == 1) << "foreign block";
  live_ -= block.bytes;
  free_[block.bytes].push_back(block.data);
}

void BufferPool::trim() {
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) {
      owned_.erase(p);
      reserved_ -= size;
    }
    blocks.clear();
  }
}

}  // namespace meshpipe::runtime

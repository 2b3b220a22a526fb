// Host and GPU memory for the device interpreter (runtime/internal/device_memory.h).
#include "runtime/internal/device_memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>

namespace meshpipe::runtime::internal {

namespace {

// Host blocks by exact size, kept for reuse: a static program asks for the same sizes every step.
// `make` and `free` obtain and return one block.
template <typename Make, typename Free>
class HostPool {
 public:
  HostPool(Make make, Free free) : make_(std::move(make)), free_(std::move(free)) {}
  ~HostPool() {
    for (void* p : all_) free_(p);
  }
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;
  Expected<void*> get(int64_t bytes) {
    std::vector<void*>& idle = idle_[bytes];
    if (!idle.empty()) {
      void* p = idle.back();
      idle.pop_back();
      return p;
    }
    MP_ASSIGN_OR_RETURN(void* p, make_(bytes));
    all_.push_back(p);
    return p;
  }
  void put(void* p, int64_t bytes) { idle_[bytes].push_back(p); }

 private:
  Make make_;
  Free free_;
  std::map<int64_t, std::vector<void*>> idle_;
  std::vector<void*> all_;
};

Expected<void*> malloc_block(int64_t bytes) {
  void* p = std::malloc(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
  if (p == nullptr) {
    return make_error(Errc::kResourceExhausted, "no {} bytes of host memory for staging", bytes);
  }
  return p;
}

using MallocPool = HostPool<Expected<void*> (*)(int64_t), void (*)(void*)>;

class HostMemory final : public DeviceMemory {
 public:
  explicit HostMemory(bool staged) : staged_(staged) {}
  const kernels::KernelContext& context() const override { return ctx_; }
  bool on_host() const override { return !staged_; }
  Expected<Block> allocate(int64_t bytes) override { return pool_.allocate(bytes); }
  void release(Block block) override { pool_.release(block); }
  void reset_peak() override { pool_.reset_peak(); }
  int64_t peak_bytes() const override { return pool_.stats().peak.value(); }
  Expected<void*> scratch(int slot, int64_t bytes) override {
    std::vector<uint8_t>& s = scratch_[slot];
    if (static_cast<int64_t>(s.size()) < bytes) s.resize(static_cast<size_t>(bytes));
    return static_cast<void*>(s.data());
  }
  Status zero(void* data, int64_t bytes) override {
    std::memset(data, 0, static_cast<size_t>(bytes));
    return Status::ok();
  }
  Status copy(void* dst, const void* src, int64_t bytes) override {
    if (dst != src) std::memcpy(dst, src, static_cast<size_t>(bytes));
    return Status::ok();
  }
  Status upload(void* dst, const void* host, int64_t bytes) override {
    return copy(dst, host, bytes);
  }
  Status download(void* host, const void* src, int64_t bytes) override {
    return copy(host, src, bytes);
  }
  Status synchronize() override { return Status::ok(); }
  Expected<void*> host_buffer(int64_t bytes) override { return staging_.get(bytes); }
  void release_host(void* data, int64_t bytes) override { staging_.put(data, bytes); }

 private:
  MallocPool staging_{&malloc_block, &std::free};
  bool staged_ = false;
  kernels::KernelContext ctx_;
  BufferPool pool_;
  std::map<int, std::vector<uint8_t>> scratch_;
};

class GpuMemory final : public DeviceMemory {
 public:
  explicit GpuMemory(std::unique_ptr<kernels::GpuDevice> gpu) : gpu_(std::move(gpu)) {}
  ~GpuMemory() override {
    // Kernels still queued may use the blocks: wait, then hand the scratch back.
    static_cast<void>(gpu_->synchronize());
    for (auto& [slot, b] : scratch_) gpu_->release(b.data);
  }

  const kernels::KernelContext& context() const override { return gpu_->context(); }
  bool on_host() const override { return false; }
  kernels::GpuDevice* gpu() override { return gpu_.get(); }
  Expected<Block> allocate(int64_t bytes) override {
    const int64_t rounded = BufferPool::block_bytes(bytes);
    MP_ASSIGN_OR_RETURN(void* p, gpu_->allocate(rounded));
    live_ += rounded;
    peak_ = std::max(peak_, live_);
    return Block{p, rounded};
  }
  void release(Block block) override {
    if (block.data == nullptr) return;
    gpu_->release(block.data);
    live_ -= block.bytes;
  }
  void reset_peak() override { peak_ = live_; }
  int64_t peak_bytes() const override { return peak_; }
  Expected<void*> scratch(int slot, int64_t bytes) override {
    Block& b = scratch_[slot];
    if (b.bytes < bytes) {
      if (b.data != nullptr) gpu_->release(b.data);
      b = {};
      MP_ASSIGN_OR_RETURN(void* p, gpu_->allocate(bytes));
      b = Block{p, bytes};
    }
    return b.data;
  }
  Status zero(void* data, int64_t bytes) override { return gpu_->zero(data, bytes); }
  Status copy(void* dst, const void* src, int64_t bytes) override {
    if (dst == src || bytes == 0) return Status::ok();
    return gpu_->copy_on_device(dst, src, bytes);
  }
  Status upload(void* dst, const void* host, int64_t bytes) override {
    return gpu_->copy_to_device(dst, host, bytes);
  }
  Status download(void* host, const void* src, int64_t bytes) override {
    return gpu_->copy_to_host(host, src, bytes);
  }
  Status synchronize() override { return gpu_->synchronize(); }
  Expected<void*> host_buffer(int64_t bytes) override { return pinned_.get(bytes); }
  void release_host(void* data, int64_t bytes) override { pinned_.put(data, bytes); }

 private:
  using PinnedPool = HostPool<std::function<Expected<void*>(int64_t)>, std::function<void(void*)>>;
  std::unique_ptr<kernels::GpuDevice> gpu_;
  // Declared after gpu_, so destroyed before it (the blocks are freed while the GPU is open).
  PinnedPool pinned_{[this](int64_t bytes) { return gpu_->allocate_pinned(bytes); },
                     [this](void* p) { gpu_->release_pinned(p); }};
  std::map<int, Block> scratch_;
  int64_t live_ = 0;
  int64_t peak_ = 0;
};

}  // namespace

std::unique_ptr<DeviceMemory> make_host_memory(bool staged) {
  return std::make_unique<HostMemory>(staged);
}

Expected<std::unique_ptr<DeviceMemory>> make_gpu_memory(int ordinal) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<kernels::GpuDevice> gpu, kernels::GpuDevice::open(ordinal));
  return std::unique_ptr<DeviceMemory>(std::make_unique<GpuMemory>(std::move(gpu)));
}

}  // namespace meshpipe::runtime::internal

// Host and GPU memory for the device interpreter (runtime/internal/device_memory.h).
#include "runtime/internal/device_memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

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

// Staged host memory's side queue: a thread that runs posted work in order, each after
// `delay`. Tickets count up from 0; a work's failure is kept until its ticket is waited for.
class SideWorker {
 public:
  explicit SideWorker(std::chrono::microseconds delay)
      : delay_(delay), thread_([this] { loop(); }) {}
  ~SideWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  SideWorker(const SideWorker&) = delete;
  SideWorker& operator=(const SideWorker&) = delete;

  int64_t post(std::function<Status()> work) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
    const int64_t t = posted_++;
    cv_.notify_all();
    return t;
  }
  Status wait(int64_t ticket) {
    std::unique_lock<std::mutex> lock(mu_);
    if (ticket < 0 || ticket >= posted_) {
      return make_error(Errc::kInternal, "no side-queue ticket {}", ticket);
    }
    cv_.wait(lock, [&] { return done_ > ticket; });
    auto it = failures_.find(ticket);
    if (it == failures_.end()) return Status::ok();
    Status s = std::move(it->second);
    failures_.erase(it);
    return s;
  }
  Status drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ == posted_; });
    Status first = Status::ok();
    if (!failures_.empty()) first = failures_.begin()->second;
    failures_.clear();
    return first;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      std::function<Status()> work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
      Status s = work();
      lock.lock();
      if (!s.is_ok()) failures_.emplace(done_, std::move(s));
      ++done_;
      cv_.notify_all();
    }
  }

  std::chrono::microseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<Status()>> queue_;
  int64_t posted_ = 0;
  int64_t done_ = 0;
  std::map<int64_t, Status> failures_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is made
};

class HostMemory final : public DeviceMemory {
 public:
  HostMemory(bool staged, bool side_queue, std::chrono::microseconds delay) : staged_(staged) {
    if (staged && side_queue) worker_ = std::make_unique<SideWorker>(delay);
  }
  bool has_side_queue() const override { return worker_ != nullptr; }
  Expected<int64_t> side(std::function<Status()> work) override {
    if (!worker_) return DeviceMemory::side(std::move(work));
    return worker_->post(std::move(work));
  }
  Status after_side(int64_t ticket, std::chrono::milliseconds /*timeout*/) override {
    return worker_ ? worker_->wait(ticket) : Status::ok();  // its collective has a timeout
  }
  Status drain_side() override { return worker_ ? worker_->drain() : Status::ok(); }
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
  std::unique_ptr<SideWorker> worker_;  // last: its work is finished before the rest goes
};

class GpuMemory final : public DeviceMemory {
 public:
  explicit GpuMemory(std::unique_ptr<kernels::GpuDevice> gpu) : gpu_(std::move(gpu)) {}
  ~GpuMemory() override {
    // Kernels still queued may use the blocks: wait, then hand the scratch back.
    static_cast<void>(gpu_->synchronize_side());
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
  bool has_side_queue() const override { return true; }
  void* side_stream() override { return gpu_->side_stream(); }
  Expected<int64_t> side(std::function<Status()> work) override {
    MP_RETURN_IF_ERROR(gpu_->side_after_compute());
    MP_RETURN_IF_ERROR(work());  // enqueues on the side stream
    auto mark = gpu_->mark_side();
    // Without a mark nothing could wait for the work queued: wait for it here.
    if (!mark.has_value()) static_cast<void>(gpu_->synchronize_side());
    return mark;
  }
  Status after_side(int64_t ticket, std::chrono::milliseconds timeout) override {
    MP_RETURN_IF_ERROR(gpu_->wait_mark(ticket, timeout));
    return gpu_->compute_after(ticket);  // (complete already: a no-op wait, kept for order)
  }
  Status drain_side() override {
    const Status s = gpu_->synchronize_side();
    gpu_->reuse_marks();
    return s;
  }

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

Expected<int64_t> DeviceMemory::side(std::function<Status()> work) {
  MP_RETURN_IF_ERROR(work());  // no side queue: in order, at once
  return int64_t{0};
}

Status DeviceMemory::after_side(int64_t /*ticket*/, std::chrono::milliseconds /*timeout*/) {
  return Status::ok();
}

std::unique_ptr<DeviceMemory> make_host_memory(bool staged, bool side_queue,
                                               std::chrono::microseconds side_delay) {
  return std::make_unique<HostMemory>(staged, side_queue, side_delay);
}

Expected<std::unique_ptr<DeviceMemory>> make_gpu_memory(int ordinal) {
  MP_ASSIGN_OR_RETURN(std::unique_ptr<kernels::GpuDevice> gpu, kernels::GpuDevice::open(ordinal));
  return std::unique_ptr<DeviceMemory>(std::make_unique<GpuMemory>(std::move(gpu)));
}

}  // namespace meshpipe::runtime::internal

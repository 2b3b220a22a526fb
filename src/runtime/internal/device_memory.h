// Where a device interpreter's buffers live and how bytes move there (private to runtime/): host
// memory for the CPU backend (a BufferPool, memcpy) or one GPU's memory (kernels::GpuDevice: its
// caching allocator, copies and kernels queued on its compute stream). The interpreter runs the
// same instructions on either; only this and the kernels' column differ.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/status.h"
#include "kernels/gpu.h"
#include "kernels/tensor_view.h"
#include "runtime/buffer_pool.h"

namespace meshpipe::runtime::internal {

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;

  /// The context kernels on this memory take (kCpu, or the GPU's kCuda).
  virtual const kernels::KernelContext& context() const = 0;
  /// Whether the interpreter may touch the bytes directly (false on a GPU, and for staged host
  /// memory, which makes it take the GPU's paths on the host).
  virtual bool on_host() const = 0;
  /// The GPU (null for host memory).
  virtual kernels::GpuDevice* gpu() { return nullptr; }

  /// A block of at least `bytes`, counted in the peak (BufferPool's rounding on both).
  virtual Expected<Block> allocate(int64_t bytes) = 0;
  virtual void release(Block block) = 0;
  virtual void reset_peak() = 0;
  virtual int64_t peak_bytes() const = 0;
  /// Memory kept across steps for staging (packed collectives, pieces of tiles, widened half
  /// tensors), one area per `slot` (grown when asked for more), not counted in the peak.
  virtual Expected<void*> scratch(int slot, int64_t bytes) = 0;

  /// Host memory the transport sends from or receives into (page-locked on a GPU, so the copies
  /// run at full bandwidth), from a pool by size; release_host takes it back. Every block is
  /// freed with the memory.
  virtual Expected<void*> host_buffer(int64_t bytes) = 0;
  virtual void release_host(void* data, int64_t bytes) = 0;

  /// On this memory, in the order of the kernels (a GPU queues them; they do not wait).
  virtual Status zero(void* data, int64_t bytes) = 0;
  virtual Status copy(void* dst, const void* src, int64_t bytes) = 0;
  /// Between host memory and this memory; both wait until the bytes have moved.
  virtual Status upload(void* dst, const void* host, int64_t bytes) = 0;
  virtual Status download(void* host, const void* src, int64_t bytes) = 0;
  /// Waits for everything queued (a GPU's asynchronous failures surface here).
  virtual Status synchronize() = 0;

  /// A second queue beside the one kernels run on, for collectives that overlap them: a GPU's
  /// communication stream (kernels::GpuDevice::side_stream), or for staged host memory made
  /// with `side_queue` a worker thread (how the overlap's ordering is tested without a GPU).
  virtual bool has_side_queue() const { return false; }
  /// The GPU's communication stream (null elsewhere): where deferred NCCL communicators queue.
  virtual void* side_stream() { return nullptr; }
  /// Runs `work` on the side queue after everything queued on this memory so far, and returns
  /// a ticket. On a GPU the side stream waits for the compute stream and `work` runs at once on
  /// the calling thread, enqueueing on side_stream() (its Status is returned here); on the
  /// worker thread, `work` runs there and its Status comes from after_side.
  virtual Expected<int64_t> side(std::function<Status()> work);
  /// Everything queued on this memory from now on (kernels, copies, reuse of released blocks)
  /// comes after ticket's work: the host waits for it, at most `timeout` on a GPU (kTimeout:
  /// the work queued on the compute stream keeps running meanwhile; a GPU-side wait instead
  /// would leave every later host copy waiting without a deadline when a peer has failed).
  /// Returns the work's failure.
  virtual Status after_side(int64_t ticket, std::chrono::milliseconds timeout);
  /// Waits (the host) for all side work; tickets are then reused.
  virtual Status drain_side() { return Status::ok(); }
};

/// Host memory (never fails to be made). `staged`: reported as not on the host, so the
/// interpreter takes the paths it takes on a GPU (transfers staged through host copies, kernel
/// table for accumulation and scaling, persistent tiles through mirrors) with the CPU kernels:
/// how those paths are tested on machines without a GPU. `side_queue` (with `staged`): a
/// worker thread as the side queue, which waits `side_delay` before each work so that a reader
/// that forgot to wait for it sees stale data.
std::unique_ptr<DeviceMemory> make_host_memory(
    bool staged = false, bool side_queue = false,
    std::chrono::microseconds side_delay = std::chrono::microseconds(0));
/// CUDA device `ordinal`'s memory (kernels::GpuDevice::open: kUnavailable without CUDA or the
/// device, naming why).
Expected<std::unique_ptr<DeviceMemory>> make_gpu_memory(int ordinal);

}  // namespace meshpipe::runtime::internal

// Where a device interpreter's buffers live and how bytes move there (private to runtime/): host
// memory for the CPU backend (a BufferPool, memcpy) or one GPU's memory (kernels::GpuDevice: its
// caching allocator, copies and kernels queued on its compute stream). The interpreter runs the
// same instructions on either; only this and the kernels' column differ.
#pragma once

#include <cstdint>
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
};

/// Host memory (never fails to be made). `staged`: reported as not on the host, so the
/// interpreter takes the paths it takes on a GPU (transfers staged through host copies, kernel
/// table for accumulation and scaling, persistent tiles through mirrors) with the CPU kernels:
/// how those paths are tested on machines without a GPU.
std::unique_ptr<DeviceMemory> make_host_memory(bool staged = false);
/// CUDA device `ordinal`'s memory (kernels::GpuDevice::open: kUnavailable without CUDA or the
/// device, naming why).
Expected<std::unique_ptr<DeviceMemory>> make_gpu_memory(int ordinal);

}  // namespace meshpipe::runtime::internal

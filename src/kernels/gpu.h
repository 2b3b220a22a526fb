// A GPU as the runtime drives it: kernels::GpuDevice opens one CUDA device for the thread that
// runs its kernels, owns its compute stream, library handles and library workspace (the state
// behind its KernelContext), its caching allocator (kernels/caching_allocator.h), and copies
// between host and device. Every build has this header; in a build without CUDA, or on a
// machine without a driver, open() fails with kUnavailable naming why (device_inventory()'s
// summary), so callers fall back to the CPU.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "core/status.h"
#include "kernels/caching_allocator.h"
#include "kernels/tensor_view.h"

namespace meshpipe::kernels {

class GpuDevice {
 public:
  /// Opens CUDA device `ordinal` (0 .. device_inventory().cuda_devices - 1) for the calling
  /// thread: sets it current, creates a non-blocking compute stream, a cuBLASLt and a cuDNN
  /// handle on it, and the library workspace. Errors: no CUDA (kUnavailable), a bad ordinal
  /// (kInvalidArgument), a failing CUDA or library call (kUnavailable, with its message).
  static Expected<std::unique_ptr<GpuDevice>> open(int ordinal);
  ~GpuDevice();
  GpuDevice(const GpuDevice&) = delete;
  GpuDevice& operator=(const GpuDevice&) = delete;

  int ordinal() const;
  /// The compute stream (a cudaStream_t; null in a build without CUDA): NCCL communicators of
  /// this device enqueue on it, so their collectives are ordered with its kernels.
  void* stream() const;
  /// The context kernels of this GPU take (device kCuda); valid while the GpuDevice lives.
  const KernelContext& context() const;

  /// Device memory from the caching allocator (see there); release() takes it back.
  Expected<void*> allocate(int64_t bytes);
  void release(void* ptr);
  AllocatorStats memory_stats() const;
  void reset_memory_peaks();
  /// Returns cached, wholly free segments to the driver.
  void empty_cache();

  /// Copies `bytes` between host and this device in stream order and waits for them. Errors
  /// name the copy and CUDA's message.
  Status copy_to_device(void* dst, const void* src, int64_t bytes);
  Status copy_to_host(void* dst, const void* src, int64_t bytes);
  /// Page-locked host memory (cudaHostAlloc; copies to and from it run at full bandwidth), and
  /// its release (cudaFreeHost). Errors name the size and CUDA's message.
  Expected<void*> allocate_pinned(int64_t bytes);
  void release_pinned(void* ptr);
  /// Device-to-device copy on the compute stream (does not wait).
  Status copy_on_device(void* dst, const void* src, int64_t bytes);
  /// Sets `bytes` of device memory to zero on the compute stream (does not wait).
  Status zero(void* dst, int64_t bytes);
  /// Waits for everything queued on the compute stream; returns the first asynchronous error
  /// (a kernel fault surfaces here).
  Status synchronize();

  /// The communication stream (a second non-blocking stream of this device, a cudaStream_t;
  /// null in a build without CUDA): collectives that overlap the compute stream's kernels queue
  /// on it (NCCL communicators in deferred mode, comm/nccl_communicator.h).
  void* side_stream() const;
  /// The side stream waits (on the GPU; the host does not) for everything queued on the
  /// compute stream so far.
  Status side_after_compute();
  /// Marks the work queued on the side stream so far (an event recorded there); the returned
  /// mark stays valid until reuse_marks().
  Expected<int64_t> mark_side();
  /// The compute stream waits (on the GPU) for the side stream's work up to `mark`.
  Status compute_after(int64_t mark);
  /// The host waits until the side stream's work up to `mark` has run, at most `timeout`
  /// (kTimeout after it: a collective whose peers never came).
  Status wait_mark(int64_t mark, std::chrono::milliseconds timeout);
  /// Waits (the host) for everything queued on the side stream.
  Status synchronize_side();
  /// Marks may be recorded again (after synchronize_side(): no wait on them is pending).
  void reuse_marks();

 private:
  struct Impl;
  explicit GpuDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace meshpipe::kernels

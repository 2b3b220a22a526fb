// kernels::GpuDevice (kernels/gpu.h): opens one CUDA device with its stream, cuBLASLt and cuDNN
// handles, library workspace and caching allocator. Without CUDA in the build, or without a
// usable driver (device_inventory()), open() fails with kUnavailable and CUDA is never called.
#include <string>
#include <thread>
#include <vector>

#include "kernels/device.h"
#include "kernels/gpu.h"

#if MP_KERNELS_HAVE_CUDA
#include "kernels/internal/gpu_state.h"
#endif

namespace meshpipe::kernels {

#if MP_KERNELS_HAVE_CUDA

namespace {

Status cuda_status(cudaError_t e, int ordinal, const char* what) {
  if (e == cudaSuccess) return Status::ok();
  return make_error(Errc::kUnavailable, "cuda:{}: {} failed: {}", ordinal, what,
                    cudaGetErrorString(e));
}

// Makes `ordinal` the calling thread's current device (a GpuDevice may be driven from a thread
// other than the one that opened it; its stream and handles belong to its device).
Status make_current(int ordinal) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == ordinal) return Status::ok();
  return cuda_status(cudaSetDevice(ordinal), ordinal, "cudaSetDevice");
}

}  // namespace

struct GpuDevice::Impl {
  internal::GpuState state;
  KernelContext context;
  std::unique_ptr<CachingAllocator> allocator;
  cudaStream_t side = nullptr;     // the communication stream
  std::vector<cudaEvent_t> marks;  // recorded on `side` (mark_side), reused per step
  size_t next_mark = 0;
  cudaEvent_t compute_mark = nullptr;  // recorded on the compute stream (side_after_compute)

  ~Impl() {
    // The handles and memory belong to the device: destroy them with it current (the stream
    // exists iff open() got past cudaSetDevice, so a failed open calls no further CUDA here).
    if (state.stream != nullptr) static_cast<void>(make_current(state.ordinal));
    if (state.stream != nullptr) static_cast<void>(cudaStreamSynchronize(state.stream));
    if (side != nullptr) static_cast<void>(cudaStreamSynchronize(side));
    for (cudaEvent_t e : marks) static_cast<void>(cudaEventDestroy(e));
    if (compute_mark != nullptr) static_cast<void>(cudaEventDestroy(compute_mark));
    if (side != nullptr) static_cast<void>(cudaStreamDestroy(side));
    allocator.reset();  // returns the segments
    if (state.workspace != nullptr) static_cast<void>(cudaFree(state.workspace));
    if (state.dnn != nullptr) static_cast<void>(cudnnDestroy(state.dnn));
    if (state.blas != nullptr) static_cast<void>(cublasLtDestroy(state.blas));
    if (state.stream != nullptr) static_cast<void>(cudaStreamDestroy(state.stream));
  }
};

Expected<std::unique_ptr<GpuDevice>> GpuDevice::open(int ordinal) {
  const DeviceInventory& inv = device_inventory();
  if (inv.cuda_devices == 0) {
    return make_error(Errc::kUnavailable, "no GPU to open: {}", inv.summary);
  }
  if (ordinal < 0 || ordinal >= inv.cuda_devices) {
    return make_error(Errc::kInvalidArgument, "GPU {} does not exist: this process sees {} GPU(s)",
                      ordinal, inv.cuda_devices);
  }
  auto impl = std::make_unique<Impl>();
  internal::GpuState& g = impl->state;
  g.ordinal = ordinal;
  MP_RETURN_IF_ERROR(cuda_status(cudaSetDevice(ordinal), ordinal, "cudaSetDevice"));
  MP_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking),
                                 ordinal, "cudaStreamCreate"));
  MP_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&impl->side, cudaStreamNonBlocking),
                                 ordinal, "cudaStreamCreate (communication stream)"));
  MP_RETURN_IF_ERROR(
      cuda_status(cudaEventCreateWithFlags(&impl->compute_mark, cudaEventDisableTiming), ordinal,
                  "cudaEventCreate"));
  MP_RETURN_IF_ERROR(cuda_status(
      cudaDeviceGetAttribute(&g.multiprocessors, cudaDevAttrMultiProcessorCount, ordinal), ordinal,
      "cudaDeviceGetAttribute"));
  if (const cublasStatus_t s = cublasLtCreate(&g.blas); s != CUBLAS_STATUS_SUCCESS) {
    g.blas = nullptr;
    return make_error(Errc::kUnavailable, "cuda:{}: cublasLtCreate failed: {}", ordinal,
                      cublasLtGetStatusString(s));
  }
  if (const cudnnStatus_t s = cudnnCreate(&g.dnn); s != CUDNN_STATUS_SUCCESS) {
    g.dnn = nullptr;
    return make_error(Errc::kUnavailable, "cuda:{}: cudnnCreate failed: {}", ordinal,
                      cudnnGetErrorString(s));
  }
  if (const cudnnStatus_t s = cudnnSetStream(g.dnn, g.stream); s != CUDNN_STATUS_SUCCESS) {
    return make_error(Errc::kUnavailable, "cuda:{}: cudnnSetStream failed: {}", ordinal,
                      cudnnGetErrorString(s));
  }
  MP_RETURN_IF_ERROR(cuda_status(
      cudaMalloc(&g.workspace, static_cast<size_t>(internal::kGpuLibraryWorkspaceBytes)), ordinal,
      "allocating the 64 MiB library workspace"));
  g.workspace_bytes = internal::kGpuLibraryWorkspaceBytes;
  CachingAllocator::RawAllocator raw;
  raw.allocate = [ordinal](int64_t bytes) -> void* {
    void* p = nullptr;
    if (cudaSetDevice(ordinal) != cudaSuccess ||
        cudaMalloc(&p, static_cast<size_t>(bytes)) != cudaSuccess) {
      static_cast<void>(cudaGetLastError());  // an out-of-memory error is not sticky: clear it
      return nullptr;
    }
    return p;
  };
  raw.release = [ordinal](void* p) {
    static_cast<void>(cudaSetDevice(ordinal));
    static_cast<void>(cudaFree(p));
  };
  impl->allocator =
      std::make_unique<CachingAllocator>(std::move(raw), "cuda:" + std::to_string(ordinal));
  impl->context.device = Device::kCuda;
  impl->context.gpu = &impl->state;
  return std::unique_ptr<GpuDevice>(new GpuDevice(std::move(impl)));
}

int GpuDevice::ordinal() const { return impl_->state.ordinal; }
void* GpuDevice::stream() const { return impl_->state.stream; }

Expected<void*> GpuDevice::allocate(int64_t bytes) { return impl_->allocator->allocate(bytes); }

void GpuDevice::release(void* ptr) { impl_->allocator->release(ptr); }

AllocatorStats GpuDevice::memory_stats() const { return impl_->allocator->stats(); }

void GpuDevice::reset_memory_peaks() { impl_->allocator->reset_peaks(); }

void GpuDevice::empty_cache() { impl_->allocator->empty_cache(); }

Status GpuDevice::copy_to_device(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return Status::ok();
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(make_current(o));
  MP_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes),
                                                 cudaMemcpyHostToDevice, impl_->state.stream),
                                 o, "copy to the GPU"));
  return cuda_status(cudaStreamSynchronize(impl_->state.stream), o, "copy to the GPU");
}

Status GpuDevice::copy_to_host(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return Status::ok();
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(make_current(o));
  MP_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes),
                                                 cudaMemcpyDeviceToHost, impl_->state.stream),
                                 o, "copy from the GPU"));
  return cuda_status(cudaStreamSynchronize(impl_->state.stream), o, "copy from the GPU");
}

Expected<void*> GpuDevice::allocate_pinned(int64_t bytes) {
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(make_current(o));
  void* p = nullptr;
  const Status s = cuda_status(
      cudaHostAlloc(&p, static_cast<size_t>(std::max<int64_t>(bytes, 1)), cudaHostAllocDefault), o,
      "allocating pinned host memory");
  if (!s.is_ok()) return s.with_context(fmt::format("{} bytes", bytes));
  return p;
}

void GpuDevice::release_pinned(void* ptr) {
  if (ptr != nullptr) static_cast<void>(cudaFreeHost(ptr));
}

Status GpuDevice::copy_on_device(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return Status::ok();
  MP_RETURN_IF_ERROR(make_current(impl_->state.ordinal));
  return cuda_status(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                     impl_->state.stream),
                     impl_->state.ordinal, "copy on the GPU");
}

Status GpuDevice::zero(void* dst, int64_t bytes) {
  if (bytes <= 0) return Status::ok();
  MP_RETURN_IF_ERROR(make_current(impl_->state.ordinal));
  return cuda_status(cudaMemsetAsync(dst, 0, static_cast<size_t>(bytes), impl_->state.stream),
                     impl_->state.ordinal, "zeroing GPU memory");
}

Status GpuDevice::synchronize() {
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(
      cuda_status(cudaStreamSynchronize(impl_->state.stream), o, "waiting for the GPU's kernels"));
  if (!impl_->state.error.empty()) {
    std::string message;
    message.swap(impl_->state.error);
    return Status(Errc::kInternal, std::move(message));
  }
  return Status::ok();
}

void* GpuDevice::side_stream() const { return impl_->side; }

Status GpuDevice::side_after_compute() {
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(make_current(o));
  MP_RETURN_IF_ERROR(cuda_status(cudaEventRecord(impl_->compute_mark, impl_->state.stream), o,
                                 "cudaEventRecord (compute stream)"));
  // The wait takes the event's state now: recording it again later does not change it.
  return cuda_status(cudaStreamWaitEvent(impl_->side, impl_->compute_mark, 0), o,
                     "cudaStreamWaitEvent (communication stream)");
}

Expected<int64_t> GpuDevice::mark_side() {
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(make_current(o));
  if (impl_->next_mark == impl_->marks.size()) {
    cudaEvent_t e = nullptr;
    MP_RETURN_IF_ERROR(
        cuda_status(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), o, "cudaEventCreate"));
    impl_->marks.push_back(e);
  }
  const size_t m = impl_->next_mark++;
  MP_RETURN_IF_ERROR(cuda_status(cudaEventRecord(impl_->marks[m], impl_->side), o,
                                 "cudaEventRecord (communication stream)"));
  return static_cast<int64_t>(m);
}

Status GpuDevice::compute_after(int64_t mark) {
  const int o = impl_->state.ordinal;
  if (mark < 0 || static_cast<size_t>(mark) >= impl_->next_mark) {
    return make_error(Errc::kInternal, "cuda:{}: no communication-stream mark {}", o, mark);
  }
  MP_RETURN_IF_ERROR(make_current(o));
  return cuda_status(cudaStreamWaitEvent(impl_->state.stream, impl_->marks[size_t(mark)], 0), o,
                     "cudaStreamWaitEvent (compute stream)");
}

Status GpuDevice::wait_mark(int64_t mark, std::chrono::milliseconds timeout) {
  const int o = impl_->state.ordinal;
  if (mark < 0 || static_cast<size_t>(mark) >= impl_->next_mark) {
    return make_error(Errc::kInternal, "cuda:{}: no communication-stream mark {}", o, mark);
  }
  MP_RETURN_IF_ERROR(make_current(o));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int polls = 0;; ++polls) {
    const cudaError_t e = cudaEventQuery(impl_->marks[static_cast<size_t>(mark)]);
    if (e == cudaSuccess) return Status::ok();
    if (e != cudaErrorNotReady) return cuda_status(e, o, "waiting for the communication stream");
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(Errc::kTimeout,
                        "cuda:{}: a collective on the communication stream did not complete "
                        "within {} ms (a peer that did not call it, or a slow one)",
                        o, timeout.count());
    }
    if (polls < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

Status GpuDevice::synchronize_side() {
  const int o = impl_->state.ordinal;
  MP_RETURN_IF_ERROR(make_current(o));
  return cuda_status(cudaStreamSynchronize(impl_->side), o,
                     "waiting for the GPU's communication stream");
}

void GpuDevice::reuse_marks() { impl_->next_mark = 0; }

#else  // a build without CUDA

struct GpuDevice::Impl {
  KernelContext context;
};

Expected<std::unique_ptr<GpuDevice>> GpuDevice::open(int /*ordinal*/) {
  return make_error(Errc::kUnavailable, "no GPU to open: {}", device_inventory().summary);
}

// No GpuDevice can exist in this build (open() always fails); these keep the class complete.
int GpuDevice::ordinal() const { return -1; }
void* GpuDevice::stream() const { return nullptr; }
Expected<void*> GpuDevice::allocate(int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
void GpuDevice::release(void*) {}
AllocatorStats GpuDevice::memory_stats() const { return {}; }
void GpuDevice::reset_memory_peaks() {}
void GpuDevice::empty_cache() {}
Status GpuDevice::copy_to_device(void*, const void*, int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Expected<void*> GpuDevice::allocate_pinned(int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
void GpuDevice::release_pinned(void*) {}
Status GpuDevice::copy_to_host(void*, const void*, int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Status GpuDevice::copy_on_device(void*, const void*, int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Status GpuDevice::zero(void*, int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Status GpuDevice::synchronize() { return Status::ok(); }
void* GpuDevice::side_stream() const { return nullptr; }
Status GpuDevice::side_after_compute() {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Expected<int64_t> GpuDevice::mark_side() {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Status GpuDevice::compute_after(int64_t) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Status GpuDevice::wait_mark(int64_t, std::chrono::milliseconds) {
  return make_error(Errc::kUnavailable, "this build has no CUDA support");
}
Status GpuDevice::synchronize_side() { return Status::ok(); }
void GpuDevice::reuse_marks() {}

#endif

GpuDevice::GpuDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuDevice::~GpuDevice() = default;

const KernelContext& GpuDevice::context() const { return impl_->context; }

}  // namespace meshpipe::kernels

// make_nccl_communicator: collectives among GPUs through NCCL, one communicator per rank, the
// unique id exchanged through a RendezvousStore. The NCCL communicator is non-blocking
// (ncclConfig_t::blocking = 0), so neither its initialisation nor a collective can hold the
// calling thread beyond the timeout: every wait is a poll of ncclCommGetAsyncError and
// cudaStreamQuery against a deadline, and a wait that runs out aborts the communicator. CUDA is
// touched only after the once-per-process probe found a device (docs/toolchain.md §8).
#include "comm/nccl_communicator.h"

#include <fmt/format.h>

#include "comm/internal/check.h"

#if MP_COMM_HAVE_NCCL

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <limits>
#include <thread>

namespace meshpipe::comm {
namespace {

using Clock = std::chrono::steady_clock;
using internal::check_buffer;

// What the probe found, once per process.
struct Probe {
  int devices = 0;
  std::string reason;  // why devices is 0
};

const Probe& probe() {
  static const Probe found = [] {
    int n = 0;  // not written when the call fails
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaSuccess && n > 0) return Probe{.devices = n, .reason = ""};
    if (err == cudaSuccess) {
      return Probe{.devices = 0, .reason = "no usable CUDA device (the driver reports none)"};
    }
    // Never call CUDA again in this process: the error is sticky (docs/toolchain.md §8).
    return Probe{.devices = 0,
                 .reason = fmt::format("no usable CUDA device (cudaGetDeviceCount: {}, error {})",
                                       cudaGetErrorString(err), static_cast<int>(err))};
  }();
  return found;
}

// Polls: yields the core for the first 200 us (a collective of a few KiB ends within that),
// then sleeps 20 us between checks so a rank waiting on a slow peer leaves its core to others.
class Backoff {
 public:
  void pause() {
    if (Clock::now() < spin_end_) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

 private:
  Clock::time_point spin_end_ = Clock::now() + std::chrono::microseconds(200);
};

// NCCL's error category in ours: bad arguments or usage stay kInvalidArgument, socket and
// system failures kIo, everything else (CUDA, a failed peer, NCCL internals) kUnavailable.
Errc errc_of(ncclResult_t r) {
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return Errc::kInvalidArgument;
    case ncclSystemError:
      return Errc::kIo;
    default:
      return Errc::kUnavailable;
  }
}

// `what: call failed: <NCCL's string> (<its last error message>)`.
Status nccl_error(ncclResult_t r, ncclComm_t comm, std::string_view call, std::string_view what) {
  const char* last = ncclGetLastError(comm);
  const std::string detail = (last != nullptr && last[0] != '\0') ? std::string(": ") + last : "";
  return make_error(errc_of(r), "{}: {} failed: {}{}", what, call, ncclGetErrorString(r), detail);
}

// kUnavailable for a failed CUDA call, clearing a non-sticky error so it is not reported again.
Status cuda_error(cudaError_t err, std::string_view call, std::string_view what) {
  (void)cudaGetLastError();
  return make_error(Errc::kUnavailable, "{}: {} failed: {} (CUDA error {})", what, call,
                    cudaGetErrorString(err), static_cast<int>(err));
}

#define MP_NCCL_CUDA(call, what)                                                   \
  do {                                                                             \
    const cudaError_t mp_cuda_err_ = (call);                                       \
    if (mp_cuda_err_ != cudaSuccess) return cuda_error(mp_cuda_err_, #call, what); \
  } while (false)

std::string to_hex(const void* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto* p = static_cast<const uint8_t*>(data);
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[p[i] >> 4];
    out += kDigits[p[i] & 0xf];
  }
  return out;
}

bool from_hex(std::string_view hex, void* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  auto* p = static_cast<uint8_t*>(out);
  for (size_t i = 0; i < n; ++i) {
    const int hi = digit(hex[2 * i]);
    const int lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

// What rank 0 sets under the key: "id:<256 hex digits>", or "error:<why>" so that the other
// ranks fail at once instead of waiting for an id that will never come.
constexpr std::string_view kIdTag = "id:";
constexpr std::string_view kErrorTag = "error:";

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a);
  const auto y = reinterpret_cast<uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int rank, int size, const NcclOptions& options)
      : rank_(rank),
        size_(size),
        device_(options.device),
        prefix_(options.prefix),
        timeout_(options.timeout),
        deferred_(options.deferred) {}

  ~NcclCommunicator() override { shut_down(); }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  // "nccl <op> (rank r of n, group 'prefix', GPU d)", the start of every message.
  std::string describe(std::string_view op) const {
    return fmt::format("nccl {} (rank {} of {}, group '{}', GPU {})", op, rank_, size_, prefix_,
                       device_);
  }

  // Makes the rank's device current on the calling thread.
  Status select_device(std::string_view what) const {
    MP_NCCL_CUDA(cudaSetDevice(device_), what);
    return Status::ok();
  }

  // Creates the stream (unless given), the barrier's buffer and the NCCL communicator, and
  // waits until the whole group has initialised. On failure the destructor cleans up.
  Status init(const ncclUniqueId& id, void* stream) {
    const std::string what = describe("initialisation");
    MP_RETURN_IF_ERROR(select_device(what));
    if (stream != nullptr) {
      stream_ = static_cast<cudaStream_t>(stream);
    } else {
      MP_NCCL_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), what);
      own_stream_ = true;
    }
    void* barrier = nullptr;
    MP_NCCL_CUDA(cudaMalloc(&barrier, sizeof(float)), what);
    barrier_ = static_cast<float*>(barrier);
    // Zero once: the barrier's all-reduce then sums zeros forever.
    MP_NCCL_CUDA(cudaMemsetAsync(barrier_, 0, sizeof(float), stream_), what);

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    config.commName = prefix_.c_str();
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      Status s = nccl_error(r, comm_, "ncclCommInitRankConfig", what);
      abort_comm();
      return s;
    }
    const Clock::time_point deadline = Clock::now() + timeout_;
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclInProgress;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess) return fail_init(nccl_error(q, comm_, "ncclCommGetAsyncError", what));
      if (state == ncclSuccess) break;
      if (state != ncclInProgress) return fail_init(nccl_error(state, comm_, "initialising", what));
      if (Clock::now() >= deadline) {
        return fail_init(make_error(Errc::kTimeout,
                                    "{}: the group of {} did not finish initialising within {} ms "
                                    "(a rank that never joined?); the NCCL communicator was "
                                    "aborted",
                                    what, size_, timeout_.count()));
      }
      backoff.pause();
    }
    // The barrier buffer's zeroing is done before the communicator is handed out.
    return wait_for_stream(what, deadline);
  }

  Status all_reduce(float* data, int64_t count) override {
    const std::string what = describe(fmt::format("all-reduce of {} floats", count));
    MP_RETURN_IF_ERROR(check_buffer(data, count, what));
    MP_RETURN_IF_ERROR(ready(what));
    if (count == 0) return run(what, [&] { return enqueue_barrier(what); });
    MP_RETURN_IF_ERROR(check_device_buffer(data, "data", what));
    return run(what, [&] {
      return enqueued(
          ncclAllReduce(data, data, size_t(count), ncclFloat32, ncclSum, comm_, stream_),
          "ncclAllReduce", what);
    });
  }

  Status all_gather(const void* in, void* out, int64_t bytes) override {
    const std::string what = describe(fmt::format("all-gather of {} bytes", bytes));
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, what));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, what));
    MP_RETURN_IF_ERROR(check_total(bytes, what));
    MP_RETURN_IF_ERROR(ready(what));
    if (bytes == 0) return run(what, [&] { return enqueue_barrier(what); });
    MP_RETURN_IF_ERROR(check_device_buffer(in, "input", what));
    MP_RETURN_IF_ERROR(check_device_buffer(out, "output", what));
    const auto* mine = static_cast<const uint8_t*>(out) + rank_ * bytes;
    if (in != mine && overlaps(in, size_t(bytes), out, size_t(bytes * size_))) {
      return make_error(Errc::kInvalidArgument,
                        "{}: the input overlaps the output other than as this rank's chunk "
                        "(the in-place form)",
                        what);
    }
    return run(what, [&] {
      return enqueued(ncclAllGather(in, out, size_t(bytes), ncclUint8, comm_, stream_),
                      "ncclAllGather", what);
    });
  }

  Status reduce_scatter(const float* in, float* out, int64_t count) override {
    const std::string what = describe(fmt::format("reduce-scatter of {} floats", count));
    MP_RETURN_IF_ERROR(check_buffer(in, count, what));
    MP_RETURN_IF_ERROR(check_buffer(out, count, what));
    MP_RETURN_IF_ERROR(check_total(count * int64_t(sizeof(float)), what));
    MP_RETURN_IF_ERROR(ready(what));
    if (count == 0) return run(what, [&] { return enqueue_barrier(what); });
    MP_RETURN_IF_ERROR(check_device_buffer(in, "input", what));
    MP_RETURN_IF_ERROR(check_device_buffer(out, "output", what));
    if (out != in + rank_ * count &&
        overlaps(in, sizeof(float) * size_t(count * size_), out, sizeof(float) * size_t(count))) {
      return make_error(Errc::kInvalidArgument,
                        "{}: the output overlaps the input other than as this rank's chunk "
                        "(the in-place form)",
                        what);
    }
    return run(what, [&] {
      return enqueued(
          ncclReduceScatter(in, out, size_t(count), ncclFloat32, ncclSum, comm_, stream_),
          "ncclReduceScatter", what);
    });
  }

  Status all_to_all(const void* in, void* out, int64_t bytes) override {
    const std::string what = describe(fmt::format("all-to-all of {} bytes", bytes));
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, what));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, what));
    MP_RETURN_IF_ERROR(check_total(bytes, what));
    MP_RETURN_IF_ERROR(ready(what));
    if (bytes == 0) return run(what, [&] { return enqueue_barrier(what); });
    MP_RETURN_IF_ERROR(check_device_buffer(in, "input", what));
    MP_RETURN_IF_ERROR(check_device_buffer(out, "output", what));
    const size_t chunk = size_t(bytes);
    const size_t total = chunk * size_t(size_);
    if (in != out && overlaps(in, total, out, total)) {
      return make_error(Errc::kInvalidArgument,
                        "{}: the input overlaps the output (only in == out is allowed)", what);
    }
    return run(what, [&]() -> Status {
      const auto* src = static_cast<const uint8_t*>(in);
      auto* dst = static_cast<uint8_t*>(out);
      const size_t own = chunk * size_t(rank_);
      if (in == out) {
        // Chunk `rank` is already in place; the others are sent from a copy, since each peer's
        // chunk is overwritten by what that peer sends.
        if (size_ == 1) return Status::ok();
        MP_RETURN_IF_ERROR(ensure_scratch(total, what));
        MP_NCCL_CUDA(cudaMemcpyAsync(scratch_, in, total, cudaMemcpyDeviceToDevice, stream_), what);
        src = static_cast<const uint8_t*>(scratch_);
      } else {
        MP_NCCL_CUDA(
            cudaMemcpyAsync(dst + own, src + own, chunk, cudaMemcpyDeviceToDevice, stream_), what);
        if (size_ == 1) return Status::ok();
      }
      const ncclResult_t start = ncclGroupStart();
      if (start != ncclSuccess) return nccl_error(start, comm_, "ncclGroupStart", what);
      Status posted = Status::ok();
      for (int peer = 0; peer < size_ && posted.is_ok(); ++peer) {
        if (peer == rank_) continue;
        const size_t at = chunk * size_t(peer);
        posted =
            enqueued(ncclSend(src + at, chunk, ncclUint8, peer, comm_, stream_), "ncclSend", what);
        if (!posted.is_ok()) break;
        posted =
            enqueued(ncclRecv(dst + at, chunk, ncclUint8, peer, comm_, stream_), "ncclRecv", what);
      }
      // The group is always closed, or this thread's later NCCL calls would join it.
      const ncclResult_t end = ncclGroupEnd();
      MP_RETURN_IF_ERROR(posted);
      return enqueued(end, "ncclGroupEnd", what);
    });
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    const std::string what =
        describe(fmt::format("broadcast of {} bytes from rank {}", bytes, root));
    MP_RETURN_IF_ERROR(check_buffer(data, bytes, what));
    if (root < 0 || root >= size_) {
      return make_error(Errc::kInvalidArgument, "{}: root {} is not a rank of a group of {}", what,
                        root, size_);
    }
    MP_RETURN_IF_ERROR(ready(what));
    if (bytes == 0) return run(what, [&] { return enqueue_barrier(what); });
    MP_RETURN_IF_ERROR(check_device_buffer(data, "data", what));
    return run(what, [&] {
      return enqueued(ncclBroadcast(data, data, size_t(bytes), ncclUint8, root, comm_, stream_),
                      "ncclBroadcast", what);
    });
  }

  Status barrier() override {
    const std::string what = describe("barrier");
    MP_RETURN_IF_ERROR(ready(what));
    const Clock::time_point deadline = Clock::now() + timeout_;
    Status s = select_device(what);
    if (s.is_ok()) s = enqueue_barrier(what);
    if (!s.is_ok()) return fail(std::move(s));
    return wait_for_stream(what, deadline);  // a barrier returns when every rank has called it
  }

  Status complete() override {
    if (!deferred_) return Status::ok();
    const std::string what = describe("completion of the deferred collectives");
    MP_RETURN_IF_ERROR(ready(what));
    MP_RETURN_IF_ERROR(select_device(what));
    return wait_for_stream(what, Clock::now() + timeout_);
  }

  Status all_reduce_half(void* data, int64_t count, DType dtype) {
    const std::string what =
        describe(fmt::format("all-reduce of {} {} values", count, dtype_name(dtype)));
    ncclDataType_t type = ncclFloat16;
    if (dtype == DType::kF16) {
      type = ncclFloat16;
    } else if (dtype == DType::kBF16) {
      type = ncclBfloat16;
    } else {
      return make_error(Errc::kInvalidArgument,
                        "{}: the half-precision all-reduce takes f16 or "
                        "bf16",
                        what);
    }
    MP_RETURN_IF_ERROR(check_buffer(data, count, what));
    MP_RETURN_IF_ERROR(ready(what));
    if (count == 0) return run(what, [&] { return enqueue_barrier(what); });
    MP_RETURN_IF_ERROR(check_device_buffer(data, "data", what));
    return run(what, [&] {
      return enqueued(ncclAllReduce(data, data, size_t(count), type, ncclSum, comm_, stream_),
                      "ncclAllReduce", what);
    });
  }

 private:
  // kUnavailable once the communicator has failed (NCCL's state is then unknown, and the NCCL
  // communicator aborted).
  Status ready(std::string_view what) const {
    if (failure_.is_ok()) return Status::ok();
    return make_error(Errc::kUnavailable, "{}: the NCCL communicator failed earlier: {}", what,
                      failure_.message());
  }

  // Sizes of size() chunks must fit an int64_t.
  Status check_total(int64_t bytes, std::string_view what) const {
    if (bytes > std::numeric_limits<int64_t>::max() / size_) {
      return make_error(Errc::kInvalidArgument, "{}: {} chunks of {} bytes overflow", what, size_,
                        bytes);
    }
    return Status::ok();
  }

  // Pageable host memory, and memory of another GPU, are refused up front (kInvalidArgument;
  // the communicator stays usable) instead of failing inside NCCL.
  Status check_device_buffer(const void* ptr, std::string_view name, std::string_view what) const {
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return make_error(Errc::kInvalidArgument, "{}: the {} buffer {} is not memory CUDA knows: {}",
                        what, name, ptr, cudaGetErrorString(err));
    }
    if (attr.type == cudaMemoryTypeUnregistered) {
      return make_error(Errc::kInvalidArgument,
                        "{}: the {} buffer {} is host memory; the NCCL backend takes device "
                        "memory of GPU {}",
                        what, name, ptr, device_);
    }
    if (attr.type == cudaMemoryTypeDevice && attr.device != device_) {
      return make_error(Errc::kInvalidArgument,
                        "{}: the {} buffer {} is memory of GPU {}, this rank drives GPU {}", what,
                        name, ptr, attr.device, device_);
    }
    return Status::ok();
  }

  // Accepts what a non-blocking NCCL call returns when it has queued its work.
  Status enqueued(ncclResult_t r, std::string_view call, std::string_view what) const {
    if (r == ncclSuccess || r == ncclInProgress) return Status::ok();
    return nccl_error(r, comm_, call, what);
  }

  Status enqueue_barrier(std::string_view what) {
    return enqueued(ncclAllReduce(barrier_, barrier_, 1, ncclFloat32, ncclSum, comm_, stream_),
                    "ncclAllReduce (barrier)", what);
  }

  // Runs one collective: selects the device, enqueues (`enqueue` returns a Status) and waits.
  // Any failure is remembered and aborts the NCCL communicator.
  // Deferred (NcclOptions::deferred): returns once enqueued; complete() waits.
  template <class Enqueue>
  Status run(const std::string& what, Enqueue&& enqueue) {
    const Clock::time_point deadline = Clock::now() + timeout_;
    Status s = select_device(what);
    if (s.is_ok()) s = enqueue();
    if (!s.is_ok()) return fail(std::move(s));
    if (deferred_) return wait_until_issued(what, deadline);
    return wait_for_stream(what, deadline);
  }

  // Deferred: a non-blocking communicator may still be issuing the operation when the call
  // returns ncclInProgress; until it is issued nothing else may be queued on the stream (an
  // event recorded there would come before it). Polls until NCCL reports it issued.
  Status wait_until_issued(const std::string& what, Clock::time_point deadline) {
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclInProgress;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess) return fail(nccl_error(q, comm_, "ncclCommGetAsyncError", what));
      if (state == ncclSuccess) return Status::ok();
      if (state != ncclInProgress) return fail(nccl_error(state, comm_, "the collective", what));
      if (Clock::now() >= deadline) {
        return fail(make_error(Errc::kTimeout,
                               "{}: NCCL was still issuing it after {} ms; the NCCL communicator "
                               "was aborted",
                               what, timeout_.count()));
      }
      backoff.pause();
    }
  }

  // The one place that waits for enqueued work (an asynchronous variant, enqueue now and wait
  // later, would call it from its wait): polls NCCL until the operation is fully enqueued (a
  // non-blocking communicator may still be issuing it), then the stream until it has drained,
  // watching NCCL's asynchronous error throughout. Fails (and aborts) on an error or once
  // `deadline` passes.
  Status wait_for_stream(const std::string& what, Clock::time_point deadline) {
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclInProgress;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess) return fail(nccl_error(q, comm_, "ncclCommGetAsyncError", what));
      if (state != ncclSuccess && state != ncclInProgress) {
        return fail(nccl_error(state, comm_, "the collective", what));
      }
      if (state == ncclSuccess) {
        const cudaError_t done = cudaStreamQuery(stream_);
        if (done == cudaSuccess) return Status::ok();
        if (done != cudaErrorNotReady) return fail(cuda_error(done, "cudaStreamQuery", what));
      }
      if (Clock::now() >= deadline) {
        return fail(make_error(
            Errc::kTimeout,
            "{}: did not complete within {} ms ({}; a rank that did not call "
            "it, or a slow one); the NCCL communicator was aborted",
            what, timeout_.count(),
            state == ncclInProgress ? "NCCL was still issuing it" : "the stream had not drained"));
      }
      backoff.pause();
    }
  }

  Status fail(Status s) {
    failure_ = s;
    abort_comm();
    return s;
  }

  Status fail_init(Status s) {
    abort_comm();
    return s;
  }

  void abort_comm() {
    if (comm_ != nullptr) {
      (void)ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }

  // Device scratch of at least `bytes` (the in-place all-to-all's copy of the input). Every
  // earlier collective has completed, so the old buffer is free.
  Status ensure_scratch(size_t bytes, std::string_view what) {
    if (scratch_bytes_ >= bytes) return Status::ok();
    // Deferred: an all-to-all still queued may use the old buffer.
    if (deferred_) MP_RETURN_IF_ERROR(wait_for_stream(std::string(what), Clock::now() + timeout_));
    if (scratch_ != nullptr) {
      MP_NCCL_CUDA(cudaFree(scratch_), what);
      scratch_ = nullptr;
      scratch_bytes_ = 0;
    }
    MP_NCCL_CUDA(cudaMalloc(&scratch_, bytes), what);
    scratch_bytes_ = bytes;
    return Status::ok();
  }

  // Finalizes the NCCL communicator (flushing its work) within the timeout, then destroys it;
  // aborts it when finalizing fails or runs out of time. Then frees the buffers and the stream.
  void shut_down() {
    (void)cudaSetDevice(device_);
    if (comm_ != nullptr) {
      bool finalized = false;
      const ncclResult_t r = ncclCommFinalize(comm_);
      if (r == ncclSuccess || r == ncclInProgress) {
        const Clock::time_point deadline = Clock::now() + timeout_;
        Backoff backoff;
        for (;;) {
          ncclResult_t state = ncclInProgress;
          if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
          if (state == ncclSuccess) {
            finalized = true;
            break;
          }
          if (state != ncclInProgress || Clock::now() >= deadline) break;
          backoff.pause();
        }
      }
      if (finalized) {
        (void)ncclCommDestroy(comm_);
      } else {
        (void)ncclCommAbort(comm_);
      }
      comm_ = nullptr;
    }
    if (scratch_ != nullptr) (void)cudaFree(scratch_);
    if (barrier_ != nullptr) (void)cudaFree(barrier_);
    if (own_stream_ && stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
  }

  const int rank_;
  const int size_;
  const int device_;
  const std::string prefix_;  // also the NCCL communicator's name
  const std::chrono::milliseconds timeout_;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  ncclComm_t comm_ = nullptr;
  float* barrier_ = nullptr;  // one float of device memory, zero
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  Status failure_;
  bool deferred_ = false;
};

// Rank 0's side of the id exchange: creates the id and sets it, or sets why it could not.
Status publish_unique_id(NcclCommunicator& comm, RendezvousStore* store, const std::string& key,
                         ncclUniqueId* id) {
  const std::string what = comm.describe("unique id");
  Status s = comm.select_device(what);
  if (s.is_ok()) {
    const ncclResult_t r = ncclGetUniqueId(id);
    if (r != ncclSuccess) s = nccl_error(r, nullptr, "ncclGetUniqueId", what);
  }
  if (store != nullptr) {
    store->set(key, s.is_ok() ? std::string(kIdTag) + to_hex(id, sizeof(*id))
                              : std::string(kErrorTag) + s.message());
  }
  return s;
}

// The other ranks' side: waits for rank 0's value.
Status fetch_unique_id(NcclCommunicator& comm, RendezvousStore& store, const std::string& key,
                       std::chrono::milliseconds timeout, ncclUniqueId* id) {
  const std::string what = comm.describe("unique id");
  Expected<std::string> value = store.get(key, timeout);
  if (!value) return value.status().with_context(what + ": waiting for rank 0's unique id");
  const std::string_view v = *value;
  if (v.starts_with(kErrorTag)) {
    return make_error(Errc::kUnavailable, "{}: rank 0 could not create the unique id: {}", what,
                      v.substr(kErrorTag.size()));
  }
  if (!v.starts_with(kIdTag) || !from_hex(v.substr(kIdTag.size()), id, sizeof(*id))) {
    return make_error(Errc::kInternal, "{}: key '{}' holds no unique id ({} bytes)", what, key,
                      v.size());
  }
  return Status::ok();
}

}  // namespace

bool nccl_available() { return true; }

int nccl_device_count() { return probe().devices; }

std::string nccl_unavailable_reason() { return probe().reason; }

Expected<std::unique_ptr<Communicator>> make_nccl_communicator(
    int rank, int size, std::shared_ptr<RendezvousStore> store, const NcclOptions& options) {
  const std::string who =
      fmt::format("nccl communicator of rank {} of {} (group '{}')", rank, size, options.prefix);
  if (size < 1 || rank < 0 || rank >= size) {
    return make_error(Errc::kInvalidArgument, "{}: no such rank", who);
  }
  if (store == nullptr && size > 1) {
    return make_error(Errc::kInvalidArgument, "{}: no rendezvous store", who);
  }
  if (options.timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "{}: timeout {} ms", who, options.timeout.count());
  }
  const Probe& found = probe();
  if (found.devices == 0) return make_error(Errc::kUnavailable, "{}: {}", who, found.reason);
  if (options.device < 0 || options.device >= found.devices) {
    return make_error(Errc::kInvalidArgument, "{}: GPU {} does not exist (this process sees {})",
                      who, options.device, found.devices);
  }

  auto comm = std::make_unique<NcclCommunicator>(rank, size, options);
  const std::string key = options.prefix + "/nccl-unique-id";
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank == 0) {
    MP_RETURN_IF_ERROR(publish_unique_id(*comm, store.get(), key, &id));
  } else {
    MP_RETURN_IF_ERROR(fetch_unique_id(*comm, *store, key, options.timeout, &id));
  }
  MP_RETURN_IF_ERROR(comm->init(id, options.stream));
  return std::unique_ptr<Communicator>(std::move(comm));
}

Status all_reduce_half(Communicator& comm, void* data, int64_t count, DType dtype) {
  if (auto* nccl = dynamic_cast<NcclCommunicator*>(&comm)) {
    return nccl->all_reduce_half(data, count, dtype);
  }
  return make_error(Errc::kUnavailable,
                    "half-precision all-reduce of {} {} values: the {} communicator has none "
                    "(NCCL only)",
                    count, dtype_name(dtype), comm.backend());
}

}  // namespace meshpipe::comm

#undef MP_NCCL_CUDA

#else  // !MP_COMM_HAVE_NCCL

namespace meshpipe::comm {

namespace {
constexpr const char* kNoNccl =
    "this build has no NCCL (configure with MP_ENABLE_CUDA and MP_ENABLE_NCCL = AUTO or ON, "
    "with the CUDA toolkit and NCCL installed)";
}  // namespace

bool nccl_available() { return false; }

int nccl_device_count() { return 0; }

std::string nccl_unavailable_reason() { return kNoNccl; }

Expected<std::unique_ptr<Communicator>> make_nccl_communicator(int rank, int size,
                                                               std::shared_ptr<RendezvousStore>,
                                                               const NcclOptions& options) {
  return make_error(Errc::kUnavailable, "nccl communicator of rank {} of {} (group '{}'): {}", rank,
                    size, options.prefix, kNoNccl);
}

Status all_reduce_half(Communicator& comm, void*, int64_t count, DType dtype) {
  return make_error(Errc::kUnavailable,
                    "half-precision all-reduce of {} {} values: the {} communicator has none "
                    "(NCCL only, and this build has no NCCL)",
                    count, dtype_name(dtype), comm.backend());
}

}  // namespace meshpipe::comm

#endif  // MP_COMM_HAVE_NCCL

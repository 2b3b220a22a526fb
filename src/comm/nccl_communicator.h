// The NCCL communicator: collectives among the GPUs of one group (one group per mesh axis), one
// communicator per rank, each rank driving one CUDA device. The ranks meet through a
// RendezvousStore: rank 0 creates NCCL's unique id and publishes it under the group's key prefix,
// the others wait for it. Buffers are DEVICE memory of the rank's GPU. Every collective is
// enqueued on the communicator's CUDA stream and then waited for (blocking, like every other
// backend) with a bounded poll; on timeout the NCCL communicator is aborted and every later call
// fails. No CUDA type appears here: the stream travels as a void* (a cudaStream_t).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "core/dtype.h"
#include "core/status.h"

namespace meshpipe::comm {

/// True when the build includes NCCL (MP_ENABLE_NCCL, which needs CUDA).
bool nccl_available();

/// CUDA devices this process can give to NCCL: 0 in a build without NCCL or on a machine
/// without a usable driver. Probed once per process with cudaGetDeviceCount under the rule of
/// docs/toolchain.md §8 (when the probe fails, comm never calls CUDA again); the same answer as
/// kernels::device_inventory().cuda_devices, which comm may not call (docs/style.md rule 2).
int nccl_device_count();

/// Why nccl_device_count() is 0, in words ("this build has no NCCL ...", "no usable CUDA
/// device (...)"); empty when it is not.
std::string nccl_unavailable_reason();

/// Options of an NCCL communicator.
struct NcclOptions {
  int device = 0;  ///< CUDA device ordinal this rank drives (0 .. nccl_device_count() - 1)
  /// The cudaStream_t the collectives run on, on `device`; the caller keeps it alive while the
  /// communicator lives. nullptr: the communicator creates (and destroys) its own non-blocking
  /// stream (the legacy default stream cannot be chosen).
  void* stream = nullptr;
  /// Bounds the wait for the unique id, the NCCL initialisation, each collective and the
  /// communicator's shutdown.
  std::chrono::milliseconds timeout{30000};
  /// Store key prefix: the unique id is `prefix/nccl-unique-id`. Distinct per group sharing a
  /// store, and per creation of a group (an id left by an earlier group would be read again).
  std::string prefix = "nccl";
  /// Deferred: each collective returns once it is enqueued on the stream (the caller orders
  /// later work after it, with events, and must keep the buffers alive); complete() waits for
  /// all of them under the timeout (which aborts, as a blocking call's does). barrier() still
  /// waits. For collectives on a communication stream that overlap the compute stream.
  bool deferred = false;
};

/// Joins an NCCL group as `rank` of `size`: rank 0 creates the unique id (ncclGetUniqueId) and
/// sets it in `store`; the other ranks wait for it (options.timeout). Then every rank
/// initialises its communicator on options.device (a non-blocking NCCL communicator, polled
/// until the whole group has joined or the timeout passes; then it is aborted) and allocates a
/// 4-byte device buffer for barrier(). The calling thread's current CUDA device becomes
/// options.device, and every call sets it again. backend() is "nccl".
///
/// The collectives have the semantics of Communicator (counts per rank, chunks in rank order;
/// zero-sized ones still synchronise, as a barrier), on device memory of the rank's GPU: host
/// memory is refused with kInvalidArgument. In-place forms as NCCL defines them (all-gather
/// input at the rank's own chunk of the output, reduce-scatter output at the rank's own chunk of
/// the input, all-to-all with in == out, staged through a device scratch buffer); any other
/// overlap of input and output is kInvalidArgument. Sums are NCCL's: identical on every rank,
/// but not summed in rank order (bits may differ from the CPU backends).
///
/// Each call enqueues on the stream (after the work already there) and, unless
/// options.deferred, waits until the stream has drained, polling cudaStreamQuery and
/// ncclCommGetAsyncError. An NCCL or CUDA error, or the timeout (kTimeout naming the collective),
/// aborts the NCCL communicator (ncclCommAbort); later calls fail with kUnavailable. Errors name
/// the rank, the group (its prefix) and NCCL's or CUDA's message. kUnavailable without touching
/// CUDA when the build has no NCCL or the machine no usable GPU; kInvalidArgument for a bad rank,
/// size, device, store or timeout.
Expected<std::unique_ptr<Communicator>> make_nccl_communicator(
    int rank, int size, std::shared_ptr<RendezvousStore> store, const NcclOptions& options);

/// In place: data[i] = sum over ranks of data[i], for `count` half-precision values (dtype
/// kF16 or kBF16) in device memory; NCCL adds in that type. Only an NCCL communicator
/// (make_nccl_communicator) supports it; for any other backend it is kUnavailable (the
/// Communicator interface has no half-precision collective yet).
Status all_reduce_half(Communicator& comm, void* data, int64_t count, DType dtype);

}  // namespace meshpipe::comm

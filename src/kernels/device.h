// Which compute devices this process can use. CUDA is probed once; without a driver (or in a
// build without CUDA) every kernel runs on the CPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace meshpipe::kernels {

/// One GPU as the CUDA runtime describes it.
struct GpuInfo {
  std::string name;          ///< e.g. "NVIDIA H200"
  int64_t memory_bytes = 0;  ///< total device memory
  int major = 0;             ///< compute capability
  int minor = 0;
};

/// What the process found at start-up.
struct DeviceInventory {
  bool cuda_built = false;    ///< the binary was built with CUDA support
  int cuda_devices = 0;       ///< usable CUDA devices (0 without a driver)
  std::vector<GpuInfo> gpus;  ///< one per usable device
  std::string summary;        ///< e.g. "CUDA: no driver found, using the CPU"
};

/// "1 x NVIDIA H200 (140.4 GB, sm_90)", "2 x A, 1 x B", or "none".
std::string describe_gpus(const std::vector<GpuInfo>& gpus);

/// Probes once per process (cudaGetDeviceCount; never touches CUDA again when it fails, since
/// the error is sticky) and returns the cached result.
const DeviceInventory& device_inventory();

/// CPUs this process may run on (its affinity mask; at least 1).
int cpu_cores();

/// How many threads a CPU kernel may use. Several virtual devices in one process each run their
/// kernels on their own thread; if every kernel also spread over all cores (OpenMP loops, BLAS
/// threads that spin while they wait), D devices on C cores would run D x C threads fighting
/// for C cores. `set_kernel_threads` sets the OpenMP loops of the calling thread (each device
/// thread calls it); `set_blas_threads` sets BLAS's threads for the whole process and returns
/// the previous count (to restore). Both take values >= 1.
void set_kernel_threads(int threads);
int set_blas_threads(int threads);

/// The memory this machine can still give a process without swapping (MemAvailable of
/// /proc/meminfo), in bytes; 0 when it cannot be read. Virtual CPU devices all draw on it.
int64_t host_memory_available();

}  // namespace meshpipe::kernels

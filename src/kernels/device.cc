// Device probing with the CPU fallback rule of docs/toolchain.md §8.
#include "kernels/device.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <fstream>
#include <string>

#if MP_KERNELS_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace meshpipe::kernels {
namespace {

DeviceInventory probe() {
  DeviceInventory inv;
#if MP_KERNELS_HAVE_CUDA
  inv.cuda_built = true;
  int n = 0;  // not written when the call fails
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaSuccess && n > 0) {
    inv.cuda_devices = n;
    inv.summary = "CUDA: " + std::to_string(n) +
                  " device(s) found (kernels run on the CPU until "
                  "the GPU backend is enabled)";
  } else {
    inv.summary =
        std::string("CUDA: no usable device (") + cudaGetErrorString(err) + "), using the CPU";
  }
#else
  inv.summary = "CUDA: not built, using the CPU";
#endif
  return inv;
}

}  // namespace

const DeviceInventory& device_inventory() {
  static const DeviceInventory inventory = probe();
  return inventory;
}

int64_t host_memory_available() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    try {
      return std::stoll(line.substr(13)) * 1024;  // "MemAvailable:   123456 kB"
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

int cpu_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

void set_kernel_threads(int threads) { omp_set_num_threads(std::max(1, threads)); }

int set_blas_threads(int threads) {
  const int previous = openblas_get_num_threads();
  openblas_set_num_threads(std::max(1, threads));
  return previous;
}

}  // namespace meshpipe::kernels

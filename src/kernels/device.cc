// Device probing with the CPU fallback rule of docs/toolchain.md §8.
#include "kernels/device.h"

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

}  // namespace meshpipe::kernels

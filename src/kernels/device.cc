// Device probing with the CPU fallback rule of docs/toolchain.md §8.
#include "kernels/device.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
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
    for (int d = 0; d < n; ++d) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
      GpuInfo g;
      g.name = std::string(prop.name, strnlen(prop.name, sizeof(prop.name)));
      g.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
      g.major = prop.major;
      g.minor = prop.minor;
      inv.gpus.push_back(std::move(g));
    }
    inv.summary = "CUDA: " + describe_gpus(inv.gpus);
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

std::string describe_gpus(const std::vector<GpuInfo>& gpus) {
  if (gpus.empty()) return "none";
  std::string out;
  for (size_t i = 0; i < gpus.size();) {
    size_t j = i;
    while (j < gpus.size() && gpus[j].name == gpus[i].name &&
           gpus[j].memory_bytes == gpus[i].memory_bytes && gpus[j].major == gpus[i].major &&
           gpus[j].minor == gpus[i].minor) {
      ++j;
    }
    char mem[32];
    std::snprintf(mem, sizeof(mem), "%.1f GB", static_cast<double>(gpus[i].memory_bytes) / 1e9);
    if (!out.empty()) out += ", ";
    out += std::to_string(j - i) + " x " + gpus[i].name + " (" + mem + ", sm_" +
           std::to_string(gpus[i].major) + std::to_string(gpus[i].minor) + ")";
    i = j;
  }
  return out;
}

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

// Device probing with the CPU fallback rule of docs/toolchain.md §8.
#include "kernels/device.h"

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

}  // namespace meshpipe::kernels

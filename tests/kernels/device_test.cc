// Tests of device probing: without a CUDA driver the CPU serves and the reason is reported.
#include "kernels/device.h"

#include <catch2/catch.hpp>

namespace meshpipe::kernels {
namespace {

TEST_CASE("device probing is cached and falls back to the CPU without a driver", "[kernels]") {
  const DeviceInventory& a = device_inventory();
  const DeviceInventory& b = device_inventory();
  CHECK(&a == &b);
  CHECK(a.cuda_devices >= 0);
  if (a.cuda_devices == 0) {
    CHECK(a.summary.find("using the CPU") != std::string::npos);
  } else {
    CHECK(a.cuda_built);
  }
}

}  // namespace
}  // namespace meshpipe::kernels

// The CUDA row of kConvert: a floating tensor stored as another floating type (f32, f16, bf16),
// rounded to nearest even on store (the CPU's round_to_half). Not in place: the element sizes
// of input and output may differ.
#include "kernels/internal/cuda_common.cuh"
#include "kernels/internal/cuda_rows.h"

namespace meshpipe::kernels::internal {

namespace {

__global__ void convert_kernel(DPtr x, DPtr y, int64_t n) { MP_CUDA_FOR(i, n) st(y, i, ld(x, i)); }

void run_convert(const KernelArgs& a) {
  GpuState& g = gpu_of(a);
  const DPtr x = dptr(a.in[0], "convert");
  const DPtr y = dptr(a.out[0], "convert");
  const int64_t n = a.out[0].numel();
  MP_CHECK(a.in[0].numel() == n) << "convert: input and output differ in size";
  if (n == 0) return;
  if (x.t == y.t) {
    if (x.p != y.p) {
      check_cuda(g,
                 cudaMemcpyAsync(y.p, x.p, static_cast<size_t>(a.out[0].bytes()),
                                 cudaMemcpyDeviceToDevice, g.stream),
                 "convert");
    }
    return;
  }
  convert_kernel<<<blocks_for(g, n), kThreads, 0, g.stream>>>(x, y, n);
  check_launch(g, "convert");
}

}  // namespace

std::vector<CudaRow> cuda_convert_rows() {
  return {{OpKind::kConvert, OpKernel{run_convert, nullptr, {0, 0, 0}, false}}};
}

}  // namespace meshpipe::kernels::internal

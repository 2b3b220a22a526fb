// Bulk conversions between float32 and the 16-bit storage types (kernels/half.h).
#include "kernels/half.h"

namespace meshpipe::kernels {

void round_to_half(const float* in, uint16_t* out, int64_t n, DType dtype) {
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_f16(in[i]);
  }
}

void widen_from_half(const uint16_t* in, float* out, int64_t n, DType dtype) {
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(in[i]);
  }
}

}  // namespace meshpipe::kernels

// Element types of tensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace meshpipe {

/// Element type of a tensor. Kernels compute in float32; ids and labels are int32; fp16/bf16
/// exist for cost modelling of large models.
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI32 = 3, kI64 = 4 };

/// Bytes per element.
constexpr int64_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

/// True for floating-point types.
constexpr bool is_floating(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

/// "f32", "f16", "bf16", "i32", "i64".
std::string_view dtype_name(DType t);
/// Parses a name produced by dtype_name.
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace meshpipe

// The protobuf wire format, read with every length checked against the bytes that remain: the
// subset of protobuf that ONNX files use (varints, 32- and 64-bit fixed fields, length-delimited
// fields). meshpipe decodes ONNX itself rather than linking libprotobuf (docs/toolchain.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace meshpipe::onnx::wire {

/// The wire types ONNX uses (groups, types 3 and 4, are refused).
enum class WireType : uint8_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

/// One field of a message: its number, wire type and payload (`varint` for kVarint, the raw 4 or
/// 8 little-endian bytes in `fixed` for the fixed types, `bytes` for length-delimited fields,
/// which view the reader's buffer).
struct Field {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t varint = 0;
  uint64_t fixed = 0;
  std::string_view bytes;
  size_t offset = 0;   ///< of the field's key, from the start of the outermost buffer
  size_t payload = 0;  ///< of `bytes`, from the start of the outermost buffer
};

/// Reads the fields of one message in order. `base` is the message's offset in the outermost
/// buffer (for error messages).
class Reader {
 public:
  Reader(std::string_view data, size_t base) : data_(data), base_(base) {}

  bool done() const { return pos_ >= data_.size(); }
  /// The next field; an error names the offset and what is wrong (a truncated varint or length,
  /// a length past the end, field number 0, an unsupported wire type).
  Expected<Field> next();

 private:
  Expected<uint64_t> varint();

  std::string_view data_;
  size_t base_ = 0;
  size_t pos_ = 0;
};

/// A reader of the message nested in `f` (a length-delimited field).
inline Reader nested(const Field& f) { return Reader(f.bytes, f.payload); }

/// Packed or unpacked repeated scalars: a varint field appends one value, a length-delimited one
/// every varint in it. Errors: a wrong wire type, a truncated varint.
Status append_varints(const Field& f, std::vector<int64_t>& out);
/// Packed or unpacked repeated floats (fixed32) and doubles (fixed64).
Status append_floats(const Field& f, std::vector<float>& out);
Status append_doubles(const Field& f, std::vector<double>& out);

/// The float a fixed32 field holds.
float as_float(const Field& f);

}  // namespace meshpipe::onnx::wire

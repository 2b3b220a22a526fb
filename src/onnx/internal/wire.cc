// The protobuf wire reader (internal/wire.h): bounds-checked varints, fixed fields and lengths.
#include "onnx/internal/wire.h"

#include <cstring>

namespace meshpipe::onnx::wire {

Expected<uint64_t> Reader::varint() {
  uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) {
      return make_error(Errc::kInvalidArgument, "truncated varint at byte {}", base_ + pos_);
    }
    const auto byte = static_cast<uint8_t>(data_[pos_++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return value;
  }
  return make_error(Errc::kInvalidArgument, "varint longer than 10 bytes at byte {}", base_ + pos_);
}

Expected<Field> Reader::next() {
  Field f;
  f.offset = base_ + pos_;
  MP_ASSIGN_OR_RETURN(const uint64_t key, varint());
  const uint64_t number = key >> 3;
  if (number == 0 || number > 0x1fffffff) {
    return make_error(Errc::kInvalidArgument, "invalid field number {} at byte {}", number,
                      f.offset);
  }
  f.number = static_cast<uint32_t>(number);
  switch (key & 7) {
    case 0: {
      f.type = WireType::kVarint;
      MP_ASSIGN_OR_RETURN(f.varint, varint());
      return f;
    }
    case 1:
    case 5: {
      const size_t n = (key & 7) == 1 ? 8 : 4;
      f.type = n == 8 ? WireType::kFixed64 : WireType::kFixed32;
      if (data_.size() - pos_ < n) {
        return make_error(Errc::kInvalidArgument, "truncated {}-byte field {} at byte {}", n,
                          f.number, f.offset);
      }
      uint64_t v = 0;
      for (size_t i = 0; i < n; ++i) {
        v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
      }
      pos_ += n;
      f.fixed = v;
      return f;
    }
    case 2: {
      f.type = WireType::kBytes;
      MP_ASSIGN_OR_RETURN(const uint64_t length, varint());
      if (length > data_.size() - pos_) {
        return make_error(Errc::kInvalidArgument,
                          "field {} at byte {} claims {} bytes, {} remain (truncated file?)",
                          f.number, f.offset, length, data_.size() - pos_);
      }
      f.bytes = data_.substr(pos_, static_cast<size_t>(length));
      f.payload = base_ + pos_;
      pos_ += static_cast<size_t>(length);
      return f;
    }
    default:
      return make_error(Errc::kInvalidArgument, "unsupported wire type {} for field {} at byte {}",
                        key & 7, f.number, f.offset);
  }
}

Status append_varints(const Field& f, std::vector<int64_t>& out) {
  if (f.type == WireType::kVarint) {
    out.push_back(static_cast<int64_t>(f.varint));
    return Status::ok();
  }
  if (f.type != WireType::kBytes) {
    return make_error(Errc::kInvalidArgument, "field {} at byte {}: expected integers", f.number,
                      f.offset);
  }
  // A packed run: the varints back to back (their keys are absent).
  size_t pos = 0;
  while (pos < f.bytes.size()) {
    uint64_t value = 0;
    int shift = 0;
    for (;;) {
      if (pos >= f.bytes.size() || shift >= 64) {
        return make_error(Errc::kInvalidArgument, "field {} at byte {}: truncated packed integer",
                          f.number, f.offset);
      }
      const auto byte = static_cast<uint8_t>(f.bytes[pos++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      shift += 7;
      if ((byte & 0x80) == 0) break;
    }
    out.push_back(static_cast<int64_t>(value));
  }
  return Status::ok();
}

namespace {

template <class T, size_t N, WireType Single>
Status append_fixed(const Field& f, std::vector<T>& out) {
  static_assert(sizeof(T) == N);
  const auto from_bits = [](uint64_t bits) {
    T v;
    if constexpr (N == 4) {
      const auto b = static_cast<uint32_t>(bits);
      std::memcpy(&v, &b, N);
    } else {
      std::memcpy(&v, &bits, N);
    }
    return v;
  };
  if (f.type == Single) {
    out.push_back(from_bits(f.fixed));
    return Status::ok();
  }
  if (f.type != WireType::kBytes || f.bytes.size() % N != 0) {
    return make_error(Errc::kInvalidArgument, "field {} at byte {}: expected {}-byte numbers",
                      f.number, f.offset, N);
  }
  const size_t count = f.bytes.size() / N;
  const size_t at = out.size();
  out.resize(at + count);
  std::memcpy(out.data() + at, f.bytes.data(), count * N);  // little-endian, as the host
  return Status::ok();
}

}  // namespace

Status append_floats(const Field& f, std::vector<float>& out) {
  return append_fixed<float, 4, WireType::kFixed32>(f, out);
}

Status append_doubles(const Field& f, std::vector<double>& out) {
  return append_fixed<double, 8, WireType::kFixed64>(f, out);
}

float as_float(const Field& f) {
  const auto bits = static_cast<uint32_t>(f.fixed);
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace meshpipe::onnx::wire

// A minimal protobuf encoder for the ONNX tests: keys, varints, length-delimited fields and
// fixed32 written from the wire format's specification (independent of the decoder under test).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace meshpipe::onnx::test {

struct Enc {
  std::string out;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  }
  void key(uint32_t field, uint32_t type) { varint((uint64_t{field} << 3) | type); }
  Enc& i(uint32_t field, int64_t v) {
    key(field, 0);
    varint(static_cast<uint64_t>(v));
    return *this;
  }
  Enc& s(uint32_t field, const std::string& v) {
    key(field, 2);
    varint(v.size());
    out += v;
    return *this;
  }
  Enc& m(uint32_t field, const Enc& v) { return s(field, v.out); }
  Enc& f(uint32_t field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);
    out.append(b, 4);
    return *this;
  }
};

inline std::string raw_floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

}  // namespace meshpipe::onnx::test

// Writes NumPy .npy files for tests, from the format's published description (magic, version
// 1.0, a little-endian uint16 header length, a Python dict literal padded with spaces to a
// multiple of 64 bytes and ended by a newline, then the raw C-ordered data).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace meshpipe::test {

inline std::string npy_bytes(const std::string& descr, const std::vector<int64_t>& shape,
                             const void* data, size_t bytes) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // (3,) for one dim, (3, 4) for two
  std::string dict =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  out += dict;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

template <typename T>
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const std::vector<T>& v) {
  std::ofstream(path, std::ios::binary) << npy_bytes(descr, shape, v.data(), v.size() * sizeof(T));
}

}  // namespace meshpipe::test

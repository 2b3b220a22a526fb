// CRC-32C, table driven, eight bytes per round ("slicing by 8").
#include "runtime/crc32c.h"

#include <array>

namespace meshpipe::runtime {

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // 0x1EDC6F41 with its bits reversed

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// tables[0][b]: the remainder of the byte b shifted through eight rounds of the bitwise
// algorithm (divide by the polynomial, least significant bit first). tables[k][b]: the
// remainder of b followed by k zero bytes, so eight bytes are folded with eight lookups:
// crc' = t7[b0] ^ t6[b1] ^ ... ^ t0[b7], where b0..b3 have been xored with the running crc.
constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t r = b;
    for (int bit = 0; bit < 8; ++bit) r = (r & 1u) != 0 ? (r >> 1) ^ kPolynomial : r >> 1;
    t[0][b] = r;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (size_t k = 1; k < t.size(); ++k) {
      const uint32_t prev = t[k - 1][b];
      t[k][b] = (prev >> 8) ^ t[0][prev & 0xFFu];
    }
  }
  return t;
}

constexpr Tables kTables = make_tables();

// The little-endian 32-bit word at `p` (the byte order the reflected algorithm consumes).
uint32_t load_le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

uint32_t crc32c_update(uint32_t crc, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (; bytes >= 8; bytes -= 8, p += 8) {
    const uint32_t lo = load_le32(p) ^ c;
    const uint32_t hi = load_le32(p + 4);
    c = kTables[7][lo & 0xFFu] ^ kTables[6][(lo >> 8) & 0xFFu] ^ kTables[5][(lo >> 16) & 0xFFu] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xFFu] ^ kTables[2][(hi >> 8) & 0xFFu] ^
        kTables[1][(hi >> 16) & 0xFFu] ^ kTables[0][hi >> 24];
  }
  for (; bytes > 0; --bytes, ++p) c = (c >> 8) ^ kTables[0][(c ^ *p) & 0xFFu];
  return ~c;
}

}  // namespace meshpipe::runtime

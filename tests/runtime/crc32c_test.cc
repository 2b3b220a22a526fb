// CRC-32C against the published test vectors: the check value of the CRC catalogue and the
// iSCSI vectors of RFC 3720, appendix B.4.
#include "runtime/crc32c.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace meshpipe::runtime {
namespace {

TEST_CASE("CRC-32C gives the published check values", "[checkpoint][crc32c]") {
  const std::string check = "123456789";
  CHECK(crc32c(check.data(), check.size()) == 0xE3069283u);
  CHECK(crc32c(nullptr, 0) == 0u);
  std::vector<uint8_t> zeros(32, 0x00);
  std::vector<uint8_t> ones(32, 0xFF);
  std::vector<uint8_t> up(32);
  std::vector<uint8_t> down(32);
  for (size_t i = 0; i < 32; ++i) {
    up[i] = static_cast<uint8_t>(i);
    down[i] = static_cast<uint8_t>(31 - i);
  }
  CHECK(crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);
  CHECK(crc32c(ones.data(), ones.size()) == 0x62A8AB43u);
  CHECK(crc32c(up.data(), up.size()) == 0x46DD794Eu);
  CHECK(crc32c(down.data(), down.size()) == 0x113FDB5Cu);
}

TEST_CASE("CRC-32C fed in pieces equals CRC-32C of the whole", "[checkpoint][crc32c]") {
  std::vector<uint8_t> bytes(1000);
  uint32_t x = 12345;
  for (uint8_t& b : bytes) {
    x = x * 1103515245u + 12345u;
    b = static_cast<uint8_t>(x >> 24);
  }
  const uint32_t whole = crc32c(bytes.data(), bytes.size());
  // Splits at every offset of the first 20 bytes and a few later ones: the 8-byte rounds and
  // the byte-at-a-time tail agree whatever the alignment.
  for (size_t cut : {0, 1, 3, 7, 8, 9, 13, 19, 500, 999, 1000}) {
    INFO("cut at " << cut);
    const uint32_t first = crc32c_update(0, bytes.data(), cut);
    CHECK(crc32c_update(first, bytes.data() + cut, bytes.size() - cut) == whole);
  }
  // One flipped bit changes it.
  bytes[517] ^= 0x08;
  CHECK(crc32c(bytes.data(), bytes.size()) != whole);
}

}  // namespace
}  // namespace meshpipe::runtime

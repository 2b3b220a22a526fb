// CRC-32C (Castagnoli): the checksum a checkpoint keeps of every tile file, so a flipped bit or
// a tile swapped with another of the same size is caught when the checkpoint is loaded.
#pragma once

#include <cstddef>
#include <cstdint>

namespace meshpipe::runtime {

/// Continues the CRC-32C `crc` (of the bytes before) over `bytes` bytes at `data`; start with 0.
/// The parameters are those of iSCSI (RFC 3720, appendix B.4): the reflected polynomial
/// 0x82F63B78 (0x1EDC6F41 unreflected), initial value and final xor 0xFFFFFFFF, so
/// crc32c_update(0, "123456789", 9) == 0xE3069283. Feeding a buffer in pieces gives the same
/// value as feeding it whole.
uint32_t crc32c_update(uint32_t crc, const void* data, size_t bytes);

/// The CRC-32C of `bytes` bytes at `data`.
inline uint32_t crc32c(const void* data, size_t bytes) { return crc32c_update(0, data, bytes); }

}  // namespace meshpipe::runtime

// The bounds of what a peer may send over the control plane (private to actors/): every string
// a message carries is checked against one of these before it is parsed or kept, and the
// coordinator's rendezvous store is bounded in keys and bytes, so no peer (even one that knows
// the secret) can make the driver or a node grow without limit. The gate bounds a whole message
// before CAF reads it (GateServerOptions::max_frame_bytes); these bound each field.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/status.h"

namespace meshpipe::actors::internal {

inline constexpr size_t kKiB = 1024;
inline constexpr size_t kMiB = 1024 * kKiB;

inline constexpr size_t kMaxJobBytes = 64 * kMiB;       ///< job text: spec and plan JSON
inline constexpr size_t kMaxReportBytes = 1 * kMiB;     ///< node report, job info, step report
inline constexpr size_t kMaxTileListBytes = 16 * kMiB;  ///< a node's list of saved tiles
inline constexpr size_t kMaxPathBytes = 4 * kKiB;       ///< a checkpoint directory
inline constexpr size_t kMaxReasonBytes = 16 * kKiB;    ///< why a job ended or was aborted
inline constexpr size_t kMaxNameBytes = 256;            ///< a protocol name
inline constexpr size_t kMaxAddressesBytes = 4 * kMiB;  ///< one node's UCX addresses (JSON)
inline constexpr size_t kMaxKeyBytes = 1 * kKiB;        ///< a rendezvous store key
inline constexpr size_t kMaxValueBytes = 1 * kMiB;      ///< a rendezvous store value
inline constexpr size_t kMaxStoreEntries = 65536;       ///< keys in the rendezvous store
inline constexpr size_t kMaxStoreBytes = 64 * kMiB;     ///< keys and values in it, in all
inline constexpr size_t kMaxWaitingGets = 4096;         ///< gets waiting for a key at once
/// A step report's time breakdown (--breakdown): op kinds and the interpreter's activities, a
/// few dozen names of a few dozen bytes.
inline constexpr size_t kMaxBreakdownEntries = 512;

/// A limit in words: "64 MiB", "16 KiB", "256 bytes".
inline std::string limit_text(size_t limit) {
  if (limit >= kMiB && limit % kMiB == 0) return fmt::format("{} MiB", limit / kMiB);
  if (limit >= kKiB && limit % kKiB == 0) return fmt::format("{} KiB", limit / kKiB);
  return fmt::format("{} bytes", limit);
}

/// ok when `size` <= `limit`; otherwise kOutOfRange naming what, its size and the limit.
inline Status check_size(std::string_view what, size_t size, size_t limit) {
  if (size <= limit) return Status::ok();
  return make_error(Errc::kOutOfRange,
                    "{} has {} bytes, over the control plane's limit of {} for it", what, size,
                    limit_text(limit));
}

}  // namespace meshpipe::actors::internal

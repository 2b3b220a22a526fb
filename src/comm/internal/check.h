// Argument checks shared by the communicators (private to src/comm).
#pragma once

#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace meshpipe::comm::internal {

/// kInvalidArgument naming `what` for a negative count or a null buffer of a positive count.
inline Status check_buffer(const void* ptr, int64_t count, std::string_view what) {
  if (count < 0) return make_error(Errc::kInvalidArgument, "{}: negative count {}", what, count);
  if (count > 0 && ptr == nullptr) {
    return make_error(Errc::kInvalidArgument, "{}: null buffer for {} elements", what, count);
  }
  return Status::ok();
}

}  // namespace meshpipe::comm::internal

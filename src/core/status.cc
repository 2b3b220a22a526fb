// Status rendering.
#include "core/status.h"

namespace meshpipe {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::kOk:
      return "ok";
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kNotFound:
      return "not found";
    case Errc::kOutOfRange:
      return "out of range";
    case Errc::kInfeasible:
      return "infeasible";
    case Errc::kResourceExhausted:
      return "resource exhausted";
    case Errc::kIo:
      return "I/O error";
    case Errc::kInternal:
      return "internal error";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kCancelled:
      return "cancelled";
    case Errc::kNumerics:
      return "numerical error";
  }
  return "unknown error";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return fmt::format("{}: {}", errc_name(code_), message_);
}

Status Status::with_context(std::string_view context) const {
  if (is_ok()) return *this;
  return Status(code_, fmt::format("{}: {}", context, message_));
}

}  // namespace meshpipe

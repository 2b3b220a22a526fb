// Status and Expected<T>: how recoverable failures cross module boundaries (docs/style.md rule 16).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace meshpipe {

/// Error categories shared by every module; the message says what went wrong in words.
enum class Errc : uint8_t {
  kOk = 0,
  kInvalidArgument = 1,    ///< bad input: a shape, a config field, a command-line value
  kNotFound = 2,           ///< a named thing (model, file, value) does not exist
  kOutOfRange = 3,         ///< an index or size beyond its bound
  kInfeasible = 4,         ///< no plan or sharding satisfies the constraints
  kResourceExhausted = 5,  ///< memory budget or device memory exceeded
  kIo = 6,                 ///< file or network I/O failed
  kInternal = 7,           ///< a broken invariant that was caught and reported
  kUnavailable = 8,        ///< a device, peer or library is not available
  kTimeout = 9,            ///< an operation did not finish in time
  kCancelled = 10,         ///< stopped on request (a signal, a shutdown)
  kNumerics = 11,          ///< a NaN or Inf where a finite value was required
};

/// Name of an error category, e.g. "invalid argument".
std::string_view errc_name(Errc code);

/// The result of an operation that returns nothing: ok, or an error code with a message.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == Errc::kOk; }
  Errc code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "invalid argument: <message>", or "ok".
  std::string to_string() const;

  /// Returns a copy whose message is prefixed with `context: `.
  Status with_context(std::string_view context) const;

 private:
  Errc code_ = Errc::kOk;
  std::string message_;
};

/// Builds an error Status from a fmt format string.
template <class... Args>
Status make_error(Errc code, fmt::format_string<Args...> format, Args&&... args) {
  return Status(code, fmt::format(format, std::forward<Args>(args)...));
}

/// A value of type T, or the Status explaining why there is none.
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : data_(std::move(value)) {}        // NOLINT: implicit by design
  Expected(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(data_).is_ok()) {
      data_ = Status(Errc::kInternal, "Expected constructed from an ok Status");
    }
  }

  bool has_value() const { return std::holds_alternative<T>(data_); }
  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// The error; ok when a value is present.
  Status status() const { return has_value() ? Status::ok() : std::get<Status>(data_); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace meshpipe

/// Returns the Status of `expr` from the enclosing function when it is not ok.
#define MP_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::meshpipe::Status mp_status_ = (expr);     \
    if (!mp_status_.is_ok()) return mp_status_; \
  } while (false)

#define MP_CORE_CONCAT_INNER(a, b) a##b
#define MP_CORE_CONCAT(a, b) MP_CORE_CONCAT_INNER(a, b)

/// `MP_ASSIGN_OR_RETURN(auto x, f())`: declares x from an Expected or returns its error.
#define MP_ASSIGN_OR_RETURN(decl, expr) \
  MP_CORE_ASSIGN_OR_RETURN_IMPL(MP_CORE_CONCAT(mp_expected_, __LINE__), decl, expr)
#define MP_CORE_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.has_value()) return tmp.status();           \
  decl = std::move(tmp).value()

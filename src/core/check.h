// MP_CHECK: invariants that abort with file:line and a message (docs/style.md rule 17).
#pragma once

#include <sstream>
#include <string>

namespace meshpipe::detail {

/// Collects the streamed context of a failed check and aborts in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;

  template <class T>
  CheckFailure& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

/// Swallows the stream expression when the check passes.
struct CheckVoidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace meshpipe::detail

/// `MP_CHECK(cond) << "context";` aborts the process with file:line when cond is false.
#define MP_CHECK(cond)                          \
  (cond) ? (void)0                              \
         : ::meshpipe::detail::CheckVoidify() & \
               ::meshpipe::detail::CheckFailure(__FILE__, __LINE__, #cond)

// Reading the files a user names (plans, cluster files, profile databases, checkpoint
// manifests) without trusting them: only regular files are read, never more than a stated
// limit, and never in a way that blocks (a FIFO or a device is refused, not opened for reading
// forever). Errors name the file, what it is and the limit.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace meshpipe {

/// An owned file descriptor, closed on destruction (-1 when empty). The one descriptor owner
/// of the project (files, checkpoint directories, the control plane's sockets).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  /// Gives the descriptor up without closing it.
  int release();
  /// Closes the held descriptor (if any) and holds `fd`.
  void reset(int fd = -1);
  /// Closes it now and returns close(2)'s result, which reports a failed delayed write.
  int close();

 private:
  int fd_ = -1;
};

/// The largest JSON file of the project a reader accepts (plans of 64-device jobs are ~1 MB).
inline constexpr int64_t kMaxJsonFileBytes = int64_t{64} << 20;

/// Reads the whole of `path`, which must be a regular file of at most `max_bytes`. `what` names
/// it in errors ("plan file"): "plan file 'p.json' is a FIFO, not a regular file",
/// "... has 100.00 MiB, more than the 64.00 MiB limit". The file is opened without blocking and
/// without following a symbolic link at its last component when `follow_symlinks` is false.
Expected<std::string> read_text_file(const std::string& path, std::string_view what,
                                     int64_t max_bytes = kMaxJsonFileBytes,
                                     bool follow_symlinks = true);

/// Writes `text` to `path` atomically: into a temporary file beside it, renamed over it once
/// complete, so a failed write leaves an older file as it was. Only a regular file is replaced
/// (a directory, a device or a FIFO at `path` is refused); `what` names it in errors.
Status write_text_file(const std::string& path, std::string_view text, std::string_view what);

/// `text` as it may be printed on a terminal: control characters (an escape sequence's ESC and
/// newlines among them), DEL, bidirectional-override characters and bytes that are not UTF-8
/// are written as \xNN, so a name read from a file cannot move the cursor, recolour or
/// retitle the user's terminal, forge a line of output or reorder what is shown.
std::string printable(std::string_view text);

}  // namespace meshpipe

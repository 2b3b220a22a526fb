// read_text_file and printable.
#include "core/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

#include "core/units.h"

namespace meshpipe {

namespace {

std::string_view file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

int UniqueFd::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

int UniqueFd::close() {
  const int r = fd_ >= 0 ? ::close(fd_) : 0;
  fd_ = -1;
  return r;
}

Expected<std::string> read_text_file(const std::string& path, std::string_view what,
                                     int64_t max_bytes, bool follow_symlinks) {
  // O_NONBLOCK: opening a FIFO with no writer must not wait for one; the type check below then
  // refuses it before any read.
  const int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (follow_symlinks ? 0 : O_NOFOLLOW);
  UniqueFd fd(::open(path.c_str(), flags));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ELOOP && !follow_symlinks) {
      return make_error(Errc::kInvalidArgument, "{} '{}' is a symbolic link, not a regular file",
                        what, path);
    }
    return make_error(err == ENOENT ? Errc::kNotFound : Errc::kIo, "cannot read {} '{}': {}", what,
                      path, std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return make_error(Errc::kIo, "cannot read {} '{}': {}", what, path, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "{} '{}' is {}, not a regular file", what, path,
                      file_type_name(st.st_mode));
  }
  const auto too_big = [&] {
    return make_error(Errc::kResourceExhausted,
                      "{} '{}' is larger than the {} limit on such files (a file this large is "
                      "not one meshpipe wrote)",
                      what, path, format_bytes(Bytes(max_bytes)));
  };
  if (st.st_size > max_bytes) return too_big();
  // Blocking reads from here on (a regular file never blocks for long); the size in stat may
  // be 0 for files that are generated on reading (/proc), so the limit is enforced while
  // reading too.
  const int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  std::string text;
  text.resize(static_cast<size_t>(st.st_size));
  size_t have = 0;
  while (true) {
    if (have == text.size()) {
      if (static_cast<int64_t>(text.size()) > max_bytes) return too_big();
      text.resize(std::min<size_t>(std::max<size_t>(text.size() * 2, 4096),
                                   static_cast<size_t>(max_bytes) + 1));
    }
    const ssize_t n = ::read(fd.get(), text.data() + have, text.size() - have);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Errc::kIo, "cannot read {} '{}': {}", what, path, std::strerror(errno));
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  if (static_cast<int64_t>(have) > max_bytes) return too_big();
  text.resize(have);
  return text;
}

Status write_text_file(const std::string& path, std::string_view text, std::string_view what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "cannot write {} '{}': it exists and is {}", what,
                      path, S_ISLNK(st.st_mode) ? "a symbolic link" : file_type_name(st.st_mode));
  }
  // A temporary name of our own: created exclusively (never a file, FIFO or link someone put
  // there), and only what this call created is ever removed.
  std::string tmp;
  int raw = -1;
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; attempt < 100 && raw < 0; ++attempt) {
    tmp = fmt::format("{}.tmp-{}-{}-{:x}", path, ::getpid(), counter.fetch_add(1),
                      static_cast<uint64_t>(std::random_device{}()));
    raw = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (raw < 0 && errno != EEXIST) break;
  }
  if (raw < 0) {
    return make_error(Errc::kIo, "cannot write {} '{}': {}", what, path, std::strerror(errno));
  }
  UniqueFd fd(raw);
  const auto failed = [&](int err) {
    ::unlink(tmp.c_str());
    return make_error(Errc::kIo, "cannot write {} '{}': {}", what, path, std::strerror(err));
  };
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return failed(errno);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return failed(errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return failed(errno);
  return Status::ok();
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto escape = [&](unsigned char c) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
  };
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {  // newlines too: a name must not forge a line of output
      escape(c);
      ++i;
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A UTF-8 sequence: its length from the lead byte, continuation bytes with top bits 10, no
    // overlong forms, no surrogates, nothing above U+10FFFF; C1 controls (U+0080-U+009F) escaped
    // too.
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= text.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      ok = (b & 0xc0) == 0x80;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (ok) {
      ok = !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
           !(cp >= 0xd800 && cp <= 0xdfff) && !(cp >= 0x80 && cp <= 0x9f) &&
           !(cp >= 0x202a && cp <= 0x202e) && !(cp >= 0x2066 && cp <= 0x2069);  // bidi controls
    }
    if (!ok) {
      escape(c);  // the lead byte; the rest follow as they are judged on their own
      ++i;
      continue;
    }
    out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

}  // namespace meshpipe

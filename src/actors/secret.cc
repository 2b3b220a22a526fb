// Reading, checking, generating and writing the control plane's shared secret (secret.h).
#include "actors/secret.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace meshpipe::actors {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Closes a file descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

}  // namespace

Expected<std::string> check_secret(const std::string& text, const std::string& source) {
  size_t begin = 0;
  size_t end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  const size_t n = end - begin;
  if (n < kMinSecretBytes) {
    return make_error(Errc::kInvalidArgument,
                      "the secret in {} has {} bytes, fewer than the {} a secret needs (use a "
                      "random one: `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)",
                      source, n, kMinSecretBytes);
  }
  if (n > kMaxSecretBytes) {
    return make_error(Errc::kInvalidArgument,
                      "the secret in {} has {} bytes, over the limit of {} bytes", source, n,
                      kMaxSecretBytes);
  }
  return text.substr(begin, n);
}

Expected<std::string> read_secret_file(const std::string& path) {
  const std::string what = fmt::format("secret file {}", path);
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
  Fd f(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (f.fd < 0) {
    return make_error(errno == ENOENT ? Errc::kNotFound : Errc::kIo, "cannot open {}: {}", what,
                      std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) {
    return make_error(Errc::kIo, "cannot stat {}: {}", what, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "{} is not a regular file", what);
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return make_error(Errc::kInvalidArgument,
                      "{} may be read or written by others (mode {:04o}): allow only its owner "
                      "(chmod 600 {})",
                      what, st.st_mode & 07777, path);
  }
  if (st.st_size > static_cast<off_t>(kMaxSecretBytes)) {
    return make_error(Errc::kInvalidArgument, "{} holds {} bytes, over the limit of {} bytes", what,
                      static_cast<int64_t>(st.st_size), kMaxSecretBytes);
  }
  std::string text(kMaxSecretBytes + 1, '\0');
  size_t have = 0;
  while (have < text.size()) {
    const ssize_t got = ::read(f.fd, text.data() + have, text.size() - have);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return make_error(Errc::kIo, "cannot read {}: {}", what, std::strerror(errno));
    if (got == 0) break;
    have += static_cast<size_t>(got);
  }
  if (have > kMaxSecretBytes) {
    return make_error(Errc::kInvalidArgument, "{} holds more than {} bytes", what, kMaxSecretBytes);
  }
  text.resize(have);
  return check_secret(text, what);
}

Expected<Secret> find_secret(const std::string& file) {
  if (!file.empty()) {
    MP_ASSIGN_OR_RETURN(std::string value, read_secret_file(file));
    return Secret{std::move(value), "--secret-file " + file};
  }
  const char* env = std::getenv(kSecretEnvironment);
  if (env != nullptr) {
    MP_ASSIGN_OR_RETURN(std::string value, check_secret(env, kSecretEnvironment));
    return Secret{std::move(value), kSecretEnvironment};
  }
  return Secret{};
}

Expected<std::string> generate_secret() {
  unsigned char bytes[32];
  size_t have = 0;
  while (have < sizeof(bytes)) {
    const ssize_t got = ::getrandom(bytes + have, sizeof(bytes) - have, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      return make_error(Errc::kUnavailable, "no random bytes for a secret: {}",
                        std::strerror(errno));
    }
    have += static_cast<size_t>(got);
  }
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
  }
  return hex;
}

Status write_secret_file(const std::string& path, const std::string& secret) {
  Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (f.fd < 0) {
    if (errno == EEXIST) {
      return make_error(Errc::kInvalidArgument,
                        "{} exists: a new secret is written only to a new file (remove it, or "
                        "give it to --secret-file to use the secret it holds)",
                        path);
    }
    return make_error(Errc::kIo, "cannot create {}: {}", path, std::strerror(errno));
  }
  const std::string text = secret + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t put = ::write(f.fd, text.data() + done, text.size() - done);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) return make_error(Errc::kIo, "cannot write {}: {}", path, std::strerror(errno));
    done += static_cast<size_t>(put);
  }
  if (::fsync(f.fd) != 0) {
    return make_error(Errc::kIo, "cannot write {}: {}", path, std::strerror(errno));
  }
  return Status::ok();
}

}  // namespace meshpipe::actors

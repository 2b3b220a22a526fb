// Checkpoint files through POSIX calls: openat with O_NOFOLLOW, fstat before reading, O_EXCL
// and fsync when writing, rename and renameat2 when installing.
#include "runtime/checkpoint_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/files.h"
#include "core/logging.h"

namespace meshpipe::runtime {

namespace {

// The text of errno value `err`.
std::string error_text(int err) { return std::strerror(err); }

// The kind of a file of mode `mode` (st_mode of stat).
FileKind kind_of_mode(mode_t mode) {
  if (S_ISREG(mode)) return FileKind::kRegular;
  if (S_ISDIR(mode)) return FileKind::kDirectory;
  if (S_ISLNK(mode)) return FileKind::kSymlink;
  if (S_ISFIFO(mode)) return FileKind::kFifo;
  if (S_ISSOCK(mode)) return FileKind::kSocket;
  if (S_ISCHR(mode)) return FileKind::kCharDevice;
  if (S_ISBLK(mode)) return FileKind::kBlockDevice;
  return FileKind::kOther;
}

// The error for `name`, which is `kind` where a regular file was wanted.
Status not_regular(const std::string& name, FileKind kind) {
  if (kind == FileKind::kSymlink) {
    return make_error(Errc::kInvalidArgument,
                      "{} is a symbolic link; a checkpoint reads only the regular files in its "
                      "own directory, never through links",
                      name);
  }
  return make_error(Errc::kInvalidArgument,
                    "{} is {}, not a regular file; a checkpoint reads only the regular files in "
                    "its own directory",
                    name, file_kind_name(kind));
}

// Writes all `bytes` bytes of `data` to `fd`, retrying interrupted and partial writes.
bool write_all(int fd, const char* data, int64_t bytes) {
  while (bytes > 0) {
    const ssize_t n = ::write(fd, data, static_cast<size_t>(std::min<int64_t>(bytes, 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    bytes -= n;
  }
  return true;
}

// The directory a path's last component is in ("." for a bare name).
std::string parent_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Flushes the entries of the directory `path`; a failure is only logged (the renames it would
// make durable have been done, and the checkpoint is in place).
void sync_parent(const std::string& path) {
  const std::string parent = parent_of(path);
  Expected<OpenDir> dir = OpenDir::open(parent);
  const Status s = dir.has_value() ? dir->sync() : dir.status();
  if (!s.is_ok())
    module_logger("runtime")->warn("cannot sync directory {}: {}", parent, s.message());
}

}  // namespace

std::string_view file_kind_name(FileKind kind) {
  switch (kind) {
    case FileKind::kMissing:
      return "missing";
    case FileKind::kRegular:
      return "a regular file";
    case FileKind::kDirectory:
      return "a directory";
    case FileKind::kSymlink:
      return "a symbolic link";
    case FileKind::kFifo:
      return "a FIFO";
    case FileKind::kSocket:
      return "a socket";
    case FileKind::kCharDevice:
      return "a character device";
    case FileKind::kBlockDevice:
      return "a block device";
    case FileKind::kOther:
      break;
  }
  return "not a regular file";
}

Expected<FileKind> file_kind(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return kind_of_mode(st.st_mode);
  if (errno == ENOENT || errno == ENOTDIR) return FileKind::kMissing;  // ENOTDIR: a file above
  return make_error(Errc::kIo, "cannot inspect {}: {}", path, error_text(errno));
}

Expected<OpenDir> OpenDir::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) return OpenDir(fd, path);
  const int err = errno;
  if (err == ENOENT) return make_error(Errc::kNotFound, "no such directory");
  if (err == ENOTDIR) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      return make_error(Errc::kInvalidArgument, "not a directory but {}",
                        file_kind_name(kind_of_mode(st.st_mode)));
    }
    return make_error(Errc::kInvalidArgument, "not a directory");
  }
  return make_error(Errc::kIo, "cannot open the directory: {}", error_text(err));
}

OpenDir::OpenDir(OpenDir&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

OpenDir& OpenDir::operator=(OpenDir&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

OpenDir::~OpenDir() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::vector<std::string>> OpenDir::list() const {
  const int fd = ::dup(fd_);
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (d == nullptr) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return make_error(Errc::kIo, "cannot list {}: {}", path_, error_text(err));
  }
  ::rewinddir(d);  // the duplicate shares the offset of an earlier listing
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return make_error(Errc::kIo, "cannot list {}: {}", path_, error_text(err));
  std::sort(names.begin(), names.end());
  return names;
}

Expected<FileKind> OpenDir::kind_of(const std::string& name) const {
  struct stat st {};
  if (::fstatat(fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return kind_of_mode(st.st_mode);
  if (errno == ENOENT) return FileKind::kMissing;
  return make_error(Errc::kIo, "cannot inspect {}: {}", name, error_text(errno));
}

Status OpenDir::sync() const {
  if (::fsync(fd_) != 0 && errno != EINVAL) {  // EINVAL: a file system without directory sync
    return make_error(Errc::kIo, "cannot sync {}: {}", path_, error_text(errno));
  }
  return Status::ok();
}

Expected<std::vector<char>> read_regular_file(const OpenDir& dir, const std::string& name,
                                              const SizeCheck& check_size) {
  // Look before opening: a FIFO or a device is never opened, a link never followed.
  MP_ASSIGN_OR_RETURN(const FileKind kind, dir.kind_of(name));
  if (kind == FileKind::kMissing) return make_error(Errc::kNotFound, "{} is missing", name);
  if (kind != FileKind::kRegular) return not_regular(name, kind);
  UniqueFd fd(::openat(dir.fd(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ELOOP) return not_regular(name, FileKind::kSymlink);
    if (err == ENOENT) return make_error(Errc::kNotFound, "{} is missing", name);
    return make_error(Errc::kIo, "cannot open {}: {}", name, error_text(err));
  }
  // And again on what was opened, in case the name was swapped for something else meanwhile.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return make_error(Errc::kIo, "cannot inspect {}: {}", name, error_text(errno));
  }
  if (!S_ISREG(st.st_mode)) return not_regular(name, kind_of_mode(st.st_mode));
  const int64_t size = static_cast<int64_t>(st.st_size);
  if (check_size) MP_RETURN_IF_ERROR(check_size(size));
  std::vector<char> bytes(static_cast<size_t>(size));
  int64_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd.get(), bytes.data() + done,
                             static_cast<size_t>(std::min<int64_t>(size - done, 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return make_error(Errc::kIo, "cannot read {}: {}", name, error_text(errno));
    if (n == 0) {
      return make_error(Errc::kIo, "{} ended after {} of its {} bytes (did it change while read?)",
                        name, done, size);
    }
    done += n;
  }
  return bytes;
}

Status write_new_file(const OpenDir& dir, const std::string& name, const void* data,
                      int64_t bytes) {
  const std::string path = dir.path() + "/" + name;
  UniqueFd fd(
      ::openat(dir.fd(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    if (errno == EEXIST) return make_error(Errc::kIo, "{} exists; not overwritten", path);
    return make_error(Errc::kIo, "cannot create {}: {}", path, error_text(errno));
  }
  if (!write_all(fd.get(), static_cast<const char*>(data), bytes)) {
    return make_error(Errc::kIo, "cannot write {}: {}", path,
                      errno != 0 ? error_text(errno) : "nothing written");
  }
  if (::fsync(fd.get()) != 0) {
    return make_error(Errc::kIo, "cannot sync {}: {}", path, error_text(errno));
  }
  if (fd.close() != 0) return make_error(Errc::kIo, "cannot write {}: {}", path, error_text(errno));
  return Status::ok();
}

Status remove_owned_files(const std::string& path, const std::vector<std::string>& files) {
  Expected<OpenDir> opened = OpenDir::open(path);
  if (!opened.has_value()) return opened.status().with_context(path);
  const OpenDir& dir = *opened;
  for (const std::string& name : files) {
    MP_ASSIGN_OR_RETURN(const FileKind kind, dir.kind_of(name));
    if (kind != FileKind::kRegular) continue;  // not a file the checkpoint wrote: stays
    if (::unlinkat(dir.fd(), name.c_str(), 0) != 0 && errno != ENOENT) {
      return make_error(Errc::kIo, "cannot remove {}/{}: {}", path, name, error_text(errno));
    }
  }
  MP_ASSIGN_OR_RETURN(const std::vector<std::string> left, dir.list());
  if (!left.empty()) {
    return make_error(Errc::kIo, "{} still holds {}, which is not a file of its checkpoint; left",
                      path, left.front());
  }
  if (::rmdir(path.c_str()) != 0) {
    return make_error(Errc::kIo, "cannot remove {}: {}", path, error_text(errno));
  }
  return Status::ok();
}

Status install_directory(const std::string& fresh, const std::string& target, bool replace_old,
                         const std::vector<std::string>& old_files, ReplaceMode mode) {
  if (!replace_old) {
    if (::rename(fresh.c_str(), target.c_str()) != 0) {
      return make_error(Errc::kIo, "cannot rename {} to {}: {}", fresh, target, error_text(errno));
    }
    sync_parent(target);
    return Status::ok();
  }
  std::string old_at;  // where the old checkpoint is once the new one is in place
#ifdef RENAME_EXCHANGE
  if (mode == ReplaceMode::kExchange) {
    if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
      old_at = fresh;
    } else if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      return make_error(Errc::kIo, "cannot exchange {} and {}: {}", fresh, target,
                        error_text(errno));
    }
  }
#endif
  if (old_at.empty()) {
    old_at = target + ".old-" + std::to_string(::getpid());
    MP_ASSIGN_OR_RETURN(const FileKind there, file_kind(old_at));
    if (there != FileKind::kMissing) {
      return make_error(Errc::kIo, "{} is in the way (left by an earlier save?); not replaced",
                        old_at);
    }
    if (::rename(target.c_str(), old_at.c_str()) != 0) {
      return make_error(Errc::kIo, "cannot move the old checkpoint {} away: {}", target,
                        error_text(errno));
    }
    if (::rename(fresh.c_str(), target.c_str()) != 0) {
      const int err = errno;
      if (::rename(old_at.c_str(), target.c_str()) != 0) {
        return make_error(Errc::kIo,
                          "cannot rename {} to {}: {}; and the old checkpoint could not be "
                          "moved back from {}: {}",
                          fresh, target, error_text(err), old_at, error_text(errno));
      }
      return make_error(Errc::kIo, "cannot rename {} to {}: {}", fresh, target, error_text(err));
    }
  }
  sync_parent(target);
  const Status removed = remove_owned_files(old_at, old_files);
  if (!removed.is_ok()) {
    module_logger("runtime")->warn("checkpoint {} saved; the previous one was not removed: {}",
                                   target, removed.message());
  }
  return Status::ok();
}

}  // namespace meshpipe::runtime

// The file-system side of checkpoints (runtime/checkpoint.h): reading only the regular files a
// checkpoint directory holds (no link followed, no FIFO or device opened, the size checked before
// a byte is read), writing new files durably, and putting a complete checkpoint directory in
// place of an older one without removing anything the older one did not own.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace meshpipe::runtime {

/// What a name in a directory is, as lstat sees it (a link is a link, never its target).
enum class FileKind {
  kMissing,
  kRegular,
  kDirectory,
  kSymlink,
  kFifo,
  kSocket,
  kCharDevice,
  kBlockDevice,
  kOther,
};

/// "a regular file", "a directory", "a symbolic link", "a FIFO", ...
std::string_view file_kind_name(FileKind kind);

/// What `path` is (lstat: a link is kSymlink). Errors other than "no such file" are kIo.
Expected<FileKind> file_kind(const std::string& path);

/// An open directory: the files of a checkpoint are opened relative to it, so what is read is
/// in this directory even if its path is renamed meanwhile. Movable, closes on destruction.
class OpenDir {
 public:
  /// Opens the directory `path` (a link naming a directory is followed: the user gave the
  /// path). Errors: kNotFound when there is nothing at `path`, kInvalidArgument when it is not
  /// a directory, kIo otherwise.
  static Expected<OpenDir> open(const std::string& path);

  OpenDir(OpenDir&& other) noexcept;
  OpenDir& operator=(OpenDir&& other) noexcept;
  OpenDir(const OpenDir&) = delete;
  OpenDir& operator=(const OpenDir&) = delete;
  ~OpenDir();

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  /// The names in it (neither "." nor ".."), sorted.
  Expected<std::vector<std::string>> list() const;
  /// What its entry `name` is (a link is kSymlink).
  Expected<FileKind> kind_of(const std::string& name) const;
  /// Flushes its entries (the names of the files created in it) to the disk.
  Status sync() const;

 private:
  OpenDir(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

/// Refuses a file size before reading: ok, or why not (the message names the file itself).
using SizeCheck = std::function<Status(int64_t bytes)>;

/// Reads the regular file `name` (a plain name) of `dir`. Anything else is refused without
/// being opened for reading: a symbolic link (even to a regular file), a directory, a FIFO, a
/// socket, a device. The file is opened with O_NOFOLLOW | O_NONBLOCK and checked again on the
/// open descriptor, so one swapped in meanwhile neither blocks nor is read. `check_size` sees
/// its size before a byte is read. Errors name the file: kNotFound when missing,
/// kInvalidArgument for another kind or a refused size, kIo for a failed or short read.
Expected<std::vector<char>> read_regular_file(const OpenDir& dir, const std::string& name,
                                              const SizeCheck& check_size);

/// Creates the file `name` in `dir` (it must not exist: nothing is ever overwritten), writes
/// `bytes` bytes from `data` and flushes them to the disk (fsync) before closing it.
Status write_new_file(const OpenDir& dir, const std::string& name, const void* data, int64_t bytes);

/// Removes the regular files `files` (plain names; missing ones are skipped) from the directory
/// `path`, then the directory itself when that left it empty. Nothing else is removed: a
/// directory that still holds other entries stays, and the error names the first of them.
Status remove_owned_files(const std::string& path, const std::vector<std::string>& files);

/// How install_directory puts the new directory in place of an older one.
enum class ReplaceMode {
  kExchange,    ///< renameat2(RENAME_EXCHANGE) where the file system has it, else kTwoRenames
  kTwoRenames,  ///< rename the old one to TARGET.old-<pid>, the new one to TARGET
};

/// Puts the complete directory `fresh` at `target`, whose own files (when it is an older
/// checkpoint) are `old_files`. With `replace_old` false, `target` is absent or an empty
/// directory and a rename does it: rename(2) replaces nothing but an empty directory. Otherwise
/// the two are exchanged atomically (kExchange), or the old one is renamed away first and back
/// again if the second rename fails (kTwoRenames); then remove_owned_files removes the old
/// one's files. The parent directory is synced after the renames. On failure `fresh` is left
/// for the caller to remove and `target` is as it was.
Status install_directory(const std::string& fresh, const std::string& target, bool replace_old,
                         const std::vector<std::string>& old_files,
                         ReplaceMode mode = ReplaceMode::kExchange);

}  // namespace meshpipe::runtime

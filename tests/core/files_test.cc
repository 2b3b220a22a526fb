// read_text_file refuses what is not a regular file, never blocks and never reads past its
// limit; printable escapes what a terminal would interpret; crash handlers end the process.
#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "core/crash.h"

namespace meshpipe {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("meshpipe_files_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  return dir / name;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST_CASE("read_text_file reads a regular file whole", "[core]") {
  const fs::path p = scratch("plain.json");
  std::string text(100000, 'x');
  text += "end";
  std::ofstream(p, std::ios::binary) << text;
  auto got = read_text_file(p.string(), "plan file");
  REQUIRE(got.has_value());
  CHECK(*got == text);
  // Exactly at the limit is fine, one byte more is not.
  CHECK(read_text_file(p.string(), "plan file", static_cast<int64_t>(text.size())).has_value());
  auto over = read_text_file(p.string(), "plan file", static_cast<int64_t>(text.size()) - 1);
  REQUIRE_FALSE(over.has_value());
  CHECK(over.status().code() == Errc::kResourceExhausted);
  CHECK(contains(over.status().message(), "is larger than the"));
}

TEST_CASE("read_text_file refuses what is not a regular file, naming what it is", "[core]") {
  const auto message = [](const std::string& path) {
    auto r = read_text_file(path, "plan file");
    REQUIRE_FALSE(r.has_value());
    return r.status().message();
  };
  CHECK(message("/dev/zero") == "plan file '/dev/zero' is a character device, not a regular file");
  CHECK(message(fs::temp_directory_path().string()) == "plan file '" +
                                                           fs::temp_directory_path().string() +
                                                           "' is a directory, not a regular file");
  // A FIFO without a writer: refused at once, not waited on.
  const fs::path fifo = scratch("fifo");
  fs::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(message(fifo.string()) ==
        "plan file '" + fifo.string() + "' is a FIFO, not a regular file");
  auto missing = read_text_file(scratch("none").string(), "plan file");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().code() == Errc::kNotFound);
}

TEST_CASE("read_text_file bounds files whose size stat does not know", "[core]") {
  // /proc files report size 0 and are generated while read: the limit holds while reading.
  auto r = read_text_file("/proc/self/maps", "profile", 16);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().code() == Errc::kResourceExhausted);
  auto whole = read_text_file("/proc/self/maps", "profile");
  REQUIRE(whole.has_value());
  CHECK(whole->size() > 16);
}

TEST_CASE("read_text_file without following links refuses a symbolic link", "[core]") {
  const fs::path target = scratch("target.json");
  std::ofstream(target) << "{}";
  const fs::path link = scratch("link.json");
  fs::remove(link);
  fs::create_symlink(target, link);
  CHECK(read_text_file(link.string(), "manifest").has_value());
  auto r = read_text_file(link.string(), "manifest", kMaxJsonFileBytes, false);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.status().message() ==
        "manifest '" + link.string() + "' is a symbolic link, not a regular file");
}

TEST_CASE("printable escapes control characters and bytes that are not UTF-8", "[core]") {
  CHECK(printable("plain name / 1.3b") == "plain name / 1.3b");
  CHECK(printable("\x1b]0;title\x07\x1b[2J") == "\\x1b]0;title\\x07\\x1b[2J");
  CHECK(printable("a\rb\x7f") == "a\\x0db\\x7f");
  CHECK(printable("line\nerror: forged\ttab") == "line\\x0aerror: forged\\x09tab");
  CHECK(printable("abc\xe2\x80\xae"
                  "def") == "abc\\xe2\\x80\\xaedef");  // U+202E
  // UTF-8 passes; broken, overlong and surrogate sequences and C1 controls do not.
  CHECK(printable("größe 東京 \xf0\x9f\x98\x80") == "größe 東京 \xf0\x9f\x98\x80");
  CHECK(printable("\xff\xfe") == "\\xff\\xfe");
  CHECK(printable("\xc0\xaf") == "\\xc0\\xaf");           // overlong '/'
  CHECK(printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a surrogate
  CHECK(printable("\xc2\x9b") == "\\xc2\\x9b");           // C1 CSI
  CHECK(printable("\xe6\x9d") == "\\xe6\\x9d");           // cut short
}

// Runs `body` in a child process and returns its wait status.
template <class F>
int in_child(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// Recurses until the stack overflows.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winfinite-recursion"
int recurse_forever(int depth) {
  volatile char pad[4096];
  pad[0] = static_cast<char>(depth);
  return recurse_forever(depth + 1) + pad[0];  // not a tail call: the frame stays
}
#pragma GCC diagnostic pop

TEST_CASE("a crash, a stack overflow included, ends the process with its signal", "[core]") {
  const int segv = in_child([] {
    install_crash_handlers("test");
    ::raise(SIGSEGV);
  });
  INFO("wait status " << segv << ", exit " << WEXITSTATUS(segv));
  CHECK(WIFSIGNALED(segv));
  CHECK(WTERMSIG(segv) == SIGSEGV);
  const int overflow = in_child([] {
    install_crash_handlers("test");
    recurse_forever(0);
  });
  INFO("wait status " << overflow << ", exit " << WEXITSTATUS(overflow));
  CHECK(WIFSIGNALED(overflow));
  CHECK(WTERMSIG(overflow) == SIGSEGV);
}

TEST_CASE("the first stop signal sets the flag, a second ends the process", "[core]") {
  const int status = in_child([] {
    const std::atomic<bool>& stop = install_stop_handlers("test");
    if (stop.load()) ::_exit(3);
    ::raise(SIGTERM);
    if (!stop.load() || stop_signal() != SIGTERM) ::_exit(4);
    ::raise(SIGINT);  // the second: exits 128 + SIGINT
    ::_exit(5);
  });
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGINT);
}

}  // namespace
}  // namespace meshpipe

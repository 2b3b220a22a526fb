// The control plane's secret: a file only its owner can read, of bounded size, a regular file,
// long enough; the environment; generated secrets are fresh and written only to new 0600 files.
#include "actors/secret.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace meshpipe::actors {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the temp directory, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / fmt::format("meshpipe-secret-test-{}", ::getpid());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text, mode_t mode) const {
    const fs::path p = path / name;
    std::ofstream(p) << text;
    ::chmod(p.c_str(), mode);
    return p.string();
  }
};

TEST_CASE("a secret file readable by its owner only is read, white space dropped", "[actors]") {
  TempDir dir;
  const std::string f = dir.write("s", "  0123456789abcdef0123\n", 0600);
  auto s = read_secret_file(f);
  REQUIRE(s.has_value());
  CHECK(*s == "0123456789abcdef0123");
  CHECK(read_secret_file(dir.write("r", "0123456789abcdef0123", 0400)).has_value());
}

TEST_CASE("a secret file others may read is refused, saying how to fix it", "[actors]") {
  TempDir dir;
  for (mode_t mode : {0644, 0640, 0604, 0620}) {
    const std::string f = dir.write(fmt::format("s{:o}", mode), "0123456789abcdef0123", mode);
    auto s = read_secret_file(f);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.status().message().find("chmod 600") != std::string::npos);
    CHECK(s.status().message().find(fmt::format("{:04o}", mode)) != std::string::npos);
  }
}

TEST_CASE("a secret that is too short, too large or not a regular file is refused", "[actors]") {
  TempDir dir;
  auto short_one = read_secret_file(dir.write("short", "tooshort\n", 0600));
  REQUIRE_FALSE(short_one.has_value());
  CHECK(short_one.status().message().find("fewer than the 16") != std::string::npos);
  auto large = read_secret_file(dir.write("large", std::string(kMaxSecretBytes + 1, 'x'), 0600));
  REQUIRE_FALSE(large.has_value());
  CHECK(large.status().message().find("over the limit of 4096 bytes") != std::string::npos);
  const std::string fifo = (dir.path / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto f = read_secret_file(fifo);  // must not wait for a writer
  REQUIRE_FALSE(f.has_value());
  CHECK(f.status().message().find("not a regular file") != std::string::npos);
  auto d = read_secret_file(dir.path.string());
  REQUIRE_FALSE(d.has_value());
  auto missing = read_secret_file((dir.path / "none").string());
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().code() == Errc::kNotFound);
}

TEST_CASE("the secret comes from the file, else the environment, else nowhere", "[actors]") {
  TempDir dir;
  ::unsetenv(kSecretEnvironment);
  auto none = find_secret("");
  REQUIRE(none.has_value());
  CHECK(none->value.empty());
  ::setenv(kSecretEnvironment, "from-the-environment-1234", 1);
  auto env = find_secret("");
  REQUIRE(env.has_value());
  CHECK(env->value == "from-the-environment-1234");
  CHECK(env->source == kSecretEnvironment);
  auto file = find_secret(dir.write("s", "from-the-file-0123456789", 0600));
  REQUIRE(file.has_value());
  CHECK(file->value == "from-the-file-0123456789");
  ::setenv(kSecretEnvironment, "short", 1);
  CHECK_FALSE(find_secret("").has_value());
  ::unsetenv(kSecretEnvironment);
}

TEST_CASE("a generated secret is fresh and written only to a new 0600 file", "[actors]") {
  TempDir dir;
  auto a = generate_secret();
  auto b = generate_secret();
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(a->size() == 64);
  CHECK(*a != *b);
  const std::string f = (dir.path / "secret").string();
  REQUIRE(write_secret_file(f, *a).is_ok());
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto back = read_secret_file(f);
  REQUIRE(back.has_value());
  CHECK(*back == *a);
  const Status again = write_secret_file(f, *b);  // never replaces a file
  REQUIRE_FALSE(again.is_ok());
  CHECK(again.message().find("exists") != std::string::npos);
  CHECK(*read_secret_file(f) == *a);
}

}  // namespace
}  // namespace meshpipe::actors

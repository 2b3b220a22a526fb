// Sockets and the byte relay of the control plane's gate (actors/internal/relay.h).
#include "actors/internal/relay.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "actors/internal/limits.h"

namespace meshpipe::actors::internal {

void prepare_socket(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

namespace {

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list != nullptr) ::freeaddrinfo(list);
  }
};

Status resolve(const std::string& host, uint16_t port, bool passive, AddrInfo* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &out->list);
  if (rc != 0 || out->list == nullptr) {
    return make_error(Errc::kInvalidArgument, "cannot resolve '{}': {}", host, gai_strerror(rc));
  }
  return Status::ok();
}

}  // namespace

Expected<UniqueFd> listen_tcp(const std::string& bind, uint16_t port, int backlog) {
  AddrInfo ai;
  MP_RETURN_IF_ERROR(resolve(bind, port, /*passive=*/true, &ai));
  UniqueFd fd(::socket(ai.list->ai_family, ai.list->ai_socktype, ai.list->ai_protocol));
  if (!fd.valid()) return make_error(Errc::kIo, "socket: {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), ai.list->ai_addr, ai.list->ai_addrlen) != 0) {
    return make_error(Errc::kIo, "cannot listen on {}:{}: {}", bind, port, std::strerror(errno));
  }
  if (::listen(fd.get(), backlog) != 0) {
    return make_error(Errc::kIo, "cannot listen on {}:{}: {}", bind, port, std::strerror(errno));
  }
  prepare_socket(fd.get());
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return fmt::format("{}:{}", host, ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* in = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof(host));
    return fmt::format("[{}]:{}", host, ntohs(in->sin6_port));
  }
  return "?";
}

int poll_ms(Clock::time_point deadline, int cap) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left + 1, 0, cap));
}

Status finish_connect(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) return make_error(Errc::kUnavailable, "{}", std::strerror(err));
  return Status::ok();
}

Expected<UniqueFd> connect_tcp(const std::string& host, uint16_t port, Clock::time_point deadline) {
  AddrInfo ai;
  MP_RETURN_IF_ERROR(resolve(host, port, /*passive=*/false, &ai));
  Status last = make_error(Errc::kUnavailable, "no address");
  for (addrinfo* a = ai.list; a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype, a->ai_protocol));
    if (!fd.valid()) continue;
    prepare_socket(fd.get());
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
      last = make_error(Errc::kUnavailable, "{}", std::strerror(errno));
      continue;
    }
    while (true) {
      pollfd p{fd.get(), POLLOUT, 0};
      const int ms = poll_ms(deadline);
      const int rc = ::poll(&p, 1, ms);
      if (rc < 0 && errno == EINTR) continue;
      if (rc > 0) break;
      if (Clock::now() >= deadline) {
        return make_error(Errc::kTimeout, "no connection within the connect timeout");
      }
    }
    last = finish_connect(fd.get());
    if (last.is_ok()) return fd;
  }
  return last;
}

Expected<UniqueFd> start_loopback_connect(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (!fd.valid()) return make_error(Errc::kIo, "socket: {}", std::strerror(errno));
  prepare_socket(fd.get());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    return make_error(Errc::kUnavailable, "connect to 127.0.0.1:{}: {}", port,
                      std::strerror(errno));
  }
  return fd;
}

namespace {

// Waits until `fd` is ready for `events` or `deadline` passes.
Status wait_for(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, poll_ms(deadline));
    if (rc < 0 && errno != EINTR) return make_error(Errc::kIo, "poll: {}", std::strerror(errno));
    if (rc > 0) return Status::ok();
    if (Clock::now() >= deadline) return make_error(Errc::kTimeout, "no answer in time");
  }
}

}  // namespace

Status send_all(int fd, const void* data, size_t n, Clock::time_point deadline) {
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t put = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (put > 0) {
      done += static_cast<size_t>(put);
    } else if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      MP_RETURN_IF_ERROR(wait_for(fd, POLLOUT, deadline));
    } else {
      return make_error(Errc::kUnavailable, "the connection failed: {}", std::strerror(errno));
    }
  }
  return Status::ok();
}

Status recv_all(int fd, void* data, size_t n, Clock::time_point deadline) {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::recv(fd, p + done, n - done, 0);
    if (got > 0) {
      done += static_cast<size_t>(got);
    } else if (got == 0) {
      return make_error(Errc::kUnavailable, "the peer closed the connection");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      MP_RETURN_IF_ERROR(wait_for(fd, POLLIN, deadline));
    } else {
      return make_error(Errc::kUnavailable, "the connection failed: {}", std::strerror(errno));
    }
  }
  return Status::ok();
}

namespace {

// The inode of the TCP socket with local port `local` and remote port `remote` in a
// /proc/net/tcp-style table ("" when none).
std::string find_socket_inode(const char* table, uint16_t local, uint16_t remote) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // the header
  const auto port_of = [](const std::string& addr) -> long {
    const size_t colon = addr.rfind(':');
    if (colon == std::string::npos) return -1;
    return std::strtol(addr.c_str() + colon + 1, nullptr, 16);
  };
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string sl, local_addr, remote_addr, state, queues, timer, retransmits, uid, timeout, inode;
    if (!(fields >> sl >> local_addr >> remote_addr >> state >> queues >> timer >> retransmits >>
          uid >> timeout >> inode)) {
      continue;
    }
    if (port_of(local_addr) == local && port_of(remote_addr) == remote) return inode;
  }
  return "";
}

}  // namespace

bool is_own_connection(uint16_t peer_port, uint16_t listen_port) {
  std::string inode = find_socket_inode("/proc/net/tcp", peer_port, listen_port);
  if (inode.empty()) inode = find_socket_inode("/proc/net/tcp6", peer_port, listen_port);
  if (inode.empty() || inode == "0") return false;
  const std::string want = "socket:[" + inode + "]";
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return false;
  bool found = false;
  char target[128];
  for (dirent* e = ::readdir(dir); e != nullptr && !found; e = ::readdir(dir)) {
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)) == want) found = true;
  }
  ::closedir(dir);
  return found;
}

bool FrameGuard::feed(const char* data, size_t n) {
  while (n > 0) {
    if (payload_left_ > 0) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(payload_left_, n));
      payload_left_ -= take;
      data += take;
      n -= take;
      continue;
    }
    const size_t take = std::min(kHeaderBytes - header_have_, n);
    std::memcpy(header_ + header_have_, data, take);
    header_have_ += take;
    data += take;
    n -= take;
    if (header_have_ == kHeaderBytes) {
      last_ = (uint32_t{header_[4]} << 24) | (uint32_t{header_[5]} << 16) |
              (uint32_t{header_[6]} << 8) | uint32_t{header_[7]};
      if (last_ > max_) return false;
      payload_left_ = last_;
      header_have_ = 0;
    }
  }
  return true;
}

Relay::Relay(UniqueFd a, UniqueFd b, uint32_t max_frame_bytes)
    : a_(std::move(a)), b_(std::move(b)), guarded_(max_frame_bytes > 0), guard_(max_frame_bytes) {}

void Relay::fill(pollfd* a, pollfd* b) const {
  a->events = 0;
  b->events = 0;
  if (!done_) {
    if (!a_eof_ && ab_.size() < kBufferBytes) a->events |= POLLIN;
    if (!ba_.empty()) a->events |= POLLOUT;
    if (!b_eof_ && ba_.size() < kBufferBytes) b->events |= POLLIN;
    if (!ab_.empty()) b->events |= POLLOUT;
  }
  a->fd = a->events != 0 ? a_.get() : -1;
  b->fd = b->events != 0 ? b_.get() : -1;
  a->revents = 0;
  b->revents = 0;
}

void Relay::fail(std::string why) {
  if (done_) return;
  done_ = true;
  error_ = std::move(why);
  a_.reset();
  b_.reset();
}

void Relay::read_into(int fd, std::string& buf, bool& eof, bool guard) {
  char chunk[64 << 10];
  while (!done_ && !eof && buf.size() < kBufferBytes) {
    const size_t want = std::min(sizeof(chunk), kBufferBytes - buf.size());
    const ssize_t got = ::recv(fd, chunk, want, 0);
    if (got > 0) {
      if (guard && !guard_.feed(chunk, static_cast<size_t>(got))) {
        over_limit_ = true;
        fail(fmt::format("a message of {} bytes is over the control plane's limit of {}",
                         guard_.last_length(), limit_text(guard_.max())));
        return;
      }
      buf.append(chunk, static_cast<size_t>(got));
    } else if (got == 0) {
      eof = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else if (errno != EINTR) {
      fail(fmt::format("the connection failed: {}", std::strerror(errno)));
      return;
    }
  }
}

void Relay::write_from(int fd, std::string& buf) {
  size_t done = 0;
  while (!done_ && done < buf.size()) {
    const ssize_t put = ::send(fd, buf.data() + done, buf.size() - done, MSG_NOSIGNAL);
    if (put > 0) {
      done += static_cast<size_t>(put);
    } else if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else if (put < 0 && errno == EINTR) {
      continue;
    } else {
      fail(fmt::format("the connection failed: {}", std::strerror(errno)));
      return;
    }
  }
  buf.erase(0, done);
}

void Relay::on_events(short a_revents, short b_revents) {
  if (done_) return;
  const short readable = POLLIN | POLLHUP | POLLERR;
  if ((a_revents & readable) != 0) read_into(a_.get(), ab_, a_eof_, guarded_);
  if (!done_ && (b_revents & readable) != 0) read_into(b_.get(), ba_, b_eof_, false);
  if (!done_ && !ab_.empty()) write_from(b_.get(), ab_);
  if (!done_ && !ba_.empty()) write_from(a_.get(), ba_);
  if (done_) return;
  if (a_eof_ && ab_.empty() && !b_shut_) {
    ::shutdown(b_.get(), SHUT_WR);
    b_shut_ = true;
  }
  if (b_eof_ && ba_.empty() && !a_shut_) {
    ::shutdown(a_.get(), SHUT_WR);
    a_shut_ = true;
  }
  if (a_shut_ && b_shut_) {
    done_ = true;
    a_.reset();
    b_.reset();
  }
}

}  // namespace meshpipe::actors::internal

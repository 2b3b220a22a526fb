// InProcessFabric: point-to-point transfers between threads of one process. A send copies at
// once, into a receive already posted for it or into a queue of pending messages, so it never
// waits; a receive completes when a matching message exists. Matching is FIFO per (src, dst, tag).
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "comm/internal/wait.h"
#include "comm/transport.h"
#include "core/check.h"

namespace meshpipe::comm {
namespace {

using Clock = std::chrono::steady_clock;

// Messages and receives of one (sender, receiver, tag) triple, each in posting order.
struct Channel {
  std::deque<std::vector<char>> messages;  // sent before a matching receive was posted
  std::deque<int64_t> receives;            // ids of posted receives still waiting for a message
};

// A posted receive.
struct Receive {
  int owner = 0;  // receiving endpoint
  int peer = 0;   // sending endpoint
  uint64_t tag = 0;
  void* data = nullptr;
  int64_t bytes = 0;
  bool done = false;
  Status status;
};

using ChannelKey = std::tuple<int, int, uint64_t>;  // (src, dst, tag)

struct FabricState {
  explicit FabricState(int endpoints) : size(endpoints), taken(size_t(endpoints)) {}

  const int size;
  std::mutex mu;
  std::condition_variable cv;
  std::map<ChannelKey, Channel> channels;
  std::map<int64_t, Receive> receives;
  int64_t next_id = 0;
  Status failure;  // set by abort(); sticky
  std::vector<char> taken;
};

// Copies `message` into the receive, or records the size mismatch as its result.
void deliver(Receive& r, const char* message, int64_t bytes) {
  if (bytes != r.bytes) {
    r.status =
        make_error(Errc::kInvalidArgument,
                   "recv from endpoint {} tag {}: expected {} bytes, the message has {} bytes",
                   r.peer, r.tag, r.bytes, bytes);
  } else if (bytes > 0) {
    std::memcpy(r.data, message, size_t(bytes));
  }
  r.done = true;
}

class InProcessEndpoint final : public Transport {
 public:
  InProcessEndpoint(std::shared_ptr<FabricState> state, int self)
      : state_(std::move(state)), self_(self) {}

  // Withdraws this endpoint's pending receives, so no later send writes into their buffers.
  ~InProcessEndpoint() override {
    std::lock_guard<std::mutex> lock(state_->mu);
    for (auto it = state_->receives.begin(); it != state_->receives.end();) {
      if (it->second.owner != self_) {
        ++it;
        continue;
      }
      withdraw(it->first, it->second);
      it = state_->receives.erase(it);
    }
  }

  int self() const override { return self_; }
  int size() const override { return state_->size; }
  std::string backend() const override { return "in-process"; }

  Expected<Request> send(int peer, uint64_t tag, const void* data, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_args("send to", peer, tag, data, bytes));
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->failure.is_ok()) return state_->failure;
    auto ch = state_->channels.try_emplace({self_, peer, tag}).first;
    const char* bytes_in = static_cast<const char*>(data);
    if (!ch->second.receives.empty()) {
      deliver(state_->receives.at(ch->second.receives.front()), bytes_in, bytes);
      ch->second.receives.pop_front();
      prune(ch);
      state_->cv.notify_all();
    } else {
      ch->second.messages.emplace_back(bytes_in, bytes_in + bytes);
    }
    return Request{};  // complete: the data has been copied
  }

  Expected<Request> recv(int peer, uint64_t tag, void* data, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_args("recv from", peer, tag, data, bytes));
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->failure.is_ok()) return state_->failure;
    const int64_t id = state_->next_id++;
    Receive& r = state_->receives[id];
    r = Receive{self_, peer, tag, data, bytes, false, Status::ok()};
    auto ch = state_->channels.try_emplace({peer, self_, tag}).first;
    if (!ch->second.messages.empty()) {
      const std::vector<char>& message = ch->second.messages.front();
      deliver(r, message.data(), int64_t(message.size()));
      ch->second.messages.pop_front();
      prune(ch);
    } else {
      ch->second.receives.push_back(id);
    }
    return Request{id};
  }

  Status wait(Request& request, std::chrono::milliseconds timeout) override {
    if (request.id < 0) return Status::ok();
    std::unique_lock<std::mutex> lock(state_->mu);
    auto it = find(request);
    if (it == state_->receives.end()) {
      return make_error(Errc::kInvalidArgument, "endpoint {}: unknown request {}", self_,
                        request.id);
    }
    Receive& r = it->second;
    internal::wait_until(state_->cv, lock, Clock::now() + timeout,
                         [&] { return r.done || !state_->failure.is_ok(); });
    if (!r.done && state_->failure.is_ok()) {
      return make_error(Errc::kTimeout,
                        "recv from endpoint {} tag {} ({} bytes) did not complete within {} ms",
                        r.peer, r.tag, r.bytes, timeout.count());
    }
    Status status = r.done ? r.status : state_->failure;
    if (!r.done) withdraw(request.id, r);
    state_->receives.erase(it);
    request.id = -1;
    return status;
  }

  void cancel(Request& request) override {
    if (request.id < 0) return;
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = find(request);
    if (it != state_->receives.end()) {
      if (!it->second.done) withdraw(request.id, it->second);
      state_->receives.erase(it);
    }
    request.id = -1;  // sends complete at once: nothing else to give up
  }

  bool test(Request& request) override {
    if (request.id < 0) return true;
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = find(request);
    return it == state_->receives.end() || it->second.done || !state_->failure.is_ok();
  }

 private:
  std::map<int64_t, Receive>::iterator find(const Request& request) {
    auto it = state_->receives.find(request.id);
    if (it != state_->receives.end() && it->second.owner != self_) return state_->receives.end();
    return it;
  }

  // Removes a posted receive from its channel's queue (the caller holds the lock).
  void withdraw(int64_t id, const Receive& r) {
    auto ch = state_->channels.find({r.peer, self_, r.tag});
    if (ch == state_->channels.end()) return;
    std::erase(ch->second.receives, id);
    prune(ch);
  }

  // Drops a channel with nothing queued, so distinct tags do not accumulate.
  void prune(std::map<ChannelKey, Channel>::iterator ch) {
    if (ch->second.messages.empty() && ch->second.receives.empty()) state_->channels.erase(ch);
  }

  Status check_args(std::string_view verb, int peer, uint64_t tag, const void* data,
                    int64_t bytes) const {
    if (peer < 0 || peer >= state_->size) {
      return make_error(Errc::kInvalidArgument, "{} endpoint {}: not an endpoint of a fabric of {}",
                        verb, peer, state_->size);
    }
    if (tag > kMaxTransportTag) {
      return make_error(Errc::kInvalidArgument, "{} endpoint {}: tag {} exceeds 2^48 - 1", verb,
                        peer, tag);
    }
    if (bytes < 0 || (bytes > 0 && data == nullptr)) {
      return make_error(Errc::kInvalidArgument,
                        "{} endpoint {} tag {}: bad buffer ({} bytes at {})", verb, peer, tag,
                        bytes, data);
    }
    return Status::ok();
  }

  std::shared_ptr<FabricState> state_;
  int self_;
};

class InProcessFabricImpl final : public InProcessFabric {
 public:
  explicit InProcessFabricImpl(int endpoints) : state_(std::make_shared<FabricState>(endpoints)) {}

  std::unique_ptr<Transport> endpoint(int id) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    MP_CHECK(id >= 0 && id < state_->size) << "endpoint " << id << " of " << state_->size;
    MP_CHECK(!state_->taken[size_t(id)]) << "endpoint " << id << " asked twice";
    state_->taken[size_t(id)] = 1;
    return std::make_unique<InProcessEndpoint>(state_, id);
  }

  void abort(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->failure = make_error(Errc::kUnavailable, "in-process fabric aborted: {}", reason);
    state_->cv.notify_all();
  }

 private:
  std::shared_ptr<FabricState> state_;
};

}  // namespace

std::shared_ptr<InProcessFabric> InProcessFabric::create(int endpoints) {
  MP_CHECK(endpoints >= 1) << "fabric of " << endpoints << " endpoints";
  return std::make_shared<InProcessFabricImpl>(endpoints);
}

}  // namespace meshpipe::comm

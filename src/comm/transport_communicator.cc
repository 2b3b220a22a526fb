// TransportCommunicator: the collectives of a group over the point-to-point messages of a
// Transport (UCX shared memory or TCP across processes, or the in-process fabric): ring
// reduce-scatter and all-gather for large buffers, one exchange with every rank for small
// all-reduces, pairwise exchanges for all-to-all. It runs on the calling device thread with the
// device's own endpoint: no helper thread to wake, which is what made Gloo's collectives between
// busy processes cost 4 ms each (its TCP loop thread, woken on the core of the rank calling the
// collective, spins on the pair lock that rank holds until the scheduler's next tick).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "comm/communicator.h"
#include "comm/internal/check.h"
#include "comm/transport.h"

namespace meshpipe::comm {
namespace {

using Clock = std::chrono::steady_clock;

// Tags of collective messages: bit 47 set (transfers of the runtime stay below 2^47), the
// group's id in bits 32-46, the collective's sequence number in bits 0-31.
constexpr uint64_t kCollectiveTagBit = uint64_t{1} << 47;
// A small all-reduce (this many bytes times the other ranks, or fewer) goes as one exchange
// with every rank rather than round a ring: one message latency instead of 2 (n - 1).
constexpr int64_t kDirectAllReduceBytes = int64_t{1} << 20;

using internal::check_buffer;

// The requests of one collective: whatever is still outstanding when it goes out of scope (a
// wait failed, or posting failed half-way) is cancelled, so no message lands in a buffer after
// the collective returned.
class Requests {
 public:
  explicit Requests(Transport* ep) : ep_(ep) {}
  ~Requests() {
    for (Request& r : v_) ep_->cancel(r);
  }
  Requests(const Requests&) = delete;
  Requests& operator=(const Requests&) = delete;
  void add(Request r) { v_.push_back(r); }
  // Waits for each in turn until `deadline`; stops at the first failure.
  Status wait(Clock::time_point deadline) {
    for (Request& r : v_) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      MP_RETURN_IF_ERROR(ep_->wait(r, std::max(left, std::chrono::milliseconds(1))));
    }
    return Status::ok();
  }

 private:
  Transport* ep_;
  std::vector<Request> v_;
};

class TransportCommunicator final : public Communicator {
 public:
  TransportCommunicator(Transport* endpoint, std::vector<int> peers, int rank, uint32_t group,
                        std::chrono::milliseconds timeout)
      : ep_(endpoint),
        peers_(std::move(peers)),
        rank_(rank),
        size_(static_cast<int>(peers_.size())),
        group_(group),
        timeout_(timeout) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "transport-" + ep_->backend(); }

  Status all_reduce(float* data, int64_t count) override {
    MP_RETURN_IF_ERROR(check_buffer(data, count, "all-reduce"));
    return guarded(fmt::format("all-reduce of {} floats", count), [&] {
      if (count == 0) return barrier_ring();
      if (count * int64_t(sizeof(float)) * (size_ - 1) <= kDirectAllReduceBytes || count < size_) {
        return all_reduce_direct(data, count);
      }
      const std::vector<int64_t> off = offsets(count);
      MP_RETURN_IF_ERROR(ring_reduce_scatter(data, off));
      return ring_all_gather(reinterpret_cast<uint8_t*>(data), off, sizeof(float));
    });
  }

  Status all_gather(const void* in, void* out, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, "all-gather"));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, "all-gather"));
    return guarded(fmt::format("all-gather of {} bytes", bytes), [&] {
      if (bytes == 0) return barrier_ring();
      auto* o = static_cast<uint8_t*>(out);
      if (o + rank_ * bytes != in) std::memmove(o + rank_ * bytes, in, size_t(bytes));
      std::vector<int64_t> off;
      for (int i = 0; i <= size_; ++i) off.push_back(i * bytes);
      return ring_all_gather(o, off, 1);
    });
  }

  Status reduce_scatter(const float* in, float* out, int64_t count) override {
    MP_RETURN_IF_ERROR(check_buffer(in, count, "reduce-scatter"));
    MP_RETURN_IF_ERROR(check_buffer(out, count, "reduce-scatter"));
    return guarded(fmt::format("reduce-scatter of {} floats", count), [&] {
      if (count == 0) return barrier_ring();
      sums_.assign(in, in + count * size_);
      std::vector<int64_t> off;
      for (int i = 0; i <= size_; ++i) off.push_back(i * count);
      MP_RETURN_IF_ERROR(ring_reduce_scatter(sums_.data(), off));
      std::memcpy(out, sums_.data() + rank_ * count, sizeof(float) * size_t(count));
      return Status::ok();
    });
  }

  Status all_to_all(const void* in, void* out, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, "all-to-all"));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, "all-to-all"));
    return guarded(fmt::format("all-to-all of {} bytes", bytes), [&] {
      if (bytes == 0) return barrier_ring();
      const size_t total = size_t(bytes * size_);
      const auto* src = static_cast<const uint8_t*>(in);
      auto* dst = static_cast<uint8_t*>(out);
      if (src < dst + total && dst < src + total) {  // overlapping: send from a copy
        staging_.assign(src, src + total);
        src = staging_.data();
      }
      const uint64_t tag = next_tag();
      Requests reqs(ep_);
      for (int p = 0; p < size_; ++p) {
        if (p == rank_) continue;
        MP_ASSIGN_OR_RETURN(Request r, ep_->recv(peer(p), tag, dst + p * bytes, bytes));
        reqs.add(r);
      }
      for (int p = 0; p < size_; ++p) {
        if (p == rank_) continue;
        MP_ASSIGN_OR_RETURN(Request r, ep_->send(peer(p), tag, src + p * bytes, bytes));
        reqs.add(r);
      }
      std::memmove(dst + rank_ * bytes, src + rank_ * bytes, size_t(bytes));
      return reqs.wait(deadline_);
    });
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    MP_RETURN_IF_ERROR(check_buffer(data, bytes, "broadcast"));
    if (root < 0 || root >= size_) {
      return make_error(Errc::kInvalidArgument, "broadcast: root {} is not a rank of a group of {}",
                        root, size_);
    }
    return guarded(fmt::format("broadcast of {} bytes from rank {}", bytes, root), [&] {
      if (bytes == 0) return barrier_ring();
      const uint64_t tag = next_tag();
      Requests reqs(ep_);
      if (rank_ == root) {
        for (int p = 0; p < size_; ++p) {
          if (p == root) continue;
          MP_ASSIGN_OR_RETURN(Request r, ep_->send(peer(p), tag, data, bytes));
          reqs.add(r);
        }
      } else {
        MP_ASSIGN_OR_RETURN(Request r, ep_->recv(peer(root), tag, data, bytes));
        reqs.add(r);
      }
      return reqs.wait(deadline_);
    });
  }

  Status barrier() override {
    return guarded("barrier", [&] { return barrier_ring(); });
  }

 private:
  int peer(int r) const { return peers_[size_t(r)]; }
  int left() const { return (rank_ + size_ - 1) % size_; }
  int right() const { return (rank_ + 1) % size_; }
  uint64_t next_tag() {
    return kCollectiveTagBit | (uint64_t{group_} << 32) | uint64_t(seq_++ & 0xffffffffu);
  }
  // Chunk i of `count` elements: [off[i], off[i + 1]), as even as the count allows.
  std::vector<int64_t> offsets(int64_t count) const {
    std::vector<int64_t> off;
    for (int i = 0; i <= size_; ++i) off.push_back(count * i / size_);
    return off;
  }

  // Receives `rbytes` from the left neighbour into `rbuf` while sending `sbytes` of `sbuf` to
  // the right one (the receive posted first).
  Status shift(const void* sbuf, int64_t sbytes, void* rbuf, int64_t rbytes, uint64_t tag) {
    Requests reqs(ep_);
    if (rbytes > 0) {
      MP_ASSIGN_OR_RETURN(Request r, ep_->recv(peer(left()), tag, rbuf, rbytes));
      reqs.add(r);
    }
    if (sbytes > 0) {
      MP_ASSIGN_OR_RETURN(Request r, ep_->send(peer(right()), tag, sbuf, sbytes));
      reqs.add(r);
    }
    return reqs.wait(deadline_);
  }

  // Ring reduce-scatter in place: afterwards chunk rank() of `acc` holds the sum over ranks.
  // Step s sends chunk rank - s - 1 (summed so far) to the right and adds the left's chunk
  // rank - s - 2 into this rank's.
  Status ring_reduce_scatter(float* acc, const std::vector<int64_t>& off) {
    const uint64_t tag = next_tag();
    const int n = size_;
    int64_t widest = 0;
    for (int i = 0; i < n; ++i) widest = std::max(widest, off[size_t(i) + 1] - off[size_t(i)]);
    incoming_.resize(size_t(widest));
    for (int s = 0; s < n - 1; ++s) {
      const int send_chunk = ((rank_ - s - 1) % n + n) % n;
      const int recv_chunk = ((rank_ - s - 2) % n + n) % n;
      const int64_t sb = off[size_t(send_chunk)];
      const int64_t sn = off[size_t(send_chunk) + 1] - sb;
      const int64_t rb = off[size_t(recv_chunk)];
      const int64_t rn = off[size_t(recv_chunk) + 1] - rb;
      MP_RETURN_IF_ERROR(shift(acc + sb, sn * int64_t(sizeof(float)), incoming_.data(),
                               rn * int64_t(sizeof(float)), tag));
      float* dst = acc + rb;
      for (int64_t i = 0; i < rn; ++i) dst[i] += incoming_[size_t(i)];
    }
    return Status::ok();
  }

  // Ring all-gather in place: rank r's chunk [off[r], off[r + 1]) (in elements of `elem`
  // bytes) reaches every rank in n - 1 steps.
  Status ring_all_gather(uint8_t* buf, const std::vector<int64_t>& off, int64_t elem) {
    const uint64_t tag = next_tag();
    const int n = size_;
    for (int s = 0; s < n - 1; ++s) {
      const int send_chunk = ((rank_ - s) % n + n) % n;
      const int recv_chunk = ((rank_ - s - 1) % n + n) % n;
      const int64_t sb = off[size_t(send_chunk)] * elem;
      const int64_t sn = off[size_t(send_chunk) + 1] * elem - sb;
      const int64_t rb = off[size_t(recv_chunk)] * elem;
      const int64_t rn = off[size_t(recv_chunk) + 1] * elem - rb;
      MP_RETURN_IF_ERROR(shift(buf + sb, sn, buf + rb, rn, tag));
    }
    return Status::ok();
  }

  // Every rank sends its whole buffer to every other and sums all in rank order, so every rank
  // ends with the same bits.
  Status all_reduce_direct(float* data, int64_t count) {
    const uint64_t tag = next_tag();
    const size_t n = size_t(count);
    incoming_.resize(n * size_t(size_));
    std::memcpy(incoming_.data() + size_t(rank_) * n, data, n * sizeof(float));
    Requests reqs(ep_);
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      MP_ASSIGN_OR_RETURN(Request r, ep_->recv(peer(p), tag, incoming_.data() + size_t(p) * n,
                                               count * int64_t(sizeof(float))));
      reqs.add(r);
    }
    const float* mine = incoming_.data() + size_t(rank_) * n;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      MP_ASSIGN_OR_RETURN(Request r, ep_->send(peer(p), tag, mine, count * int64_t(sizeof(float))));
      reqs.add(r);
    }
    MP_RETURN_IF_ERROR(reqs.wait(deadline_));
    std::memcpy(data, incoming_.data(), n * sizeof(float));
    for (int p = 1; p < size_; ++p) {
      const float* x = incoming_.data() + size_t(p) * n;
      for (size_t i = 0; i < n; ++i) data[i] += x[i];
    }
    return Status::ok();
  }

  // A one-byte ring all-gather: no rank leaves before every rank has arrived.
  Status barrier_ring() {
    if (size_ == 1) return Status::ok();
    token_.assign(size_t(size_), 1);  // a member: a late message must land in live memory
    std::vector<int64_t> off;
    for (int i = 0; i <= size_; ++i) off.push_back(i);
    return ring_all_gather(token_.data(), off, 1);
  }

  // Refuses to run after an earlier failure (messages of the failed collective may still be
  // outstanding), else runs `body` within the timeout and remembers a failure.
  template <class Body>
  Status guarded(const std::string& what, Body&& body) {
    if (!failure_.is_ok()) {
      return make_error(Errc::kUnavailable, "{}: the communicator failed earlier: {}", what,
                        failure_.message());
    }
    deadline_ = Clock::now() + timeout_;
    Status s = body();
    if (!s.is_ok()) {
      s = s.with_context(fmt::format("{} (rank {} of {}, group {})", what, rank_, size_, group_));
      failure_ = s;
    }
    return s;
  }

  Transport* ep_;
  std::vector<int> peers_;
  int rank_;
  int size_;
  uint32_t group_;
  std::chrono::milliseconds timeout_;
  uint64_t seq_ = 0;
  Clock::time_point deadline_{};
  Status failure_;
  std::vector<float> incoming_;  // received chunks (ring) or every rank's buffer (direct)
  std::vector<float> sums_;
  std::vector<uint8_t> staging_;
  std::vector<uint8_t> token_;
};

}  // namespace

Expected<std::unique_ptr<Communicator>> make_transport_communicator(
    Transport* endpoint, std::vector<int> peers, int rank, uint32_t group,
    std::chrono::milliseconds timeout) {
  if (endpoint == nullptr) {
    return make_error(Errc::kInvalidArgument, "transport communicator: no endpoint");
  }
  const int n = static_cast<int>(peers.size());
  if (n < 1 || rank < 0 || rank >= n) {
    return make_error(Errc::kInvalidArgument, "transport communicator: rank {} of a group of {}",
                      rank, n);
  }
  if (group >= kMaxCollectiveGroups) {
    return make_error(Errc::kInvalidArgument, "transport communicator: group id {} is not below {}",
                      group, kMaxCollectiveGroups);
  }
  if (timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "transport communicator: timeout {} ms",
                      timeout.count());
  }
  if (peers[size_t(rank)] != endpoint->self()) {
    return make_error(
        Errc::kInvalidArgument,
        "transport communicator: rank {} is endpoint {}, but the endpoint given is {}", rank,
        peers[size_t(rank)], endpoint->self());
  }
  std::vector<int> sorted = peers;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return make_error(Errc::kInvalidArgument, "transport communicator: an endpoint appears twice");
  }
  for (int p : peers) {
    if (p < 0 || p >= endpoint->size()) {
      return make_error(Errc::kInvalidArgument,
                        "transport communicator: endpoint {} is not in a fabric of {}", p,
                        endpoint->size());
    }
  }
  return std::unique_ptr<Communicator>(
      std::make_unique<TransportCommunicator>(endpoint, std::move(peers), rank, group, timeout));
}

}  // namespace meshpipe::comm

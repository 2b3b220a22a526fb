// InProcessGroup: collectives among ranks that are threads of one process, through shared
// memory. Each reduced element is summed by one thread in rank order 0..n-1, so every rank gets
// the same bits, equal to a sequential sum in rank order.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/internal/check.h"
#include "comm/internal/wait.h"
#include "core/check.h"

namespace meshpipe::comm {
namespace {

using Clock = std::chrono::steady_clock;

enum class OpKind { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kBroadcast, kBarrier };

// What one rank asked for; every rank of one collective must ask for the same.
struct OpDesc {
  OpKind kind = OpKind::kBarrier;
  int64_t count = 0;  // floats (reductions) or bytes (the rest), per rank
  int root = 0;
  bool operator==(const OpDesc&) const = default;
};

// "all-reduce of 1024 floats", "broadcast of 64 bytes from rank 0", "barrier".
std::string describe(const OpDesc& op) {
  switch (op.kind) {
    case OpKind::kAllReduce:
      return fmt::format("all-reduce of {} floats", op.count);
    case OpKind::kAllGather:
      return fmt::format("all-gather of {} bytes", op.count);
    case OpKind::kReduceScatter:
      return fmt::format("reduce-scatter of {} floats", op.count);
    case OpKind::kAllToAll:
      return fmt::format("all-to-all of {} bytes", op.count);
    case OpKind::kBroadcast:
      return fmt::format("broadcast of {} bytes from rank {}", op.count, op.root);
    case OpKind::kBarrier:
      return "barrier";
  }
  return "collective";
}

// The buffers one rank contributes to the current collective.
struct Slot {
  const void* in = nullptr;
  void* out = nullptr;
};

// Shared state of one group. A collective passes three counters:
//   arrived  - ranks that registered their buffers; work starts once all have;
//   computed - ranks that finished reading peers' buffers and writing their own part;
//   departed - ranks that left; the last resets the counters and advances `generation`.
// A rank enters its k-th collective only once generation == k, so consecutive collectives
// never mix. After everyone has arrived nothing blocks, so neither timeout nor abort applies
// past that point: a rank never leaves while a peer may still read its buffers.
struct GroupState {
  GroupState(int group_size, std::chrono::milliseconds group_timeout)
      : size(group_size), timeout(group_timeout), slots(group_size), present(group_size) {}

  const int size;
  const std::chrono::milliseconds timeout;
  std::mutex mu;
  std::condition_variable cv;
  int64_t generation = 0;
  int arrived = 0;
  int computed = 0;
  int departed = 0;
  OpDesc op;
  int op_rank = 0;  // the rank whose call set `op`
  std::vector<Slot> slots;
  std::vector<char> present;   // present[r]: rank r has arrived at the current collective
  std::vector<float> scratch;  // all-reduce result, one chunk per rank
  Status failure;              // abort, timeout or mismatched calls; sticky
  std::vector<char> taken;     // communicator(r) already handed out
};

// Rank r of n reduces elements [chunk_begin(count, r, n), chunk_begin(count, r + 1, n)).
int64_t chunk_begin(int64_t count, int r, int n) { return count * r / n; }

// True when [a, a + a_bytes) and [b, b + b_bytes) share a byte.
bool overlaps(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  const auto* pa = static_cast<const char*>(a);
  const auto* pb = static_cast<const char*>(b);
  return a_bytes > 0 && b_bytes > 0 && pa < pb + b_bytes && pb < pa + a_bytes;
}

using internal::check_buffer;

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<GroupState> state, int rank)
      : state_(std::move(state)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return state_->size; }
  std::string backend() const override { return "in-process"; }

  Status all_reduce(float* data, int64_t count) override {
    MP_RETURN_IF_ERROR(check_buffer(data, count, "all-reduce"));
    const int n = state_->size;
    const int r = rank_;
    return run(
        {OpKind::kAllReduce, count, 0}, {data, data},
        [=](GroupState& g) {
          for (int64_t i = chunk_begin(count, r, n); i < chunk_begin(count, r + 1, n); ++i) {
            float sum = static_cast<const float*>(g.slots[0].in)[i];
            for (int k = 1; k < n; ++k) sum += static_cast<const float*>(g.slots[k].in)[i];
            g.scratch[static_cast<size_t>(i)] = sum;
          }
        },
        [=](GroupState& g) {
          if (count > 0) std::memcpy(data, g.scratch.data(), sizeof(float) * size_t(count));
        });
  }

  Status all_gather(const void* in, void* out, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, "all-gather"));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, "all-gather"));
    const int n = state_->size;
    // With `in` at this rank's chunk of `out` (in-place all-gather) that chunk is never written,
    // only read by peers. Any other overlap would let this rank overwrite bytes peers are still
    // reading, so peers read a private copy instead.
    std::vector<char> staging;
    if (overlaps(in, bytes, out, bytes * n) && in != static_cast<char*>(out) + rank_ * bytes) {
      staging.assign(static_cast<const char*>(in), static_cast<const char*>(in) + bytes);
      in = staging.data();
    }
    return run({OpKind::kAllGather, bytes, 0}, {in, out}, [=](GroupState& g) {
      for (int k = 0; k < n; ++k) {
        char* dst = static_cast<char*>(out) + k * bytes;
        if (bytes > 0 && dst != g.slots[k].in) std::memcpy(dst, g.slots[k].in, size_t(bytes));
      }
    });
  }

  Status reduce_scatter(const float* in, float* out, int64_t count) override {
    MP_RETURN_IF_ERROR(check_buffer(in, count, "reduce-scatter"));
    MP_RETURN_IF_ERROR(check_buffer(out, count, "reduce-scatter"));
    const int n = state_->size;
    const int r = rank_;
    // out[i] depends only on element i of chunk r of each input, and peers never read chunk r
    // of this rank's input, so `out` may alias that chunk. Any other overlap would let this
    // rank overwrite elements peers are still reading, so peers read a private copy instead.
    std::vector<float> staging;
    const auto float_bytes = int64_t(sizeof(float));
    if (overlaps(in, float_bytes * count * n, out, float_bytes * count) && out != in + r * count) {
      staging.assign(in, in + count * n);
      in = staging.data();
    }
    return run({OpKind::kReduceScatter, count, 0}, {in, out}, [=](GroupState& g) {
      for (int64_t i = 0; i < count; ++i) {
        float sum = static_cast<const float*>(g.slots[0].in)[r * count + i];
        for (int k = 1; k < n; ++k) sum += static_cast<const float*>(g.slots[k].in)[r * count + i];
        out[i] = sum;
      }
    });
  }

  Status all_to_all(const void* in, void* out, int64_t bytes) override {
    MP_RETURN_IF_ERROR(check_buffer(in, bytes, "all-to-all"));
    MP_RETURN_IF_ERROR(check_buffer(out, bytes, "all-to-all"));
    const int n = state_->size;
    const int r = rank_;
    // Peers read all of `in` while this rank writes `out`; when they overlap, gather into a
    // private buffer and copy once every rank is done reading.
    auto staging = std::make_shared<std::vector<char>>();
    char* dst = static_cast<char*>(out);
    if (overlaps(in, bytes * n, out, bytes * n)) {
      staging->resize(size_t(bytes * n));
      dst = staging->data();
    }
    return run(
        {OpKind::kAllToAll, bytes, 0}, {in, out},
        [=](GroupState& g) {
          for (int k = 0; k < n; ++k) {
            const char* src = static_cast<const char*>(g.slots[k].in) + r * bytes;
            if (bytes > 0) std::memcpy(dst + k * bytes, src, size_t(bytes));
          }
        },
        [=](GroupState&) {
          if (!staging->empty()) std::memcpy(out, staging->data(), staging->size());
        });
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    MP_RETURN_IF_ERROR(check_buffer(data, bytes, "broadcast"));
    if (root < 0 || root >= state_->size) {
      return make_error(Errc::kInvalidArgument, "broadcast: root {} is not a rank of a group of {}",
                        root, state_->size);
    }
    const int r = rank_;
    return run({OpKind::kBroadcast, bytes, root}, {data, data}, [=](GroupState& g) {
      if (r != root && bytes > 0 && data != g.slots[root].in) {
        std::memcpy(data, g.slots[root].in, size_t(bytes));
      }
    });
  }

  Status barrier() override {
    return run({OpKind::kBarrier, 0, 0}, {}, [](GroupState&) {});
  }

 private:
  using Step = std::function<void(GroupState&)>;

  Status run(const OpDesc& op, Slot slot, const Step& work, const Step& finish = {});
  Status fail_locked(GroupState& g, Status status, Status group_failure);

  std::shared_ptr<GroupState> state_;
  int rank_;
  int64_t calls_ = 0;  // collectives this rank has entered
};

// Marks the group failed (unless it already is) and wakes everyone; returns `status`.
Status InProcessCommunicator::fail_locked(GroupState& g, Status status, Status group_failure) {
  if (g.failure.is_ok()) g.failure = std::move(group_failure);
  g.cv.notify_all();
  return status;
}

Status InProcessCommunicator::run(const OpDesc& op, Slot slot, const Step& work,
                                  const Step& finish) {
  GroupState& g = *state_;
  const auto deadline = Clock::now() + g.timeout;
  const int64_t generation = calls_++;
  const std::string what = describe(op);
  std::unique_lock<std::mutex> lock(g.mu);

  // Wait for the previous collective to drain (its slowest rank may still be copying out).
  internal::wait_until(g.cv, lock, deadline,
                       [&] { return !g.failure.is_ok() || g.generation == generation; });
  if (!g.failure.is_ok()) return g.failure;
  if (g.generation != generation) {
    Status timeout =
        make_error(Errc::kTimeout, "{}: the previous collective did not finish within {} ms", what,
                   g.timeout.count());
    return fail_locked(g, timeout, Status(Errc::kUnavailable, timeout.message()));
  }

  // Arrive.
  if (g.arrived == 0) {
    g.op = op;
    g.op_rank = rank_;
  } else if (!(g.op == op)) {
    Status mismatch = make_error(Errc::kInvalidArgument, "rank {} called {} but rank {} called {}",
                                 rank_, what, g.op_rank, describe(g.op));
    return fail_locked(g, mismatch, Status(Errc::kUnavailable, mismatch.message()));
  }
  g.slots[size_t(rank_)] = slot;
  g.present[size_t(rank_)] = 1;
  if (++g.arrived == g.size) {
    if (op.kind == OpKind::kAllReduce) g.scratch.resize(size_t(op.count));
    g.cv.notify_all();
  } else {
    internal::wait_until(g.cv, lock, deadline,
                         [&] { return g.arrived == g.size || !g.failure.is_ok(); });
  }
  if (g.arrived != g.size) {
    if (!g.failure.is_ok()) return g.failure;
    std::string missing;
    for (int r = 0; r < g.size; ++r) {
      if (!g.present[size_t(r)]) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
    }
    Status timeout =
        make_error(Errc::kTimeout, "{}: {} of {} ranks did not arrive within {} ms (missing: {})",
                   what, g.size - g.arrived, g.size, g.timeout.count(), missing);
    return fail_locked(
        g, timeout, make_error(Errc::kUnavailable, "group failed earlier: {}", timeout.message()));
  }

  // Everyone is here: compute this rank's part, then wait until no peer reads our buffers.
  lock.unlock();
  work(g);
  lock.lock();
  if (++g.computed == g.size) {
    g.cv.notify_all();
  } else {
    internal::wait_until(g.cv, lock, Clock::time_point::max(),
                         [&] { return g.computed == g.size; });
  }
  lock.unlock();
  if (finish) finish(g);
  lock.lock();
  if (++g.departed == g.size) {
    g.arrived = 0;
    g.computed = 0;
    g.departed = 0;
    std::fill(g.present.begin(), g.present.end(), 0);
    ++g.generation;
    g.cv.notify_all();
  }
  return Status::ok();
}

class InProcessGroupImpl final : public InProcessGroup {
 public:
  InProcessGroupImpl(int size, std::chrono::milliseconds timeout)
      : state_(std::make_shared<GroupState>(size, timeout)) {
    state_->taken.assign(size_t(size), 0);
  }

  std::unique_ptr<Communicator> communicator(int rank) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    MP_CHECK(rank >= 0 && rank < state_->size)
        << "rank " << rank << " of a group of " << state_->size;
    MP_CHECK(!state_->taken[size_t(rank)]) << "communicator of rank " << rank << " asked twice";
    state_->taken[size_t(rank)] = 1;
    return std::make_unique<InProcessCommunicator>(state_, rank);
  }

  void abort(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->failure = make_error(Errc::kUnavailable, "in-process group aborted: {}", reason);
    state_->cv.notify_all();
  }

 private:
  std::shared_ptr<GroupState> state_;
};

}  // namespace

std::shared_ptr<InProcessGroup> InProcessGroup::create(int size,
                                                       std::chrono::milliseconds timeout) {
  MP_CHECK(size >= 1) << "group size " << size;
  MP_CHECK(timeout.count() > 0) << "timeout " << timeout.count() << " ms";
  return std::make_shared<InProcessGroupImpl>(size, timeout);
}

}  // namespace meshpipe::comm

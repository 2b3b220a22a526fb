// HierarchicalCommunicator: the collectives of a group whose ranks live in several processes,
// in two levels. The ranks of one process talk through shared memory (an in-process group);
// one rank per process, its leader, talks to the other leaders (Gloo). A data-parallel
// all-reduce of 4 devices on 2 processes then crosses the network once between 2 leaders
// instead of going round a ring of 4 ranks over TCP (6 dependent hops, each waking a busy
// process's threads).
#include <algorithm>
#include <cstring>
#include <vector>

#include "comm/communicator.h"

namespace meshpipe::comm {
namespace {

class HierarchicalCommunicator final : public Communicator {
 public:
  HierarchicalCommunicator(int rank, std::vector<std::vector<int>> ranks_of, int process,
                           int local_rank, HierarchyParts parts)
      : rank_(rank),
        ranks_of_(std::move(ranks_of)),
        processes_(static_cast<int>(ranks_of_.size())),
        per_process_(static_cast<int>(ranks_of_[0].size())),
        size_(processes_ * per_process_),
        process_(process),
        local_rank_(local_rank),
        parts_(std::move(parts)) {
    process_of_.resize(static_cast<size_t>(size_), 0);
    local_of_.resize(static_cast<size_t>(size_), 0);
    for (int p = 0; p < processes_; ++p) {
      for (int l = 0; l < per_process_; ++l) {
        process_of_[static_cast<size_t>(ranks_of_[size_t(p)][size_t(l)])] = p;
        local_of_[static_cast<size_t>(ranks_of_[size_t(p)][size_t(l)])] = l;
      }
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "hierarchical"; }

  // Each collective runs as a few collectives of the two levels; a failure names the collective
  // asked for, then the part that failed.
  Status all_reduce(float* data, int64_t count) override {
    Status s = all_reduce_levels(data, count);
    return s.is_ok() ? s : s.with_context(fmt::format("all-reduce of {} floats", count));
  }

  Status all_gather(const void* in, void* out, int64_t bytes) override {
    Status s = all_gather_levels(in, out, bytes);
    return s.is_ok() ? s : s.with_context(fmt::format("all-gather of {} bytes", bytes));
  }

  Status reduce_scatter(const float* in, float* out, int64_t count) override {
    Status s = reduce_scatter_levels(in, out, count);
    return s.is_ok() ? s : s.with_context(fmt::format("reduce-scatter of {} floats", count));
  }

  Status all_to_all(const void* in, void* out, int64_t bytes) override {
    Status s = all_to_all_levels(in, out, bytes);
    return s.is_ok() ? s : s.with_context(fmt::format("all-to-all of {} bytes", bytes));
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    Status s = broadcast_levels(data, bytes, root);
    return s.is_ok()
               ? s
               : s.with_context(fmt::format("broadcast of {} bytes from rank {}", bytes, root));
  }

  Status barrier() override {
    Status s = barrier_levels();
    return s.is_ok() ? s : s.with_context("barrier");
  }

 private:
  Status all_reduce_levels(float* data, int64_t count) {
    MP_RETURN_IF_ERROR(parts_.local->all_reduce(data, count));
    MP_RETURN_IF_ERROR(leaders([&] { return parts_.leaders->all_reduce(data, count); }));
    return parts_.local->broadcast(data, count * int64_t(sizeof(float)), 0);
  }

  Status all_gather_levels(const void* in, void* out, int64_t bytes) {
    if (bytes < 0) return make_error(Errc::kInvalidArgument, "all-gather: negative count");
    // This process's pieces, then every process's (blocks in process and local order), then
    // each piece to its rank's place (`in` is read before `out` is written: in place is fine).
    mine_.resize(size_t(per_process_ * bytes));
    MP_RETURN_IF_ERROR(parts_.local->all_gather(in, mine_.data(), bytes));
    all_.resize(size_t(size_ * bytes));
    MP_RETURN_IF_ERROR(leaders([&] {
      return parts_.leaders->all_gather(mine_.data(), all_.data(), per_process_ * bytes);
    }));
    MP_RETURN_IF_ERROR(parts_.local->broadcast(all_.data(), size_ * bytes, 0));
    for (int p = 0; p < processes_; ++p) {
      for (int l = 0; l < per_process_; ++l) {
        if (bytes == 0) continue;
        std::memcpy(static_cast<char*>(out) + ranks_of_[size_t(p)][size_t(l)] * bytes,
                    all_.data() + (p * per_process_ + l) * bytes, size_t(bytes));
      }
    }
    return Status::ok();
  }

  // The sum of the whole input on every rank, then this rank's chunk (twice the traffic of a
  // true reduce-scatter, as Gloo's own path here).
  Status reduce_scatter_levels(const float* in, float* out, int64_t count) {
    if (count < 0) return make_error(Errc::kInvalidArgument, "reduce-scatter: negative count");
    sums_.assign(in, in + count * size_);
    MP_RETURN_IF_ERROR(all_reduce_levels(sums_.data(), count * size_));
    if (count > 0) std::memcpy(out, sums_.data() + rank_ * count, sizeof(float) * size_t(count));
    return Status::ok();
  }

  Status all_to_all_levels(const void* in, void* out, int64_t bytes) {
    if (bytes < 0) return make_error(Errc::kInvalidArgument, "all-to-all: negative count");
    const int64_t n = size_;
    const int64_t lp = per_process_;
    // Every local rank's whole input (local order), on every local rank.
    mine_.resize(size_t(lp * n * bytes));
    MP_RETURN_IF_ERROR(parts_.local->all_gather(in, mine_.data(), n * bytes));
    // The leaders exchange, for each pair of processes, the chunks from each rank of one to
    // each rank of the other: block [q][l][m] = local rank l's chunk for rank m of process q.
    all_.resize(size_t(processes_ * lp * lp * bytes));
    const Status exchanged = leaders([&] {
      send_.resize(all_.size());
      for (int q = 0; q < processes_; ++q) {
        for (int64_t l = 0; l < lp; ++l) {
          for (int64_t m = 0; m < lp; ++m) {
            if (bytes == 0) continue;
            const int64_t to = ranks_of_[size_t(q)][size_t(m)];
            std::memcpy(send_.data() + ((q * lp + l) * lp + m) * bytes,
                        mine_.data() + (l * n + to) * bytes, size_t(bytes));
          }
        }
      }
      return parts_.leaders->all_to_all(send_.data(), all_.data(), lp * lp * bytes);
    });
    MP_RETURN_IF_ERROR(exchanged);
    MP_RETURN_IF_ERROR(parts_.local->broadcast(all_.data(), int64_t(all_.size()), 0));
    // Received block [p][l][m]: from rank l of process p to rank m of this one.
    for (int p = 0; p < processes_; ++p) {
      for (int64_t l = 0; l < lp; ++l) {
        if (bytes == 0) continue;
        const int64_t from = ranks_of_[size_t(p)][size_t(l)];
        std::memcpy(static_cast<char*>(out) + from * bytes,
                    all_.data() + ((p * lp + l) * lp + local_rank_) * bytes, size_t(bytes));
      }
    }
    return Status::ok();
  }

  Status broadcast_levels(void* data, int64_t bytes, int root) {
    if (root < 0 || root >= size_) {
      return make_error(Errc::kInvalidArgument, "broadcast: root {} is not a rank of a group of {}",
                        root, size_);
    }
    const int rp = process_of_[size_t(root)];
    if (process_ == rp) {  // the root's process: to its leader (and peers), then to the others
      MP_RETURN_IF_ERROR(parts_.local->broadcast(data, bytes, local_of_[size_t(root)]));
      return leaders([&] { return parts_.leaders->broadcast(data, bytes, rp); });
    }
    MP_RETURN_IF_ERROR(leaders([&] { return parts_.leaders->broadcast(data, bytes, rp); }));
    return parts_.local->broadcast(data, bytes, 0);
  }

  Status barrier_levels() {
    MP_RETURN_IF_ERROR(parts_.local->barrier());
    MP_RETURN_IF_ERROR(leaders([&] { return parts_.leaders->barrier(); }));
    return parts_.local->barrier();
  }

  // Runs `call` on the leader (a no-op elsewhere). A failure aborts the local group, so the
  // process's other ranks, waiting for the leader's result, fail at once with its reason.
  template <class Call>
  Status leaders(Call&& call) {
    if (!parts_.leaders) return Status::ok();
    Status s = call();
    if (!s.is_ok() && parts_.local_group) parts_.local_group->abort(s.message());
    return s;
  }

  const int rank_;
  const std::vector<std::vector<int>> ranks_of_;
  const int processes_;
  const int per_process_;
  const int size_;
  const int process_;
  const int64_t local_rank_;
  HierarchyParts parts_;
  std::vector<int> process_of_;  // per rank
  std::vector<int> local_of_;    // per rank: its index in its process
  std::vector<char> mine_;       // staging, kept across calls
  std::vector<char> all_;
  std::vector<char> send_;
  std::vector<float> sums_;
};

}  // namespace

Expected<std::unique_ptr<Communicator>> make_hierarchical_communicator(
    int rank, const std::vector<int>& process_of, HierarchyParts parts) {
  const int n = static_cast<int>(process_of.size());
  if (rank < 0 || rank >= n) {
    return make_error(Errc::kInvalidArgument, "rank {} is not one of a group of {}", rank, n);
  }
  // Processes numbered 0, 1, ... in the order of their first rank.
  std::vector<std::vector<int>> ranks_of;
  std::vector<int> index;  // process id -> its number
  for (int r = 0; r < n; ++r) {
    const int id = process_of[size_t(r)];
    if (id < 0 || id >= n) {
      return make_error(Errc::kInvalidArgument, "rank {}'s process {} is out of range", r, id);
    }
    if (index.size() <= size_t(id)) index.resize(size_t(id) + 1, -1);
    if (index[size_t(id)] < 0) {
      index[size_t(id)] = static_cast<int>(ranks_of.size());
      ranks_of.emplace_back();
    }
    ranks_of[size_t(index[size_t(id)])].push_back(r);
  }
  for (const std::vector<int>& rs : ranks_of) {
    if (rs.size() != ranks_of[0].size()) {
      return make_error(Errc::kInvalidArgument,
                        "a two-level group needs as many ranks in every process ({} and {})",
                        ranks_of[0].size(), rs.size());
    }
  }
  const int process = index[size_t(process_of[size_t(rank)])];
  const std::vector<int>& here = ranks_of[size_t(process)];
  const int local_rank = static_cast<int>(std::find(here.begin(), here.end(), rank) - here.begin());
  if (!parts.local || parts.local->size() != static_cast<int>(here.size()) ||
      parts.local->rank() != local_rank) {
    return make_error(Errc::kInvalidArgument, "rank {} needs a local communicator of rank {} of {}",
                      rank, local_rank, here.size());
  }
  if (local_rank != 0 && parts.leaders) {
    return make_error(Errc::kInvalidArgument,
                      "rank {} does not lead its process: it takes no leaders' communicator", rank);
  }
  if (local_rank == 0 && (!parts.leaders || parts.leaders->size() != int(ranks_of.size()) ||
                          parts.leaders->rank() != process)) {
    return make_error(Errc::kInvalidArgument,
                      "rank {} leads its process: it needs the leaders' communicator as rank {} "
                      "of {}",
                      rank, process, ranks_of.size());
  }
  return std::unique_ptr<Communicator>(new HierarchicalCommunicator(
      rank, std::move(ranks_of), process, local_rank, std::move(parts)));
}

}  // namespace meshpipe::comm

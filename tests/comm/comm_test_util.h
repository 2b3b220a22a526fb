// Helpers shared by the comm tests: groups and fabrics of every backend, and running one function
// per rank on its own thread. Catch2 v2 assertions are not thread-safe, so rank threads only
// record results; the test thread checks them after join.
#pragma once

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/transport.h"
#include "core/status.h"

namespace meshpipe::comm::testing {

using std::chrono::milliseconds;

/// UCX tests run on the loopback device only (docs/toolchain.md §4); an explicit setting wins.
inline void use_loopback_for_ucx() { setenv("UCX_NET_DEVICES", "lo", /*overwrite=*/0); }

/// Runs `fn(rank)` on `n` threads and returns each rank's Status, in rank order.
inline std::vector<Status> on_each_rank(int n, const std::function<Status(int)>& fn) {
  std::vector<Status> results(size_t(n), Status::ok());
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] { results[size_t(r)] = fn(r); });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

inline std::vector<std::unique_ptr<Communicator>> make_hierarchical_group(int n,
                                                                          milliseconds timeout,
                                                                          std::string* error);

inline std::vector<std::unique_ptr<Transport>> make_endpoints(
    const std::string& backend, int n, std::string* error,
    std::shared_ptr<InProcessFabric>* fabric = nullptr);

/// A communicator that keeps the fabric its transport communicator runs on alive.
class FabricCommunicator final : public Communicator {
 public:
  FabricCommunicator(std::shared_ptr<std::vector<std::unique_ptr<Transport>>> fabric,
                     std::unique_ptr<Communicator> inner)
      : fabric_(std::move(fabric)), inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend(); }
  Status all_reduce(float* data, int64_t count) override { return inner_->all_reduce(data, count); }
  Status all_gather(const void* in, void* out, int64_t bytes) override {
    return inner_->all_gather(in, out, bytes);
  }
  Status reduce_scatter(const float* in, float* out, int64_t count) override {
    return inner_->reduce_scatter(in, out, count);
  }
  Status all_to_all(const void* in, void* out, int64_t bytes) override {
    return inner_->all_to_all(in, out, bytes);
  }
  Status broadcast(void* data, int64_t bytes, int root) override {
    return inner_->broadcast(data, bytes, root);
  }
  Status barrier() override { return inner_->barrier(); }

 private:
  std::shared_ptr<std::vector<std::unique_ptr<Transport>>> fabric_;
  std::unique_ptr<Communicator> inner_;
};

/// The communicators of one group of `n` ranks of backend "in-process", "gloo",
/// "hierarchical" (two levels, n = 4 or 6), "transport-in-process" or "transport-ucx" (over
/// endpoints of a fabric of n + 1, ranks on endpoints n, n - 1, ..., 1 so that ranks and
/// endpoint ids differ), created
/// concurrently (Gloo's rendezvous blocks until every rank has joined). Empty on failure, with
/// the reason in `error`.
inline std::vector<std::unique_ptr<Communicator>> make_group(const std::string& backend, int n,
                                                             milliseconds timeout,
                                                             std::string* error) {
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<size_t>(n));
  if (backend == "in-process") {
    auto group = InProcessGroup::create(n, timeout);
    for (int r = 0; r < n; ++r) comms[size_t(r)] = group->communicator(r);
    return comms;
  }
  if (backend == "hierarchical") return make_hierarchical_group(n, timeout, error);
  if (backend.rfind("transport-", 0) == 0) {
    auto fabric = std::make_shared<std::vector<std::unique_ptr<Transport>>>(
        make_endpoints(backend.substr(10), n + 1, error, nullptr));
    if (fabric->empty()) return {};
    std::vector<int> peers;
    for (int r = 0; r < n; ++r) peers.push_back(n - r);
    for (int r = 0; r < n; ++r) {
      auto comm = make_transport_communicator((*fabric)[size_t(n - r)].get(), peers, r, 7, timeout);
      if (!comm) {
        *error = comm.status().to_string();
        return {};
      }
      comms[size_t(r)] = std::make_unique<FabricCommunicator>(fabric, std::move(*comm));
    }
    return comms;
  }
  auto store = make_in_process_store();
  GlooOptions options;
  options.timeout = timeout;
  options.prefix = "test";
  std::vector<Status> statuses = on_each_rank(n, [&](int r) {
    auto comm = make_gloo_communicator(r, n, store, options);
    if (!comm) return comm.status();
    comms[size_t(r)] = std::move(*comm);
    return Status::ok();
  });
  for (const Status& s : statuses) {
    if (!s.is_ok()) {
      *error = s.to_string();
      return {};
    }
  }
  return comms;
}

/// Rank r's process in the two-level test groups: 2 processes of 2 ranks (0 0 1 1), or 3
/// processes of 2 ranks interleaved (0 1 2 0 1 2), so ranks are not contiguous per process.
inline std::vector<int> hierarchical_layout(int n) {
  std::vector<int> process_of;
  for (int r = 0; r < n; ++r) process_of.push_back(n == 4 ? r / 2 : r % 3);
  return process_of;
}

/// A two-level group of n ranks (4 or 6; hierarchical_layout) as threads: an in-process group
/// per "process" and the leaders over Gloo (in-process without Gloo).
inline std::vector<std::unique_ptr<Communicator>> make_hierarchical_group(int n,
                                                                          milliseconds timeout,
                                                                          std::string* error) {
  const std::vector<int> process_of = hierarchical_layout(n);
  const int processes = n == 4 ? 2 : 3;
  std::vector<std::shared_ptr<InProcessGroup>> locals;
  for (int p = 0; p < processes; ++p)
    locals.push_back(InProcessGroup::create(n / processes, timeout));
  std::vector<std::unique_ptr<Communicator>> leaders =
      make_group(gloo_available() ? "gloo" : "in-process", processes, timeout, error);
  if (leaders.empty()) return {};
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<size_t>(n));
  std::vector<int> next_local(size_t(processes), 0);
  for (int r = 0; r < n; ++r) {
    const int p = process_of[size_t(r)];  // processes are numbered in order of first rank here
    HierarchyParts parts;
    parts.local_group = locals[size_t(p)];
    parts.local = locals[size_t(p)]->communicator(next_local[size_t(p)]);
    if (next_local[size_t(p)]++ == 0) parts.leaders = std::move(leaders[size_t(p)]);
    auto comm = make_hierarchical_communicator(r, process_of, std::move(parts));
    if (!comm) {
      *error = comm.status().to_string();
      return {};
    }
    comms[size_t(r)] = std::move(*comm);
  }
  return comms;
}

/// Endpoints 0..n-1 of a fabric of backend "in-process" or "ucx" (empty on failure, reason in
/// `error`); `fabric` receives the in-process fabric, for abort().
inline std::vector<std::unique_ptr<Transport>> make_endpoints(
    const std::string& backend, int n, std::string* error,
    std::shared_ptr<InProcessFabric>* fabric) {
  std::vector<std::unique_ptr<Transport>> endpoints;
  if (backend == "in-process") {
    auto f = InProcessFabric::create(n);
    for (int i = 0; i < n; ++i) endpoints.push_back(f->endpoint(i));
    if (fabric != nullptr) *fabric = f;
    return endpoints;
  }
  use_loopback_for_ucx();
  auto made = make_ucx_fabric(n);
  if (!made) {
    *error = made.status().to_string();
    return {};
  }
  return std::move(*made);
}

/// The backends this build has, with the group sizes the shared checks run on.
inline std::vector<std::pair<std::string, int>> communicator_backends() {
  std::vector<std::pair<std::string, int>> out = {
      {"in-process", 1}, {"in-process", 2}, {"in-process", 3}, {"in-process", 4}};
  if (gloo_available()) {
    out.emplace_back("gloo", 2);
    out.emplace_back("gloo", 4);
  }
  out.emplace_back("hierarchical", 4);
  out.emplace_back("hierarchical", 6);
  for (int n : {1, 2, 3, 4}) out.emplace_back("transport-in-process", n);
  if (ucx_available()) {
    out.emplace_back("transport-ucx", 2);
    out.emplace_back("transport-ucx", 3);
  }
  return out;
}

inline std::vector<std::string> transport_backends() {
  std::vector<std::string> out = {"in-process"};
  if (ucx_available()) out.emplace_back("ucx");
  return out;
}

}  // namespace meshpipe::comm::testing

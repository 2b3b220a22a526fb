// InProcessRun: every device of a Program as a thread of this process.
#include "runtime/in_process_run.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/nccl_communicator.h"
#include "kernels/device.h"
#include "kernels/layout.h"
#include "runtime/executor.h"

namespace meshpipe::runtime {

const char* collective_backend_name(CollectiveBackend backend) {
  switch (backend) {
    case CollectiveBackend::kGloo:
      return "gloo";
    case CollectiveBackend::kUcx:
      return "ucx";
    case CollectiveBackend::kNccl:
      return "nccl";
    case CollectiveBackend::kInProcess:
      break;
  }
  return "in-process";
}

const char* transport_kind_name(TransportKind kind) {
  return kind == TransportKind::kUcx ? "ucx" : "in-process";
}

Expected<CollectiveBackend> parse_collective_backend(std::string_view text) {
  if (text == "in-process") return CollectiveBackend::kInProcess;
  if (text == "gloo") return CollectiveBackend::kGloo;
  if (text == "ucx") return CollectiveBackend::kUcx;
  if (text == "nccl") return CollectiveBackend::kNccl;
  return make_error(Errc::kInvalidArgument, "collectives '{}' is not in-process, gloo, ucx or nccl",
                    text);
}

Expected<TransportKind> parse_transport_kind(std::string_view text) {
  if (text == "in-process") return TransportKind::kInProcess;
  if (text == "ucx") return TransportKind::kUcx;
  return make_error(Errc::kInvalidArgument, "transport '{}' is neither in-process nor ucx", text);
}

Status InProcessRunOptions::validate() const {
  if (collectives != CollectiveBackend::kInProcess && collectives != CollectiveBackend::kGloo &&
      collectives != CollectiveBackend::kUcx && collectives != CollectiveBackend::kNccl) {
    return make_error(Errc::kInvalidArgument, "unknown collective backend {}",
                      static_cast<int>(collectives));
  }
  if (transport != TransportKind::kInProcess && transport != TransportKind::kUcx) {
    return make_error(Errc::kInvalidArgument, "unknown transport {}", static_cast<int>(transport));
  }
  if (timeout.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "timeout must be positive");
  }
  if (device == kernels::Device::kCuda && collectives != CollectiveBackend::kNccl) {
    return make_error(Errc::kInvalidArgument,
                      "devices on GPUs run their collectives with NCCL, not {}",
                      collective_backend_name(collectives));
  }
  if (device != kernels::Device::kCuda && collectives == CollectiveBackend::kNccl) {
    return make_error(Errc::kInvalidArgument, "NCCL collectives need the devices on GPUs");
  }
  if (share && (collectives == CollectiveBackend::kInProcess || transport != TransportKind::kUcx ||
                !share->store || !share->exchange)) {
    return make_error(
        Errc::kInvalidArgument,
        "a run that hosts part of a job's devices needs Gloo, UCX or NCCL collectives, "
        "the UCX transport, a rendezvous store and an address exchange");
  }
  if (collectives == CollectiveBackend::kUcx && transport != TransportKind::kUcx) {
    return make_error(Errc::kInvalidArgument,
                      "UCX collectives run over the UCX transport's endpoints: use the UCX "
                      "transport with them");
  }
  return Status::ok();
}

struct InProcessRun::Impl {
  static inline std::atomic<uint64_t> next_id{1};
  uint64_t id = next_id++;
  CompactProgram held;  // a flat program is held.base with no code
  Program& program = held.base;
  const graph::Graph* graph = nullptr;
  InProcessRunOptions options;
  std::vector<std::unique_ptr<DeviceInterpreter>> interpreters;  // by global id (null: unused)
  std::vector<std::shared_ptr<comm::InProcessGroup>> groups;
  std::vector<std::unique_ptr<comm::Communicator>> communicators;
  std::vector<std::unique_ptr<comm::Communicator>> side_communicators;  // overlap (or null)
  std::shared_ptr<comm::InProcessFabric> fabric;
  std::vector<std::unique_ptr<comm::Transport>> endpoints;  // by global id
  std::shared_ptr<comm::UcxContext> ucx;                    // with a ProcessShare
  Status make_shared_transport(int n);
  std::vector<DeviceLinks> links;  // by global id
  // Kernel threads (kernels/device.h): a device thread runs its OpenMP loops on itself alone
  // (OpenMP teams that spin while waiting, next to BLAS threads that spin too, made steps up to
  // 4x slower on 2 cores), and BLAS gets cores / devices threads when several devices share
  // this process (every core for one).
  int kernel_threads = 1;
  int blas_before = 0;  // BLAS's thread count before this run changed it (restored after)
  ~Impl() {
    // A failed step may leave collectives on a side queue (a worker thread inside an in-process
    // collective, NCCL work on a GPU's communication stream) that use the side communicators,
    // which go before the interpreters: stop the groups, then wait while all it uses exists.
    bool pending = false;
    for (const auto& interp : interpreters)
      pending = pending || (interp && interp->overlaps_collectives());
    if (pending) {
      abort("the run is being destroyed");
      for (auto& interp : interpreters) {
        if (interp) interp->abandon_side_work();
      }
    }
    if (blas_before > 0) kernels::set_blas_threads(blas_before);
  }
  std::mutex mu;  // guards broken and broken_reason
  bool broken = false;
  std::string broken_reason;

  bool local(int32_t device) const {
    if (!options.share) return true;
    const auto& l = options.share->local_devices;
    return std::find(l.begin(), l.end(), device) != l.end();
  }

  std::atomic<bool> aborted{false};  // transports without an abort of their own watch it

  void abort(const std::string& reason) {
    aborted = true;
    for (auto& g : groups) g->abort(reason);
    if (fabric) fabric->abort(reason);
  }

  // Communicators of every mesh-axis group with more than one device.
  Status make_groups() {
    struct Member {
      int32_t device;
      int axis;
      int rank;
      int size;
      std::string prefix;
      std::shared_ptr<comm::InProcessGroup> group;  // shared memory (the whole group is here)
      // Two levels (a group across processes, as many of its devices in each, several here):
      // this process's part of it, and rank r's process (its first rank).
      std::shared_ptr<comm::InProcessGroup> local_group;
      int local_rank = 0;
      std::vector<int> process_of;
      uint32_t id = 0;               // the group's number, the same in every process
      std::vector<int32_t> devices;  // the device of each rank
      // The group's ranks that talk across processes: all of them, or of a two-level group its
      // leaders (processes numbered in order of first rank).
      std::vector<int> across() const {
        std::vector<int> out;
        for (int r = 0; r < size; ++r) {
          if (!local_group || process_of[size_t(r)] == r) out.push_back(r);
        }
        return out;
      }
      int rank_across() const {
        const std::vector<int> a = across();
        return static_cast<int>(std::find(a.begin(), a.end(), rank) - a.begin());
      }
    };
    std::vector<Member> members;
    uint32_t next_group = 0;
    for (size_t s = 0; s < program.stages.size(); ++s) {
      const StageLayout& st = program.stages[s];
      const int64_t d0 = st.mesh.size(0);
      const int64_t d1 = st.mesh.size(1);
      for (int axis = 0; axis < 2; ++axis) {
        const int64_t n = st.mesh.size(axis);
        if (n == 1) continue;
        const int64_t groups_count = axis == 0 ? d1 : d0;
        for (int64_t gi = 0; gi < groups_count; ++gi) {
          auto device_of = [&](int64_t r) {
            const int64_t i0 = axis == 0 ? r : gi;
            const int64_t i1 = axis == 0 ? gi : r;
            return st.devices[static_cast<size_t>(i0 * d1 + i1)];
          };
          const std::string prefix = fmt::format("stage{}-axis{}-group{}", s, axis, gi);
          const uint32_t id = next_group++;
          if (options.collectives == CollectiveBackend::kUcx && id >= comm::kMaxCollectiveGroups) {
            return make_error(Errc::kOutOfRange,
                              "the program has more than {} mesh-axis groups, the most UCX "
                              "collectives can tell apart",
                              comm::kMaxCollectiveGroups);
          }
          std::vector<int32_t> devices;
          for (int64_t r = 0; r < n; ++r) devices.push_back(device_of(r));
          // Shared memory unless Gloo or UCX was asked for; with a ProcessShare, those only for
          // the groups that span processes, in two levels where they allow.
          std::vector<int> here;  // this process's ranks of the group
          for (int64_t r = 0; r < n; ++r) {
            if (local(device_of(r))) here.push_back(static_cast<int>(r));
          }
          const bool all_local = static_cast<int64_t>(here.size()) == n;
          std::shared_ptr<comm::InProcessGroup> grp;
          const bool nccl = options.collectives == CollectiveBackend::kNccl;
          if (options.collectives == CollectiveBackend::kInProcess ||
              (options.share && all_local && !nccl)) {
            grp = comm::InProcessGroup::create(static_cast<int>(n), options.timeout);
            groups.push_back(grp);
          }
          std::vector<int> process_of;
          std::shared_ptr<comm::InProcessGroup> local_group;
          if (!grp && options.share && !here.empty() && !nccl) {
            MP_ASSIGN_OR_RETURN(process_of, group_layout(prefix, static_cast<int>(n), here));
            if (two_level(process_of)) {
              // Its ranks wait on their leader's Gloo call, which may itself take the timeout.
              local_group =
                  comm::InProcessGroup::create(static_cast<int>(here.size()), 2 * options.timeout);
              groups.push_back(local_group);
            } else {
              process_of.clear();
            }
          }
          for (size_t k = 0; k < here.size(); ++k) {
            members.push_back({device_of(here[k]), axis, here[k], static_cast<int>(n), prefix, grp,
                               local_group, static_cast<int>(k), process_of, id, devices});
          }
        }
      }
    }
    communicators.resize(members.size());
    side_communicators.resize(members.size());
    std::vector<comm::HierarchyParts> parts(members.size());
    for (size_t k = 0; k < members.size(); ++k) {
      if (members[k].group) communicators[k] = members[k].group->communicator(members[k].rank);
      if (members[k].local_group) {
        parts[k].local_group = members[k].local_group;
        parts[k].local = members[k].local_group->communicator(members[k].local_rank);
      }
    }
    if (options.collectives == CollectiveBackend::kNccl) {
      // Every rank joins its group from a thread of its own (NCCL's initialisation waits for the
      // whole group), on its device's GPU, queueing on that GPU's compute stream.
      auto store = options.share ? options.share->store : comm::make_in_process_store();
      const std::string base = options.share ? options.share->prefix + "/" : "";
      // NCCL needs a GPU per rank of a group: two of this process's ranks on one GPU (more
      // devices in a mesh than GPUs) are refused here, naming them.
      std::map<std::pair<std::string, int>, int32_t> on_gpu;  // (group, ordinal) -> device
      for (const Member& me : members) {
        kernels::GpuDevice* gpu = interpreters[static_cast<size_t>(me.device)]->gpu();
        if (gpu == nullptr) continue;
        auto [it, fresh] = on_gpu.emplace(std::make_pair(me.prefix, gpu->ordinal()), me.device);
        if (!fresh) {
          return make_error(Errc::kInvalidArgument,
                            "devices {} and {} of mesh group {} are both on GPU {}: NCCL needs a "
                            "GPU per device of a group (plan for fewer devices per mesh)",
                            it->second, me.device, me.prefix, gpu->ordinal());
        }
      }
      // The compute stream's communicators, then (overlap_collectives) deferred ones on each
      // GPU's communication stream for the grad-sync all-reduces.
      const bool side = std::all_of(members.begin(), members.end(), [&](const Member& me) {
        return interpreters[static_cast<size_t>(me.device)]->overlaps_collectives();
      });
      for (int pass = 0; pass < (side ? 2 : 1); ++pass) {
        std::vector<Status> status(members.size());
        std::vector<std::thread> threads;
        for (size_t k = 0; k < members.size(); ++k) {
          threads.emplace_back([&, k, pass] {
            const Member& me = members[k];
            DeviceInterpreter& interp = *interpreters[static_cast<size_t>(me.device)];
            kernels::GpuDevice* gpu = interp.gpu();
            if (gpu == nullptr) {
              status[k] = make_error(Errc::kInternal, "device {} has no GPU for NCCL", me.device);
              return;
            }
            comm::NcclOptions no;
            no.device = gpu->ordinal();
            no.stream = pass == 0 ? gpu->stream() : interp.side_stream();
            no.deferred = pass == 1;
            no.timeout = options.timeout;
            no.prefix = base + me.prefix + (pass == 0 ? "/nccl" : "/nccl-side");
            auto c = comm::make_nccl_communicator(me.rank, me.size, store, no);
            if (!c.has_value()) {
              status[k] = c.status().with_context(fmt::format("device {}", me.device));
            } else if (pass == 0) {
              communicators[k] = std::move(*c);
            } else {
              side_communicators[k] = std::move(*c);
            }
          });
        }
        for (auto& t : threads) t.join();
        for (const Status& s : status) MP_RETURN_IF_ERROR(s);
      }
    } else if (options.collectives == CollectiveBackend::kUcx) {
      // Over the devices' own UCX endpoints (make_transport ran first); of a two-level group,
      // the leaders only, as a group of one rank per process.
      for (size_t k = 0; k < members.size(); ++k) {
        const Member& m = members[k];
        if (m.group || (m.local_group && m.local_rank != 0)) continue;
        std::vector<int> peers;
        for (int r : m.across()) peers.push_back(m.devices[size_t(r)]);
        comm::Transport* ep = links[static_cast<size_t>(m.device)].transport;
        MP_ASSIGN_OR_RETURN(
            auto c, comm::make_transport_communicator(ep, std::move(peers), m.rank_across(), m.id,
                                                      options.timeout));
        if (m.local_group) {
          parts[k].leaders = std::move(c);
        } else {
          communicators[k] = std::move(c);
        }
      }
    } else {
      // Gloo's rendezvous blocks until the whole group has joined: join from one thread each
      // (of a two-level group, the leaders only: they form a group of one rank per process).
      auto store = options.share ? options.share->store : comm::make_in_process_store();
      const std::string prefix = options.share ? options.share->prefix + "/" : "";
      std::vector<Status> status(members.size());
      std::vector<std::thread> threads;
      for (size_t k = 0; k < members.size(); ++k) {
        const Member& m = members[k];
        if (m.group || (m.local_group && m.local_rank != 0)) continue;
        threads.emplace_back([&, k] {
          const Member& me = members[k];
          comm::GlooOptions go;
          go.timeout = options.timeout;
          go.prefix = prefix + me.prefix;
          if (options.share) go.hostname = options.share->host;
          if (me.local_group) go.prefix += "/leaders";
          auto c = comm::make_gloo_communicator(me.rank_across(),
                                                static_cast<int>(me.across().size()), store, go);
          if (!c.has_value()) {
            status[k] = c.status();
          } else if (me.local_group) {
            parts[k].leaders = std::move(*c);
          } else {
            communicators[k] = std::move(*c);
          }
        });
      }
      for (auto& t : threads) t.join();
      for (const Status& s : status) MP_RETURN_IF_ERROR(s);
    }
    for (size_t k = 0; k < members.size(); ++k) {
      if (!members[k].local_group) continue;
      MP_ASSIGN_OR_RETURN(communicators[k],
                          comm::make_hierarchical_communicator(
                              members[k].rank, members[k].process_of, std::move(parts[k])));
    }
    // Groups in shared memory whose devices all overlap collectives (staged host memory, which
    // tests the overlap) get a second in-process group for the side queue.
    std::map<std::string, std::shared_ptr<comm::InProcessGroup>> side_groups;
    for (size_t k = 0; k < members.size(); ++k) {
      const Member& me = members[k];
      if (!me.group || side_groups.count(me.prefix) != 0) continue;
      bool all = true;
      for (int32_t d : me.devices) {
        const auto& interp = interpreters[static_cast<size_t>(d)];
        all = all && interp && interp->overlaps_collectives();
      }
      if (!all) continue;
      auto grp = comm::InProcessGroup::create(me.size, options.timeout);
      groups.push_back(grp);
      side_groups.emplace(me.prefix, grp);
    }
    for (size_t k = 0; k < members.size(); ++k) {
      auto it = side_groups.find(members[k].prefix);
      if (it != side_groups.end())
        side_communicators[k] = it->second->communicator(members[k].rank);
    }
    for (size_t k = 0; k < members.size(); ++k) {
      DeviceLinks& l = links[static_cast<size_t>(members[k].device)];
      l.axis[members[k].axis] = communicators[k].get();
      l.side[members[k].axis] = side_communicators[k].get();
    }
    return Status::ok();
  }

  // Which process each rank of a group across processes is in, named by its first rank: this
  // process publishes its ranks' under the group's key and reads everyone's.
  Expected<std::vector<int>> group_layout(const std::string& prefix, int n,
                                          const std::vector<int>& here) {
    const std::string key = options.share->prefix + "/" + prefix + "/process-of/";
    for (int r : here) options.share->store->set(key + std::to_string(r), std::to_string(here[0]));
    std::vector<int> process_of(static_cast<size_t>(n), 0);
    for (int r = 0; r < n; ++r) {
      MP_ASSIGN_OR_RETURN(std::string v,
                          options.share->store->get(key + std::to_string(r), options.timeout));
      int first = -1;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), first);
      if (ec != std::errc() || end != v.data() + v.size() || first < 0 || first > r) {
        return make_error(Errc::kInternal, "group {}: rank {}'s process is given as '{}'", prefix,
                          r, v);
      }
      process_of[size_t(r)] = first;
    }
    for (int r = 0; r < n; ++r) {  // a process is named by its first rank, which is its own
      if (process_of[size_t(process_of[size_t(r)])] != process_of[size_t(r)]) {
        return make_error(Errc::kInternal, "group {}: rank {}'s process {} is not its first rank",
                          prefix, r, process_of[size_t(r)]);
      }
    }
    return process_of;
  }

  // Whether a group across processes runs in two levels: as many of its ranks in every process,
  // at least 2 (with one each, the leaders are the whole group).
  static bool two_level(const std::vector<int>& process_of) {
    std::map<int, int> count;
    for (int p : process_of) ++count[p];
    if (count.size() < 2) return false;
    const int each = count.begin()->second;
    return each >= 2 &&
           std::all_of(count.begin(), count.end(), [&](const auto& c) { return c.second == each; });
  }

  Status make_transport() {
    const int n = static_cast<int>(program.devices.size());
    if (options.share) return make_shared_transport(n);
    if (options.transport == TransportKind::kInProcess) {
      fabric = comm::InProcessFabric::create(n);
      for (int d = 0; d < n; ++d) endpoints.push_back(fabric->endpoint(d));
    } else {
      MP_ASSIGN_OR_RETURN(endpoints, comm::make_ucx_fabric(n));
    }
    for (int d = 0; d < n; ++d)
      links[static_cast<size_t>(d)].transport = endpoints[size_t(d)].get();
    return Status::ok();
  }
};

// UCX endpoints for this process's devices, connected to every device of the job through
// the addresses the other processes publish.
Status InProcessRun::Impl::make_shared_transport(int n) {
  MP_ASSIGN_OR_RETURN(std::shared_ptr<comm::UcxContext> ctx, comm::UcxContext::create());
  ucx = ctx;
  endpoints.resize(static_cast<size_t>(n));
  std::map<int32_t, std::string> mine;
  for (int32_t d : options.share->local_devices) {
    if (d < 0 || d >= n) {
      return make_error(Errc::kInvalidArgument, "local device {} is outside the program's {}", d,
                        n);
    }
    MP_ASSIGN_OR_RETURN(endpoints[size_t(d)], ctx->create_endpoint(d, n));
    mine[d] = static_cast<comm::UcxEndpoint*>(endpoints[size_t(d)].get())->address();
  }
  MP_ASSIGN_OR_RETURN(auto all, options.share->exchange(mine));
  for (int32_t d : options.share->local_devices) {
    auto* ep = static_cast<comm::UcxEndpoint*>(endpoints[size_t(d)].get());
    for (int32_t peer = 0; peer < n; ++peer) {
      if (peer == d || program.device(peer) == nullptr) continue;
      auto it = all.find(peer);
      if (it == all.end()) {
        return make_error(Errc::kUnavailable, "no process published an address for device {}",
                          peer);
      }
      MP_RETURN_IF_ERROR(ep->connect(peer, it->second));
    }
    links[size_t(d)].transport = ep;
  }
  return Status::ok();
}

InProcessRun::InProcessRun(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
InProcessRun::~InProcessRun() = default;

const Program& InProcessRun::program() const { return impl_->program; }

uint64_t InProcessRun::id() const { return impl_->id; }

Expected<std::unique_ptr<InProcessRun>> InProcessRun::create(Program program, const graph::Graph& g,
                                                             InProcessRunOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->held.base = std::move(program);
  return start(std::move(impl), g, std::move(options));
}

Expected<std::unique_ptr<InProcessRun>> InProcessRun::create(CompactProgram program,
                                                             const graph::Graph& g,
                                                             InProcessRunOptions options) {
  if (program.code.size() != program.base.devices.size()) {
    return make_error(Errc::kInvalidArgument, "compact program with {} devices but {} codes",
                      program.base.devices.size(), program.code.size());
  }
  auto impl = std::make_unique<Impl>();
  impl->held = std::move(program);
  return start(std::move(impl), g, std::move(options));
}

Expected<std::unique_ptr<InProcessRun>> InProcessRun::start(std::unique_ptr<Impl> impl,
                                                            const graph::Graph& g,
                                                            InProcessRunOptions options) {
  MP_RETURN_IF_ERROR(options.validate());
  const bool compact = !impl->held.code.empty();
  impl->graph = &g;
  impl->options = std::move(options);
  impl->options.interpreter.timeout = impl->options.timeout;
  const size_t n = impl->program.devices.size();
  impl->interpreters.resize(n);
  impl->links.resize(n);
  int here = 0;  // devices this process runs
  for (size_t d = 0; d < n; ++d) {
    if (impl->program.device(static_cast<int32_t>(d)) != nullptr &&
        impl->local(static_cast<int32_t>(d))) {
      ++here;
    }
  }
  if (here > 1 && impl->options.set_blas_threads)
    impl->blas_before = kernels::set_blas_threads(std::max(1, kernels::cpu_cores() / here));
  int gpu_ordinal = 0;  // kCuda: this process's devices on GPUs 0, 1, ... in order
  for (size_t d = 0; d < n; ++d) {
    if (impl->program.device(static_cast<int32_t>(d)) == nullptr) continue;
    if (!impl->local(static_cast<int32_t>(d))) continue;
    InterpreterOptions io = impl->options.interpreter;
    io.device = impl->options.device;
    io.gpu = gpu_ordinal++ % std::max(1, kernels::device_inventory().cuda_devices);
    if (impl->options.fail_device >= 0 && impl->options.fail_device != static_cast<int32_t>(d)) {
      io.fail_op.clear();
    }
    MP_ASSIGN_OR_RETURN(
        impl->interpreters[d],
        compact ? DeviceInterpreter::create(impl->held, static_cast<int32_t>(d), io)
                : DeviceInterpreter::create(impl->program, static_cast<int32_t>(d), io));
  }
  MP_RETURN_IF_ERROR(impl->make_transport());  // UCX collectives run over its endpoints
  MP_RETURN_IF_ERROR(impl->make_groups());
  for (DeviceLinks& l : impl->links) {
    if (l.transport != nullptr) l.transport->set_abort_flag(&impl->aborted);
  }
  return std::unique_ptr<InProcessRun>(new InProcessRun(std::move(impl)));
}

Status InProcessRun::pull_persistent() const {
  for (const auto& interp : impl_->interpreters) {
    if (interp) MP_RETURN_IF_ERROR(interp->pull_persistent());
  }
  return Status::ok();
}

Status InProcessRun::push_persistent() {
  for (auto& interp : impl_->interpreters) {
    if (interp) MP_RETURN_IF_ERROR(interp->push_persistent());
  }
  return Status::ok();
}

Status InProcessRun::initialize(uint64_t seed) {
  MP_RETURN_IF_ERROR(pull_persistent());  // on GPUs: the host copies to fill
  std::map<std::string, ValueId> by_name;
  for (int64_t v = 0; v < impl_->graph->num_values(); ++v) {
    by_name[impl_->graph->values()[static_cast<size_t>(v)].name] = ValueId(static_cast<int32_t>(v));
  }
  std::map<std::string, HostTensor> full;
  const kernels::KernelContext ctx;
  for (auto& interp : impl_->interpreters) {
    if (!interp) continue;
    const DeviceProgram& dp = interp->program();
    for (size_t i = 0; i < dp.persistent.size(); ++i) {
      const PersistentTile& t = dp.persistent[i];
      auto id = by_name.find(t.value);
      if (id == by_name.end()) {
        return make_error(Errc::kInvalidArgument, "the graph has no value '{}'", t.value);
      }
      const graph::Value& v = impl_->graph->value(id->second);
      auto it = full.find(t.value);
      if (it == full.end()) {
        HostTensor h(v.shape, v.dtype);
        fill_initial(v, seed, h.f32());
        it = full.emplace(t.value, std::move(h)).first;
      }
      std::vector<int64_t> off;
      for (const mesh::DimRange& r : t.region) off.push_back(r.begin);
      kernels::TensorView dst = interp->persistent(i);
      kernels::copy_box(ctx, it->second.view(), off, dst, std::vector<int64_t>(off.size(), 0),
                        dst.shape.dims());
    }
  }
  return push_persistent();
}

std::vector<InProcessRun::TileView> InProcessRun::persistent_tiles() const {
  std::vector<TileView> out;
  for (size_t d = 0; d < impl_->interpreters.size(); ++d) {
    const auto& interp = impl_->interpreters[d];
    if (!interp) continue;
    const DeviceProgram& dp = interp->program();
    for (size_t i = 0; i < dp.persistent.size(); ++i) {
      out.push_back({static_cast<int32_t>(d), &dp.persistent[i], interp->persistent(i)});
    }
  }
  return out;
}

Expected<HostTensor> InProcessRun::read_value(const std::string& name) const {
  MP_RETURN_IF_ERROR(pull_persistent());
  const kernels::KernelContext ctx;
  std::optional<HostTensor> out;
  for (const auto& interp : impl_->interpreters) {
    if (!interp) continue;
    const DeviceProgram& dp = interp->program();
    for (size_t i = 0; i < dp.persistent.size(); ++i) {
      if (dp.persistent[i].value != name) continue;
      const kernels::TensorView src = interp->persistent(i);
      std::vector<int64_t> full_dims;
      std::vector<int64_t> off;
      for (const mesh::DimRange& r : dp.persistent[i].region) off.push_back(r.begin);
      if (!out) {
        for (const auto& v : impl_->graph->values()) {
          if (v.name == name) out.emplace(v.shape, v.dtype);
        }
      }
      kernels::copy_box(ctx, src, std::vector<int64_t>(off.size(), 0), out->view(), off,
                        src.shape.dims());
    }
  }
  if (!out) return make_error(Errc::kNotFound, "no device holds a persistent value '{}'", name);
  return std::move(*out);
}

std::vector<int32_t> InProcessRun::devices() const {
  std::vector<int32_t> out;
  for (size_t d = 0; d < impl_->interpreters.size(); ++d) {
    if (impl_->interpreters[d]) out.push_back(static_cast<int32_t>(d));
  }
  return out;
}

std::optional<std::pair<float, int64_t>> InProcessRun::loss_scale_state() const {
  for (const auto& interp : impl_->interpreters) {
    if (interp && interp->loss_scaler() != nullptr) {
      return std::make_pair(interp->loss_scaler()->scale(), interp->loss_scaler()->good_steps());
    }
  }
  return std::nullopt;
}

Status InProcessRun::restore_loss_scale(float scale, int64_t good_steps) {
  for (auto& interp : impl_->interpreters) {
    if (interp) MP_RETURN_IF_ERROR(interp->restore_loss_scale(scale, good_steps));
  }
  return Status::ok();
}

void InProcessRun::abort(const std::string& reason) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.broken) return;
  m.broken = true;
  m.broken_reason = reason;
  m.abort(reason);
}

Expected<DeviceStepResult> InProcessRun::run_device(
    int32_t device, const std::vector<std::vector<HostTensor>>& micro_batches) {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.broken) {
      return make_error(Errc::kUnavailable, "the run stopped after an earlier failure: {}",
                        m.broken_reason);
    }
  }
  if (device < 0 || static_cast<size_t>(device) >= m.interpreters.size() ||
      !m.interpreters[static_cast<size_t>(device)]) {
    return make_error(Errc::kInvalidArgument, "device {} has no program", device);
  }
  if (static_cast<int64_t>(micro_batches.size()) != m.program.micro_batches) {
    return make_error(Errc::kInvalidArgument, "{} micro-batches given, the program has {}",
                      micro_batches.size(), m.program.micro_batches);
  }
  kernels::set_kernel_threads(m.kernel_threads);
  auto r = m.interpreters[static_cast<size_t>(device)]->run_step(
      micro_batches, m.links[static_cast<size_t>(device)]);
  if (!r.has_value()) abort(r.status().message());
  return r;
}

Expected<RunStepResult> InProcessRun::combine(
    const std::vector<std::pair<int32_t, DeviceStepResult>>& results, double seconds) const {
  const Impl& m = *impl_;
  RunStepResult r;
  r.seconds = seconds;
  r.peak_bytes.assign(m.interpreters.size(), 0);
  r.losses.assign(static_cast<size_t>(m.program.micro_batches), 0.0);
  std::vector<bool> seen(r.losses.size(), false);
  for (const auto& [d, res] : results) {
    r.peak_bytes[static_cast<size_t>(d)] = res.peak_bytes;
    for (const auto& [kind, t] : res.kernel_seconds) r.kernel_seconds[kind] += t;
    r.kernels_run += res.kernels_run;
    r.side_collectives += res.side_collectives;
    r.early_collectives += res.early_collectives;
    for (const auto& [what, t] : res.other_seconds) r.other_seconds[what] += t;
    r.loss_scale = std::max(r.loss_scale, res.loss_scale);   // equal on every device, as is
    if (res.grad_norm != -1.0) r.grad_norm = res.grad_norm;  // the norm (inf, NaN kept)
    r.skipped = r.skipped || res.skipped;
    if (res.loss_scale > 0.0f) {
      r.next_loss_scale = res.next_loss_scale;
      r.good_steps = res.good_steps;
    }
    if (d != m.program.loss_device) continue;
    for (const auto& [mb, loss] : res.losses) {
      r.losses[static_cast<size_t>(mb)] = loss;
      seen[static_cast<size_t>(mb)] = true;
    }
  }
  if (m.interpreters.size() <= static_cast<size_t>(std::max(m.program.loss_device, 0)) ||
      !m.interpreters[static_cast<size_t>(std::max(m.program.loss_device, 0))]) {
    r.losses.clear();  // another process reports the loss
    r.loss = 0.0;
    return r;
  }
  for (size_t mb = 0; mb < seen.size(); ++mb) {
    if (!seen[mb]) {
      return make_error(Errc::kInternal, "no loss was reported for micro-batch {}", mb);
    }
  }
  for (double l : r.losses) r.loss += l / static_cast<double>(r.losses.size());
  return r;
}

void InProcessRun::set_evaluating(bool on) {
  for (auto& in : impl_->interpreters)
    if (in) in->set_evaluating(on);
}
void InProcessRun::set_lr_scale(float scale) {
  for (auto& in : impl_->interpreters)
    if (in) in->set_lr_scale(scale);
}

Expected<RunStepResult> InProcessRun::evaluate(
    const std::vector<std::vector<HostTensor>>& micro_batches) {
  set_evaluating(true);
  Expected<RunStepResult> r = step(micro_batches);
  set_evaluating(false);
  return r;
}

Expected<RunStepResult> InProcessRun::step(
    const std::vector<std::vector<HostTensor>>& micro_batches) {
  const std::vector<int32_t> devs = devices();
  std::vector<std::optional<Expected<DeviceStepResult>>> results(devs.size());
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (size_t k = 0; k < devs.size(); ++k) {
    threads.emplace_back([&, k] { results[k] = run_device(devs[k], micro_batches); });
  }
  for (auto& t : threads) t.join();
  // The root cause: the first failure, not the devices it stopped (kUnavailable).
  std::optional<Status> failure;
  for (const auto& r : results) {
    if ((*r).has_value()) continue;
    if (!failure ||
        (failure->code() == Errc::kUnavailable && (*r).status().code() != Errc::kUnavailable)) {
      failure = (*r).status();
    }
  }
  if (failure) return *failure;
  std::vector<std::pair<int32_t, DeviceStepResult>> ok;
  for (size_t k = 0; k < devs.size(); ++k) ok.emplace_back(devs[k], **results[k]);
  return combine(ok, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

Expected<std::vector<std::vector<HostTensor>>> split_micro_batches(
    const graph::Graph& g, const std::vector<std::pair<ValueId, HostTensor>>& batch,
    const std::vector<std::string>& names, int64_t micro_batches) {
  if (micro_batches < 1) {
    return make_error(Errc::kInvalidArgument, "{} micro-batches: at least one is needed",
                      micro_batches);
  }
  std::vector<std::vector<HostTensor>> out(static_cast<size_t>(micro_batches));
  const kernels::KernelContext ctx;
  for (const std::string& name : names) {
    const HostTensor* t = nullptr;
    for (const auto& [id, tensor] : batch) {
      if (g.value(id).name == name) t = &tensor;
    }
    if (t == nullptr) return make_error(Errc::kInvalidArgument, "data input '{}' is missing", name);
    const Shape& s = t->shape();
    if (s.rank() == 0 || s[0] % micro_batches != 0) {
      return make_error(Errc::kInvalidArgument,
                        "data input '{}' of shape {} does not split into {} micro-batches", name,
                        s.to_string(), micro_batches);
    }
    std::vector<int64_t> dims = s.dims();
    dims[0] /= micro_batches;
    for (int64_t mb = 0; mb < micro_batches; ++mb) {
      HostTensor part(Shape(dims), t->dtype());
      std::vector<int64_t> off(dims.size(), 0);
      off[0] = mb * dims[0];
      kernels::copy_box(ctx, t->view(), off, part.view(), std::vector<int64_t>(dims.size(), 0),
                        dims);
      out[static_cast<size_t>(mb)].push_back(std::move(part));
    }
  }
  return out;
}

}  // namespace meshpipe::runtime

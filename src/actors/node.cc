// The node side of a multi-process job (`meshpipe-node`): join the coordinator, build the job's
// program for this node's devices, run steps, exit when told or when the coordinator goes.
#include <unistd.h>

#include <atomic>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <charconv>
#include <mutex>
#include <optional>

#include "actors/cluster.h"
#include "actors/internal/cluster_protocol.h"
#include "core/json.h"
#include "planner/plan.h"
#include "runtime/checkpoint.h"
#include "runtime/in_process_run.h"
#include "train/job.h"

namespace meshpipe::actors {

namespace {

using namespace internal;  // NOLINT: the protocol's atoms

// UCX worker addresses are bytes; JSON carries them as hex.
std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

Expected<std::string> from_hex(const std::string& hex) {
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return make_error(Errc::kInvalidArgument, "odd-length hex address");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]);
    const int lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return make_error(Errc::kInvalidArgument, "bad hex address");
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

// Gloo's rendezvous store, kept by the coordinator.
class CoordinatorStore final : public comm::RendezvousStore {
 public:
  CoordinatorStore(caf::actor_system& sys, caf::actor coordinator)
      : sys_(sys), coordinator_(std::move(coordinator)) {}
  void set(const std::string& key, const std::string& value) override {
    caf::anon_send(coordinator_, set_atom::value, key, value);
  }
  Expected<std::string> get(const std::string& key, std::chrono::milliseconds timeout) override {
    caf::scoped_actor self{sys_};
    std::optional<Status> failure;
    std::string value;
    self->request(coordinator_, timeout, get_atom::value, key)
        .receive([&](const std::string& v) { value = v; },
                 [&](caf::error& e) { failure = from_caf(sys_, e); });
    if (failure) return failure->with_context(fmt::format("rendezvous key '{}'", key));
    return value;
  }

 private:
  caf::actor_system& sys_;
  caf::actor coordinator_;
};

struct NodeState {
  NodeOptions options;
  caf::actor coordinator;
  int32_t id = -1;
  Status result;
  std::unique_ptr<train::LocalJob> job;

  // The heartbeat actor aborts the run from its own thread while the node actor is inside a
  // step: `live` is the job's run as that actor may see it.
  std::mutex run_mu;
  std::atomic<bool> busy{false};  // the node actor is inside a job, step or save handler
  runtime::InProcessRun* live = nullptr;
  std::string aborted;  // why the job was aborted, once it was
  void abort_run(const std::string& why) {
    std::lock_guard<std::mutex> lock(run_mu);
    if (aborted.empty()) aborted = why;
    if (live != nullptr) live->abort(why);
  }
  std::string abort_reason() {
    std::lock_guard<std::mutex> lock(run_mu);
    return aborted;
  }
  void set_live(runtime::InProcessRun* run) {
    std::lock_guard<std::mutex> lock(run_mu);
    live = run;
    if (live != nullptr && !aborted.empty()) live->abort(aborted);
  }
};

// The addresses of every device's UCX endpoint, through the coordinator.
Expected<std::map<int32_t, std::string>> exchange_addresses(
    caf::actor_system& sys, const caf::actor& coordinator, std::chrono::milliseconds timeout,
    const std::map<int32_t, std::string>& mine) {
  Json m = Json::object();
  for (const auto& [d, a] : mine) m[std::to_string(d)] = to_hex(a);
  caf::scoped_actor self{sys};
  std::optional<Status> failure;
  std::string all;
  self->request(coordinator, timeout, addr_atom::value, m.dump())
      .receive([&](const std::string& v) { all = v; },
               [&](caf::error& e) { failure = from_caf(sys, e); });
  if (failure) return failure->with_context("exchanging UCX addresses");
  MP_ASSIGN_OR_RETURN(const Json parsed, parse_json(all, "the UCX address list"));
  if (!parsed.is_object()) return make_error(Errc::kInternal, "the address list is not an object");
  std::map<int32_t, std::string> out;
  for (const auto& [key, value] : parsed.items()) {
    int32_t device = -1;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), device);
    if (ec != std::errc() || end != key.data() + key.size() || device < 0) {
      return make_error(Errc::kInternal, "the address list names device '{}'", key);
    }
    std::string hex;
    MP_RETURN_IF_ERROR(read_json(value, "address field", key, &hex));
    MP_ASSIGN_OR_RETURN(out[device], from_hex(hex));
  }
  return out;
}

// Builds this node's devices of the job: the same program on every node, run for local devices.
Status start_job(NodeState& st, caf::actor_system& sys, const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json j, parse_json(text, "the job"));
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "malformed job: not an object");
  JsonReader r(j, "", "job field");
  std::string spec_text;
  std::string plan_text;
  int64_t timeout_ms = 0;
  std::string load;
  MP_RETURN_IF_ERROR(r.read("spec", &spec_text));
  MP_RETURN_IF_ERROR(r.read("plan", &plan_text));
  MP_RETURN_IF_ERROR(r.read("timeout_ms", &timeout_ms));
  MP_RETURN_IF_ERROR(r.read("load", &load));
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  if (timeout_ms <= 0) return r.error("timeout_ms", "must be positive");
  MP_ASSIGN_OR_RETURN(train::JobSpec spec, train::job_spec_from_json(spec_text));
  MP_ASSIGN_OR_RETURN(planner::Plan plan, planner::plan_from_json(plan_text));
  if (plan.cluster.devices_per_host != st.options.devices) {
    return make_error(Errc::kInvalidArgument,
                      "the plan puts {} devices on each host, this node runs {}",
                      plan.cluster.devices_per_host, st.options.devices);
  }
  auto share = std::make_shared<runtime::ProcessShare>();
  for (int32_t d = st.id * st.options.devices; d < (st.id + 1) * st.options.devices; ++d) {
    share->local_devices.push_back(d);
  }
  share->store = std::make_shared<CoordinatorStore>(sys, st.coordinator);
  share->host = st.options.bind;
  const auto timeout = std::chrono::milliseconds(timeout_ms);
  caf::actor coordinator = st.coordinator;
  share->exchange = [&sys, coordinator, timeout](const std::map<int32_t, std::string>& mine) {
    return exchange_addresses(sys, coordinator, timeout, mine);
  };
  train::LocalJobOptions lo;
  lo.run.collectives = runtime::CollectiveBackend::kGloo;
  lo.run.transport = runtime::TransportKind::kUcx;
  lo.run.timeout = timeout;
  lo.run.share = share;
  lo.load_dir = load;
  auto job = train::LocalJob::create(spec, plan, lo);
  if (!job.has_value()) {
    if (!load.empty()) {
      return job.status().with_context(
          "building the job (with several nodes the checkpoint must be readable on every node)");
    }
    return job.status();
  }
  st.job = std::move(*job);
  st.set_live(&st.job->run());
  const std::vector<int32_t> mine = st.job->run().devices();
  fmt::print("node {}: job started, devices {}\n", st.id, fmt::join(mine, ","));
  std::fflush(stdout);
  return Status::ok();
}

Expected<std::string> run_step(NodeState& st, int64_t step) {
  if (!st.job) return make_error(Errc::kInvalidArgument, "step {} before the job started", step);
  MP_ASSIGN_OR_RETURN(train::StepOutcome r, st.job->run_step(step));
  Json j;
  j["losses"] = r.losses;
  j["seconds"] = r.seconds;
  Json peaks = Json::array();
  for (const auto& [d, bytes] : r.peak_bytes) peaks.push_back(Json::array({d, bytes}));
  j["peaks"] = peaks;
  return j.dump();
}

// Writes this node's tiles of a checkpoint into `partial` (created by the driver) and lists them.
Expected<std::string> save_tiles(NodeState& st, const std::string& partial) {
  if (!st.job) return make_error(Errc::kInvalidArgument, "a checkpoint before the job started");
  auto tiles = st.job->write_tiles(partial);
  if (!tiles.has_value()) {
    if (tiles.status().code() == Errc::kNotFound) {
      return tiles.status().with_context(
          "with several nodes, --save needs a directory every node sees (a shared file system, "
          "or all nodes on one machine)");
    }
    return tiles.status();
  }
  return runtime::saved_tiles_to_json(*tiles);
}

// How long an aborted node waits for its devices to leave the step before it exits anyway: a
// Gloo collective blocked on a peer that stopped cannot be woken from outside (UCX waits and
// in-process groups can), and the node must not outlive its job.
constexpr std::chrono::seconds kAbortGrace{3};

// Marks the node actor busy while a handler runs.
struct BusyScope {
  explicit BusyScope(std::atomic<bool>& b) : busy(b) { busy = true; }
  ~BusyScope() { busy = false; }
  BusyScope(const BusyScope&) = delete;
  BusyScope& operator=(const BusyScope&) = delete;
  std::atomic<bool>& busy;
};

caf::behavior node_actor(caf::event_based_actor* self, std::shared_ptr<NodeState> st) {
  // Answers the coordinator's pings on its own, so a node busy in a long step still shows it
  // is alive, and aborts that step when the coordinator says the job failed or disconnects. A
  // normal exit does not travel along links, so the node ends it explicitly.
  auto heartbeat = self->spawn([st](caf::event_based_actor* hb) -> caf::behavior {
    const auto abort = [hb, st](const std::string& why) {
      st->abort_run(why);
      hb->delayed_send(hb, kAbortGrace, tick_atom::value);
    };
    hb->monitor(st->coordinator);
    hb->set_down_handler([st, abort](caf::down_msg&) {
      abort(fmt::format("node {}: the coordinator disconnected", st->id));
    });
    return {
        [](ping_atom) { return pong_atom::value; },
        [abort](abort_atom, const std::string& why) { abort(why); },
        [st](tick_atom) {
          if (!st->busy) return;
          fmt::print(stderr,
                     "node {}: the job was aborted ({}) and this node's devices are still "
                     "inside it after {} s (a Gloo collective waits for a peer that stopped); "
                     "exiting\n",
                     st->id, st->abort_reason(), kAbortGrace.count());
          std::fflush(stderr);
          std::_Exit(1);
        },
    };
  });
  const auto finish = [self, heartbeat](Status why, const std::shared_ptr<NodeState>& state) {
    state->result = std::move(why);
    self->send_exit(heartbeat, caf::exit_reason::user_shutdown);
    self->quit();
  };
  self->monitor(st->coordinator);
  self->set_down_handler([st, finish](caf::down_msg& dm) {
    if (dm.source != st->coordinator.address()) return;
    finish(make_error(Errc::kUnavailable, "node {}: the coordinator disconnected", st->id), st);
  });
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  const Json info = {{"host", std::string(host)},
                     {"pid", static_cast<int64_t>(::getpid())},
                     {"devices", st->options.devices},
                     {"memory", st->options.memory_bytes},
                     {"version", st->options.version}};
  self->request(st->coordinator, st->options.connect_timeout, register_atom::value,
                st->options.protocol, info.dump(), heartbeat)
      .then(
          [st](int32_t id, int32_t total) {
            st->id = id;
            fmt::print("joined the coordinator as node {} of {}\n", id, total);
            std::fflush(stdout);
          },
          [self, st, finish](caf::error& e) {
            finish(from_caf(self->system(), e).with_context("the coordinator refused this node"),
                   st);
          });
  return {
      [self, st](job_atom, const std::string& job) -> caf::result<std::string> {
        const BusyScope busy(st->busy);
        const Status s = start_job(*st, self->system(), job);
        if (!s.is_ok()) return to_caf(s.with_context(fmt::format("node {}", st->id)));
        return Json{{"program", fmt::format("{:016x}", st->job->fingerprint())}}.dump();
      },
      [st](step_atom, int64_t step) -> caf::result<std::string> {
        const BusyScope busy(st->busy);
        auto r = run_step(*st, step);
        if (!r.has_value()) {
          return to_caf(r.status().with_context(fmt::format("node {} step {}", st->id, step)));
        }
        return *r;
      },
      [st](save_atom, const std::string& partial) -> caf::result<std::string> {
        const BusyScope busy(st->busy);
        auto r = save_tiles(*st, partial);
        if (!r.has_value()) return to_caf(r.status().with_context(fmt::format("node {}", st->id)));
        return *r;
      },
      [st, finish](shutdown_atom, const std::string& reason) {
        fmt::print("node {}: exiting ({})\n", st->id, reason);
        std::fflush(stdout);
        finish(Status::ok(), st);
      },
  };
}

}  // namespace

Status NodeOptions::validate() const {
  if (devices < 1) return make_error(Errc::kInvalidArgument, "--devices must be >= 1");
  if (memory_bytes <= 0) return make_error(Errc::kInvalidArgument, "memory must be positive");
  const size_t colon = coordinator.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == coordinator.size()) {
    return make_error(Errc::kInvalidArgument, "--coordinator '{}' is not HOST:PORT", coordinator);
  }
  return Status::ok();
}

Status run_node(const NodeOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  const size_t colon = options.coordinator.rfind(':');
  const std::string host = options.coordinator.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(options.coordinator.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port <= 0 || port > 65535) {
    return make_error(Errc::kInvalidArgument, "--coordinator '{}': bad port", options.coordinator);
  }
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  auto coordinator = sys.middleman().remote_actor(host, static_cast<uint16_t>(port));
  if (!coordinator) {
    return make_error(Errc::kUnavailable, "cannot reach the coordinator at {}: {}",
                      options.coordinator, sys.render(coordinator.error()));
  }
  auto st = std::make_shared<NodeState>();
  st->options = options;
  st->coordinator = *coordinator;
  // Scheduled, not detached: a detached actor that a remote peer has referenced can keep
  // CAF 0.17's shutdown waiting for its thread. Its handlers block (building devices, running
  // a step) on one of the two scheduler threads; the other, the multiplexer and the blocking
  // store requests keep the control plane moving.
  sys.spawn(node_actor, st);
  sys.await_all_actors_done();
  st->set_live(nullptr);
  st->job.reset();
  return st->result;
}

}  // namespace meshpipe::actors

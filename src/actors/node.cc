// The node side of a multi-process job (`meshpipe-node`): join the coordinator, build the job's
// program for this node's devices, run steps, exit when told or when the coordinator goes.
#include <unistd.h>

#include <atomic>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "actors/cluster.h"
#include "actors/internal/cluster_protocol.h"
#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "planner/plan.h"
#include "runtime/checkpoint.h"
#include "runtime/in_process_run.h"
#include "runtime/lower.h"
#include "runtime/parallel_trainer.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::actors {

namespace {

using namespace internal;  // NOLINT: the protocol's atoms
using Json = nlohmann::json;

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

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
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
  std::optional<graph::TrainingGraph> graph;  // the micro-batch training graph
  std::optional<graph::TrainingGraph> whole;  // the whole batch (data)
  std::optional<runtime::SyntheticData> data;
  std::unique_ptr<runtime::InProcessRun> run;
  std::vector<std::string> inputs;
  int64_t micro_batches = 1;
  uint64_t fingerprint = 0;  // of the lowered program: every node's must be equal

  // The heartbeat actor aborts the run from its own thread while the node actor is inside a
  // step: `live` is `run` as that actor may see it.
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

// Builds this node's devices of the job: the same program on every node, run for local devices.
Status start_job(NodeState& st, caf::actor_system& sys, const std::string& text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const std::exception& e) {
    return make_error(Errc::kInvalidArgument, "malformed job: {}", e.what());
  }
  MP_ASSIGN_OR_RETURN(planner::Plan plan, planner::plan_from_json(j.at("plan").get<std::string>()));
  MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec,
                      graph::models::find_model(j.at("model").get<std::string>()));
  const Json& o = j.at("optimizer");
  graph::OptimizerConfig opt;
  opt.kind = o.at("kind") == "sgd" ? graph::OptimizerConfig::Kind::kSgd
                                   : graph::OptimizerConfig::Kind::kAdam;
  opt.lr = o.at("lr").get<float>();
  opt.momentum = o.at("momentum").get<float>();
  opt.beta1 = o.at("beta1").get<float>();
  opt.beta2 = o.at("beta2").get<float>();
  opt.eps = o.at("eps").get<float>();
  opt.weight_decay = o.at("weight_decay").get<float>();
  const uint64_t seed = j.at("seed").get<uint64_t>();
  if (plan.cluster.devices_per_host != st.options.devices) {
    return make_error(Errc::kInvalidArgument,
                      "the plan puts {} devices on each host, this node "
                      "runs {}",
                      plan.cluster.devices_per_host, st.options.devices);
  }
  MP_ASSIGN_OR_RETURN(auto g, runtime::zoo_training_graph(spec, plan.micro_batch, opt));
  MP_ASSIGN_OR_RETURN(auto whole, runtime::zoo_training_graph(spec, plan.global_batch, opt));
  st.graph.emplace(std::move(g));
  st.whole.emplace(std::move(whole));
  MP_ASSIGN_OR_RETURN(runtime::Program program, runtime::lower(plan, st.graph->graph));
  auto share = std::make_shared<runtime::ProcessShare>();
  for (int32_t d = st.id * st.options.devices; d < (st.id + 1) * st.options.devices; ++d) {
    if (program.device(d) != nullptr) share->local_devices.push_back(d);
  }
  share->store = std::make_shared<CoordinatorStore>(sys, st.coordinator);
  share->host = st.options.bind;
  const auto timeout = std::chrono::milliseconds(j.at("timeout_ms").get<int64_t>());
  caf::actor coordinator = st.coordinator;
  share->exchange =
      [&sys, coordinator, timeout](
          const std::map<int32_t, std::string>& mine) -> Expected<std::map<int32_t, std::string>> {
    Json m = Json::object();
    for (const auto& [d, a] : mine) m[std::to_string(d)] = to_hex(a);
    caf::scoped_actor self{sys};
    std::optional<Status> failure;
    std::string all;
    self->request(coordinator, timeout, addr_atom::value, m.dump())
        .receive([&](const std::string& v) { all = v; },
                 [&](caf::error& e) { failure = from_caf(sys, e); });
    if (failure) return failure->with_context("exchanging UCX addresses");
    std::map<int32_t, std::string> out;
    const Json parsed = Json::parse(all);
    for (auto it = parsed.begin(); it != parsed.end(); ++it) {
      out[std::stoi(it.key())] = from_hex(it.value().get<std::string>());
    }
    return out;
  };
  runtime::InProcessRunOptions ro;
  ro.collectives = "gloo";
  ro.transport = "ucx";
  ro.timeout = timeout;
  ro.share = share;
  st.inputs = program.inputs;
  st.micro_batches = program.micro_batches;
  st.fingerprint = runtime::program_fingerprint(program);
  MP_ASSIGN_OR_RETURN(st.run,
                      runtime::InProcessRun::create(std::move(program), st.graph->graph, ro));
  st.set_live(st.run.get());
  MP_RETURN_IF_ERROR(st.run->initialize(seed));
  const std::string load = j.value("load", "");
  if (!load.empty()) {
    auto loaded = runtime::load_checkpoint(*st.run, st.graph->graph, load);
    if (!loaded.has_value()) {
      return loaded.status().with_context(
          "loading the checkpoint (with several nodes it must be readable on every node)");
    }
  }
  MP_ASSIGN_OR_RETURN(auto data,
                      runtime::SyntheticData::create(st.whole->graph, st.whole->inputs, seed));
  st.data.emplace(std::move(data));
  fmt::print("node {}: job started, devices {}\n", st.id, fmt::join(share->local_devices, ","));
  std::fflush(stdout);
  return Status::ok();
}

Expected<std::string> run_step(NodeState& st, int64_t step) {
  if (!st.run) return make_error(Errc::kInvalidArgument, "step {} before the job started", step);
  st.data->seek(step - 1);
  MP_ASSIGN_OR_RETURN(auto mbs, runtime::split_micro_batches(st.whole->graph, st.data->next_batch(),
                                                             st.inputs, st.micro_batches));
  MP_ASSIGN_OR_RETURN(runtime::RunStepResult r, st.run->step(mbs));
  Json j;
  j["losses"] = r.losses;
  j["seconds"] = r.seconds;
  Json peaks = Json::object();
  for (int32_t d : st.run->devices()) peaks[std::to_string(d)] = r.peak_bytes[size_t(d)];
  j["peaks"] = peaks;
  return j.dump();
}

// Writes this node's tiles of a checkpoint into `partial` (created by the driver) and lists them.
Expected<std::string> save_tiles(NodeState& st, const std::string& partial) {
  if (!st.run) return make_error(Errc::kInvalidArgument, "a checkpoint before the job started");
  auto tiles = runtime::write_checkpoint_tiles(*st.run, st.graph->graph, partial);
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
        return Json{{"program", fmt::format("{:016x}", st->fingerprint)}}.dump();
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
  st->run.reset();
  return st->result;
}

}  // namespace meshpipe::actors

// The driver's side of a multi-process job: the Coordinator façade over the coordinator actor
// and its gate (see cluster.h), and the cluster the nodes form.
#include "actors/cluster.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/internal/coordinator.h"
#include "actors/internal/gate.h"
#include "actors/internal/limits.h"
#include "actors/internal/messages.h"
#include "actors/internal/protocol.h"
#include "actors/secret.h"
#include "core/json.h"
#include "planner/plan.h"

namespace meshpipe::actors {

using namespace internal;  // NOLINT: the protocol's atoms

const char* meshpipe_version() { return MP_BUILD_VERSION; }

Status CoordinatorOptions::validate() const {
  if (nodes < 1) return make_error(Errc::kInvalidArgument, "--nodes must be >= 1");
  if (join_timeout.count() <= 0 || step_timeout.count() <= 0 || heartbeat.count() <= 0 ||
      liveness.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "timeouts must be positive");
  }
  if (secret.size() < kMinSecretBytes) {
    return make_error(Errc::kInvalidArgument,
                      "the coordinator needs a secret of at least {} bytes (actors/secret.h)",
                      kMinSecretBytes);
  }
  return Status::ok();
}

struct Coordinator::Impl {
  CoordinatorOptions options;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  coordinator_actor actor;
  std::unique_ptr<GateServer> gate;
  bool shut = false;
  ~Impl() {
    if (actor) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    actor = coordinator_actor();
    // CAF first: its connections close, and the gate passes what is still in flight on to the
    // nodes before it closes its own.
    sys.reset();
    gate.reset();
  }
  Expected<std::string> ask(const caf::message& msg, std::chrono::milliseconds timeout) {
    return ask_text(*sys, caf::actor_cast<caf::actor>(actor), timeout, msg);
  }
  void end(bool failed, const std::string& reason) {
    if (shut) return;  // the nodes heard the first word on how the job ended
    shut = true;
    auto done =
        internal::ask<done_atom>(*sys, caf::actor_cast<caf::actor>(actor), std::chrono::seconds(5),
                                 caf::make_message(shutdown_atom::value, failed, reason));
    (void)done;  // the coordinator answers at once; a stopped one has no nodes to tell
  }
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Coordinator::~Coordinator() {
  if (!impl_->shut) impl_->end(/*failed=*/true, "the driver stopped before the job ended");
  // The nodes exit once told; their connections closing is the sign they were.
  impl_->gate->wait_idle(std::chrono::seconds(3));
}

Expected<std::unique_ptr<Coordinator>> Coordinator::listen(const CoordinatorOptions& options) {
  MP_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  configure(impl->cfg, /*scheduler_threads=*/2, /*network=*/true);
  impl->sys = std::make_unique<caf::actor_system>(impl->cfg);
  auto st = std::make_shared<CoordinatorState>();
  st->expected = options.nodes;
  st->step_timeout = options.step_timeout;
  st->heartbeat = options.heartbeat;
  st->liveness = options.liveness;
  impl->actor = impl->sys->spawn(coordinator, st);
  // CAF on loopback only, on any free port: the gate is the only way in from the network.
  auto caf_port = impl->sys->middleman().publish(impl->actor, 0, "127.0.0.1", true);
  if (!caf_port) {
    return make_error(Errc::kIo, "cannot publish the coordinator on loopback: {}",
                      impl->sys->render(caf_port.error()));
  }
  GateServerOptions gate;
  gate.bind = options.bind;
  gate.port = options.port;
  gate.secret = options.secret;
  gate.target_port = *caf_port;
  gate.max_relays = static_cast<size_t>(options.nodes) + 16;  // the nodes, and some slack
  auto server = GateServer::start(gate);
  if (!server.has_value()) return server.status();
  impl->gate = std::move(*server);
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

uint16_t Coordinator::port() const { return impl_->gate->port(); }

int64_t Coordinator::refused_connections() const { return impl_->gate->refused(); }

Expected<std::vector<NodeReport>> Coordinator::wait_for_nodes() {
  auto text = impl_->ask(caf::make_message(nodes_atom::value), impl_->options.join_timeout);
  if (!text.has_value()) {
    return make_error(Errc::kTimeout, "{} nodes did not join within {} ms ({})",
                      impl_->options.nodes, impl_->options.join_timeout.count(),
                      text.status().message());
  }
  MP_ASSIGN_OR_RETURN(const Json list, parse_json(*text, "the node list"));
  std::vector<NodeReport> nodes;
  if (!list.is_array()) return make_error(Errc::kInternal, "the node list is not an array");
  for (size_t k = 0; k < list.size(); ++k) {
    JsonReader r(list[k], fmt::format("[{}]", k), "node list field");
    NodeReport n;
    MP_RETURN_IF_ERROR(r.read("id", &n.id));
    MP_RETURN_IF_ERROR(r.read("host", &n.host));
    MP_RETURN_IF_ERROR(r.read("pid", &n.pid));
    MP_RETURN_IF_ERROR(r.read("devices", &n.devices));
    MP_RETURN_IF_ERROR(r.read("memory", &n.memory_bytes));
    MP_ASSIGN_OR_RETURN(n.gpus, internal::read_gpus(r));
    nodes.push_back(std::move(n));
  }
  return nodes;
}

Status Coordinator::start(const ClusterJob& job) {
  if (job.collectives == runtime::CollectiveBackend::kInProcess) {
    return make_error(
        Errc::kInvalidArgument,
        "in-process collectives cannot reach across nodes: use UCX or Gloo (NCCL on GPUs)");
  }
  if (job.collectives == runtime::CollectiveBackend::kNccl) {
    // A GPU job runs each node's devices on its GPUs: every node must have one per device.
    MP_ASSIGN_OR_RETURN(const std::vector<NodeReport> nodes, wait_for_nodes());
    for (const NodeReport& n : nodes) {
      if (static_cast<int64_t>(n.gpus.size()) < n.devices) {
        return make_error(Errc::kUnavailable,
                          "a GPU job (--device cuda) runs every device of a node on a GPU of "
                          "its own: {} runs {} devices and reports {} GPU(s); start it with "
                          "--devices {} or train on CPU devices",
                          node_name(n), n.devices, n.gpus.size(), n.gpus.size());
      }
    }
  }
  JobMessage msg;
  msg.spec = job.spec;
  msg.plan = job.plan;
  msg.timeout = job.timeout;
  msg.load_dir = job.load_dir;
  msg.time_kernels = job.time_kernels;
  msg.collectives = job.collectives;
  MP_ASSIGN_OR_RETURN(std::string text,
                      impl_->ask(caf::make_message(job_atom::value, job_message_to_json(msg)),
                                 impl_->options.step_timeout * 6));
  // Every node lowered the plan itself: they must have built the same program.
  MP_ASSIGN_OR_RETURN(const Json replies, parse_json(text, "the nodes' replies"));
  std::vector<JobInfo> infos;
  for (size_t k = 0; k < replies.size(); ++k) {
    MP_ASSIGN_OR_RETURN(JobInfo info, job_info_from_json(replies[k], fmt::format("[{}]", k)));
    infos.push_back(std::move(info));
  }
  for (size_t k = 1; k < infos.size(); ++k) {
    if (infos[k].program != infos[0].program) {
      return make_error(Errc::kInternal,
                        "node {} lowered another program than node 0 (fingerprint {} vs {}): "
                        "every node must run the same meshpipe build",
                        k, infos[k].program, infos[0].program);
    }
  }
  return Status::ok();
}

Expected<train::StepOutcome> Coordinator::run_step(int64_t step) {
  MP_ASSIGN_OR_RETURN(std::string text,
                      impl_->ask(caf::make_message(step_atom::value, step),
                                 impl_->options.step_timeout + std::chrono::seconds(5)));
  return merge_step_reports(text);
}

Expected<double> Coordinator::validate(int64_t index) {
  MP_ASSIGN_OR_RETURN(const train::StepOutcome o, run_step(-index - 1));
  return o.loss;
}

Status Coordinator::save_checkpoint(const std::string& dir, const runtime::CheckpointInfo& info) {
  // Every node writes its own tiles into the partial directory; the driver lists them all.
  return runtime::save_checkpoint_with(
      dir, info, [&](const std::string& partial) -> Expected<std::vector<runtime::SavedTile>> {
        MP_ASSIGN_OR_RETURN(std::string text,
                            impl_->ask(caf::make_message(save_atom::value, partial, info.step),
                                       impl_->options.step_timeout + std::chrono::seconds(5)));
        MP_ASSIGN_OR_RETURN(const Json replies, parse_json(text, "the nodes' tile lists"));
        std::vector<runtime::SavedTile> tiles;
        for (const Json& node : replies) {
          MP_ASSIGN_OR_RETURN(std::vector<runtime::SavedTile> mine,
                              runtime::saved_tiles_from_json(node.dump()));
          tiles.insert(tiles.end(), mine.begin(), mine.end());
        }
        return tiles;
      });
}

void Coordinator::shutdown(const std::string& reason) { impl_->end(/*failed=*/false, reason); }

void Coordinator::fail(const Status& why) {
  // An interrupted driver (kCancelled) stopped the job; anything else is a failure.
  impl_->end(/*failed=*/true,
             (why.code() == Errc::kCancelled ? "the job was stopped: " : "the job failed: ") +
                 why.message());
}

Expected<mesh::ClusterSpec> cluster_from_nodes(const std::vector<NodeReport>& nodes,
                                               const mesh::ClusterSpec& base) {
  if (nodes.empty()) return make_error(Errc::kInvalidArgument, "no nodes");
  mesh::ClusterSpec c = base;
  c.hosts = static_cast<int32_t>(nodes.size());
  c.devices_per_host = nodes[0].devices;
  int64_t memory = nodes[0].memory_bytes;
  for (const NodeReport& n : nodes) {
    if (n.devices != c.devices_per_host) {
      return make_error(Errc::kInvalidArgument,
                        "{} runs {} devices, node 0 runs {}: every node needs the same count",
                        node_name(n), n.devices, c.devices_per_host);
    }
    memory = std::min(memory, n.memory_bytes);
  }
  c.device.memory = Bytes(memory);
  c.name = fmt::format("nodes:{}x{}", c.hosts, c.devices_per_host);
  MP_RETURN_IF_ERROR(c.validate().with_context("cluster formed by the nodes"));
  return c;
}

}  // namespace meshpipe::actors

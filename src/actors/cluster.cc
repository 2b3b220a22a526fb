// Coordinator and node actors of a multi-process job (see cluster.h).
#include "actors/cluster.h"

#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <mutex>
#include <optional>

#include "actors/internal/messages.h"
#include "actors/internal/protocol.h"
#include "core/json.h"
#include "planner/plan.h"

namespace meshpipe::actors {

namespace {

using namespace internal;  // NOLINT: the protocol's atoms

std::string node_name(const NodeReport& n) {
  return fmt::format("node {} ({} pid {})", n.id, n.host, n.pid);
}

// A node's registration report (JSON text); a node of another meshpipe release is refused.
Expected<NodeReport> parse_node_report(const std::string& text) {
  MP_ASSIGN_OR_RETURN(const Json j, parse_json(text, "the node report"));
  if (!j.is_object()) return make_error(Errc::kInvalidArgument, "bad node report: not an object");
  JsonReader r(j, "", "node report field");
  std::string version = "unknown";
  MP_RETURN_IF_ERROR(r.read_optional("version", &version));
  if (version != meshpipe_version()) {
    return make_error(Errc::kInvalidArgument,
                      "the coordinator runs meshpipe {}, this node {}: run the same meshpipe "
                      "version on every node",
                      meshpipe_version(), version);
  }
  NodeReport n;
  MP_RETURN_IF_ERROR(r.read("host", &n.host));
  MP_RETURN_IF_ERROR(r.read("pid", &n.pid));
  MP_RETURN_IF_ERROR(r.read("devices", &n.devices));
  MP_RETURN_IF_ERROR(r.read("memory", &n.memory_bytes));
  return n;
}

// ---------------------------------------------------------------- coordinator actor

struct CoordinatorState {
  int32_t expected = 1;
  std::chrono::milliseconds step_timeout{60000};
  std::vector<NodeReport> nodes;
  std::vector<node_actor> handles;
  std::vector<heartbeat_actor> heartbeats;
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds liveness{5000};
  std::vector<caf::typed_response_promise<std::string>> waiting_for_nodes;
  std::map<std::string, std::string> store;
  std::map<std::string, std::vector<caf::typed_response_promise<std::string>>> waiting_gets;
  Json addresses = Json::object();
  int32_t published = 0;
  std::vector<caf::typed_response_promise<std::string>> waiting_addresses;
  std::optional<caf::typed_response_promise<std::string>> driver;  // the job or step in flight
  std::string doing;                                               // what it is, for errors
  std::string failed;                                              // why the job stopped
};

std::string nodes_json(const CoordinatorState& st) {
  Json j = Json::array();
  for (const NodeReport& n : st.nodes) {
    j.push_back({{"id", n.id},
                 {"host", n.host},
                 {"pid", n.pid},
                 {"devices", n.devices},
                 {"memory", n.memory_bytes}});
  }
  return j.dump();
}

// Tells every node to abort the step its devices are running (through its heartbeat actor,
// which answers even while the node is inside a step), so the nodes that survive a failure stop
// waiting for the one that failed instead of waiting out their transfer timeouts.
void abort_nodes(const CoordinatorState& st, const std::string& why) {
  for (const heartbeat_actor& h : st.heartbeats) caf::anon_send(h, abort_atom::value, why);
}

// Sends `xs...` to every node and answers the driver once all replied: with the merged replies,
// or the first error naming the node.
template <class... Ts>
void fan_out(coordinator_actor::pointer self, std::shared_ptr<CoordinatorState> st,
             caf::typed_response_promise<std::string> rp, std::chrono::milliseconds timeout,
             std::string doing, Ts... xs) {
  st->driver = rp;
  st->doing = doing;
  auto replies = std::make_shared<std::vector<std::string>>(st->handles.size());
  auto pending = std::make_shared<size_t>(st->handles.size());
  for (size_t k = 0; k < st->handles.size(); ++k) {
    const NodeReport node = st->nodes[k];
    self->request(st->handles[k], timeout, xs...)
        .then(
            [=](const std::string& reply) {
              (*replies)[k] = reply;
              if (--*pending == 0 && st->driver) {
                Json all = Json::array();
                for (size_t i = 0; i < replies->size(); ++i) {
                  auto one = parse_json((*replies)[i], "a node's reply");
                  if (!one.has_value()) {
                    st->driver->deliver(to_caf(one.status().with_context(node_name(st->nodes[i]))));
                    st->driver.reset();
                    return;
                  }
                  all.push_back(std::move(*one));
                }
                st->driver->deliver(all.dump());
                st->driver.reset();
              }
            },
            [=](caf::error& e) {
              if (!st->driver) return;
              std::string why;
              if (e.category() == error_category() && e.context().match_elements<std::string>()) {
                why = e.context().get_as<std::string>(0);
              } else if (e == caf::sec::request_timeout) {
                why = fmt::format("no answer within {} ms", timeout.count());
              } else {
                why = self->system().render(e);
              }
              st->failed = fmt::format("{} failed during {}: {}", node_name(node), doing, why);
              st->driver->deliver(to_caf(
                  make_error(e == caf::sec::request_timeout ? Errc::kTimeout : Errc::kInternal,
                             "{}", st->failed)));
              st->driver.reset();
              abort_nodes(*st, st->failed);
            });
  }
}

coordinator_actor::behavior_type coordinator(coordinator_actor::pointer self,
                                             std::shared_ptr<CoordinatorState> st) {
  self->set_down_handler([self, st](caf::down_msg& dm) {
    for (size_t k = 0; k < st->handles.size(); ++k) {
      if (st->handles[k].address() != dm.source) continue;
      st->failed = fmt::format(
          "{} disconnected{}", node_name(st->nodes[k]),
          st->driver ? " during " + st->doing : (st->doing.empty() ? "" : " after " + st->doing));
      if (st->driver) {
        st->driver->deliver(to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        st->driver.reset();
      }
      abort_nodes(*st, st->failed);
    }
    (void)self;
  });
  return {
      [self, st](tick_atom) {
        for (size_t k = 0; k < st->heartbeats.size(); ++k) {
          const NodeReport node = st->nodes[k];
          self->request(st->heartbeats[k], st->liveness, ping_atom::value)
              .then([](pong_atom) {},
                    [self, st, node](caf::error&) {
                      if (!st->failed.empty()) return;
                      st->failed = fmt::format(
                          "{} stopped answering (no heartbeat for {} ms){}", node_name(node),
                          st->liveness.count(),
                          st->driver ? " during " + st->doing
                                     : (st->doing.empty() ? "" : " after " + st->doing));
                      if (st->driver) {
                        st->driver->deliver(to_caf(make_error(Errc::kTimeout, "{}", st->failed)));
                        st->driver.reset();
                      }
                      abort_nodes(*st, st->failed);
                    });
        }
        if (st->failed.empty()) self->delayed_send(self, st->heartbeat, tick_atom::value);
      },
      [self, st](register_atom, const std::string& protocol, const std::string& info,
                 const heartbeat_actor& heartbeat) -> caf::result<int32_t, int32_t> {
        if (protocol != kClusterProtocol) {
          return to_caf(make_error(Errc::kInvalidArgument,
                                   "the coordinator speaks {}, this node {}: run the same "
                                   "meshpipe version on every node",
                                   kClusterProtocol, protocol));
        }
        if (static_cast<int32_t>(st->nodes.size()) >= st->expected) {
          return to_caf(
              make_error(Errc::kOutOfRange, "the job already has its {} nodes", st->expected));
        }
        auto report = parse_node_report(info);
        if (!report.has_value()) return to_caf(report.status());
        NodeReport n = std::move(*report);
        n.id = static_cast<int32_t>(st->nodes.size());
        auto handle = caf::actor_cast<node_actor>(self->current_sender());
        self->monitor(handle);
        st->nodes.push_back(n);
        st->handles.push_back(handle);
        st->heartbeats.push_back(heartbeat);
        if (st->heartbeats.size() == 1) self->delayed_send(self, st->heartbeat, tick_atom::value);
        if (static_cast<int32_t>(st->nodes.size()) == st->expected) {
          for (auto& rp : st->waiting_for_nodes) rp.deliver(nodes_json(*st));
          st->waiting_for_nodes.clear();
        }
        return {n.id, st->expected};
      },
      [self, st](nodes_atom) {
        auto rp = self->make_response_promise<std::string>();
        if (static_cast<int32_t>(st->nodes.size()) == st->expected) {
          rp.deliver(nodes_json(*st));
        } else {
          st->waiting_for_nodes.push_back(rp);
        }
        return rp;
      },
      [self, st](job_atom, const std::string& job) {
        auto rp = self->make_response_promise<std::string>();
        if (!st->failed.empty()) {
          rp.deliver(to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        } else {
          fan_out(self, st, rp, st->step_timeout * 5, "job start", job_atom::value, job);
        }
        return rp;
      },
      [self, st](step_atom, int64_t step) {
        auto rp = self->make_response_promise<std::string>();
        if (!st->failed.empty()) {
          rp.deliver(to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        } else {
          fan_out(self, st, rp, st->step_timeout, fmt::format("step {}", step), step_atom::value,
                  step);
        }
        return rp;
      },
      [self, st](save_atom, const std::string& partial, int64_t step) {
        auto rp = self->make_response_promise<std::string>();
        if (!st->failed.empty()) {
          rp.deliver(to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        } else {
          fan_out(self, st, rp, st->step_timeout, fmt::format("the checkpoint after step {}", step),
                  save_atom::value, partial);
        }
        return rp;
      },
      [st](shutdown_atom, const std::string& reason) {
        for (const node_actor& h : st->handles) caf::anon_send(h, shutdown_atom::value, reason);
      },
      [st](set_atom, const std::string& key, const std::string& value) {
        st->store[key] = value;
        auto it = st->waiting_gets.find(key);
        if (it == st->waiting_gets.end()) return;
        for (auto& rp : it->second) rp.deliver(value);
        st->waiting_gets.erase(it);
      },
      [self, st](get_atom, const std::string& key) {
        auto rp = self->make_response_promise<std::string>();
        auto it = st->store.find(key);
        if (it != st->store.end()) {
          rp.deliver(it->second);
        } else {
          st->waiting_gets[key].push_back(rp);
        }
        return rp;
      },
      [self, st](addr_atom, const std::string& mine) {
        auto rp = self->make_response_promise<std::string>();
        auto parsed = parse_json(mine, "the address list");
        if (!parsed.has_value() || !parsed->is_object()) {
          rp.deliver(to_caf(make_error(Errc::kInvalidArgument, "malformed address list")));
          return rp;
        }
        st->addresses.update(*parsed);
        st->waiting_addresses.push_back(rp);
        if (++st->published == st->expected) {
          const std::string all = st->addresses.dump();
          for (auto& waiting : st->waiting_addresses) waiting.deliver(all);
          st->waiting_addresses.clear();
          st->published = 0;
          st->addresses = Json::object();
        }
        return rp;
      },
  };
}

}  // namespace

const char* meshpipe_version() { return MP_BUILD_VERSION; }

Status CoordinatorOptions::validate() const {
  if (nodes < 1) return make_error(Errc::kInvalidArgument, "--nodes must be >= 1");
  if (join_timeout.count() <= 0 || step_timeout.count() <= 0 || heartbeat.count() <= 0 ||
      liveness.count() <= 0) {
    return make_error(Errc::kInvalidArgument, "timeouts must be positive");
  }
  return Status::ok();
}

struct Coordinator::Impl {
  CoordinatorOptions options;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  coordinator_actor actor;
  uint16_t port = 0;
  bool shut = false;
  ~Impl() {
    if (actor) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    actor = coordinator_actor();
    sys.reset();
  }
  Expected<std::string> ask(const caf::message& msg, std::chrono::milliseconds timeout) {
    return ask_text(*sys, caf::actor_cast<caf::actor>(actor), timeout, msg);
  }
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() {
  if (!impl_->shut) shutdown("the driver finished");
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
  auto port = impl->sys->middleman().publish(impl->actor, options.port, options.bind.c_str(), true);
  if (!port) {
    return make_error(Errc::kIo, "cannot listen on {}:{}: {}", options.bind, options.port,
                      impl->sys->render(port.error()));
  }
  impl->port = *port;
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

uint16_t Coordinator::port() const { return impl_->port; }

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
    nodes.push_back(std::move(n));
  }
  return nodes;
}

Status Coordinator::start(const ClusterJob& job) {
  JobMessage msg;
  msg.spec = job.spec;
  msg.plan = job.plan;
  msg.timeout = job.timeout;
  msg.load_dir = job.load_dir;
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

void Coordinator::shutdown(const std::string& reason) {
  impl_->shut = true;
  caf::anon_send(impl_->actor, shutdown_atom::value, reason);
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

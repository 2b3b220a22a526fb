// The coordinator actor of a multi-process job (actors/internal/coordinator.h).
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/internal/coordinator.h"
#include "actors/internal/limits.h"
#include "mesh/cluster.h"

namespace meshpipe::actors::internal {

std::string node_name(const NodeReport& n) {
  return fmt::format("node {} ({} pid {})", n.id, n.host, n.pid);
}

Json gpus_to_json(const std::vector<kernels::GpuInfo>& gpus) {
  Json list = Json::array();
  for (const kernels::GpuInfo& g : gpus) {
    if (list.size() >= kMaxNodeGpus) break;
    list.push_back({{"name", g.name.substr(0, kMaxNameBytes)},
                    {"memory", g.memory_bytes},
                    {"major", g.major},
                    {"minor", g.minor}});
  }
  return list;
}

// The optional "gpus" list of a node report or of the node list: at most kMaxNodeGpus entries,
// each a name of 1-kMaxNameBytes bytes, a positive memory and a compute capability 1-99.
Expected<std::vector<kernels::GpuInfo>> read_gpus(JsonReader& r) {
  std::vector<kernels::GpuInfo> gpus;
  const Json* list = r.find_optional("gpus");
  if (list == nullptr) return gpus;
  if (!list->is_array()) return r.error("gpus", "must be an array");
  if (list->size() > kMaxNodeGpus) {
    return r.error("gpus", fmt::format("lists {} GPUs, at most {}", list->size(), kMaxNodeGpus));
  }
  for (size_t k = 0; k < list->size(); ++k) {
    JsonReader g((*list)[k], r.path_of("gpus") + fmt::format("[{}]", k), "node report field");
    kernels::GpuInfo info;
    MP_RETURN_IF_ERROR(g.read("name", &info.name));
    MP_RETURN_IF_ERROR(g.read("memory", &info.memory_bytes));
    MP_RETURN_IF_ERROR(g.read("major", &info.major));
    MP_RETURN_IF_ERROR(g.read("minor", &info.minor));
    MP_RETURN_IF_ERROR(g.check_no_unknown_fields());
    if (info.name.empty() || info.name.size() > kMaxNameBytes) {
      return g.error("name", fmt::format("must be 1 to {} bytes", kMaxNameBytes));
    }
    if (info.memory_bytes <= 0) return g.error("memory", "must be positive");
    if (info.major < 1 || info.major > 99 || info.minor < 0 || info.minor > 99) {
      return g.error("major", "compute capability must be 1.0 to 99.99");
    }
    gpus.push_back(std::move(info));
  }
  return gpus;
}

namespace {

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
                      meshpipe_version(), version.substr(0, kMaxNameBytes));
  }
  NodeReport n;
  MP_RETURN_IF_ERROR(r.read("host", &n.host));
  MP_RETURN_IF_ERROR(r.read("pid", &n.pid));
  MP_RETURN_IF_ERROR(r.read("devices", &n.devices));
  MP_RETURN_IF_ERROR(r.read("memory", &n.memory_bytes));
  MP_RETURN_IF_ERROR(check_size("the node's host name", n.host.size(), kMaxNameBytes));
  if (n.devices < 1 || n.devices > mesh::kMaxClusterDevices) {
    return make_error(Errc::kOutOfRange, "a node runs 1 to {} devices, this one reports {}",
                      mesh::kMaxClusterDevices, n.devices);
  }
  if (n.memory_bytes <= 0) {
    return make_error(Errc::kInvalidArgument, "a node's device memory must be positive, not {}",
                      n.memory_bytes);
  }
  MP_ASSIGN_OR_RETURN(n.gpus, read_gpus(r));
  return n;
}

std::string nodes_json(const CoordinatorState& st) {
  Json j = Json::array();
  for (const NodeReport& n : st.nodes) {
    j.push_back({{"id", n.id},
                 {"host", n.host},
                 {"pid", n.pid},
                 {"devices", n.devices},
                 {"memory", n.memory_bytes},
                 {"gpus", gpus_to_json(n.gpus)}});
  }
  return j.dump();
}

// Whether the message being handled comes from an actor of the driver's own actor system (the
// Coordinator façade's requests), not from a peer across the network.
bool from_driver(coordinator_actor::pointer self) {
  const caf::strong_actor_ptr& sender = self->current_sender();
  return sender != nullptr && sender->node() == self->node();
}

// The index of the registered node whose process sent the message being handled, or -1.
int registered_sender(coordinator_actor::pointer self, const CoordinatorState& st) {
  const caf::strong_actor_ptr& sender = self->current_sender();
  if (sender == nullptr) return -1;
  for (size_t k = 0; k < st.handles.size(); ++k) {
    if (st.handles[k].node() == sender->node()) return static_cast<int>(k);
  }
  return -1;
}

caf::error only_driver(const char* what) {
  return to_caf(make_error(Errc::kInvalidArgument,
                           "only the driver may {}: refused a request from another process", what));
}

caf::error only_nodes(const char* what) {
  return to_caf(
      make_error(Errc::kInvalidArgument, "only a registered node may {}: register first", what));
}

// Tells every node to abort the step its devices are running (through its heartbeat actor,
// which answers even while the node is inside a step), so the nodes that survive a failure stop
// waiting for the one that failed instead of waiting out their transfer timeouts.
void abort_nodes(const CoordinatorState& st, const std::string& why) {
  for (const heartbeat_actor& h : st.heartbeats) caf::anon_send(h, abort_atom::value, why);
}

// Sends `xs...` to every node and answers the driver once all replied: with the merged replies
// (each at most `reply_limit` bytes of JSON), or the first error naming the node.
template <class... Ts>
void fan_out(coordinator_actor::pointer self, std::shared_ptr<CoordinatorState> st,
             caf::typed_response_promise<std::string> rp, std::chrono::milliseconds timeout,
             std::string doing, size_t reply_limit, Ts... xs) {
  st->driver = rp;
  st->doing = doing;
  auto replies = std::make_shared<std::vector<std::string>>(st->handles.size());
  auto pending = std::make_shared<size_t>(st->handles.size());
  for (size_t k = 0; k < st->handles.size(); ++k) {
    const NodeReport node = st->nodes[k];
    self->request(st->handles[k], timeout, xs...)
        .then(
            [=](std::string& reply) {
              (*replies)[k] = std::move(reply);
              if (--*pending != 0 || !st->driver) return;
              Json all = Json::array();
              for (size_t i = 0; i < replies->size(); ++i) {
                Status fits = check_size(fmt::format("the reply to {}", doing),
                                         (*replies)[i].size(), reply_limit);
                auto one = fits.is_ok() ? parse_json((*replies)[i], "a node's reply")
                                        : Expected<Json>(fits);
                if (!one.has_value()) {
                  st->driver->deliver(to_caf(one.status().with_context(node_name(st->nodes[i]))));
                  st->driver.reset();
                  return;
                }
                all.push_back(std::move(*one));
              }
              st->driver->deliver(all.dump());
              st->driver.reset();
            },
            [=](caf::error& e) {
              if (!st->driver) return;
              std::string why;
              if (e.category() == error_category() && e.context().match_elements<std::string>()) {
                why = e.context().get_as<std::string>(0).substr(0, kMaxReasonBytes);
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

// A promise answered at once with an error.
caf::typed_response_promise<std::string> refused(coordinator_actor::pointer self, caf::error e) {
  auto rp = self->make_response_promise<std::string>();
  rp.deliver(std::move(e));
  return rp;
}

// Ends the job with `why` when a node went (disconnected or silent).
void node_lost(CoordinatorState& st, const std::string& what, Errc code) {
  st.failed = fmt::format(
      "{}{}", what,
      st.driver ? " during " + st.doing : (st.doing.empty() ? "" : " after " + st.doing));
  if (st.driver) {
    st.driver->deliver(to_caf(Status(code, st.failed)));
    st.driver.reset();
  }
  abort_nodes(st, st.failed);
}

Status check_registration(coordinator_actor::pointer self, const CoordinatorState& st,
                          const std::string& protocol, const std::string& info,
                          const heartbeat_actor& heartbeat) {
  const caf::strong_actor_ptr& sender = self->current_sender();
  if (sender == nullptr) {
    return make_error(Errc::kInvalidArgument, "an anonymous registration is refused");
  }
  MP_RETURN_IF_ERROR(check_size("the protocol name", protocol.size(), kMaxNameBytes));
  if (protocol != kClusterProtocol) {
    return make_error(Errc::kInvalidArgument,
                      "the coordinator speaks {}, this node {}: run the same meshpipe version "
                      "on every node",
                      kClusterProtocol, protocol);
  }
  MP_RETURN_IF_ERROR(check_size("the node report", info.size(), kMaxReportBytes));
  for (size_t k = 0; k < st.handles.size(); ++k) {
    if (st.handles[k].node() == sender->node()) {
      return make_error(Errc::kInvalidArgument,
                        "this process registered already, as {}: a node registers once",
                        node_name(st.nodes[k]));
    }
  }
  if (!heartbeat || heartbeat.node() != sender->node()) {
    return make_error(Errc::kInvalidArgument,
                      "the heartbeat handle of a registration must be the registering node's");
  }
  if (static_cast<int32_t>(st.nodes.size()) >= st.expected) {
    return make_error(Errc::kOutOfRange,
                      "the job already has its {} nodes (--nodes {}): this node is one too many",
                      st.expected, st.expected);
  }
  if (!st.failed.empty() || st.started || st.ended) {
    return make_error(Errc::kInvalidArgument, "the job has {}: no node joins now",
                      st.failed.empty() ? "started" : "failed");
  }
  return Status::ok();
}

}  // namespace

coordinator_actor::behavior_type coordinator(coordinator_actor::pointer self,
                                             std::shared_ptr<CoordinatorState> st) {
  self->set_down_handler([st](caf::down_msg& dm) {
    for (size_t k = 0; k < st->handles.size(); ++k) {
      if (st->handles[k].address() != dm.source) continue;
      node_lost(*st, fmt::format("{} disconnected", node_name(st->nodes[k])), Errc::kUnavailable);
    }
  });
  return {
      [self, st](tick_atom) {
        for (size_t k = 0; k < st->heartbeats.size(); ++k) {
          const NodeReport node = st->nodes[k];
          self->request(st->heartbeats[k], st->liveness, ping_atom::value)
              .then([](pong_atom) {},
                    [st, node](caf::error&) {
                      if (!st->failed.empty()) return;
                      node_lost(*st,
                                fmt::format("{} stopped answering (no heartbeat for {} ms)",
                                            node_name(node), st->liveness.count()),
                                Errc::kTimeout);
                    });
        }
        if (st->failed.empty()) self->delayed_send(self, st->heartbeat, tick_atom::value);
      },
      [self, st](register_atom, const std::string& protocol, const std::string& info,
                 const heartbeat_actor& heartbeat) -> caf::result<int32_t, int32_t> {
        Status ok = check_registration(self, *st, protocol, info, heartbeat);
        Expected<NodeReport> report =
            ok.is_ok() ? parse_node_report(info) : Expected<NodeReport>(ok);
        if (!report.has_value()) {
          fmt::print(stderr, "coordinator: refused a registration: {}\n",
                     report.status().message());
          std::fflush(stderr);
          return to_caf(report.status());
        }
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
        if (!from_driver(self)) return refused(self, only_driver("list the nodes"));
        auto rp = self->make_response_promise<std::string>();
        if (static_cast<int32_t>(st->nodes.size()) == st->expected) {
          rp.deliver(nodes_json(*st));
        } else {
          st->waiting_for_nodes.push_back(rp);
        }
        return rp;
      },
      [self, st](job_atom, const std::string& job) {
        if (!from_driver(self)) return refused(self, only_driver("start a job"));
        Status fits = check_size("the job (its settings and plan)", job.size(), kMaxJobBytes);
        if (!fits.is_ok()) return refused(self, to_caf(fits));
        if (!st->failed.empty()) {
          return refused(self, to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        }
        auto rp = self->make_response_promise<std::string>();
        st->started = true;
        fan_out(self, st, rp, st->step_timeout * 5, "job start", kMaxReportBytes, job_atom::value,
                job);
        return rp;
      },
      [self, st](step_atom, int64_t step) {
        if (!from_driver(self)) return refused(self, only_driver("run a step"));
        if (!st->failed.empty()) {
          return refused(self, to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        }
        auto rp = self->make_response_promise<std::string>();
        fan_out(
            self, st, rp, st->step_timeout,
            step < 0 ? fmt::format("validation batch {}", -step - 1) : fmt::format("step {}", step),
            kMaxReportBytes, step_atom::value, step);
        return rp;
      },
      [self, st](save_atom, const std::string& partial, int64_t step) {
        if (!from_driver(self)) return refused(self, only_driver("save a checkpoint"));
        Status fits = check_size("the checkpoint directory", partial.size(), kMaxPathBytes);
        if (!fits.is_ok()) return refused(self, to_caf(fits));
        if (!st->failed.empty()) {
          return refused(self, to_caf(make_error(Errc::kUnavailable, "{}", st->failed)));
        }
        auto rp = self->make_response_promise<std::string>();
        fan_out(self, st, rp, st->step_timeout, fmt::format("the checkpoint after step {}", step),
                kMaxTileListBytes, save_atom::value, partial);
        return rp;
      },
      [self, st](shutdown_atom, bool failed, const std::string& reason) -> caf::result<done_atom> {
        if (!from_driver(self)) return only_driver("end the job");
        st->ended = true;
        const std::string why = reason.substr(0, kMaxReasonBytes);
        for (const node_actor& h : st->handles)
          caf::anon_send(h, shutdown_atom::value, failed, why);
        return done_atom::value;
      },
      [self, st](set_atom, const std::string& key,
                 const std::string& value) -> caf::result<done_atom> {
        if (registered_sender(self, *st) < 0) return only_nodes("use the rendezvous store");
        Status s = check_size("a rendezvous key", key.size(), kMaxKeyBytes);
        if (s.is_ok()) s = check_size("a rendezvous value", value.size(), kMaxValueBytes);
        auto it = st->store.find(key);
        const size_t old = it == st->store.end() ? 0 : key.size() + it->second.size();
        if (s.is_ok() && it == st->store.end() && st->store.size() >= kMaxStoreEntries) {
          s = make_error(Errc::kResourceExhausted, "the rendezvous store holds {} keys, its limit",
                         kMaxStoreEntries);
        }
        if (s.is_ok() && st->store_bytes - old + key.size() + value.size() > kMaxStoreBytes) {
          s = make_error(Errc::kResourceExhausted,
                         "the rendezvous store would hold more than its limit of {}",
                         limit_text(kMaxStoreBytes));
        }
        if (!s.is_ok()) {
          // The gets waiting for this key fail now, naming the limit, instead of timing out.
          if (key.size() <= kMaxKeyBytes && st->refused_keys.size() < kMaxWaitingGets) {
            st->refused_keys[key] = s.message();
          }
          auto waiting = st->waiting_gets.find(key);
          if (waiting != st->waiting_gets.end()) {
            for (auto& rp : waiting->second) rp.deliver(to_caf(s));
            st->waiting_get_count -= waiting->second.size();
            st->waiting_gets.erase(waiting);
          }
          return to_caf(s);
        }
        st->store_bytes = st->store_bytes - old + key.size() + value.size();
        st->store[key] = value;
        auto waiting = st->waiting_gets.find(key);
        if (waiting != st->waiting_gets.end()) {
          for (auto& rp : waiting->second) rp.deliver(value);
          st->waiting_get_count -= waiting->second.size();
          st->waiting_gets.erase(waiting);
        }
        return done_atom::value;
      },
      [self, st](get_atom, const std::string& key) {
        if (registered_sender(self, *st) < 0) {
          return refused(self, only_nodes("use the rendezvous store"));
        }
        Status fits = check_size("a rendezvous key", key.size(), kMaxKeyBytes);
        if (!fits.is_ok()) return refused(self, to_caf(fits));
        auto it = st->store.find(key);
        if (it != st->store.end()) {
          auto rp = self->make_response_promise<std::string>();
          rp.deliver(it->second);
          return rp;
        }
        auto bad = st->refused_keys.find(key);
        if (bad != st->refused_keys.end()) {
          return refused(self, to_caf(make_error(Errc::kResourceExhausted, "{}", bad->second)));
        }
        if (st->waiting_get_count >= kMaxWaitingGets) {
          return refused(self, to_caf(make_error(Errc::kResourceExhausted,
                                                 "{} gets wait for rendezvous keys already, "
                                                 "the limit",
                                                 kMaxWaitingGets)));
        }
        auto rp = self->make_response_promise<std::string>();
        st->waiting_gets[key].push_back(rp);
        ++st->waiting_get_count;
        return rp;
      },
      [self, st](addr_atom, const std::string& mine) {
        const int k = registered_sender(self, *st);
        if (k < 0) return refused(self, only_nodes("exchange addresses"));
        Status fits = check_size("a node's address list", mine.size(), kMaxAddressesBytes);
        if (!fits.is_ok()) return refused(self, to_caf(fits));
        auto parsed = parse_json(mine, "the address list");
        if (!parsed.has_value() || !parsed->is_object()) {
          return refused(self,
                         to_caf(make_error(Errc::kInvalidArgument, "malformed address list")));
        }
        if (st->published.count(static_cast<size_t>(k)) != 0) {
          return refused(self, to_caf(make_error(Errc::kInvalidArgument,
                                                 "{} published its addresses twice in one "
                                                 "exchange",
                                                 node_name(st->nodes[static_cast<size_t>(k)]))));
        }
        auto rp = self->make_response_promise<std::string>();
        st->addresses.update(*parsed);
        st->published.insert(static_cast<size_t>(k));
        st->waiting_addresses.push_back(rp);
        if (static_cast<int32_t>(st->published.size()) == st->expected) {
          const std::string all = st->addresses.dump();
          for (auto& waiting : st->waiting_addresses) waiting.deliver(all);
          st->waiting_addresses.clear();
          st->published.clear();
          st->addresses = Json::object();
        }
        return rp;
      },
  };
}

}  // namespace meshpipe::actors::internal

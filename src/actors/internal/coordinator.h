// The coordinator actor of a multi-process job (private to actors/; the driver's façade is
// actors::Coordinator in cluster.h). Who may send what:
//
//   from the driver's own process only    nodes, job, step, save, shutdown
//   from any peer the gate admitted       register (once per node, at most `expected` nodes)
//   from registered nodes only            set/get (Gloo's rendezvous store), addr (UCX)
//
// Every field a message carries is checked against its limit (internal/limits.h); the store is
// bounded in keys and bytes, and a set refused for a limit makes the gets of that key fail
// naming it, instead of leaving them to time out.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "actors/cluster.h"
#include "actors/internal/protocol.h"
#include "core/json.h"

namespace meshpipe::actors::internal {

/// The coordinator's state: the nodes, the store, the request in flight.
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
  size_t store_bytes = 0;
  std::map<std::string, std::string> refused_keys;  // key -> why its set was refused
  std::map<std::string, std::vector<caf::typed_response_promise<std::string>>> waiting_gets;
  size_t waiting_get_count = 0;
  Json addresses = Json::object();
  std::set<size_t> published;  // nodes whose addresses this round holds
  std::vector<caf::typed_response_promise<std::string>> waiting_addresses;
  std::optional<caf::typed_response_promise<std::string>> driver;  // the job or step in flight
  std::string doing;                                               // what it is, for errors
  std::string failed;                                              // why the job stopped
  bool started = false;                                            // the job was sent
  bool ended = false;                                              // shutdown was sent
};

/// The coordinator's behaviour.
coordinator_actor::behavior_type coordinator(coordinator_actor::pointer self,
                                             std::shared_ptr<CoordinatorState> st);

/// "node K (HOST pid P)".
std::string node_name(const NodeReport& n);
/// GPUs as a node report lists them (the first kMaxNodeGpus, names cut to kMaxNameBytes), and
/// the optional "gpus" list of a node report (JSON), checked: at most kMaxNodeGpus, names of
/// 1-kMaxNameBytes bytes, positive memory.
Json gpus_to_json(const std::vector<kernels::GpuInfo>& gpus);
Expected<std::vector<kernels::GpuInfo>> read_gpus(JsonReader& r);

}  // namespace meshpipe::actors::internal

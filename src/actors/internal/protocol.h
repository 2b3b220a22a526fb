// The actor protocol of meshpipe (private to actors/): one closed vocabulary for a job in one
// process and across many, the one error bridge between Status and caf::error, the actor-system
// configuration every system of the module uses, and the one way a non-actor thread waits for an
// actor's answer (no scoped_actor inside the module). Messages carry ids, numbers, JSON text of
// plans and reports, and handles to in-process buffers; never tensor data.
//
//   driver ──job/step/save/shutdown──► node ──run──► mesh group ──run──► stage actor (a device)
//   (ActorRuntime: a node in this process; Coordinator: nodes behind CAF's middleman)
//   node ──register/ping/get/set/addr──► coordinator (bootstrap of a multi-process job)
//   driver ──plan──► planner actor
#pragma once

#include <caf/all.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <tuple>

#include "core/status.h"

namespace meshpipe::actors::internal {

// ---- driver -> node: the same for a node in this process and one across the network ----
using job_atom = caf::atom_constant<caf::atom("job")>;  ///< (job JSON) -> job info JSON
/// (step) -> step report JSON; a negative step -k - 1 is validation batch k (nothing updated)
using step_atom = caf::atom_constant<caf::atom("step")>;
using save_atom = caf::atom_constant<caf::atom("save")>;  ///< (partial dir, step) -> tiles JSON
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;  ///< (failed, reason)
using abort_atom = caf::atom_constant<caf::atom("abort")>;        ///< (reason): stop the step

// ---- node -> coordinator: bootstrap of a multi-process job ----
using register_atom = caf::atom_constant<caf::atom("register")>;  ///< (protocol, report, hb)
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;        ///< () -> node list JSON
using set_atom = caf::atom_constant<caf::atom("set")>;    ///< (key, value) -> done: the store
using get_atom = caf::atom_constant<caf::atom("get")>;    ///< (key) -> value
using addr_atom = caf::atom_constant<caf::atom("addr")>;  ///< (mine JSON) -> all JSON
using ping_atom = caf::atom_constant<caf::atom("ping")>;  ///< heartbeat -> pong
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;  ///< a timer's own message

// ---- inside a process ----
using run_atom = caf::atom_constant<caf::atom("run")>;    ///< (step, batch) -> device results
using plan_atom = caf::atom_constant<caf::atom("plan")>;  ///< (request id) -> done
using done_atom = caf::atom_constant<caf::atom("done")>;

// ---- the typed interfaces (a handle accepts only its messages; the middleman refuses a peer
// whose published interface differs) ----

/// A node's heartbeat: answers the coordinator's pings apart from the node, takes its aborts.
using heartbeat_actor =
    caf::typed_actor<caf::replies_to<ping_atom>::with<pong_atom>,
                     caf::reacts_to<abort_atom, std::string>, caf::reacts_to<tick_atom>>;

/// A node: the part of a job one process runs (internal/node.h).
using node_actor = caf::typed_actor<caf::replies_to<job_atom, std::string>::with<std::string>,
                                    caf::replies_to<step_atom, int64_t>::with<std::string>,
                                    caf::replies_to<save_atom, std::string>::with<std::string>,
                                    caf::reacts_to<shutdown_atom, bool, std::string>>;

/// The coordinator of a multi-process job (cluster.cc): the driver's requests (nodes, job, step,
/// save with its step, shutdown: answered only to actors of the driver's own process) and the
/// nodes' bootstrap (register; the rendezvous store and the address exchange, answered only to
/// registered nodes), and its own heartbeat timer.
using coordinator_actor =
    caf::typed_actor<caf::reacts_to<tick_atom>,
                     caf::replies_to<register_atom, std::string, std::string,
                                     heartbeat_actor>::with<int32_t, int32_t>,
                     caf::replies_to<nodes_atom>::with<std::string>,
                     caf::replies_to<job_atom, std::string>::with<std::string>,
                     caf::replies_to<step_atom, int64_t>::with<std::string>,
                     caf::replies_to<save_atom, std::string, int64_t>::with<std::string>,
                     caf::replies_to<shutdown_atom, bool, std::string>::with<done_atom>,
                     caf::replies_to<set_atom, std::string, std::string>::with<done_atom>,
                     caf::replies_to<get_atom, std::string>::with<std::string>,
                     caf::replies_to<addr_atom, std::string>::with<std::string>>;

/// The error category of meshpipe's errors inside CAF (the code is the Errc, the context the
/// message); registered by configure().
inline caf::atom_value error_category() { return caf::atom("meshpipe"); }

/// A Status as a caf::error that crosses the middleman with its code and message.
caf::error to_caf(const Status& s);

/// A caf::error as a Status: meshpipe's own keep code and message; a request timeout is kTimeout;
/// anything else (a lost connection, a stopped actor) is kUnavailable with CAF's words.
Status from_caf(caf::actor_system& sys, const caf::error& e);

/// The settings of every actor system of the module: scheduler threads, the renderer of
/// meshpipe's error category, and (with the middleman, when `network`) the handle types that
/// cross the network.
void configure(caf::actor_system_config& cfg, int scheduler_threads, bool network);

/// Sends `msg` to `target` and waits (on this non-actor thread) for the answer of types Ts... or
/// an error; the request itself times out after `timeout`. Used by the blocking façades
/// (ActorRuntime, Coordinator, the node's rendezvous store), never inside a handler that other
/// actors of the same scheduler wait for.
template <class... Ts>
Expected<std::tuple<Ts...>> ask(caf::actor_system& sys, const caf::actor& target,
                                std::chrono::milliseconds timeout, caf::message msg) {
  using Answer = Expected<std::tuple<Ts...>>;
  auto promise = std::make_shared<std::promise<Answer>>();
  std::future<Answer> answer = promise->get_future();
  caf::actor_system* system = &sys;
  sys.spawn([=](caf::event_based_actor* self) {
    self->request(target, timeout, msg)
        .then(
            [=](Ts&... xs) {
              promise->set_value(std::tuple<Ts...>(std::move(xs)...));
              self->quit();
            },
            [=](caf::error& e) {
              promise->set_value(Answer(from_caf(*system, e)));
              self->quit();
            });
  });
  // The request times out on its own; the margin only guards against a stopped system.
  if (answer.wait_for(timeout + std::chrono::seconds(30)) != std::future_status::ready) {
    return make_error(Errc::kTimeout, "no answer within {} ms", timeout.count());
  }
  return answer.get();
}

/// ask() for the common single-string answer (JSON text).
inline Expected<std::string> ask_text(caf::actor_system& sys, const caf::actor& target,
                                      std::chrono::milliseconds timeout, caf::message msg) {
  MP_ASSIGN_OR_RETURN(auto answer, ask<std::string>(sys, target, timeout, std::move(msg)));
  return std::get<0>(std::move(answer));
}

}  // namespace meshpipe::actors::internal

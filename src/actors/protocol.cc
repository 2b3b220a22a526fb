// The error bridge and the actor-system settings of the protocol (actors/internal/protocol.h).
#include "actors/internal/protocol.h"

#include <caf/io/all.hpp>

namespace meshpipe::actors::internal {

caf::error to_caf(const Status& s) {
  return caf::error(static_cast<uint8_t>(s.code()), error_category(),
                    caf::make_message(s.message()));
}

Status from_caf(caf::actor_system& sys, const caf::error& e) {
  if (e.category() == error_category()) {
    std::string msg;
    if (e.context().match_elements<std::string>()) msg = e.context().get_as<std::string>(0);
    return make_error(static_cast<Errc>(e.code()), "{}", msg);
  }
  if (e == caf::sec::request_timeout) return make_error(Errc::kTimeout, "no answer in time");
  return make_error(Errc::kUnavailable, "{}", sys.render(e));
}

void configure(caf::actor_system_config& cfg, int scheduler_threads, bool network) {
  if (network) {
    cfg.load<caf::io::middleman>();
    cfg.add_message_type<heartbeat_actor>("meshpipe::heartbeat_actor");
  }
  cfg.set("scheduler.max-threads", scheduler_threads);
  // Idle scheduler workers wait on a condition variable (woken when a message comes) after a
  // short spin, instead of CAF's default 500 polls 50 us apart: those wake-ups preempted the
  // device threads that share the cores (meshpipe-node on 2 pinned cores: a step of mlp-small
  // data parallel 75-89 ms -> 55 ms, its GEMMs 54 -> 36 ms).
  cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
  cfg.add_error_category(error_category(),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string text(errc_name(static_cast<Errc>(code)));
                           if (ctx.match_elements<std::string>()) {
                             text += ": " + ctx.get_as<std::string>(0);
                           }
                           return text;
                         });
}

}  // namespace meshpipe::actors::internal

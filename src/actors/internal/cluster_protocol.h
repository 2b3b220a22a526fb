// The messages of the cluster protocol between the coordinator (cluster.cc) and the nodes
// (node.cc), and how errors cross the middleman. Private to actors/.
#pragma once

#include <caf/all.hpp>
#include <string>

#include "core/status.h"

namespace meshpipe::actors::internal {

using register_atom = caf::atom_constant<caf::atom("register")>;
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;
using job_atom = caf::atom_constant<caf::atom("job")>;
using step_atom = caf::atom_constant<caf::atom("step")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using set_atom = caf::atom_constant<caf::atom("set")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using addr_atom = caf::atom_constant<caf::atom("addr")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using abort_atom = caf::atom_constant<caf::atom("abort")>;
using save_atom = caf::atom_constant<caf::atom("save")>;

// Errors cross the middleman as caf::error with the message as context (category "mpcluster").
inline caf::error to_caf(const Status& s) {
  return caf::error(static_cast<uint8_t>(s.code()), caf::atom("mpcluster"),
                    caf::make_message(s.message()));
}

inline Status from_caf(caf::actor_system& sys, const caf::error& e) {
  if (e.category() == caf::atom("mpcluster")) {
    std::string msg;
    if (e.context().match_elements<std::string>()) msg = e.context().get_as<std::string>(0);
    return make_error(static_cast<Errc>(e.code()), "{}", msg);
  }
  if (e == caf::sec::request_timeout) return make_error(Errc::kTimeout, "no answer in time");
  return make_error(Errc::kUnavailable, "{}", sys.render(e));
}

}  // namespace meshpipe::actors::internal

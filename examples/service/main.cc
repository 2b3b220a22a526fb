// A service that embeds meshpipe's training service: it has its own CAF actor system, submits
// two jobs that train at once on disjoint devices of a pool of four, and receives every event
// of both as messages to one of its actors, which prints them. Exits 0 when both jobs finished
// with a lower loss than they started with.
#include <caf/all.hpp>
#include <cstdio>
#include <string>

#include "actors/service.h"
#include "graph/models/zoo.h"

using namespace meshpipe;

namespace {

using event_atom = caf::atom_constant<caf::atom("event")>;

// Prints each event; quits after `jobs` terminal events (finished, failed, cancelled).
caf::behavior printer(caf::event_based_actor* self, int jobs) {
  auto ended = std::make_shared<int>(0);
  return {[=](event_atom, int64_t job, const std::string& name, const std::string& kind,
              int64_t step, double loss, const std::string& text) {
    if (kind == "step" || kind == "validation") {
      std::printf("[%s] %s %lld: loss %.4f\n", name.c_str(), kind.c_str(),
                  static_cast<long long>(step), loss);
    } else {
      std::printf("[%s] %s%s%s\n", name.c_str(), kind.c_str(), text.empty() ? "" : ": ",
                  text.c_str());
    }
    std::fflush(stdout);
    if ((kind == "finished" || kind == "failed" || kind == "cancelled") && ++*ended == jobs) {
      self->quit();
    }
    static_cast<void>(job);
  }};
}

actors::ServiceJob job(const std::string& name, const graph::models::ModelSpec& model,
                       int64_t steps) {
  actors::ServiceJob j;
  j.name = name;
  j.spec.model = model;
  j.spec.optimizer.lr = 0.003f;
  j.spec.clip_grad_norm = 1.0;
  j.cluster = "cpu:1x2";  // two devices each
  j.steps = steps;
  return j;
}

}  // namespace

int main() {
  caf::actor_system_config cfg;
  caf::actor_system system{cfg};
  const caf::actor listener = system.spawn(printer, 2);

  actors::ServiceOptions options;
  options.devices = 4;
  // Events arrive on the jobs' threads; here they become messages to the program's own actor.
  options.on_event = [listener](const actors::JobEvent& e) {
    caf::anon_send(listener, event_atom::value, e.job, e.name,
                   std::string(actors::job_event_name(e.kind)), e.step, e.loss, e.text);
  };
  // On an error before both jobs end, the printer is told to stop (the actor system waits for
  // its actors when it goes).
  const auto give_up = [&](const Status& s) {
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    caf::anon_send_exit(listener, caf::exit_reason::user_shutdown);
    return 1;
  };
  auto gpt_model = graph::models::find_model("gpt-tiny");
  auto mlp_model = graph::models::find_model("mlp-tiny");
  if (!gpt_model || !mlp_model) return give_up(gpt_model ? mlp_model.status() : gpt_model.status());
  auto service = actors::TrainingService::create(options);
  if (!service) return give_up(service.status());
  auto gpt = (*service)->submit(job("gpt", *gpt_model, 8));
  auto mlp = (*service)->submit(job("mlp", *mlp_model, 8));
  if (!gpt || !mlp) {
    if (gpt) static_cast<void>((*service)->cancel(*gpt));  // its events still reach the printer
    if (mlp) static_cast<void>((*service)->cancel(*mlp));
    (*service).reset();  // waits for a job submitted
    return give_up(gpt ? mlp.status() : gpt.status());
  }
  auto a = (*service)->wait(*gpt);
  auto b = (*service)->wait(*mlp);
  system.await_all_actors_done();  // the printer has seen both jobs end
  bool ok = true;
  for (const auto* r : {&a, &b}) {
    ok = ok && r->has_value() && (*r)->kind == actors::JobEventKind::kFinished &&
         (*r)->losses.back() < (*r)->losses.front();
  }
  std::printf("embedded training service: %s\n", ok ? "both jobs trained" : "a job failed");
  return ok ? 0 : 1;
}

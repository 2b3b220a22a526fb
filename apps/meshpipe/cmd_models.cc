// `meshpipe models`: lists the model zoo with exact and formula parameter counts.
#include <fmt/format.h>

#include <cstdio>

#include "core/files.h"
#include "core/units.h"
#include "graph/cost.h"
#include "graph/models/zoo.h"
#include "meshpipe/commands.h"

namespace meshpipe::cli {

void add_models_command(CLI::App& app, int& exit_code) {
  CLI::App* cmd = app.add_subcommand(
      "models",
      "List the model zoo: parameters (exact, from the built graph), Alpa's formula, "
      "dtype, default global batch");
  auto family = std::make_shared<std::string>();
  cmd->add_option("--family", *family, "only this family")
      ->check(CLI::IsMember({"gpt", "moe", "wresnet", "mlp"}));
  cmd->callback([family, &exit_code] {
    fmt::print("{:<14} {:>9} {:>9} {:>6} {:>6}  {}\n", "model", "params", "formula", "dtype",
               "batch", "description");
    for (const auto& spec : graph::models::model_zoo()) {
      if (!family->empty() && spec.family != *family) continue;
      // Parameters do not depend on the batch; the default batch always builds.
      auto g = graph::models::build_model(spec);
      if (!g.has_value()) {
        fmt::print(stderr, "error: {}\n", printable(g.status().to_string()));
        exit_code = 1;
        return;
      }
      const int64_t exact = graph::parameter_count(g->graph);
      fmt::print("{:<14} {:>9} {:>9} {:>6} {:>6}  {}\n", spec.name,
                 format_count(static_cast<double>(exact)),
                 format_count(static_cast<double>(graph::models::formula_parameter_count(spec))),
                 dtype_name(spec.dtype), spec.default_batch, spec.description);
    }
  });
}

}  // namespace meshpipe::cli

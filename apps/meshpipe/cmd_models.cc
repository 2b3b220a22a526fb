// `meshpipe models`: lists the model zoo with exact and formula parameter counts, or summarises
// an ONNX file (`--file`): its ops, parameters, layers and FLOPs as meshpipe imports it.
#include <fmt/format.h>

#include <cstdio>
#include <set>

#include "core/files.h"
#include "core/units.h"
#include "graph/cost.h"
#include "graph/models/zoo.h"
#include "meshpipe/commands.h"
#include "meshpipe/plan_common.h"
#include "onnx/importer.h"
#include "train/model_source.h"

namespace meshpipe::cli {

namespace {

// "forward: 77 graph ops, 0.008008 GFLOP (8007680 FLOP) per step".
void print_forward_cost(const graph::ForwardGraph& fg) {
  const graph::GraphCost cost = graph::graph_cost(fg.graph);
  fmt::print("forward: {} graph ops, {:.4g} GFLOP ({:.0f} FLOP) per step\n", fg.graph.num_ops(),
             cost.forward.value() / 1e9, cost.forward.value());
}

}  // namespace

void add_models_command(CLI::App& app, int& exit_code) {
  CLI::App* cmd = app.add_subcommand(
      "models",
      "List the model zoo: parameters (exact, from the built graph), Alpa's formula, "
      "dtype, default global batch");
  auto family = std::make_shared<std::string>();
  auto* family_opt = cmd->add_option("--family", *family, "only this family")
                         ->check(CLI::IsMember({"gpt", "moe", "wresnet", "mlp"}));
  auto model = std::make_shared<std::string>();
  auto* model_opt = cmd->add_option("--model", *model,
                                    "summarise this zoo model's graph as --file does an ONNX file: "
                                    "parameters, layers, forward ops and FLOPs at the batch")
                        ->excludes(family_opt);
  auto file = std::make_shared<std::string>();
  auto import = std::make_shared<onnx::ImportOptions>();
  auto loss = std::make_shared<std::string>("output");
  cmd->add_option("--file", *file,
                  "summarise this ONNX file (exported by torch.onnx.export, opsets 13-17) as "
                  "meshpipe imports it: ops, parameters, layers, FLOPs")
      ->excludes(family_opt)
      ->excludes(model_opt);
  cmd->add_option("--loss", *loss,
                  "with --file: the training loss, `output` (the model's output is the loss) or "
                  "`cross-entropy` (of the output's logits against an added labels input)")
      ->check(CLI::IsMember({"output", "cross-entropy"}))
      ->capture_default_str();
  cmd->add_option("--labels", import->labels, "with --loss cross-entropy: the labels input's name")
      ->capture_default_str();
  cmd->add_option("--output", import->output,
                  "with --file: the graph output to train (default: the first)");
  cmd->add_option("--batch", import->batch,
                  "with --file: the data inputs' leading dim (needed when it was exported "
                  "symbolic; default: as exported); with --model: the batch (default: the "
                  "model's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->callback([family, model, file, import, loss, &exit_code] {
    if (!model->empty()) {
      auto spec = graph::models::find_model(*model);
      if (!spec.has_value()) {
        exit_code = fail(spec.status());
        return;
      }
      auto g = graph::models::build_model(*spec, {.batch = import->batch, .dtype = {}});
      if (!g.has_value()) {
        exit_code = fail(g.status());
        return;
      }
      std::set<int32_t> layers;
      for (const graph::Op& op : g->graph.ops()) layers.insert(op.layer);
      const int64_t params = graph::parameter_count(g->graph);
      fmt::print("{}: {}\n", spec->name, spec->description);
      fmt::print("parameters: {} ({})\n", params, format_count(static_cast<double>(params)));
      fmt::print("layers: {}\n", layers.size());
      fmt::print("batch: {}\n", g->graph.value(g->inputs.front()).shape[0]);
      print_forward_cost(*g);
      return;
    }
    if (!file->empty()) {
      import->loss = *train::parse_loss_kind(*loss);  // CLI::IsMember checked it
      auto m = onnx::import_file(*file, *import);
      if (!m.has_value()) {
        exit_code = fail(m.status());
        return;
      }
      const onnx::ImportSummary& s = m->summary;
      fmt::print("{}: {} (opset {})\n", printable(*file), printable(s.producer), s.opset);
      std::string ops;
      for (const auto& [op, n] : s.node_counts) {
        ops += fmt::format("{}{} {}", ops.empty() ? "" : ", ", printable(op), n);
      }
      fmt::print("nodes: {}\n", ops);
      fmt::print("parameters: {} ({}) in {} tensors\n", s.parameters,
                 format_count(static_cast<double>(s.parameters)), s.parameter_tensors);
      std::string layers;
      for (const std::string& l : s.layers) layers += (layers.empty() ? "" : ", ") + printable(l);
      fmt::print("layers: {} ({})\n", s.layers.size(), layers);
      fmt::print("batch: {} (exported: {})\n", s.batch,
                 s.exported_batch > 0 ? std::to_string(s.exported_batch) : "symbolic");
      print_forward_cost(m->forward);
      for (const std::string& n : s.notes) fmt::print("note: {}\n", printable(n));
      return;
    }
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

// Zoo names and imported ONNX files as job models.
#include "train/model_source.h"

#include <filesystem>
#include <memory>
#include <utility>

#include "core/files.h"
#include "core/json.h"
#include "runtime/crc32c.h"

namespace meshpipe::train {

namespace {

// The file name without its folders.
std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Tokens per sample of an imported graph: the second dim of a 2-D integer first data input.
int64_t tokens_per_sample(const graph::ForwardGraph& fg) {
  if (fg.inputs.empty()) return 1;
  const graph::Value& v = fg.graph.value(fg.inputs.front());
  if (is_floating(v.dtype) || v.shape.rank() != 2) return 1;
  return std::max<int64_t>(1, v.shape[1]);
}

}  // namespace

Expected<onnx::LossKind> parse_loss_kind(const std::string& text) {
  if (text == "output") return onnx::LossKind::kOutput;
  if (text == "cross-entropy") return onnx::LossKind::kCrossEntropy;
  return make_error(Errc::kInvalidArgument, "loss '{}' is not 'output' or 'cross-entropy'", text);
}

std::string loss_kind_name(onnx::LossKind kind) {
  return kind == onnx::LossKind::kOutput ? "output" : "cross-entropy";
}

std::string model_source_json(const ModelFile& file, int64_t batch, int64_t bytes, uint32_t crc) {
  Json j = Json::object();
  j["file"] = file.path;
  j["bytes"] = bytes;
  j["crc32c"] = fmt::format("{:08x}", crc);
  j["loss"] = loss_kind_name(file.import.loss);
  j["labels"] = file.import.labels;
  j["output"] = file.import.output;
  j["batch"] = batch;
  return j.dump();
}

Expected<graph::models::ModelSpec> model_from_file(const ModelFile& file) {
  if (file.path.empty()) return make_error(Errc::kInvalidArgument, "no model file given");
  // Other processes read the file again: by its absolute path (not from their own working
  // directories), and check its size and checksum against this process's.
  std::error_code ec;
  ModelFile kept = file;
  kept.path = std::filesystem::absolute(file.path, ec).lexically_normal().string();
  if (ec) kept.path = file.path;
  MP_ASSIGN_OR_RETURN(onnx::Model decoded, onnx::read_model(kept.path));
  const auto bytes = static_cast<int64_t>(decoded.buffer->size());
  const uint32_t crc = runtime::crc32c(decoded.buffer->data(), decoded.buffer->size());
  auto model = std::make_shared<const onnx::Model>(std::move(decoded));
  Expected<onnx::ImportedModel> first = onnx::import_model(*model, file.import);
  if (!first.has_value()) return first.status().with_context(file.path);
  const onnx::ImportSummary& sum = first->summary;

  graph::models::ModelSpec spec;
  // The name and description are printed and recorded in plans: a file name's control
  // characters are escaped (core/files.h printable), the same way in every process.
  spec.name = "onnx:" + printable(base_name(file.path));
  spec.family = "onnx";
  int64_t nodes = 0;
  for (const auto& [op, count] : sum.node_counts) nodes += count;
  spec.description =
      fmt::format("ONNX file {} ({} nodes, opset {}{}{})", printable(file.path), nodes, sum.opset,
                  sum.producer.empty() ? "" : ", from ", printable(sum.producer));
  spec.default_batch = sum.batch;
  spec.dtype = DType::kF32;
  graph::models::ExternalConfig c;
  c.parameters = sum.parameters;
  c.tokens_per_sample = tokens_per_sample(first->forward);
  c.source = model_source_json(kept, sum.batch, bytes, crc);
  c.build = [model, kept](int64_t batch) -> Expected<graph::ForwardGraph> {
    onnx::ImportOptions o = kept.import;
    o.batch = batch;
    Expected<onnx::ImportedModel> m = onnx::import_model(*model, o);
    if (!m.has_value()) return m.status().with_context(kept.path);
    return std::move(m->forward);
  };
  spec.config = std::move(c);
  return spec;
}

Expected<graph::models::ModelSpec> model_from_source(const std::string& source_json) {
  MP_ASSIGN_OR_RETURN(const Json root, parse_json(source_json, "model source"));
  if (!root.is_object()) {
    return make_error(Errc::kInvalidArgument, "model source must be a JSON object");
  }
  JsonReader r(root, "", "model source field");
  ModelFile file;
  std::string loss;
  MP_RETURN_IF_ERROR(r.read("file", &file.path));
  MP_RETURN_IF_ERROR(r.read("loss", &loss));
  MP_RETURN_IF_ERROR(r.read("labels", &file.import.labels));
  MP_RETURN_IF_ERROR(r.read("output", &file.import.output));
  MP_RETURN_IF_ERROR(r.read("batch", &file.import.batch));
  int64_t bytes = 0;
  std::string crc;
  MP_RETURN_IF_ERROR(r.read("bytes", &bytes));
  MP_RETURN_IF_ERROR(r.read("crc32c", &crc));
  MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
  auto kind = parse_loss_kind(loss);
  if (!kind.has_value()) return r.error("loss", kind.status().message());
  file.import.loss = *kind;
  if (file.import.batch < 1) return r.error("batch", "must be >= 1");
  MP_ASSIGN_OR_RETURN(graph::models::ModelSpec spec, model_from_file(file));
  // The same file as the process that described it: its size and checksum.
  const auto& here = std::get<graph::models::ExternalConfig>(spec.config);
  MP_ASSIGN_OR_RETURN(const Json mine, parse_json(here.source, "model source"));
  if (mine["bytes"].get<int64_t>() != bytes || mine["crc32c"].get<std::string>() != crc) {
    return make_error(Errc::kInvalidArgument,
                      "model file {} here ({} bytes, crc32c {}) is not the file the job was "
                      "planned with ({} bytes, crc32c {})",
                      printable(file.path), mine["bytes"].get<int64_t>(),
                      mine["crc32c"].get<std::string>(), bytes, printable(crc));
  }
  return spec;
}

Expected<graph::models::ModelSpec> resolve_model(const std::string& zoo_name,
                                                 const ModelFile& file) {
  if (file.path.empty()) return graph::models::find_model(zoo_name);
  return model_from_file(file);
}

}  // namespace meshpipe::train

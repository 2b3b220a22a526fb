// Where a job's model comes from: a zoo name, or an ONNX file (exported from PyTorch) imported
// with its loss options. An imported file becomes a graph::models::ModelSpec of family "onnx"
// whose builder re-imports the decoded file at each batch, so the planner's micro-batch search,
// the runtimes and every process of a multi-process job build the model the one way.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "graph/models/zoo.h"
#include "onnx/importer.h"

namespace meshpipe::train {

/// An ONNX file and how to import it. import.batch is the batch of the first import (0: the
/// exported one); the job's batch decides every later build.
struct ModelFile {
  std::string path;
  onnx::ImportOptions import;
};

/// Reads, decodes and imports `file` once (errors name the file, and the node, its op type and
/// the reason) and returns its model: name "onnx:<file name>", family "onnx", default batch the
/// imported one, float32, exact parameter count, tokens per sample the second dim of a 2-D
/// integer first input (a token model). The decoded file is kept and shared by the builder.
Expected<graph::models::ModelSpec> model_from_file(const ModelFile& file);

/// The ExternalConfig::source of model_from_file's model: JSON {"file" (absolute), "bytes",
/// "crc32c", "loss", "labels", "output", "batch"}; model_from_source reads the file again from
/// it (another process) and refuses a file of another size or checksum.
std::string model_source_json(const ModelFile& file, int64_t batch, int64_t bytes, uint32_t crc);
Expected<graph::models::ModelSpec> model_from_source(const std::string& source_json);

/// "output" / "cross-entropy".
Expected<onnx::LossKind> parse_loss_kind(const std::string& text);
std::string loss_kind_name(onnx::LossKind kind);

/// The model a command names: a zoo name (`--model`) or a file (`--model-file`, when its path is
/// not empty). `batch` (0: none) is the first import's batch.
Expected<graph::models::ModelSpec> resolve_model(const std::string& zoo_name,
                                                 const ModelFile& file);

}  // namespace meshpipe::train

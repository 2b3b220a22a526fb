// The training step of a zoo model, built the one way every part of meshpipe builds it: the
// planner, every runtime and every process of a multi-process job, so their graphs (and the
// fingerprints their plans record) agree.
#pragma once

#include <cstdint>
#include <optional>

#include "core/dtype.h"
#include "core/status.h"
#include "graph/models/zoo.h"
#include "graph/optimizer.h"
#include "graph/training_graph.h"

namespace meshpipe::graph::models {

/// Forward graph of `spec` at `batch` samples, in `dtype` (the spec's own when empty; float32
/// by default), then autodiff and `optimizer`'s updates. An explicit f16 or bf16 asks for
/// mixed-precision training: f32 master weights converted per layer (graph/mixed_precision.h);
/// an empty dtype keeps the spec's type everywhere (what the planner's cost figures use).
Expected<TrainingGraph> zoo_training_graph(const ModelSpec& spec, int64_t batch,
                                           const OptimizerConfig& optimizer,
                                           std::optional<DType> dtype = DType::kF32);

/// True for the language models (GPT, MoE), whose samples are token sequences.
bool is_language_model(const ModelSpec& spec);

/// Tokens per sample: the sequence length of a language model, else 1.
int64_t tokens_per_sample(const ModelSpec& spec);

}  // namespace meshpipe::graph::models

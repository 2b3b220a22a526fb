// GPT: a decoder-only transformer (post-LN blocks, tied embeddings), Alpa's benchmark model.
#pragma once

#include <cstdint>
#include <string>

#include "graph/builder.h"

namespace meshpipe::graph::models {

/// Sizes of a GPT model (Alpa's gpt_specs fields).
struct GptConfig {
  int64_t seq_len = 1024;
  int64_t hidden = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t vocab = 51200;
  int64_t ffn_mult = 4;  ///< MLP width = ffn_mult * hidden

  Status validate() const;
};

/// Builds the forward graph for `batch` sequences: inputs "tokens" and "labels" ([batch, seq],
/// i32), scalar loss. Block i is layer i; the embedding joins layer 0 and the head the last.
Expected<ForwardGraph> build_gpt(const GptConfig& c, int64_t batch, DType dtype);

/// Alpa's compute_gpt_parameter_count (benchmark/alpa/util.py):
/// L (H(3H+1) + H(H+1) + H(4H+1) + 4H(H+1) + 4H) + V(H+1).
int64_t alpa_gpt_parameter_count(const GptConfig& c);

}  // namespace meshpipe::graph::models

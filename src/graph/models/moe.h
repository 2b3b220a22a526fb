// GShard mixture-of-experts transformer (Alpa's MoE benchmark model): layers alternate between
// an MoE layer (even index) and a dense layer (odd index).
#pragma once

#include <cstdint>

#include "graph/builder.h"

namespace meshpipe::graph::models {

/// Sizes of an MoE model (Alpa's moe_specs fields).
struct MoeConfig {
  int64_t seq_len = 1024;
  int64_t hidden = 768;
  int64_t layers = 8;  ///< even; layers/2 of them are MoE layers
  int64_t heads = 16;
  int64_t vocab = 32000;
  int64_t experts = 8;
  int64_t group_size = 2048;  ///< tokens per expert group (S in GShard)
  int64_t ffn_mult = 8;       ///< expert and dense MLP width = ffn_mult * hidden
  int64_t top_k = 2;

  Status validate() const;
  /// Expert capacity per group: top_k * group_size / experts (Alpa: 2S/E), at least 1.
  int64_t capacity() const;
};

/// Builds the forward graph: inputs "tokens", "labels" [batch, seq] i32; scalar loss.
/// batch * seq must be divisible by group_size.
Expected<ForwardGraph> build_moe(const MoeConfig& c, int64_t batch, DType dtype);

/// One MoE feed-forward layer on x [B, S, H] (gate, top-k gating, dispatch, experts, combine),
/// parameters "moe/{wg, wi, bi, wo, bo}". Exposed for the PyTorch oracle test.
ValueId moe_feed_forward(Builder& b, const MoeConfig& c, int64_t batch, DType dtype, ValueId x);

/// Alpa's compute_moe_parameter_count with mlp_factor = ffn_mult and a tied embedding.
int64_t alpa_moe_parameter_count(const MoeConfig& c);

}  // namespace meshpipe::graph::models

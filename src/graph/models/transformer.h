// Transformer pieces shared by GPT and MoE: embeddings, causal self-attention, dense MLP,
// post-LN residual blocks and the tied LM head, in the BERT-style layout Alpa's models use.
#pragma once

#include <cstdint>
#include <functional>

#include "graph/builder.h"

namespace meshpipe::graph::models {

/// Sizes shared by the transformer models.
struct TransformerDims {
  int64_t batch = 1;
  int64_t seq_len = 1;
  int64_t hidden = 1;
  int64_t heads = 1;
  int64_t vocab = 1;
  DType dtype = DType::kF32;
};

/// Standard deviation of the normal initialiser of weight matrices and embeddings.
inline constexpr float kInitStd = 0.02f;

/// Token + learned position embeddings, then layer norm: ids [B, S] -> [B, S, H].
/// Creates parameters "embed/wte" [V, H], "embed/wpe" [S, H], "embed/ln_{gamma,beta}".
/// Returns (hidden states, wte) so the LM head can reuse the table.
std::pair<ValueId, ValueId> embed_tokens(Builder& b, const TransformerDims& d, ValueId ids);

/// Causal multi-head self-attention on x [B, S, H] with q/k/v/output projections and biases
/// (parameters "attn/{wq,bq,wk,bk,wv,bv,wo,bo}").
ValueId causal_self_attention(Builder& b, const TransformerDims& d, ValueId x);

/// x -> layer_norm(x + f) with parameters "<name>_gamma", "<name>_beta".
ValueId add_and_norm(Builder& b, const TransformerDims& d, ValueId x, ValueId f,
                     const std::string& name);

/// Dense MLP x [B, S, H] -> gelu(x W1 + b1) W2 + b2 with hidden width ffn (parameters
/// "mlp/{w1,b1,w2,b2}").
ValueId dense_mlp(Builder& b, const TransformerDims& d, ValueId x, int64_t ffn);

/// Tied LM head and loss: logits = x wte^T + bias [V]; mean cross-entropy against labels.
ValueId lm_head_loss(Builder& b, const TransformerDims& d, ValueId x, ValueId wte, ValueId labels);

/// The feed-forward half of block `layer`, applied to the attention block's output x.
using FeedForwardFn = std::function<ValueId(Builder& b, int64_t layer, ValueId x)>;

/// A causal language model: inputs "tokens" and "labels" ([batch, seq], i32), embeddings,
/// `layers` post-LN blocks (attention, then feed_forward), the tied head and the mean
/// cross-entropy. Block i is layer i ("layer<i>/" scope); the embedding joins layer 0 and the
/// head the last layer.
Expected<ForwardGraph> build_transformer_lm(const TransformerDims& d, int64_t layers,
                                            const FeedForwardFn& feed_forward);

}  // namespace meshpipe::graph::models

// Shared transformer blocks (post-LN, as in Alpa's BERT-derived GPT and MoE models).
#include "graph/models/transformer.h"

#include <fmt/format.h>

#include <cmath>

namespace meshpipe::graph::models {

std::pair<ValueId, ValueId> embed_tokens(Builder& b, const TransformerDims& d, ValueId ids) {
  b.push_scope("embed");
  ValueId wte = b.parameter("wte", Shape{d.vocab, d.hidden}, InitSpec::normal(kInitStd), d.dtype);
  ValueId wpe = b.parameter("wpe", Shape{d.seq_len, d.hidden}, InitSpec::normal(kInitStd), d.dtype);
  ValueId tok = b.embedding(wte, ids, "tokens");
  ValueId x = b.bias_add(tok, wpe, {1, 2}, "positions");
  ValueId g = b.parameter("ln_gamma", Shape{d.hidden}, InitSpec::ones(), d.dtype);
  ValueId beta = b.parameter("ln_beta", Shape{d.hidden}, InitSpec::zeros(), d.dtype);
  ValueId y = b.layer_norm(x, g, beta, 1e-5f, "ln");
  b.pop_scope();
  return {y, wte};
}

ValueId causal_self_attention(Builder& b, const TransformerDims& d, ValueId x) {
  const int64_t hd = d.hidden / d.heads;
  b.push_scope("attn");
  auto project = [&](const std::string& n) {
    ValueId w =
        b.parameter("w" + n, Shape{d.hidden, d.hidden}, InitSpec::normal(kInitStd), d.dtype);
    ValueId bias = b.parameter("b" + n, Shape{d.hidden}, InitSpec::zeros(), d.dtype);
    ValueId y = b.linear(x, w, bias, n);
    // [B, S, H] -> [B, S, heads, hd] -> [B, heads, S, hd]
    ValueId r = b.reshape(y, Shape{d.batch, d.seq_len, d.heads, hd}, n + "_split");
    return b.transpose(r, {0, 2, 1, 3}, n + "_heads");
  };
  ValueId q = project("q");
  ValueId k = project("k");
  ValueId v = project("v");
  ValueId scores = b.dot(q, k, DotDims{{0, 1}, {0, 1}, {3}, {3}}, "scores");
  ValueId scaled = b.scale(scores, 1.0f / std::sqrt(static_cast<float>(hd)), 0.0f, "scaled");
  ValueId probs = b.softmax(scaled, -1, /*causal=*/true, "probs");
  ValueId ctx = b.dot(probs, v, DotDims{{0, 1}, {0, 1}, {3}, {2}}, "context");
  ValueId merged = b.transpose(ctx, {0, 2, 1, 3}, "context_t");
  ValueId flat = b.reshape(merged, Shape{d.batch, d.seq_len, d.hidden}, "context_merge");
  ValueId wo = b.parameter("wo", Shape{d.hidden, d.hidden}, InitSpec::normal(kInitStd), d.dtype);
  ValueId bo = b.parameter("bo", Shape{d.hidden}, InitSpec::zeros(), d.dtype);
  ValueId out = b.linear(flat, wo, bo, "out");
  b.pop_scope();
  return out;
}

ValueId add_and_norm(Builder& b, const TransformerDims& d, ValueId x, ValueId f,
                     const std::string& name) {
  ValueId sum = b.add(x, f, name + "_residual");
  ValueId g = b.parameter(name + "_gamma", Shape{d.hidden}, InitSpec::ones(), d.dtype);
  ValueId beta = b.parameter(name + "_beta", Shape{d.hidden}, InitSpec::zeros(), d.dtype);
  return b.layer_norm(sum, g, beta, 1e-5f, name);
}

ValueId dense_mlp(Builder& b, const TransformerDims& d, ValueId x, int64_t ffn) {
  b.push_scope("mlp");
  ValueId w1 = b.parameter("w1", Shape{d.hidden, ffn}, InitSpec::normal(kInitStd), d.dtype);
  ValueId b1 = b.parameter("b1", Shape{ffn}, InitSpec::zeros(), d.dtype);
  ValueId w2 = b.parameter("w2", Shape{ffn, d.hidden}, InitSpec::normal(kInitStd), d.dtype);
  ValueId b2 = b.parameter("b2", Shape{d.hidden}, InitSpec::zeros(), d.dtype);
  ValueId h = b.gelu(b.linear(x, w1, b1, "fc1"), "act");
  ValueId y = b.linear(h, w2, b2, "fc2");
  b.pop_scope();
  return y;
}

ValueId lm_head_loss(Builder& b, const TransformerDims& d, ValueId x, ValueId wte, ValueId labels) {
  b.push_scope("head");
  ValueId logits = b.dot(x, wte, DotDims{{}, {}, {2}, {1}}, "logits");
  ValueId bias = b.parameter("bias", Shape{d.vocab}, InitSpec::zeros(), d.dtype);
  ValueId biased = b.bias_add(logits, bias, {2}, "logits_bias");
  ValueId loss = b.cross_entropy(biased, labels, "loss");
  b.pop_scope();
  return loss;
}

Expected<ForwardGraph> build_transformer_lm(const TransformerDims& d, int64_t layers,
                                            const FeedForwardFn& feed_forward) {
  Builder b;
  ValueId tokens = b.input("tokens", Shape{d.batch, d.seq_len}, DType::kI32);
  ValueId labels = b.input("labels", Shape{d.batch, d.seq_len}, DType::kI32);
  b.set_layer(0);
  auto [x, wte] = embed_tokens(b, d, tokens);
  for (int64_t i = 0; i < layers; ++i) {
    b.set_layer(static_cast<int32_t>(i));
    b.push_scope(fmt::format("layer{}", i));
    x = add_and_norm(b, d, x, causal_self_attention(b, d, x), "ln_attn");
    x = add_and_norm(b, d, x, feed_forward(b, i, x), "ln_mlp");
    b.pop_scope();
  }
  ValueId loss = lm_head_loss(b, d, x, wte, labels);
  return std::move(b).finish(loss);
}

}  // namespace meshpipe::graph::models

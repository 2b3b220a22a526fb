// MoE model builder. The MoE layer follows GShard's einsum formulation with Alpa's layout:
//   gates    = softmax(x_GSM . wg_ME)                      [G, S, E]
//   combine, dispatch = top2_gating(gates)                 [G, S, E, C]
//   x_in     = dispatch_GSEC . x_GSM   -> [G, E, C, M]
//   h        = relu(x_in . wi_EMH + bi)  -> [E, G, C, H]
//   out      = h . wo_EHM + bo           -> [E, G, C, M]
//   y        = combine_GSEC . out_EGCM   -> [G, S, M]
#include "graph/models/moe.h"

#include <algorithm>

#include "graph/models/transformer.h"

namespace meshpipe::graph::models {

Status MoeConfig::validate() const {
  if (seq_len < 1 || hidden < 1 || layers < 2 || heads < 1 || vocab < 2 || experts < 1 ||
      group_size < 1 || ffn_mult < 1) {
    return make_error(Errc::kInvalidArgument, "MoE sizes must be positive with >= 2 layers");
  }
  if (layers % 2 != 0) {
    return make_error(Errc::kInvalidArgument,
                      "MoE layers must be even (MoE and dense "
                      "alternate), got {}",
                      layers);
  }
  if (hidden % heads != 0) {
    return make_error(Errc::kInvalidArgument, "hidden size {} is not divisible by {} heads", hidden,
                      heads);
  }
  if (top_k < 1 || top_k > experts) {
    return make_error(Errc::kInvalidArgument, "top_k {} must be in [1, experts = {}]", top_k,
                      experts);
  }
  return Status::ok();
}

int64_t MoeConfig::capacity() const { return std::max<int64_t>(1, top_k * group_size / experts); }

ValueId moe_feed_forward(Builder& b, const MoeConfig& c, int64_t batch, DType dtype, ValueId x) {
  const int64_t tokens = batch * c.seq_len;
  const int64_t groups = tokens / c.group_size;
  const int64_t m = c.hidden;
  const int64_t f = c.ffn_mult * c.hidden;
  const int64_t e = c.experts;
  b.push_scope("moe");
  ValueId wg = b.parameter("wg", Shape{m, e}, InitSpec::normal(kInitStd), dtype);
  ValueId wi = b.parameter("wi", Shape{e, m, f}, InitSpec::normal(kInitStd), dtype);
  ValueId bi = b.parameter("bi", Shape{e, f}, InitSpec::zeros(), dtype);
  ValueId wo = b.parameter("wo", Shape{e, f, m}, InitSpec::normal(kInitStd), dtype);
  ValueId bo = b.parameter("bo", Shape{e, m}, InitSpec::zeros(), dtype);

  ValueId xg = b.reshape(x, Shape{groups, c.group_size, m}, "group");
  ValueId logits = b.matmul(xg, wg, "gate_logits");
  ValueId gates = b.softmax(logits, -1, false, "gates");
  auto [combine, dispatch] = b.topk_gating(gates, c.top_k, c.capacity(), "gating");
  ValueId x_in = b.dot(dispatch, xg, DotDims{{0}, {0}, {1}, {1}}, "dispatch");  // [G,E,C,M]
  ValueId h = b.dot(x_in, wi, DotDims{{1}, {0}, {3}, {1}}, "expert_fc1");       // [E,G,C,F]
  h = b.relu(b.bias_add(h, bi, {0, 3}, "expert_fc1_bias"), "expert_act");
  ValueId out = b.dot(h, wo, DotDims{{0}, {0}, {3}, {1}}, "expert_fc2");  // [E,G,C,M]
  out = b.bias_add(out, bo, {0, 3}, "expert_fc2_bias");
  ValueId y = b.dot(combine, out, DotDims{{0}, {1}, {2, 3}, {0, 2}}, "combine");  // [G,S,M]
  ValueId r = b.reshape(y, Shape{batch, c.seq_len, m}, "ungroup");
  b.pop_scope();
  return r;
}

Expected<ForwardGraph> build_moe(const MoeConfig& c, int64_t batch, DType dtype) {
  MP_RETURN_IF_ERROR(c.validate());
  if (batch < 1) return make_error(Errc::kInvalidArgument, "batch must be >= 1, got {}", batch);
  if ((batch * c.seq_len) % c.group_size != 0) {
    return make_error(Errc::kInvalidArgument,
                      "batch {} x seq {} tokens is not divisible by the expert group size {}",
                      batch, c.seq_len, c.group_size);
  }
  const TransformerDims d{batch, c.seq_len, c.hidden, c.heads, c.vocab, dtype};
  return build_transformer_lm(d, c.layers, [&](Builder& b, int64_t layer, ValueId x) {
    return layer % 2 == 0 ? moe_feed_forward(b, c, batch, dtype, x)
                          : dense_mlp(b, d, x, c.ffn_mult * c.hidden);
  });
}

int64_t alpa_moe_parameter_count(const MoeConfig& c) {
  const int64_t h = c.hidden;
  const int64_t f = c.ffn_mult;
  const int64_t dense = h * (3 * h + 1) + h * (h + 1) + h * (f * h + 1) + h * f * (h + 1) + h * 4;
  const int64_t moe =
      h * (3 * h + 1) + h * (h + 1) + c.experts * (h * (f * h + 1) + h * f * (h + 1)) + h * 4;
  const int64_t embedding = c.vocab * (h + 1);
  if (c.experts == 1) return dense * c.layers + embedding;
  return (c.layers / 2) * dense + (c.layers / 2) * moe + embedding;
}

}  // namespace meshpipe::graph::models

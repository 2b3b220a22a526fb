// GPT model builder.
#include "graph/models/gpt.h"

#include "graph/models/transformer.h"

namespace meshpipe::graph::models {

Status GptConfig::validate() const {
  if (seq_len < 1 || hidden < 1 || layers < 1 || heads < 1 || vocab < 2 || ffn_mult < 1) {
    return make_error(Errc::kInvalidArgument,
                      "GPT sizes must be positive (seq {}, hidden {}, layers {}, heads {}, "
                      "vocab {})",
                      seq_len, hidden, layers, heads, vocab);
  }
  if (hidden % heads != 0) {
    return make_error(Errc::kInvalidArgument, "hidden size {} is not divisible by {} heads", hidden,
                      heads);
  }
  return Status::ok();
}

Expected<ForwardGraph> build_gpt(const GptConfig& c, int64_t batch, DType dtype) {
  MP_RETURN_IF_ERROR(c.validate());
  if (batch < 1) return make_error(Errc::kInvalidArgument, "batch must be >= 1, got {}", batch);
  const TransformerDims d{batch, c.seq_len, c.hidden, c.heads, c.vocab, dtype};
  return build_transformer_lm(d, c.layers, [&](Builder& b, int64_t, ValueId x) {
    return dense_mlp(b, d, x, c.ffn_mult * c.hidden);
  });
}

int64_t alpa_gpt_parameter_count(const GptConfig& c) {
  const int64_t h = c.hidden;
  return c.layers * (h * (3 * h + 1) + h * (h + 1) + h * (4 * h + 1) + h * 4 * (h + 1) + h * 4) +
         c.vocab * (h + 1);
}

}  // namespace meshpipe::graph::models

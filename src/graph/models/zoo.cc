// Zoo entries. Sizes are Alpa's benchmark suites (benchmark/alpa/suite_*.py; docs/algorithms.md
// §4.2).
#include "graph/models/zoo.h"

#include <fmt/format.h>

#include <numeric>

namespace meshpipe::graph::models {
namespace {

ModelSpec gpt(const std::string& size, int64_t hidden, int64_t layers, int64_t heads) {
  GptConfig c{1024, hidden, layers, heads, 51200, 4};
  return {"gpt-" + size,
          "gpt",
          fmt::format("GPT {}: hidden {}, {} layers, {} heads, seq 1024, vocab 51200", size, hidden,
                      layers, heads),
          1024,
          DType::kF16,
          c};
}

ModelSpec moe(const std::string& size, int64_t hidden, int64_t layers, int64_t experts) {
  MoeConfig c{1024, hidden, layers, 16, 32000, experts, 2048, 8, 2};
  return {"moe-" + size,
          "moe",
          fmt::format("GShard MoE {}: hidden {}, {} layers, {} experts, seq 1024, vocab 32000",
                      size, hidden, layers, experts),
          1024,
          DType::kF16,
          c};
}

ModelSpec wresnet(const std::string& size, int64_t depth, int64_t channels, int64_t width,
                  int64_t batch) {
  WideResNetConfig c;
  c.channels = channels;
  c.width_factor = width;
  c.stage_sizes = *resnet_stage_sizes(depth);
  return {"wresnet-" + size,
          "wresnet",
          fmt::format("Wide-ResNet {}: {} layers, {} channels, width factor {}, image 224", size,
                      depth, channels, width),
          batch,
          DType::kF32,
          c};
}

std::vector<ModelSpec> make_zoo() {
  std::vector<ModelSpec> z;
  z.push_back({"gpt-tiny", "gpt", "GPT for tests: hidden 32, 2 layers, 4 heads, seq 16, vocab 64",
               8, DType::kF32, GptConfig{16, 32, 2, 4, 64, 4}});
  z.push_back({"gpt-cpu", "gpt",
               "GPT for benchmarks on CPU devices: hidden 256, 4 layers, 8 heads, seq 64, vocab "
               "1024",
               16, DType::kF32, GptConfig{64, 256, 4, 8, 1024, 4}});
  z.push_back(gpt("125m", 768, 12, 12));
  z.push_back(gpt("350m", 1024, 24, 16));
  z.push_back(gpt("760m", 1536, 24, 16));
  z.push_back(gpt("1.3b", 2048, 24, 32));
  z.push_back(gpt("2.6b", 2560, 32, 32));
  z.push_back(gpt("6.7b", 4096, 32, 32));
  z.push_back(gpt("15b", 5120, 48, 40));
  z.push_back(gpt("39b", 8192, 48, 64));
  z.push_back(gpt("76b", 10240, 60, 80));
  // Deeper than any of Alpa's points (its search gave no result at 128 layers).
  z.push_back(gpt("26b-deep", 4096, 128, 32));

  z.push_back({"moe-tiny", "moe",
               "MoE for tests: hidden 32, 2 layers, 4 experts, group 16, seq 16, vocab 64", 4,
               DType::kF32, MoeConfig{16, 32, 2, 4, 64, 4, 16, 2, 2}});
  z.push_back({"moe-cpu", "moe",
               "MoE for benchmarks on CPU devices: hidden 256, 4 layers, 8 experts, group 64, "
               "seq 64, vocab 1024",
               8, DType::kF32, MoeConfig{64, 256, 4, 8, 1024, 8, 64, 4, 2}});
  z.push_back(moe("380m", 768, 8, 8));
  z.push_back(moe("690m", 768, 8, 16));
  z.push_back(moe("1.3b", 768, 16, 16));
  z.push_back(moe("2.4b", 1024, 16, 16));
  z.push_back(moe("7.1b", 1280, 16, 32));
  z.push_back(moe("10b", 1536, 16, 32));
  z.push_back(moe("27b", 2048, 16, 48));
  z.push_back(moe("70b", 2048, 32, 64));
  z.push_back(moe("140b", 2048, 32, 128));

  {
    WideResNetConfig c;
    c.image_size = 32;
    c.channels = 8;
    c.width_factor = 2;
    c.stage_sizes = {1, 1, 1, 1};
    c.num_classes = 10;
    z.push_back({"wresnet-tiny", "wresnet",
                 "Wide-ResNet for tests: 4 bottleneck blocks, 8 channels, width 2, image 32, "
                 "10 classes",
                 16, DType::kF32, c});
  }
  {
    WideResNetConfig c;
    c.image_size = 64;
    c.channels = 32;
    c.width_factor = 2;
    c.stage_sizes = {1, 1, 1, 1};
    c.num_classes = 100;
    z.push_back({"wresnet-cpu", "wresnet",
                 "Wide-ResNet for benchmarks on CPU devices: 4 bottleneck blocks, 32 channels, "
                 "width 2, image 64, 100 classes",
                 16, DType::kF32, c});
  }
  z.push_back(wresnet("250m", 50, 160, 2, 1536));
  z.push_back(wresnet("500m", 50, 224, 2, 1536));
  z.push_back(wresnet("1b", 50, 320, 2, 1536));
  z.push_back(wresnet("2b", 50, 448, 2, 1536));
  z.push_back(wresnet("4b", 50, 640, 2, 1536));
  z.push_back(wresnet("6.8b", 50, 320, 16, 1536));
  z.push_back(wresnet("13b", 101, 320, 16, 1520));

  z.push_back({"mlp-tiny", "mlp", "MLP for tests: 16 -> 2 x 32 -> 8 classes", 16, DType::kF32,
               MlpConfig{16, 32, 2, 8}});
  z.push_back({"mlp-small", "mlp", "MLP: 256 -> 4 x 1024 -> 64 classes", 64, DType::kF32,
               MlpConfig{256, 1024, 4, 64}});
  return z;
}

}  // namespace

const std::vector<ModelSpec>& model_zoo() {
  static const std::vector<ModelSpec> zoo = make_zoo();
  return zoo;
}

Expected<ModelSpec> find_model(const std::string& name) {
  std::string known;
  for (const ModelSpec& s : model_zoo()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + s.name;
  }
  return make_error(Errc::kNotFound, "unknown model '{}'; known models: {}", name, known);
}

Expected<ForwardGraph> build_model(const ModelSpec& spec, const BuildOptions& options) {
  const int64_t batch = options.batch > 0 ? options.batch : spec.default_batch;
  const DType dtype = options.dtype.value_or(spec.dtype);
  if (options.batch < 0) {
    return make_error(Errc::kInvalidArgument, "batch must be positive, got {}", options.batch);
  }
  Expected<ForwardGraph> g = std::visit(
      [&](const auto& c) -> Expected<ForwardGraph> {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, GptConfig>) return build_gpt(c, batch, dtype);
        if constexpr (std::is_same_v<C, MoeConfig>) return build_moe(c, batch, dtype);
        if constexpr (std::is_same_v<C, WideResNetConfig>) {
          return build_wide_resnet(c, batch, dtype);
        }
        if constexpr (std::is_same_v<C, MlpConfig>) return build_mlp(c, batch, dtype);
        if constexpr (std::is_same_v<C, ExternalConfig>) {
          if (dtype != DType::kF32) {
            return make_error(Errc::kInvalidArgument,
                              "an imported model is built in float32, not {} (mixed precision "
                              "is for zoo models)",
                              dtype_name(dtype));
          }
          if (!c.build) return make_error(Errc::kInternal, "external model without a builder");
          return c.build(batch);
        }
      },
      spec.config);
  if (!g.has_value()) return g.status().with_context("model " + spec.name);
  return g;
}

int64_t min_micro_batch(const ModelSpec& spec) {
  if (const auto* m = std::get_if<MoeConfig>(&spec.config)) {
    if (m->seq_len <= 0 || m->group_size <= 0) return 1;
    return m->group_size / std::gcd(m->seq_len, m->group_size);
  }
  return 1;
}

int64_t formula_parameter_count(const ModelSpec& spec) {
  return std::visit(
      [](const auto& c) -> int64_t {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, GptConfig>) return alpa_gpt_parameter_count(c);
        if constexpr (std::is_same_v<C, MoeConfig>) return alpa_moe_parameter_count(c);
        if constexpr (std::is_same_v<C, WideResNetConfig>) return wide_resnet_parameter_count(c);
        if constexpr (std::is_same_v<C, MlpConfig>) return mlp_parameter_count(c);
        if constexpr (std::is_same_v<C, ExternalConfig>) return c.parameters;
      },
      spec.config);
}

int64_t formula_parameter_gap(const ModelSpec& spec) {
  return std::visit(
      [](const auto& c) -> int64_t {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, GptConfig>) {
          // wpe [S, H], embedding LN (2H), and 2H of q/k/v bias per layer.
          return c.seq_len * c.hidden + 2 * c.hidden + 2 * c.hidden * c.layers;
        }
        if constexpr (std::is_same_v<C, MoeConfig>) {
          // As GPT, plus the gate wg [H, E] of each MoE layer.
          return c.seq_len * c.hidden + 2 * c.hidden + 2 * c.hidden * c.layers +
                 (c.layers / 2) * c.hidden * c.experts;
        }
        return 0;
      },
      spec.config);
}

}  // namespace meshpipe::graph::models

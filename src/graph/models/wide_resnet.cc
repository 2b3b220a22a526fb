// Wide-ResNet builder (NCHW). Layout follows Alpa's wide_resnet.py: stem 7x7/2 conv, BN, relu,
// 3x3/2 max pool; four stages of bottleneck blocks with filters C * 2^i; global average pool;
// a dense classifier with bias. The last BN of each block starts with gamma = 0.
#include "graph/models/wide_resnet.h"

#include <fmt/format.h>

#include <cmath>

namespace meshpipe::graph::models {
namespace {

ValueId conv_bn(Builder& b, ValueId x, int64_t in_c, int64_t out_c, int64_t k, int64_t stride,
                DType dtype, const std::string& name, bool zero_gamma = false, bool relu = true) {
  // He initialisation for ReLU networks: std = sqrt(2 / fan_in).
  const float std = std::sqrt(2.0f / static_cast<float>(in_c * k * k));
  ValueId w = b.parameter(name + "_w", Shape{out_c, in_c, k, k}, InitSpec::normal(std), dtype);
  Window2d win{k, k, stride, stride, k / 2, k / 2};
  ValueId y = b.conv2d(x, w, win, name);
  ValueId g = b.parameter(name + "_bn_gamma", Shape{out_c},
                          zero_gamma ? InitSpec::zeros() : InitSpec::ones(), dtype);
  ValueId beta = b.parameter(name + "_bn_beta", Shape{out_c}, InitSpec::zeros(), dtype);
  y = b.batch_norm(y, g, beta, 1e-5f, name + "_bn");
  return relu ? b.relu(y, name + "_relu") : y;
}

}  // namespace

Status WideResNetConfig::validate() const {
  if (image_size < 8 || channels < 1 || width_factor < 1 || num_classes < 2 || in_channels < 1 ||
      stage_sizes.empty()) {
    return make_error(Errc::kInvalidArgument,
                      "Wide-ResNet needs image >= 8, channels >= 1, width >= 1, classes >= 2 "
                      "and at least one stage");
  }
  for (int64_t s : stage_sizes) {
    if (s < 1) return make_error(Errc::kInvalidArgument, "every stage needs >= 1 block");
  }
  return Status::ok();
}

Expected<std::vector<int64_t>> resnet_stage_sizes(int64_t depth) {
  switch (depth) {
    case 50:
      return std::vector<int64_t>{3, 4, 6, 3};
    case 101:
      return std::vector<int64_t>{3, 4, 23, 3};
    case 152:
      return std::vector<int64_t>{3, 8, 36, 3};
    default:
      break;
  }
  return make_error(Errc::kInvalidArgument, "ResNet depth {} is not 50, 101 or 152", depth);
}

ValueId bottleneck_block(Builder& b, ValueId x, int64_t in_channels, int64_t filters,
                         int64_t width_factor, int64_t stride, DType dtype) {
  const int64_t wide = filters * width_factor;
  const int64_t out_c = filters * 4;
  ValueId y = conv_bn(b, x, in_channels, filters, 1, 1, dtype, "conv1");
  y = conv_bn(b, y, filters, wide, 3, stride, dtype, "conv2");
  y = conv_bn(b, y, wide, out_c, 1, 1, dtype, "conv3", /*zero_gamma=*/true, /*relu=*/false);
  ValueId shortcut = x;
  if (in_channels != out_c || stride != 1) {
    shortcut = conv_bn(b, x, in_channels, out_c, 1, stride, dtype, "proj", false, false);
  }
  return b.relu(b.add(shortcut, y, "residual"), "out");
}

Expected<ForwardGraph> build_wide_resnet(const WideResNetConfig& c, int64_t batch, DType dtype) {
  MP_RETURN_IF_ERROR(c.validate());
  if (batch < 1) return make_error(Errc::kInvalidArgument, "batch must be >= 1, got {}", batch);
  Builder b;
  ValueId images =
      b.input("images", Shape{batch, c.in_channels, c.image_size, c.image_size}, DType::kF32);
  ValueId labels = b.input("labels", Shape{batch}, DType::kI32);
  b.set_layer(0);
  b.push_scope("stem");
  ValueId x = conv_bn(b, images, c.in_channels, c.channels, 7, 2, dtype, "conv");
  x = b.max_pool2d(x, Window2d{3, 3, 2, 2, 1, 1}, "pool");
  b.pop_scope();
  int64_t in_c = c.channels;
  int32_t layer = 0;
  for (size_t s = 0; s < c.stage_sizes.size(); ++s) {
    const int64_t filters = c.channels << s;
    for (int64_t j = 0; j < c.stage_sizes[s]; ++j) {
      b.set_layer(layer);
      b.push_scope(fmt::format("block{}", layer));
      const int64_t stride = (s > 0 && j == 0) ? 2 : 1;
      x = bottleneck_block(b, x, in_c, filters, c.width_factor, stride, dtype);
      in_c = filters * 4;
      b.pop_scope();
      ++layer;
    }
  }
  b.push_scope("head");
  ValueId pooled = b.reduce_mean(x, {2, 3}, "global_pool");
  const float std = 1.0f / std::sqrt(static_cast<float>(in_c));
  ValueId w = b.parameter("fc_w", Shape{in_c, c.num_classes}, InitSpec::normal(std), dtype);
  ValueId bias = b.parameter("fc_b", Shape{c.num_classes}, InitSpec::zeros(), dtype);
  ValueId logits = b.linear(pooled, w, bias, "fc");
  ValueId loss = b.cross_entropy(logits, labels, "loss");
  b.pop_scope();
  return std::move(b).finish(loss);
}

int64_t wide_resnet_parameter_count(const WideResNetConfig& c) {
  auto conv_bn_params = [](int64_t in, int64_t out, int64_t k) {
    return out * in * k * k + 2 * out;
  };
  int64_t n = conv_bn_params(c.in_channels, c.channels, 7);
  int64_t in_c = c.channels;
  for (size_t s = 0; s < c.stage_sizes.size(); ++s) {
    const int64_t f = c.channels << s;
    for (int64_t j = 0; j < c.stage_sizes[s]; ++j) {
      const int64_t stride = (s > 0 && j == 0) ? 2 : 1;
      n += conv_bn_params(in_c, f, 1) + conv_bn_params(f, f * c.width_factor, 3) +
           conv_bn_params(f * c.width_factor, 4 * f, 1);
      if (in_c != 4 * f || stride != 1) n += conv_bn_params(in_c, 4 * f, 1);
      in_c = 4 * f;
    }
  }
  return n + in_c * c.num_classes + c.num_classes;
}

}  // namespace meshpipe::graph::models

// Wide-ResNet (bottleneck ResNet with a widened 3x3 conv), Alpa's vision benchmark model.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/builder.h"

namespace meshpipe::graph::models {

/// Sizes of a Wide-ResNet (Alpa's suite_wresnet fields plus the stage layout).
struct WideResNetConfig {
  int64_t image_size = 224;
  int64_t channels = 160;    ///< C: filters of the first stage ("num_filters")
  int64_t width_factor = 2;  ///< W: the 3x3 conv of each block has filters * W channels
  std::vector<int64_t> stage_sizes = {3, 4, 6, 3};  ///< blocks per stage (ResNet-50)
  int64_t num_classes = 1024;
  int64_t in_channels = 3;

  Status validate() const;
};

/// Stage sizes of ResNet depth 50, 101 or 152 (bottleneck variants).
Expected<std::vector<int64_t>> resnet_stage_sizes(int64_t depth);

/// Builds the forward graph: inputs "images" [batch, 3, size, size] f32 and "labels" [batch]
/// i32; scalar loss. Every bottleneck block is one layer (stem in layer 0, head in the last).
Expected<ForwardGraph> build_wide_resnet(const WideResNetConfig& c, int64_t batch, DType dtype);

/// One bottleneck block (exposed for the PyTorch oracle test): 1x1 conv (filters) -> BN ->
/// relu -> 3x3 conv (filters * W, stride) -> BN -> relu -> 1x1 conv (4 filters) -> BN, plus
/// the projected (1x1 conv + BN) or identity shortcut, then relu.
ValueId bottleneck_block(Builder& b, ValueId x, int64_t in_channels, int64_t filters,
                         int64_t width_factor, int64_t stride, DType dtype);

/// Parameter count by closed form (convolutions, batch norms, classifier), independent of the
/// graph builder.
int64_t wide_resnet_parameter_count(const WideResNetConfig& c);

}  // namespace meshpipe::graph::models

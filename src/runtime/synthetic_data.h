// Deterministic synthetic training data with learnable structure, for every zoo family:
//   token streams ("tokens", "labels"): each next token is a fixed permutation of the previous
//     one with probability 0.8, otherwise uniform; labels are the next tokens.
//   images ("images", "labels"): a fixed random pattern per class plus Gaussian noise.
//   features ("features", "labels"): Gaussian features labelled by a fixed random linear teacher.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "graph/graph.h"
#include "runtime/host_tensor.h"

namespace meshpipe::runtime {

/// The value `id` reads through a chain of kReshape ops (or `id` itself): the data input a
/// loss's labels or an embedding's ids come from.
ValueId reshape_source(const graph::Graph& g, ValueId id);

/// The exclusive upper bound of the integer input `id`'s values: the fewest rows of an
/// embedding and classes of a cross-entropy that read it (through reshapes, slices, transposes,
/// concatenations, conversions and broadcasts); 2^31 when none do.
int64_t index_bound(const graph::Graph& g, ValueId id);

/// Where a run's batches come from: batch `index` is the same wherever it is read.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// The next batch, then the one after.
  virtual std::vector<std::pair<ValueId, HostTensor>> next_batch() = 0;
  /// next_batch, for sources that can fail while training (a file read as it goes).
  virtual Expected<std::vector<std::pair<ValueId, HostTensor>>> read_next() { return next_batch(); }
  /// The index of the batch next_batch() returns next (resuming a run).
  virtual void seek(int64_t index) = 0;
};

/// Produces one batch per call for the data inputs of a graph.
class SyntheticData final : public BatchSource {
 public:
  /// Recognises the inputs by name ("tokens"/"images"/"features" plus "labels"); an error
  /// names an input it cannot fill.
  static Expected<SyntheticData> create(const graph::Graph& g, const std::vector<ValueId>& inputs,
                                        uint64_t seed);

  /// The next batch (a deterministic function of the seed and the batch index).
  std::vector<std::pair<ValueId, HostTensor>> next_batch() override;

  /// The index of the batch next_batch() returns next; seek() sets it (resuming a run).
  int64_t position() const { return next_index_; }
  void seek(int64_t index) override { next_index_ = index; }
  /// Number of samples (rows of the batch) and of tokens per batch (= samples for non-LM data).
  int64_t samples_per_batch() const { return batch_; }
  int64_t tokens_per_batch() const { return batch_ * seq_; }

 private:
  enum class Kind : uint8_t { kTokens, kImages, kFeatures };
  SyntheticData() = default;

  Kind kind_ = Kind::kTokens;
  ValueId data_id_;
  ValueId label_id_;
  Shape data_shape_;
  Shape label_shape_;
  int64_t batch_ = 0;
  int64_t seq_ = 1;
  int64_t classes_ = 0;  // vocabulary or classes
  uint64_t seed_ = 0;
  int64_t next_index_ = 0;
  std::vector<int32_t> successor_;  // tokens: the learnable permutation
  std::vector<float> patterns_;     // images: [classes, C*H*W]
  std::vector<float> teacher_;      // features: [D, classes]
};

}  // namespace meshpipe::runtime

// Operator clustering (docs/algorithms.md §2.1): group the forward ops of a training graph into L
// layers of balanced FLOPs, cutting where little data crosses, and re-tag every op (backward and
// update ops follow their forward op through Op::forward).
#pragma once

#include <cstdint>
#include <vector>

#include "graph/graph.h"

namespace meshpipe::planner {

/// Options of the clustering DP.
struct ClusteringOptions {
  /// L; 0: search: the largest L <= max_layers that satisfies the bounds and whose widest cut
  /// is no wider than with L = 2 (Alpa's search_layer_num criterion).
  int32_t num_layers = 0;
  int32_t max_layers = 16;    ///< cap for the search (Alpa's GPT/MoE suites use up to 16)
  double eps = 0.5;           ///< each layer's FLOPs <= (1 + eps) * total / L
  int32_t min_heavy_ops = 3;  ///< dots/convolutions per layer (relaxed when there are too few)

  Status validate() const;
};

/// The result: a layer per op of the graph and per-layer figures.
struct LayerClustering {
  int32_t num_layers = 0;
  std::vector<int32_t> op_layer;    ///< new layer of every op of the graph (size num_ops())
  std::vector<double> layer_flops;  ///< forward FLOPs per layer
  std::vector<double> input_bytes;  ///< bytes of the values entering each layer (forward)
};

/// Clusters the forward ops (graph order) by the DP
///   G[r][q] = min over k < r of max(G[k][q-1], C(k, r)),  C(k, r) = input_bytes(k..r-1) when
///   FLOPs(k..r-1) <= (1 + eps) total / L and the range has >= min_heavy_ops heavy ops, else inf,
/// ties broken by the smaller sum of C, then by the smaller sum of squared FLOP deviations.
/// Backward and update ops take the new layer of their forward op (Op::forward); ops without
/// one keep the layer of the nearest earlier op. Errors when L exceeds the number of forward ops.
Expected<LayerClustering> cluster_layers(const graph::Graph& g, const ClusteringOptions& options);

/// A copy of `g` with every op re-tagged by `c`.
graph::Graph apply_clustering(const graph::Graph& g, const LayerClustering& c);

}  // namespace meshpipe::planner

// make_training_graph: forward graph + autodiff + optimizer updates = one training step.
#pragma once

#include <vector>

#include "graph/builder.h"
#include "graph/optimizer.h"

namespace meshpipe::graph {

/// One parameter's gradient and update.
struct ParameterUpdate {
  ValueId param;
  ValueId grad;
  ValueId updated;
};

/// One training step as a single graph: forward, backward and update ops. Persistent values
/// (parameters and optimizer states) are aliased to their updated values (Graph::aliases).
struct TrainingGraph {
  Graph graph;
  ValueId loss;
  std::vector<ValueId> inputs;              ///< data inputs
  std::vector<ParameterUpdate> parameters;  ///< every trained parameter, in id order
  std::vector<ValueId> optimizer_states;    ///< moments, momentum buffers, step counters
};

/// Appends backward ops for `loss` and one update per parameter. Adam keeps one step counter
/// per layer ("layer<L>/optimizer/step"), so a pipeline stage owns the counters it needs.
/// Update ops carry the layer of the first forward op reading the parameter.
Expected<TrainingGraph> make_training_graph(Graph forward, ValueId loss,
                                            const OptimizerConfig& optimizer);

/// Same, from a ForwardGraph (keeps its data inputs).
Expected<TrainingGraph> make_training_graph(ForwardGraph forward, const OptimizerConfig& optimizer);

}  // namespace meshpipe::graph

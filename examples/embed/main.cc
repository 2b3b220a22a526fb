// Embedding meshpipe: build a model with the graph builder, make a training step, train it.
#include <cstdio>

#include "graph/builder.h"
#include "graph/training_graph.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"

using namespace meshpipe;

int main() {
  // A two-layer MLP classifier written with the builder.
  graph::Builder b;
  ValueId x = b.input("features", Shape{32, 16}, DType::kF32);
  ValueId labels = b.input("labels", Shape{32}, DType::kI32);
  b.set_layer(0);
  ValueId w1 = b.parameter("w1", Shape{16, 64}, graph::InitSpec::normal(0.3f));
  ValueId b1 = b.parameter("b1", Shape{64}, graph::InitSpec::zeros());
  ValueId h = b.relu(b.linear(x, w1, b1, "fc1"));
  b.set_layer(1);
  ValueId w2 = b.parameter("w2", Shape{64, 4}, graph::InitSpec::normal(0.1f));
  ValueId b2 = b.parameter("b2", Shape{4}, graph::InitSpec::zeros());
  ValueId loss = b.cross_entropy(b.linear(h, w2, b2, "fc2"), labels, "loss");
  auto forward = std::move(b).finish(loss);
  if (!forward) return std::fprintf(stderr, "%s\n", forward.status().to_string().c_str()), 1;

  graph::OptimizerConfig adam;
  adam.lr = 0.01f;
  auto step = graph::make_training_graph(std::move(*forward), adam);
  if (!step) return std::fprintf(stderr, "%s\n", step.status().to_string().c_str()), 1;

  auto exec = runtime::Executor::create(step->graph);
  auto data = runtime::SyntheticData::create(step->graph, step->inputs, /*seed=*/7);
  if (!exec || !data || !(*exec)->initialize(/*seed=*/1).is_ok()) return 1;
  double first = 0;
  double last = 0;
  for (int i = 0; i < 40; ++i) {
    auto stats = (*exec)->run(data->next_batch());
    if (!stats) return std::fprintf(stderr, "%s\n", stats.status().to_string().c_str()), 1;
    if (i == 0) first = stats->loss;
    last = stats->loss;
  }
  std::printf("embedded meshpipe: loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}

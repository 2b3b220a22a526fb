// Test helpers: the training graph of a zoo model at a batch size, and its losses on one device
// (the Executor on the whole batch), the reference every parallel run is compared against.
#pragma once

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "graph/models/zoo.h"
#include "graph/training_graph.h"
#include "runtime/executor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime::testing {

inline graph::TrainingGraph zoo_training_graph(const std::string& model, int64_t batch,
                                               const graph::OptimizerConfig& optimizer = {}) {
  auto spec = graph::models::find_model(model);
  REQUIRE(spec.has_value());
  graph::models::BuildOptions bo;
  bo.batch = batch;
  auto fg = graph::models::build_model(*spec, bo);
  REQUIRE(fg.has_value());
  auto tg = graph::make_training_graph(std::move(*fg), optimizer);
  REQUIRE(tg.has_value());
  return std::move(*tg);
}

/// Losses of `steps` Executor steps of `model` at `batch`: parameters initialised with
/// `init_seed`, batches drawn from the synthetic stream of `data_seed`.
inline std::vector<double> single_device_losses(const std::string& model, int64_t batch, int steps,
                                                uint64_t init_seed, uint64_t data_seed,
                                                const graph::OptimizerConfig& optimizer = {}) {
  graph::TrainingGraph tg = zoo_training_graph(model, batch, optimizer);
  auto ex = Executor::create(tg.graph);
  REQUIRE(ex.has_value());
  REQUIRE((*ex)->initialize(init_seed).is_ok());
  auto data = SyntheticData::create(tg.graph, tg.inputs, data_seed);
  REQUIRE(data.has_value());
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    auto r = (*ex)->run(data->next_batch());
    REQUIRE(r.has_value());
    losses.push_back(r->loss);
  }
  return losses;
}

}  // namespace meshpipe::runtime::testing

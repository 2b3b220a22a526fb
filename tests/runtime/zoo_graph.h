// Test helper: the training graph of a zoo model at a batch size.
#pragma once

#include <catch2/catch.hpp>
#include <string>

#include "graph/models/zoo.h"
#include "graph/training_graph.h"

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

}  // namespace meshpipe::runtime::testing

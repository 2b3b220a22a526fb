// Tests of embedding lookup and its scatter-add gradient on a vocabulary shard.
#include "kernels/embedding.h"

#include <catch2/catch.hpp>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::f32_view;
using testing::i32_view;
using testing::random_floats;

TEST_CASE("embedding gathers rows of a shard and zeroes ids outside it", "[kernels]") {
  Rng rng(41);
  // The shard holds ids [3, 8): table row = id - 3.
  const int64_t vocab = 5;
  const int64_t hidden = 4;
  // One extra guard row past the view: a lookup of id 8 (row V) must not read it.
  std::vector<float> table = random_floats(rng, (vocab + 1) * hidden);
  std::vector<int32_t> ids = {3, 7, 2, 8, 5, -1, 5, 0};
  const Shape id_shape{2, 4};
  std::vector<float> out(8 * hidden, 42.0f);
  const TensorView table_view(table.data(), Shape{vocab, hidden}, DType::kF32);
  embedding(KernelContext{}, table_view, i32_view(ids, id_shape),
            /*id_offset=*/3, f32_view(out, Shape{2, 4, hidden}));
  for (size_t p = 0; p < ids.size(); ++p) {
    const int64_t row = ids[p] - 3;
    const bool in_shard = row >= 0 && row < vocab;
    for (int64_t h = 0; h < hidden; ++h) {
      INFO("position " << p << " id " << ids[p] << " column " << h);
      const float want = in_shard ? table[size_t(row * hidden + h)] : 0.0f;
      CHECK(out[p * size_t(hidden) + size_t(h)] == want);
    }
  }
}

TEST_CASE("embedding_grad sums repeated ids and skips ids outside the shard", "[kernels]") {
  Rng rng(42);
  const int64_t vocab = 6;
  const int64_t hidden = 130;  // crosses the 64-column blocks
  std::vector<int32_t> ids = {10, 12, 10, 9, 16, 15, 10, 11};
  const int64_t positions = int64_t(ids.size());
  std::vector<float> dy = random_floats(rng, positions * hidden);
  std::vector<float> dtable(static_cast<size_t>(vocab * hidden), 5.0f);  // must be overwritten
  embedding_grad(KernelContext{}, i32_view(ids, Shape{positions}),
                 f32_view(dy, Shape{positions, hidden}), /*id_offset=*/10,
                 f32_view(dtable, Shape{vocab, hidden}));
  std::vector<double> want(static_cast<size_t>(vocab * hidden), 0.0);
  for (int64_t p = 0; p < positions; ++p) {
    const int64_t row = ids[size_t(p)] - 10;
    if (row < 0 || row >= vocab) continue;  // ids 9 and 16 belong to other shards
    for (int64_t h = 0; h < hidden; ++h)
      want[size_t(row * hidden + h)] += dy[size_t(p * hidden + h)];
  }
  // Row 0 sums three positions in f32: a couple of ulps.
  testing::check_close(dtable, want, 1e-6);
}

}  // namespace
}  // namespace meshpipe::kernels

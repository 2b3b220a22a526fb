// Tests of transpose, slice, pad, concat, reduce and broadcast against index-by-index
// references.
#include "kernels/layout.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include "core/rng.h"
#include "kernels/kernel_test_util.h"

namespace meshpipe::kernels {
namespace {

using testing::check_close;
using testing::f32_view;
using testing::i32_view;
using testing::random_floats;
using testing::ravel;
using testing::unravel;

std::vector<int32_t> iota(int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = static_cast<int32_t>(i);
  return v;
}

TEST_CASE("transpose puts x's dim perm[i] at out's dim i", "[kernels]") {
  Rng rng(61);
  const Shape xs{3, 4, 5, 2};
  const std::vector<int64_t> perm = {2, 0, 3, 1};
  const Shape os{5, 3, 2, 4};
  std::vector<float> x = random_floats(rng, xs.numel());
  std::vector<float> out(x.size());
  transpose(KernelContext{}, f32_view(x, xs), perm, f32_view(out, os));
  for (int64_t o = 0; o < os.numel(); ++o) {
    const std::vector<int64_t> oi = unravel(o, os);
    std::vector<int64_t> xi(4);
    for (size_t i = 0; i < 4; ++i) xi[size_t(perm[i])] = oi[i];
    CHECK(out[size_t(o)] == x[size_t(ravel(xi, xs))]);
  }
  // i32 data moves the same way; a 2-D transpose of a large matrix runs in parallel.
  const Shape big{300, 200};
  std::vector<int32_t> a = iota(big.numel());
  std::vector<int32_t> b(a.size());
  transpose(KernelContext{}, i32_view(a, big), {1, 0}, i32_view(b, Shape{200, 300}));
  bool all_match = true;
  for (int64_t i = 0; i < 300; ++i) {
    for (int64_t j = 0; j < 200; ++j)
      all_match = all_match && b[size_t(j * 300 + i)] == a[size_t(i * 200 + j)];
  }
  CHECK(all_match);
}

TEST_CASE("slice copies a window along one axis", "[kernels]") {
  const Shape xs{2, 6, 3};
  std::vector<int32_t> x = iota(xs.numel());
  const Shape os{2, 2, 3};
  std::vector<int32_t> out(static_cast<size_t>(os.numel()));
  slice(KernelContext{}, i32_view(x, xs), /*axis=*/1, /*start=*/3, i32_view(out, os));
  for (int64_t o = 0; o < os.numel(); ++o) {
    std::vector<int64_t> idx = unravel(o, os);
    idx[1] += 3;
    CHECK(out[size_t(o)] == x[size_t(ravel(idx, xs))]);
  }
}

TEST_CASE("pad zero-fills around x placed at start along one axis", "[kernels]") {
  Rng rng(62);
  const Shape xs{3, 2, 4};
  std::vector<float> x = random_floats(rng, xs.numel());
  const Shape os{3, 5, 4};
  std::vector<float> out(static_cast<size_t>(os.numel()), 9.0f);
  pad(KernelContext{}, f32_view(x, xs), /*axis=*/1, /*start=*/2, f32_view(out, os));
  for (int64_t o = 0; o < os.numel(); ++o) {
    std::vector<int64_t> idx = unravel(o, os);
    const bool inside = idx[1] >= 2 && idx[1] < 4;
    idx[1] -= 2;
    CHECK(out[size_t(o)] == (inside ? x[size_t(ravel(idx, xs))] : 0.0f));
  }
}

TEST_CASE("concat joins inputs of different lengths along an axis", "[kernels]") {
  Rng rng(63);
  const Shape s0{2, 1, 3};
  const Shape s1{2, 4, 3};
  const Shape s2{2, 2, 3};
  std::vector<float> a = random_floats(rng, s0.numel());
  std::vector<float> b = random_floats(rng, s1.numel());
  std::vector<float> c = random_floats(rng, s2.numel());
  const Shape os{2, 7, 3};
  std::vector<float> out(static_cast<size_t>(os.numel()));
  concat(KernelContext{}, {f32_view(a, s0), f32_view(b, s1), f32_view(c, s2)}, /*axis=*/1,
         f32_view(out, os));
  for (int64_t o = 0; o < os.numel(); ++o) {
    std::vector<int64_t> idx = unravel(o, os);
    float want = 0.0f;
    if (idx[1] < 1) {
      want = a[size_t(ravel(idx, s0))];
    } else if (idx[1] < 5) {
      idx[1] -= 1;
      want = b[size_t(ravel(idx, s1))];
    } else {
      idx[1] -= 5;
      want = c[size_t(ravel(idx, s2))];
    }
    CHECK(out[size_t(o)] == want);
  }
}

// Sums (or means) x over `axes` in double by sending each element to its output index.
std::vector<double> reduce_ref(const std::vector<float>& x, const Shape& xs,
                               const std::vector<int64_t>& axes, bool mean, Shape* out_shape) {
  std::vector<int64_t> kept;
  int64_t count = 1;
  for (int64_t d = 0; d < xs.rank(); ++d) {
    if (std::find(axes.begin(), axes.end(), d) == axes.end()) {
      kept.push_back(d);
    } else {
      count *= xs[d];
    }
  }
  std::vector<int64_t> dims;
  for (int64_t d : kept) dims.push_back(xs[d]);
  *out_shape = Shape(dims);
  std::vector<double> out(static_cast<size_t>(out_shape->numel()));
  for (int64_t i = 0; i < xs.numel(); ++i) {
    const std::vector<int64_t> idx = unravel(i, xs);
    std::vector<int64_t> oi;
    for (int64_t d : kept) oi.push_back(idx[size_t(d)]);
    out[size_t(ravel(oi, *out_shape))] += x[size_t(i)];
  }
  if (mean) {
    for (double& v : out) v /= double(count);
  }
  return out;
}

TEST_CASE("reduce sums or averages over any set of axes", "[kernels]") {
  Rng rng(64);
  struct Case {
    Shape x;
    std::vector<int64_t> axes;
    bool mean;
  };
  const Case cases[] = {
      {Shape{3, 5, 7}, {1}, false},              // a middle axis
      {Shape{3, 5, 7}, {0, 2}, true},            // split axes, mean
      {Shape{3, 5, 7}, {2}, true},               // the last axis
      {Shape{4, 6, 130}, {0, 1}, false},         // a bias gradient, over several column blocks
      {Shape{2, 3, 4, 5}, {0, 1, 2, 3}, false},  // everything, to a scalar
      {Shape{2, 3, 4, 5}, {1, 3}, false},        // interleaved kept and reduced axes
      {Shape{3, 4}, {}, false},                  // nothing: a copy
      {Shape{64, 32, 48}, {1}, true},            // large enough to run in parallel
  };
  for (const Case& c : cases) {
    std::vector<float> x = random_floats(rng, c.x.numel());
    Shape os;
    const std::vector<double> want = reduce_ref(x, c.x, c.axes, c.mean, &os);
    std::vector<float> out(static_cast<size_t>(os.numel()));
    reduce(KernelContext{}, f32_view(x, c.x), c.axes, c.mean, f32_view(out, os));
    INFO("x " << c.x.to_string() << " reduced to " << os.to_string());
    // Double accumulation, one rounding to f32: 1e-6 relative.
    check_close(out, want, 1e-6);
  }
}

TEST_CASE("broadcast repeats x along the dims it does not name", "[kernels]") {
  Rng rng(65);
  struct Case {
    Shape x;
    std::vector<int64_t> dims;
    Shape out;
  };
  const Case cases[] = {
      {Shape{3}, {1}, Shape{2, 3, 4}},    {Shape{2, 4}, {0, 2}, Shape{2, 3, 4}},
      {Shape{5}, {1}, Shape{4, 5}},       {Shape{}, {}, Shape{2, 2}},
      {Shape{200}, {1}, Shape{300, 200}},
  };
  for (const Case& c : cases) {
    std::vector<float> x = random_floats(rng, c.x.numel());
    std::vector<float> out(static_cast<size_t>(c.out.numel()));
    broadcast(KernelContext{}, f32_view(x, c.x), c.dims, f32_view(out, c.out));
    bool all_match = true;
    for (int64_t o = 0; o < c.out.numel(); ++o) {
      const std::vector<int64_t> idx = unravel(o, c.out);
      std::vector<int64_t> xi;
      for (int64_t d : c.dims) xi.push_back(idx[size_t(d)]);
      all_match = all_match && out[size_t(o)] == x[size_t(ravel(xi, c.x))];
    }
    INFO("x " << c.x.to_string() << " to " << c.out.to_string());
    CHECK(all_match);
  }
}

TEST_CASE("copy_box moves a box between offsets of two tensors, other elements untouched",
          "[kernels]") {
  // src [3, 4, 5] holds its flat index; copy the box [1:3, 1:3, 2:5] to dst [2, 5, 4] at (0, 2, 1).
  const Shape ss{3, 4, 5};
  const Shape ds{2, 5, 4};
  std::vector<float> src(static_cast<size_t>(ss.numel()));
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  std::vector<float> dst(static_cast<size_t>(ds.numel()), -1.0f);
  copy_box(KernelContext{}, f32_view(src, ss), {1, 1, 2}, f32_view(dst, ds), {0, 2, 1}, {2, 2, 3});
  for (int64_t a = 0; a < 2; ++a) {
    for (int64_t b = 0; b < 5; ++b) {
      for (int64_t c = 0; c < 4; ++c) {
        const bool inside = b >= 2 && b < 4 && c >= 1;
        const float want =
            inside ? static_cast<float>(((a + 1) * 4 + (b - 2 + 1)) * 5 + (c - 1 + 2)) : -1.0f;
        CHECK(dst[static_cast<size_t>((a * 5 + b) * 4 + c)] == want);
      }
    }
  }
  // Scalars copy their one element; an empty box copies nothing.
  std::vector<float> one{7.0f};
  std::vector<float> other{0.0f};
  copy_box(KernelContext{}, f32_view(one, Shape{}), {}, f32_view(other, Shape{}), {}, {});
  CHECK(other[0] == 7.0f);
  copy_box(KernelContext{}, f32_view(src, ss), {0, 0, 0}, f32_view(dst, ds), {0, 0, 0}, {0, 2, 2});
  CHECK(dst[0] == -1.0f);
}

TEST_CASE("copy_box matches an element-by-element copy on random boxes, whole trailing dims too",
          "[kernels]") {
  // The kernel merges trailing dims the box covers whole into one memcpy and walks the rest as
  // an odometer; the reference copies element by element.
  Rng rng(97);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t rank = 1 + rng.below(4);
    std::vector<int64_t> sd;
    std::vector<int64_t> dd;
    std::vector<int64_t> extent;
    std::vector<int64_t> so;
    std::vector<int64_t> dof;
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t e = 1 + rng.below(4);
      // Often the box covers the dim whole in both tensors (the merged path).
      const bool whole = rng.below(2) == 0;
      const int64_t s = whole ? e : e + rng.below(3);
      const int64_t t = whole ? e : e + rng.below(3);
      sd.push_back(s);
      dd.push_back(t);
      extent.push_back(e);
      so.push_back(rng.below(s - e + 1));
      dof.push_back(rng.below(t - e + 1));
    }
    const Shape ss(sd);
    const Shape ds(dd);
    std::vector<float> src(static_cast<size_t>(ss.numel()));
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
    std::vector<float> got(static_cast<size_t>(ds.numel()), -1.0f);
    std::vector<float> want = got;
    copy_box(KernelContext{}, f32_view(src, ss), so, f32_view(got, ds), dof, extent);
    const Shape box(extent);
    for (int64_t i = 0; i < box.numel(); ++i) {
      std::vector<int64_t> at = unravel(i, box);
      std::vector<int64_t> from = at;
      for (int64_t d = 0; d < rank; ++d) {
        from[size_t(d)] += so[size_t(d)];
        at[size_t(d)] += dof[size_t(d)];
      }
      want[size_t(ravel(at, ds))] = src[size_t(ravel(from, ss))];
    }
    INFO("trial " << trial << ": " << ss.to_string() << " -> " << ds.to_string());
    CHECK(got == want);
  }
}

}  // namespace
}  // namespace meshpipe::kernels

// Iteration spaces per op kind.
#include "shard/iteration_space.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace meshpipe::shard {

using graph::OpKind;

bool IterSpace::is_reduction_for(int it, size_t o) const {
  const auto& out = outputs[o];
  if (std::find(out.begin(), out.end(), it) != out.end()) return false;
  for (const auto& in : inputs) {
    if (std::find(in.begin(), in.end(), it) != in.end()) return true;
  }
  return false;
}

namespace {

// Builds a space step by step.
class SpaceBuilder {
 public:
  int add(int64_t size, bool splittable, std::string label) {
    s_.sizes.push_back(size);
    s_.splittable.push_back(splittable && size > 1);
    s_.labels.push_back(std::move(label));
    return static_cast<int>(s_.sizes.size() - 1);
  }
  // One iteration dim per dim of `shape`; dims listed in `whole` are not splittable.
  std::vector<int> add_dims(const Shape& shape, const std::vector<int64_t>& whole,
                            const std::string& prefix) {
    std::vector<int> map;
    for (int64_t d = 0; d < shape.rank(); ++d) {
      const bool is_whole = std::find(whole.begin(), whole.end(), d) != whole.end();
      map.push_back(add(shape[d], !is_whole, fmt::format("{}{}", prefix, d)));
    }
    return map;
  }
  void input(std::vector<int> map) { s_.inputs.push_back(std::move(map)); }
  void output(std::vector<int> map) { s_.outputs.push_back(std::move(map)); }
  IterSpace take() { return std::move(s_); }

 private:
  IterSpace s_;
};

// Map of a tensor whose dims are the first `rank` entries of `dims`.
std::vector<int> prefix(const std::vector<int>& dims, int64_t rank) {
  return std::vector<int>(dims.begin(), dims.begin() + rank);
}

// Dims of `map` with the entries at `whole` replaced by -1 (those dims are never split).
std::vector<int> mask(std::vector<int> map, const std::vector<int64_t>& whole) {
  for (int64_t d : whole) map[static_cast<size_t>(d)] = -1;
  return map;
}

// dims 2 and 3 of an NCHW tensor (and of OIHW filters).
const std::vector<int64_t> kSpatial = {2, 3};

}  // namespace

IterSpace source_space(const Shape& shape) {
  SpaceBuilder b;
  b.output(b.add_dims(shape, {}, "d"));
  return b.take();
}

Expected<IterSpace> iteration_space(const graph::Graph& g, const graph::Op& op) {
  const auto in_shape = [&](size_t i) { return g.value(op.inputs[i]).shape; };
  const auto out_shape = [&](size_t i) { return g.value(op.outputs[i]).shape; };
  const graph::OpAttrs& a = op.attrs;
  SpaceBuilder b;
  switch (op.kind) {
    case OpKind::kDot: {
      const Shape lhs = in_shape(0);
      const Shape rhs = in_shape(1);
      std::vector<int> lmap(static_cast<size_t>(lhs.rank()), -1);
      std::vector<int> rmap(static_cast<size_t>(rhs.rank()), -1);
      std::vector<int> omap;
      for (size_t i = 0; i < a.dot.lhs_batch.size(); ++i) {
        const int it = b.add(lhs[a.dot.lhs_batch[i]], true, fmt::format("b{}", i));
        lmap[static_cast<size_t>(a.dot.lhs_batch[i])] = it;
        rmap[static_cast<size_t>(a.dot.rhs_batch[i])] = it;
        omap.push_back(it);
      }
      int count = 0;
      for (int64_t d : dot_free_dims(lhs.rank(), a.dot.lhs_batch, a.dot.lhs_contract)) {
        const int it = b.add(lhs[d], true, fmt::format("m{}", count++));
        lmap[static_cast<size_t>(d)] = it;
        omap.push_back(it);
      }
      count = 0;
      for (int64_t d : dot_free_dims(rhs.rank(), a.dot.rhs_batch, a.dot.rhs_contract)) {
        const int it = b.add(rhs[d], true, fmt::format("n{}", count++));
        rmap[static_cast<size_t>(d)] = it;
        omap.push_back(it);
      }
      for (size_t i = 0; i < a.dot.lhs_contract.size(); ++i) {
        const int it = b.add(lhs[a.dot.lhs_contract[i]], true, fmt::format("k{}", i));
        lmap[static_cast<size_t>(a.dot.lhs_contract[i])] = it;
        rmap[static_cast<size_t>(a.dot.rhs_contract[i])] = it;
      }
      b.input(lmap);
      b.input(rmap);
      b.output(omap);
      return b.take();
    }
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
    case OpKind::kReluGrad:
    case OpKind::kGeluGrad:
    case OpKind::kGeluErfGrad:
    case OpKind::kTanhGrad: {
      const auto map = b.add_dims(in_shape(0), {}, "d");
      b.input(map);
      b.input(map);
      b.output(map);
      return b.take();
    }
    case OpKind::kScale:
    case OpKind::kConvert:
    case OpKind::kRelu:
    case OpKind::kGelu:
    case OpKind::kGeluErf:
    case OpKind::kTanh: {
      const auto map = b.add_dims(in_shape(0), {}, "d");
      b.input(map);
      b.output(map);
      return b.take();
    }
    case OpKind::kBiasAdd: {
      const auto map = b.add_dims(in_shape(0), {}, "d");
      std::vector<int> bmap;
      for (int64_t d : a.axes) bmap.push_back(map[static_cast<size_t>(d)]);
      b.input(map);
      b.input(bmap);
      b.output(map);
      return b.take();
    }
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax:
    case OpKind::kSoftmaxGrad:
    case OpKind::kLogSoftmaxGrad: {
      const auto map = b.add_dims(in_shape(0), {a.axis}, "d");
      for (size_t i = 0; i < op.inputs.size(); ++i) b.input(mask(map, {a.axis}));
      b.output(mask(map, {a.axis}));
      return b.take();
    }
    case OpKind::kLayerNorm:
    case OpKind::kLayerNormGrad: {
      // x [..., H]: rows split freely, the normalised dim H stays whole.
      const bool grad = op.kind == OpKind::kLayerNormGrad;
      const Shape x = in_shape(grad ? 1 : 0);
      const int64_t h = x.rank() - 1;
      const auto map = mask(b.add_dims(x, {h}, "d"), {h});
      const auto rows = prefix(map, h);
      if (!grad) {
        b.input(map);
        b.input({-1});
        b.input({-1});
        b.output(map);
        b.output(rows);
        b.output(rows);
      } else {
        b.input(map);   // dy
        b.input(map);   // x
        b.input(rows);  // mean
        b.input(rows);  // rstd
        b.input({-1});  // gamma
        b.output(map);
        b.output({-1});  // dgamma: a sum over rows (partial when rows are split)
        b.output({-1});
      }
      return b.take();
    }
    case OpKind::kBatchNorm:
    case OpKind::kBatchNormGrad: {
      // x [N, C(, H, W)]: N and C split; statistics over N become partial sums (an all-reduce
      // of the per-channel sums, as synchronised batch norm does); H, W stay whole.
      const bool grad = op.kind == OpKind::kBatchNormGrad;
      const Shape x = in_shape(grad ? 1 : 0);
      std::vector<int64_t> whole;
      for (int64_t d = 2; d < x.rank(); ++d) whole.push_back(d);
      const auto map = mask(b.add_dims(x, whole, "d"), whole);
      const std::vector<int> channel{map[1]};
      if (!grad) {
        b.input(map);
        b.input(channel);
        b.input(channel);
        b.output(map);
        b.output(channel);
        b.output(channel);
      } else {
        b.input(map);
        b.input(map);
        b.input(channel);
        b.input(channel);
        b.input(channel);
        b.output(map);
        b.output(channel);
        b.output(channel);
      }
      return b.take();
    }
    case OpKind::kEmbedding: {
      // out[..., h] = sum_v [ids == v] table[v, h]: v is a reduction (a vocabulary shard gives
      // zero rows for ids it does not own, then an all-reduce).
      const Shape ids = in_shape(1);
      auto imap = b.add_dims(ids, {}, "i");
      const int h = b.add(in_shape(0)[1], true, "h");
      const int v = b.add(in_shape(0)[0], true, "v");
      b.input({v, h});
      b.input(imap);
      imap.push_back(h);
      b.output(imap);
      return b.take();
    }
    case OpKind::kEmbeddingGrad: {
      const Shape ids = in_shape(0);
      auto imap = b.add_dims(ids, {}, "i");
      const int h = b.add(a.shape[1], true, "h");
      const int v = b.add(a.shape[0], true, "v");
      b.input(imap);
      auto dy = imap;
      dy.push_back(h);
      b.input(dy);
      b.output({v, h});
      return b.take();
    }
    case OpKind::kCrossEntropy:
    case OpKind::kCrossEntropyGrad: {
      const Shape logits = in_shape(0);
      const int64_t vdim = logits.rank() - 1;
      const auto map = mask(b.add_dims(logits, {vdim}, "d"), {vdim});
      b.input(map);
      b.input(prefix(map, vdim));
      if (op.kind == OpKind::kCrossEntropy) {
        b.output({});  // the mean over positions: partial when positions are split
      } else {
        b.input({});
        b.output(map);
      }
      return b.take();
    }
    case OpKind::kReshape: {
      // Group dims with equal element counts ([B, S, H] -> [B, S, heads, hd] groups H with
      // (heads, hd)). Splitting a group into n contiguous chunks is splitting the leading dim of
      // each side into n chunks, valid when n divides both: one iteration dim of size
      // gcd(leading in, leading out) maps the two leading dims; the rest stay whole.
      const Shape x = in_shape(0);
      const Shape y = out_shape(0);
      std::vector<int> imap(static_cast<size_t>(x.rank()), -1);
      std::vector<int> omap(static_cast<size_t>(y.rank()), -1);
      int64_t i = 0;
      int64_t j = 0;
      while (i < x.rank() && j < y.rank()) {
        const int64_t i0 = i;
        const int64_t j0 = j;
        int64_t pi = x[i++];
        int64_t pj = y[j++];
        while (pi != pj) {
          if (pi < pj && i < x.rank()) {
            pi *= x[i++];
          } else if (pj < pi && j < y.rank()) {
            pj *= y[j++];
          } else {
            break;
          }
        }
        const int it = b.add(std::gcd(x[i0], y[j0]), true, fmt::format("g{}", i0));
        imap[static_cast<size_t>(i0)] = it;
        omap[static_cast<size_t>(j0)] = it;
      }
      b.input(imap);
      b.output(omap);
      return b.take();
    }
    case OpKind::kTranspose: {
      const auto map = b.add_dims(in_shape(0), {}, "d");
      std::vector<int> omap;
      for (int64_t p : a.axes) omap.push_back(map[static_cast<size_t>(p)]);
      b.input(map);
      b.output(omap);
      return b.take();
    }
    case OpKind::kSlice:
    case OpKind::kPad: {
      const auto map = mask(b.add_dims(in_shape(0), {a.axis}, "d"), {a.axis});
      b.input(map);
      b.output(map);
      return b.take();
    }
    case OpKind::kConcat: {
      const auto map = mask(b.add_dims(out_shape(0), {a.axis}, "d"), {a.axis});
      for (size_t i = 0; i < op.inputs.size(); ++i) b.input(map);
      b.output(map);
      return b.take();
    }
    case OpKind::kReduceSum:
    case OpKind::kReduceMean: {
      const auto map = b.add_dims(in_shape(0), {}, "d");
      std::vector<int> omap;
      for (int64_t d = 0; d < in_shape(0).rank(); ++d) {
        if (std::find(a.axes.begin(), a.axes.end(), d) == a.axes.end()) {
          omap.push_back(map[static_cast<size_t>(d)]);
        }
      }
      b.input(map);
      b.output(omap);
      return b.take();
    }
    case OpKind::kBroadcast:
    case OpKind::kConstant: {
      const auto map = b.add_dims(out_shape(0), {}, "d");
      if (op.kind == OpKind::kBroadcast) {
        std::vector<int> imap;
        for (int64_t d : a.axes) imap.push_back(map[static_cast<size_t>(d)]);
        b.input(imap);
      }
      b.output(map);
      return b.take();
    }
    case OpKind::kConv2d:
    case OpKind::kConv2dGradInput:
    case OpKind::kConv2dGradFilter: {
      // Iteration dims n (batch), k (output channels), c (input channels); c is the reduction
      // of the forward pass and of the input gradient's counterpart k, n of the filter grad.
      const Shape x = op.kind == OpKind::kConv2dGradInput ? a.shape : in_shape(0);
      const Shape w = op.kind == OpKind::kConv2dGradFilter ? a.shape : in_shape(1);
      const int n = b.add(x[0], true, "n");
      const int c = b.add(x[1], true, "c");
      const int k = b.add(w[0], true, "k");
      const std::vector<int> xmap{n, c, -1, -1};
      const std::vector<int> wmap{k, c, -1, -1};
      const std::vector<int> ymap{n, k, -1, -1};
      if (op.kind == OpKind::kConv2d) {
        b.input(xmap);
        b.input(wmap);
        b.output(ymap);
      } else if (op.kind == OpKind::kConv2dGradInput) {
        b.input(ymap);
        b.input(wmap);
        b.output(xmap);
      } else {
        b.input(xmap);
        b.input(ymap);
        b.output(wmap);
      }
      return b.take();
    }
    case OpKind::kMaxPool2d:
    case OpKind::kAvgPool2d:
    case OpKind::kMaxPool2dGrad:
    case OpKind::kAvgPool2dGrad: {
      const Shape x = op.kind == OpKind::kAvgPool2dGrad ? a.shape : in_shape(0);
      const int n = b.add(x[0], true, "n");
      const int c = b.add(x[1], true, "c");
      const std::vector<int> map{n, c, -1, -1};
      for (size_t i = 0; i < op.inputs.size(); ++i) b.input(map);
      b.output(map);
      return b.take();
    }
    case OpKind::kTopKGating:
    case OpKind::kTopKGatingGrad: {
      // Only groups split: routing counts positions across a group's tokens and experts.
      const Shape p = in_shape(0);
      const int gdim = b.add(p[0], true, "g");
      const std::vector<int> pmap{gdim, -1, -1};
      const std::vector<int> cmap{gdim, -1, -1, -1};
      b.input(pmap);
      if (op.kind == OpKind::kTopKGating) {
        b.output(cmap);
        b.output(cmap);
      } else {
        b.input(cmap);
        b.output(pmap);
      }
      return b.take();
    }
    case OpKind::kSgdUpdate:
    case OpKind::kSgdMomentumUpdate:
    case OpKind::kAdamUpdate: {
      const auto map = b.add_dims(in_shape(0), {}, "d");
      for (size_t i = 0; i < op.inputs.size(); ++i) {
        b.input(in_shape(i).rank() == 0 ? std::vector<int>{} : map);  // Adam's step is a scalar
      }
      for (size_t i = 0; i < op.outputs.size(); ++i) b.output(map);
      return b.take();
    }
    case OpKind::kBatchNormSums:
    case OpKind::kBatchNormStats:
    case OpKind::kBatchNormApply:
    case OpKind::kBatchNormGradSums:
    case OpKind::kBatchNormGradApply:
      break;  // pieces the lowering emits inside a stage; never sharded on their own
  }
  return make_error(Errc::kInternal, "no iteration space for op '{}' ({})", op.name,
                    op_kind_name(op.kind));
}

}  // namespace meshpipe::shard

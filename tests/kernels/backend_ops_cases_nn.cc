// The cases of backend_ops for softmax, norms, losses, embeddings, gating, pooling, dot products
// and convolutions; inputs that must be valid (softmax rows, norm statistics, gating
// probabilities) are made by the CPU kernels.
#include <string>
#include <utility>

#include "core/check.h"
#include "core/op_geometry.h"
#include "kernels/backend_ops_cases.h"

namespace meshpipe::kernels::backend_ops {

using K = OpKind;

// ---- softmax and log-softmax, and their gradients ----

void add_softmax_cases(std::vector<Case>& cases) {
  Gen g(37);
  struct Sm {
    Shape x;
    int64_t axis;
    bool causal;
    int64_t row_offset;
  };
  const std::vector<Sm> forward = {
      Sm{Shape{7, 13}, 1, false, 0},       Sm{Shape{4, 1500}, 1, false, 0},
      Sm{Shape{5, 9, 11}, 1, false, 0},    Sm{Shape{1, 2, 33, 33}, 3, true, 0},
      Sm{Shape{2, 3, 8, 24}, 3, true, 16}, Sm{Shape{2, 64, 1536}, 2, true, 1400}};
  for (const Sm& s : forward) {
    std::string label = dims(s.x) + " axis " + std::to_string(s.axis);
    if (s.causal) label += " causal r" + std::to_string(s.row_offset);
    Case c = make(K::kSoftmax, label, TolClass::kReduction);
    c.attrs.axis = s.axis;
    c.attrs.causal = s.causal;
    c.row_offset = s.row_offset;
    c.in.push_back(normal(g, s.x, 2.0));
    c.out.push_back(output(s.x));
    // The gradient of the non-causal ones and of one causal one (rows with exact zeros).
    if (!s.causal || s.row_offset == 16) {
      Case d = make(K::kSoftmaxGrad, label, TolClass::kReduction);
      d.attrs.axis = s.axis;
      d.in.push_back(values(s.x, derive(c)[0]));
      d.in.push_back(normal(g, s.x));
      d.out.push_back(output(s.x));
      cases.push_back(std::move(c));
      cases.push_back(std::move(d));
    } else {
      cases.push_back(std::move(c));
    }
  }
  for (const Sm& s : {Sm{Shape{7, 13}, 1, false, 0}, Sm{Shape{3, 2000}, 1, false, 0},
                      Sm{Shape{6, 10, 5}, 0, false, 0}}) {
    const std::string label = dims(s.x) + " axis " + std::to_string(s.axis);
    Case c = make(K::kLogSoftmax, label, TolClass::kReduction);
    c.attrs.axis = s.axis;
    c.in.push_back(normal(g, s.x, 2.0));
    c.out.push_back(output(s.x));
    Case d = make(K::kLogSoftmaxGrad, label, TolClass::kReduction);
    d.attrs.axis = s.axis;
    d.in.push_back(values(s.x, derive(c)[0]));
    d.in.push_back(normal(g, s.x));
    d.out.push_back(output(s.x));
    cases.push_back(std::move(c));
    cases.push_back(std::move(d));
  }
}

// ---- layer norm and batch norm, their gradients, the synchronised batch-norm pieces ----

// x, gamma, beta -> y, mean, rstd; `mixed`: half x and y, f32 parameters and statistics.
static Case norm_forward(Gen& g, K kind, const Shape& x, double shift, bool mixed) {
  const Shape p{kind == K::kLayerNorm ? x[x.rank() - 1] : x[1]};
  const Shape stats = kind == K::kLayerNorm ? rows_of(x) : p;
  Case c = make(kind, (mixed ? "mixed half x/y, f32 rest " : "") + dims(x), TolClass::kReduction);
  c.mixed = mixed;
  // y may be computed from the stored (rounded) mean and rstd: 3 roundings unless those are f32.
  c.roundings = mixed ? 1 : 3;
  c.attrs.eps = 1e-5f;
  c.in.push_back(normal(g, x, 1.5, shift));
  Operand gamma = normal(g, p, 0.2, 1.0);
  Operand beta = normal(g, p, 0.2);
  c.in.push_back(mixed ? fixed_f32(gamma) : gamma);
  c.in.push_back(mixed ? fixed_f32(beta) : beta);
  c.out.push_back(output(x));
  c.out.push_back(mixed ? fixed_f32_output(stats) : output(stats));
  c.out.push_back(mixed ? fixed_f32_output(stats) : output(stats));
  return c;
}

// dy, x, mean, rstd, gamma -> dx, dgamma, dbeta from a forward case.
static Case norm_backward(Gen& g, const Case& fwd) {
  const K kind = fwd.kind == K::kLayerNorm ? K::kLayerNormGrad : K::kBatchNormGrad;
  Case c = make(kind, fwd.label, TolClass::kReduction);
  c.mixed = fwd.mixed;
  // Batch norm's dx may be computed from the stored (rounded) dgamma and dbeta.
  c.roundings = (kind == K::kBatchNormGrad && !fwd.mixed) ? 2 : 1;
  const std::vector<std::vector<float>> y = derive(fwd);
  const Shape& x = fwd.in[0].shape;
  const Shape& stats = fwd.out[1].shape;
  c.in.push_back(normal(g, x));
  c.in.push_back(fwd.in[0]);
  Operand mean = values(stats, y[1]);
  Operand rstd = values(stats, y[2]);
  if (fwd.mixed) {
    mean.dtype = DType::kF32;
    rstd.dtype = DType::kF32;
  }
  c.in.push_back(mean);
  c.in.push_back(rstd);
  c.in.push_back(fwd.in[1]);
  c.out.push_back(output(x));
  c.out.push_back(fwd.mixed ? fixed_f32_output(fwd.in[1].shape) : output(fwd.in[1].shape));
  c.out.push_back(fwd.mixed ? fixed_f32_output(fwd.in[1].shape) : output(fwd.in[1].shape));
  return c;
}

// The synchronised batch norm of x_full [N, C, H, W] as one device of `parts` sees it: its
// part of the batch (the first N / parts images) with the all-reduced sums of the whole batch.
static void batch_norm_pieces(std::vector<Case>& cases, Gen& g, const Shape& full, int64_t parts) {
  const Shape part{full[0] / parts, full[1], full[2], full[3]};
  const Shape ch{full[1]};
  const double count = static_cast<double>(full[0] * full[2] * full[3]);
  const std::string label =
      parts == 1 ? dims(full) + " count " + std::to_string(static_cast<int64_t>(count))
                 : "part 1/" + std::to_string(parts) + " of " + dims(full) + " count " +
                       std::to_string(static_cast<int64_t>(count));
  const Operand x_full = normal(g, full, 1.5, 0.7);
  const Operand dy_full = normal(g, full);
  const auto first_part = [&](const Operand& o) {
    return values(part, std::vector<float>(o.values.begin(),
                                           o.values.begin() + static_cast<int64_t>(part.numel())));
  };
  const Operand x = first_part(x_full);
  const Operand dy = first_part(dy_full);
  const Operand gamma = normal(g, ch, 0.2, 1.0);
  const Operand beta = normal(g, ch, 0.2);
  // The global statistics, as the all-reduces would give them (the pieces on the whole batch).
  Case sums_full = make(K::kBatchNormSums, "", TolClass::kReduction);
  sums_full.in.push_back(x_full);
  sums_full.out.push_back(output(ch));
  const Operand sums = values(ch, derive(sums_full)[0]);
  Case stats_full = make(K::kBatchNormStats, "", TolClass::kReduction);
  stats_full.attrs.count = count;
  stats_full.in = {x_full, sums};
  stats_full.out = {output(ch), output(ch)};
  const std::vector<std::vector<float>> ms = derive(stats_full);
  const Operand mean = values(ch, ms[0]);
  const Operand sq = values(ch, ms[1]);
  Case apply_full = make(K::kBatchNormApply, "", TolClass::kReduction);
  apply_full.attrs.count = count;
  apply_full.in = {x_full, mean, sq, gamma, beta};
  apply_full.out = {output(full), output(ch)};
  const Operand rstd = values(ch, derive(apply_full)[1]);
  Case gsums_full = make(K::kBatchNormGradSums, "", TolClass::kReduction);
  gsums_full.in = {dy_full, x_full, mean, rstd};
  gsums_full.out = {output(ch), output(ch)};
  const std::vector<std::vector<float>> gs = derive(gsums_full);

  Case s = make(K::kBatchNormSums, label, TolClass::kReduction);
  s.in = {x};
  s.out = {output(ch)};
  Case st = make(K::kBatchNormStats, label, TolClass::kReduction);
  st.attrs.count = count;
  st.in = {x, sums};
  st.out = {output(ch), output(ch)};
  Case ap = make(K::kBatchNormApply, label, TolClass::kReduction);
  ap.attrs.count = count;
  ap.roundings = 2;  // y may be computed from the stored (rounded) rstd
  ap.in = {x, mean, sq, gamma, beta};
  ap.out = {output(part), output(ch)};
  Case gsum = make(K::kBatchNormGradSums, label, TolClass::kReduction);
  gsum.in = {dy, x, mean, rstd};
  gsum.out = {output(ch), output(ch)};
  Case gap = make(K::kBatchNormGradApply, label, TolClass::kReduction);
  gap.attrs.count = count;
  gap.in = {dy, x, mean, rstd, gamma, values(ch, gs[0]), values(ch, gs[1])};
  gap.out = {output(part)};
  for (Case* c : {&s, &st, &ap, &gsum, &gap}) cases.push_back(std::move(*c));
}

void add_norm_cases(std::vector<Case>& cases) {
  Gen g(41);
  struct N {
    K kind;
    Shape x;
    double shift;
    bool mixed;
  };
  for (const N& n :
       {N{K::kLayerNorm, Shape{7, 13}, 0.0, false}, N{K::kLayerNorm, Shape{2, 8, 1536}, 0.5, false},
        N{K::kLayerNorm, Shape{3, 5, 64}, 4.0, false}, N{K::kLayerNorm, Shape{6, 96}, 0.0, true},
        N{K::kBatchNorm, Shape{4, 3, 5, 7}, 1.0, false},
        N{K::kBatchNorm, Shape{16, 10}, 0.0, false},
        N{K::kBatchNorm, Shape{2, 32, 9, 9}, -2.0, false},
        N{K::kBatchNorm, Shape{4, 8, 6, 6}, 0.0, true}}) {
    Case f = norm_forward(g, n.kind, n.x, n.shift, n.mixed);
    Case b = norm_backward(g, f);
    cases.push_back(std::move(f));
    cases.push_back(std::move(b));
  }
  Gen p(47);
  batch_norm_pieces(cases, p, Shape{4, 3, 5, 7}, 1);
  batch_norm_pieces(cases, p, Shape{8, 6, 4, 5}, 2);
}

// ---- losses, embeddings, gating ----

void add_loss_cases(std::vector<Case>& cases) {
  Gen g(53);
  struct L {
    Shape logits;
    bool mixed;
  };
  for (const L& l : {L{Shape{7, 13}, false}, L{Shape{3, 5, 1000}, false}, L{Shape{4, 300}, true}}) {
    const int64_t v = l.logits[l.logits.rank() - 1];
    const Shape pos = rows_of(l.logits);
    const std::string label = (l.mixed ? "mixed half logits, f32 loss " : "") + dims(l.logits) +
                              " V=" + std::to_string(v);
    const Operand logits = normal(g, l.logits, 2.0);
    const Operand labels = random_ints(g, pos, 0, static_cast<int32_t>(v));
    Case c = make(K::kCrossEntropy, label, TolClass::kReduction);
    c.mixed = l.mixed;
    c.in = {logits, labels};
    c.out = {l.mixed ? fixed_f32_output(Shape{}) : output(Shape{})};
    Case d = make(K::kCrossEntropyGrad, label, TolClass::kReduction);
    d.mixed = l.mixed;
    d.in = {logits, labels, l.mixed ? fixed_f32(scalar(1.25f)) : scalar(1.25f)};
    d.out = {output(l.logits)};
    cases.push_back(std::move(c));
    cases.push_back(std::move(d));
  }
}

void add_embedding_cases(std::vector<Case>& cases) {
  Gen g(59);
  struct E {
    int64_t vocab;
    int64_t hidden;
    Shape ids;
    int32_t lo;  // ids drawn from [lo, hi); the shard owns [id_offset, id_offset + vocab)
    int32_t hi;
    int64_t id_offset;
    bool mixed;
  };
  for (const E& e :
       {E{1000, 64, Shape{4, 9}, 0, 1000, 0, false}, E{50, 33, Shape{4, 7}, -5, 100, 20, false},
        E{1000, 64, Shape{4, 9}, 0, 30, 0, false},  // duplicates for the gradient
        E{64, 48, Shape{3, 11}, 0, 64, 0, true}}) {
    std::string label = (e.mixed ? "mixed half dy, f32 dtable " : "") + std::to_string(e.vocab) +
                        "x" + std::to_string(e.hidden) + " ids " + dims(e.ids) + " in [" +
                        std::to_string(e.lo) + "," + std::to_string(e.hi) + ")";
    if (e.id_offset != 0) label += " offset " + std::to_string(e.id_offset);
    const Shape table{e.vocab, e.hidden};
    std::vector<int64_t> rows = e.ids.dims();
    rows.push_back(e.hidden);
    const Operand ids = random_ints(g, e.ids, e.lo, e.hi);
    if (!e.mixed) {
      Case c = make(K::kEmbedding, label, TolClass::kExact);
      c.id_offset = e.id_offset;
      c.in = {normal(g, table), ids};
      c.out = {output(Shape(rows))};
      cases.push_back(std::move(c));
    }
    Case d = make(K::kEmbeddingGrad, label, TolClass::kReduction);
    d.mixed = e.mixed;
    d.id_offset = e.id_offset;
    d.attrs.shape = table;
    d.in = {ids, normal(g, Shape(rows))};
    d.out = {e.mixed ? fixed_f32_output(table) : output(table)};
    cases.push_back(std::move(d));
  }
}

void add_gating_cases(std::vector<Case>& cases) {
  Gen g(61);
  struct T {
    Shape probs;
    int64_t k;
    int64_t capacity;
  };
  // [2,16,8] k=2: 32 choices over 8 experts, 4 a expert on average, so capacity 3 drops tokens.
  for (const T& t :
       {T{Shape{2, 16, 8}, 2, 3}, T{Shape{2, 16, 8}, 1, 2}, T{Shape{1, 64, 32}, 2, 8}}) {
    const std::string label =
        dims(t.probs) + " k=" + std::to_string(t.k) + " C=" + std::to_string(t.capacity);
    // Probabilities: softmax of random logits over the experts.
    Case sm = make(K::kSoftmax, "", TolClass::kReduction);
    sm.attrs.axis = 2;
    sm.in = {normal(g, t.probs, 1.5)};
    sm.out = {output(t.probs)};
    const Operand probs = values(t.probs, derive(sm)[0]);
    const Shape slots{t.probs[0], t.probs[1], t.probs[2], t.capacity};
    Case c = make(K::kTopKGating, label, TolClass::kReduction);
    c.attrs.k = t.k;
    c.attrs.capacity = t.capacity;
    c.in = {probs};
    c.out = {output(slots), output(slots)};
    Case d = make(K::kTopKGatingGrad, label, TolClass::kReduction);
    d.attrs = c.attrs;
    d.in = {probs, normal(g, slots)};
    d.out = {output(t.probs)};
    cases.push_back(std::move(c));
    cases.push_back(std::move(d));
  }
}

// ---- pooling ----

void add_pooling_cases(std::vector<Case>& cases) {
  Gen g(67);
  struct P {
    Shape x;
    Window2d w;
    bool ties;  // values from {-1, 0, 0.5, 1}: windows with several maxima, in every dtype
  };
  for (const P& p : {P{Shape{2, 3, 11, 13}, window(3, 3, 2, 2, 1, 1), false},
                     P{Shape{2, 4, 8, 8}, window(2, 2, 2, 2, 0, 0), false},
                     P{Shape{1, 5, 7, 13}, window(3, 2, 1, 2, 1, 1), false},
                     P{Shape{2, 3, 9, 10}, window(3, 3, 1, 1, 1, 1), true}}) {
    const std::string label =
        std::string(p.ties ? "ties " : "") + dims(p.x) + " " + window_to_string(p.w);
    const Shape y = window_out(p.x, p.x[1], p.w);
    Operand x = normal(g, p.x);
    if (p.ties) {
      const float levels[4] = {-1.0f, 0.0f, 0.5f, 1.0f};
      for (float& v : x.values) v = levels[g.below(0, 4)];
    }
    const Operand dy = normal(g, y);
    Case mp = make(K::kMaxPool2d, label, TolClass::kExact);
    mp.attrs.window = p.w;
    mp.in = {x};
    mp.out = {output(y)};
    Case mg = make(K::kMaxPool2dGrad, label, TolClass::kReduction);
    mg.attrs.window = p.w;
    mg.in = {x, dy};
    mg.out = {output(p.x)};
    cases.push_back(std::move(mp));
    cases.push_back(std::move(mg));
    if (p.ties) continue;
    Case ap = make(K::kAvgPool2d, label, TolClass::kReduction);
    ap.attrs.window = p.w;
    ap.in = {x};
    ap.out = {output(y)};
    Case ag = make(K::kAvgPool2dGrad, label, TolClass::kReduction);
    ag.attrs.window = p.w;
    ag.attrs.shape = p.x;
    ag.in = {dy};
    ag.out = {output(p.x)};
    cases.push_back(std::move(ap));
    cases.push_back(std::move(ag));
  }
}

// ---- dot products and convolutions ----

static DotDims dot_dims(std::vector<int64_t> lb, std::vector<int64_t> rb, std::vector<int64_t> lc,
                        std::vector<int64_t> rc) {
  DotDims d;
  d.lhs_batch = std::move(lb);
  d.rhs_batch = std::move(rb);
  d.lhs_contract = std::move(lc);
  d.rhs_contract = std::move(rc);
  return d;
}

void add_dot_cases(std::vector<Case>& cases) {
  Gen g(71);
  struct D {
    std::string label;
    Shape lhs;
    Shape rhs;
    DotDims dims;
    bool mixed;
  };
  const std::vector<D> list = {
      D{"7x13 . 13x9", Shape{7, 13}, Shape{13, 9}, dot_dims({}, {}, {1}, {0}), false},
      D{"64x256 . 256x384", Shape{64, 256}, Shape{256, 384}, dot_dims({}, {}, {1}, {0}), false},
      D{"33x65 . (17x65)^T", Shape{33, 65}, Shape{17, 65}, dot_dims({}, {}, {1}, {1}), false},
      D{"(65x33)^T . 65x17", Shape{65, 33}, Shape{65, 17}, dot_dims({}, {}, {0}, {0}), false},
      D{"16x1000 . 1000x8 (long K)", Shape{16, 1000}, Shape{1000, 8}, dot_dims({}, {}, {1}, {0}),
        false},
      D{"batched 4x31x24 . 4x24x19", Shape{4, 31, 24}, Shape{4, 24, 19},
        dot_dims({0}, {0}, {2}, {1}), false},
      D{"batch in the middle 31x4x24 . 24x4x19", Shape{31, 4, 24}, Shape{24, 4, 19},
        dot_dims({1}, {1}, {2}, {0}), false},
      D{"attention q.k^T 2x4x40x16", Shape{2, 4, 40, 16}, Shape{2, 4, 40, 16},
        dot_dims({0, 1}, {0, 1}, {3}, {3}), false},
      D{"two contracting dims in other orders 3x5x6x4 . 4x3x7x5", Shape{3, 5, 6, 4},
        Shape{4, 3, 7, 5}, dot_dims({0}, {1}, {1, 3}, {3, 0}), false},
      D{"mixed half operands, f32 out 48x96 . 96x40", Shape{48, 96}, Shape{96, 40},
        dot_dims({}, {}, {1}, {0}), true},
      D{"mixed half operands, f32 out batched 3x20x24 . 3x19x24", Shape{3, 20, 24},
        Shape{3, 19, 24}, dot_dims({0}, {0}, {2}, {2}), true},
  };
  for (const D& d : list) {
    const Expected<Shape> o = dot_output_shape(d.lhs, d.rhs, d.dims);
    MP_CHECK(o.has_value()) << d.label << ": " << o.status().to_string();
    Case c = make(K::kDot, d.label, TolClass::kGemm);
    c.mixed = d.mixed;
    c.attrs.dot = d.dims;
    c.in = {normal(g, d.lhs), normal(g, d.rhs)};
    c.out = {d.mixed ? fixed_f32_output(*o) : output(*o)};
    cases.push_back(std::move(c));
  }
}

void add_conv_cases(std::vector<Case>& cases) {
  Gen g(73);
  struct C {
    Shape x;
    Shape w;
    Window2d win;
    bool mixed;
  };
  for (const C& c : {C{Shape{2, 3, 11, 13}, Shape{4, 3, 3, 3}, window(3, 3, 1, 1, 1, 1), false},
                     C{Shape{2, 5, 15, 16}, Shape{6, 5, 3, 3}, window(3, 3, 2, 2, 1, 1), false},
                     C{Shape{3, 16, 7, 9}, Shape{8, 16, 1, 1}, window(1, 1, 1, 1, 0, 0), false},
                     C{Shape{1, 4, 12, 17}, Shape{5, 4, 3, 5}, window(3, 5, 2, 1, 2, 0), false},
                     C{Shape{2, 8, 10, 10}, Shape{8, 8, 3, 3}, window(3, 3, 1, 1, 1, 1), true}}) {
    const Shape y = window_out(c.x, c.w[0], c.win);
    const std::string label = (c.mixed ? "mixed half x/w/dy, f32 result " : "") + dims(c.x) +
                              " * " + dims(c.w) + " " + window_to_string(c.win);
    const Operand x = normal(g, c.x);
    const Operand w = normal(g, c.w, 0.3);
    const Operand dy = normal(g, y);
    Case f = make(K::kConv2d, label, TolClass::kGemm);
    f.attrs.window = c.win;
    f.in = {x, w};
    f.out = {c.mixed ? fixed_f32_output(y) : output(y)};
    Case gi = make(K::kConv2dGradInput, label, TolClass::kGemm);
    gi.attrs.window = c.win;
    gi.attrs.shape = c.x;
    gi.in = {dy, w};
    gi.out = {c.mixed ? fixed_f32_output(c.x) : output(c.x)};
    Case gf = make(K::kConv2dGradFilter, label, TolClass::kGemm);
    gf.attrs.window = c.win;
    gf.attrs.shape = c.w;
    gf.in = {x, dy};
    gf.out = {c.mixed ? fixed_f32_output(c.w) : output(c.w)};
    for (Case* k : {&f, &gi, &gf}) {
      k->mixed = c.mixed;
      cases.push_back(std::move(*k));
    }
  }
}

}  // namespace meshpipe::kernels::backend_ops

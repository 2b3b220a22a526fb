// The cases of backend_ops: the building blocks, the elementwise, conversion, layout and optimizer
// cases, make_cases and the CPU f32 reference (the other families: backend_ops_cases_nn.cc).
#include "kernels/backend_ops_cases.h"

#include <cmath>
#include <utility>

#include "core/check.h"
#include "core/op_geometry.h"
#include "kernels/backend.h"

namespace meshpipe::kernels::backend_ops {

using K = OpKind;

Operand values(const Shape& s, std::vector<float> v) {
  MP_CHECK(static_cast<int64_t>(v.size()) == s.numel()) << "operand size";
  Operand o;
  o.shape = s;
  o.values = std::move(v);
  return o;
}

Operand normal(Gen& g, const Shape& s, double scale, double shift) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (float& x : v) x = static_cast<float>(shift + scale * g.normal());
  return values(s, std::move(v));
}

Operand uniform(Gen& g, const Shape& s, double lo, double hi) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (float& x : v) x = static_cast<float>(lo + (hi - lo) * g.uniform());
  return values(s, std::move(v));
}

Operand ints(const Shape& s, std::vector<int32_t> v) {
  MP_CHECK(static_cast<int64_t>(v.size()) == s.numel()) << "operand size";
  Operand o;
  o.shape = s;
  o.is_int = true;
  o.ids = std::move(v);
  return o;
}

Operand random_ints(Gen& g, const Shape& s, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(static_cast<size_t>(s.numel()));
  for (int32_t& x : v) x = g.below(lo, hi);
  return ints(s, std::move(v));
}

Operand scalar(float v) { return values(Shape{}, {v}); }

Operand fixed_f32(Operand o) {
  o.dtype = DType::kF32;
  return o;
}

Output output(const Shape& s) {
  Output o;
  o.shape = s;
  return o;
}

Output fixed_f32_output(const Shape& s) {
  Output o = output(s);
  o.dtype = DType::kF32;
  return o;
}

// "7x13"; "scalar" for rank 0.
std::string dims(const Shape& s) {
  if (s.rank() == 0) return "scalar";
  std::string r;
  for (int64_t i = 0; i < s.rank(); ++i) {
    if (i > 0) r += 'x';
    r += std::to_string(s[i]);
  }
  return r;
}

std::string join(const std::vector<int64_t>& v) {
  std::string r;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) r += ',';
    r += std::to_string(v[i]);
  }
  return r;
}

Case make(K kind, std::string label, TolClass tol) {
  Case c;
  c.kind = kind;
  c.label = std::move(label);
  c.tol = tol;
  return c;
}

// The outputs of one CPU f32 call of `c` (derived inputs).
std::vector<std::vector<float>> derive(const Case& c) {
  std::vector<std::vector<float>> in;
  for (const Operand& o : c.in) in.push_back(o.values);
  return cpu_reference(c, in);
}

// Shape without its last dim.
Shape rows_of(const Shape& s) {
  std::vector<int64_t> d = s.dims();
  d.pop_back();
  return Shape(std::move(d));
}

Shape without(const Shape& s, const std::vector<int64_t>& axes) {
  std::vector<int64_t> d;
  for (int64_t i = 0; i < s.rank(); ++i) {
    bool dropped = false;
    for (int64_t a : axes) dropped = dropped || a == i;
    if (!dropped) d.push_back(s[i]);
  }
  return Shape(std::move(d));
}

Window2d window(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  Window2d w;
  w.kernel_h = kh;
  w.kernel_w = kw;
  w.stride_h = sh;
  w.stride_w = sw;
  w.pad_h = ph;
  w.pad_w = pw;
  return w;
}

Shape window_out(const Shape& x, int64_t channels, const Window2d& w) {
  const Expected<int64_t> ho = window_output_size(x[2], w.kernel_h, w.stride_h, w.pad_h);
  const Expected<int64_t> wo = window_output_size(x[3], w.kernel_w, w.stride_w, w.pad_w);
  MP_CHECK(ho.has_value() && wo.has_value()) << "bad window in a case";
  return Shape{x[0], channels, *ho, *wo};
}

// ---- elementwise: arithmetic, scale, bias, activations and their gradients, constant ----

void add_elementwise_cases(std::vector<Case>& cases) {
  Gen g(11);
  const std::vector<Shape> shapes = {Shape{7, 13}, Shape{3, 5, 1031}};
  for (K k : {K::kAdd, K::kSub, K::kMul, K::kDiv}) {
    for (const Shape& s : shapes) {
      Case c = make(k, dims(s), TolClass::kElementwise);
      c.in.push_back(normal(g, s));
      Operand b = normal(g, s);
      // Divisors away from zero: |b| >= 0.5.
      if (k == K::kDiv) {
        for (float& v : b.values) v = std::copysign(0.5f + std::fabs(v), v);
      }
      c.in.push_back(std::move(b));
      c.out.push_back(output(s));
      cases.push_back(std::move(c));
    }
  }
  {  // a half activation added to an f32 residual stream
    const Shape s{5, 67};
    Case c = make(K::kAdd, "mixed a half, b and out f32 " + dims(s), TolClass::kElementwise);
    c.mixed = true;
    c.in.push_back(normal(g, s));
    c.in.push_back(fixed_f32(normal(g, s)));
    c.out.push_back(fixed_f32_output(s));
    cases.push_back(std::move(c));
  }
  for (const Shape& s : {Shape{7, 13}, Shape{1000, 7}}) {
    Case c = make(K::kScale, dims(s) + " a1.7 b-0.3", TolClass::kElementwise);
    c.attrs.alpha = 1.7f;
    c.attrs.beta = -0.3f;
    c.in.push_back(normal(g, s));
    c.out.push_back(output(s));
    cases.push_back(std::move(c));
  }
  struct Bias {
    Shape x;
    Shape b;
    std::vector<int64_t> axes;
  };
  for (const Bias& b :
       {Bias{Shape{5, 7, 13}, Shape{7}, {1}}, Bias{Shape{4, 6, 33}, Shape{6, 33}, {1, 2}},
        Bias{Shape{4, 6, 33}, Shape{4, 33}, {0, 2}}}) {
    Case c = make(K::kBiasAdd, dims(b.x) + " + " + dims(b.b) + " on " + join(b.axes),
                  TolClass::kElementwise);
    c.attrs.axes = b.axes;
    c.in.push_back(normal(g, b.x));
    c.in.push_back(normal(g, b.b));
    c.out.push_back(output(b.x));
    cases.push_back(std::move(c));
  }
  struct Act {
    K fwd;
    K grad;
    double scale;
  };
  for (const Act& a : {Act{K::kRelu, K::kReluGrad, 1.0}, Act{K::kGelu, K::kGeluGrad, 3.0},
                       Act{K::kTanh, K::kTanhGrad, 2.0}, Act{K::kGeluErf, K::kGeluErfGrad, 3.0}}) {
    for (const Shape& s : {Shape{7, 13}, Shape{3, 2049}}) {
      Case f = make(a.fwd, dims(s), TolClass::kElementwise);
      f.in.push_back(normal(g, s, a.scale));
      f.out.push_back(output(s));
      // relu and tanh take the forward output y (relu's exact zeros included), gelu takes x.
      Case d = make(a.grad, dims(s), TolClass::kElementwise);
      d.in.push_back(a.fwd == K::kGelu || a.fwd == K::kGeluErf ? f.in[0] : values(s, derive(f)[0]));
      d.in.push_back(normal(g, s));
      d.out.push_back(output(s));
      cases.push_back(std::move(f));
      cases.push_back(std::move(d));
    }
  }
  for (const float value : {0.37f, -2.5f}) {
    const Shape s = value > 0 ? Shape{7, 13} : Shape{3, 1000};
    Case c = make(K::kConstant, dims(s) + " fill " + std::to_string(value).substr(0, 5),
                  TolClass::kExact);
    c.attrs.shape = s;
    c.attrs.alpha = value;
    c.out.push_back(output(s));
    cases.push_back(std::move(c));
  }
}

// ---- convert: storage-type changes, rounded to nearest even (attrs.dtype is set per run) ----

void add_conversion_cases(std::vector<Case>& cases) {
  Gen g(17);
  const Shape s{7, 13};
  // f32 values that round awkwardly: ties to even in f16 (1 + 2^-11, 1 + 3 * 2^-11) and bf16
  // (1 + 2^-8, 1 + 3 * 2^-8), the f16 maximum and past it (to infinity), f16 subnormals and
  // below half the least one, an f32 subnormal, past the bf16 maximum, signed zeros, the least
  // normal f16 and a value just below it that rounds up to it.
  Operand specials = normal(g, s, 3.0);
  const std::vector<float> edge = {
      1.0f + 0x1p-11f, 1.0f + 0x3p-11f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 65504.0f,   65519.0f,
      65520.0f,        -70000.0f,       1e-5f,          6e-8f,          2.9e-8f,    1e-40f,
      3.0e38f,         -3.4e38f,        0.0f,           -0.0f,          0x1.0p-14f, -0x1.ff8p-15f};
  for (size_t i = 0; i < edge.size(); ++i) specials.values[i * 5] = edge[i];
  struct Conv {
    std::string label;
    Operand x;
    std::optional<DType> from;
    std::optional<DType> to;
  };
  const std::vector<Conv> list = {
      Conv{"same dtype", normal(g, s, 3.0), std::nullopt, std::nullopt},
      Conv{"f32 to the dtype, edge values", specials, DType::kF32, std::nullopt},
      Conv{"the dtype to f32", normal(g, s, 100.0), std::nullopt, DType::kF32},
      Conv{"f16 to the dtype", normal(g, s, 100.0), DType::kF16, std::nullopt},
      Conv{"bf16 to the dtype", normal(g, s, 10.0), DType::kBF16, std::nullopt},
  };
  for (const Conv& v : list) {
    Case c = make(K::kConvert, (v.from || v.to ? "mixed " : "") + v.label + " " + dims(s),
                  TolClass::kExact);
    c.mixed = v.from.has_value() || v.to.has_value();
    c.in.push_back(v.x);
    c.in[0].dtype = v.from;
    c.out.push_back(output(s));
    c.out[0].dtype = v.to;
    cases.push_back(std::move(c));
  }
}

// ---- layout: reshape, transpose, slice, pad, concat, reduce, broadcast ----

void add_layout_cases(std::vector<Case>& cases) {
  Gen g(23);
  {
    Case c = make(K::kReshape, "6x35 to 5x6x7", TolClass::kExact);
    c.attrs.shape = Shape{5, 6, 7};
    c.in.push_back(normal(g, Shape{6, 35}));
    c.out.push_back(output(c.attrs.shape));
    cases.push_back(std::move(c));
  }
  struct Perm {
    Shape x;
    std::vector<int64_t> perm;
  };
  for (const Perm& p : {Perm{Shape{7, 13}, {1, 0}}, Perm{Shape{2, 3, 5, 7}, {3, 1, 0, 2}},
                        Perm{Shape{2, 6, 33, 16}, {0, 2, 1, 3}}}) {
    Case c = make(K::kTranspose, dims(p.x) + " perm " + join(p.perm), TolClass::kExact);
    c.attrs.axes = p.perm;
    std::vector<int64_t> o;
    for (int64_t a : p.perm) o.push_back(p.x[a]);
    c.in.push_back(normal(g, p.x));
    c.out.push_back(output(Shape(o)));
    cases.push_back(std::move(c));
  }
  struct Range {
    Shape x;
    int64_t axis;
    int64_t start;
    int64_t size;
  };
  for (const Range& r : {Range{Shape{7, 13, 5}, 1, 3, 6}, Range{Shape{9, 31}, 0, 2, 5}}) {
    Shape o = r.x;
    o[r.axis] = r.size;
    Case c = make(K::kSlice,
                  dims(r.x) + " axis " + std::to_string(r.axis) + " [" + std::to_string(r.start) +
                      ":" + std::to_string(r.start + r.size) + "]",
                  TolClass::kExact);
    c.attrs.axis = r.axis;
    c.attrs.start = r.start;
    c.attrs.end = r.start + r.size;
    c.in.push_back(normal(g, r.x));
    c.out.push_back(output(o));
    cases.push_back(std::move(c));
  }
  for (const Range& r : {Range{Shape{7, 5}, 1, 4, 12}, Range{Shape{3, 4, 5}, 0, 2, 7}}) {
    Shape o = r.x;
    o[r.axis] = r.size;
    Case c = make(K::kPad,
                  dims(r.x) + " to " + dims(o) + " at " + std::to_string(r.start) + " axis " +
                      std::to_string(r.axis),
                  TolClass::kExact);
    c.attrs.axis = r.axis;
    c.attrs.start = r.start;
    c.attrs.shape = o;
    c.in.push_back(normal(g, r.x));
    c.out.push_back(output(o));
    cases.push_back(std::move(c));
  }
  {
    Case c = make(K::kConcat, "7x{3,6,1}x5 axis 1", TolClass::kExact);
    c.attrs.axis = 1;
    for (int64_t w : {3, 6, 1}) c.in.push_back(normal(g, Shape{7, w, 5}));
    c.out.push_back(output(Shape{7, 10, 5}));
    cases.push_back(std::move(c));
    Case d = make(K::kConcat, "{3,5}x33 axis 0", TolClass::kExact);
    d.attrs.axis = 0;
    d.in.push_back(normal(g, Shape{3, 33}));
    d.in.push_back(normal(g, Shape{5, 33}));
    d.out.push_back(output(Shape{8, 33}));
    cases.push_back(std::move(d));
  }
  struct Red {
    Shape x;
    std::vector<int64_t> axes;
  };
  for (K k : {K::kReduceSum, K::kReduceMean}) {
    for (const Red& r : {Red{Shape{7, 13, 5}, {1}}, Red{Shape{4, 1000}, {1}},
                         Red{Shape{3, 5, 7, 9}, {0, 2}}, Red{Shape{6, 7}, {0, 1}}}) {
      Case c = make(k, dims(r.x) + " over " + join(r.axes), TolClass::kReduction);
      c.attrs.axes = r.axes;
      // Mean 0.5: a sum over all axes (a scalar) must not cancel to near zero, or the f32
      // rounding of its terms would dominate an error measured against that small result.
      c.in.push_back(normal(g, r.x, 1.0, 0.5));
      c.out.push_back(output(without(r.x, r.axes)));
      cases.push_back(std::move(c));
    }
  }
  struct Bcast {
    Shape x;
    Shape o;
    std::vector<int64_t> axes;
  };
  for (const Bcast& b :
       {Bcast{Shape{13}, Shape{7, 13}, {1}}, Bcast{Shape{7, 5}, Shape{7, 3, 5}, {0, 2}},
        Bcast{Shape{}, Shape{4, 5}, {}}}) {
    Case c = make(K::kBroadcast, dims(b.x) + " to " + dims(b.o), TolClass::kExact);
    c.attrs.axes = b.axes;
    c.attrs.shape = b.o;
    c.in.push_back(normal(g, b.x));
    c.out.push_back(output(b.o));
    cases.push_back(std::move(c));
  }
}

// ---- optimizers ----

void add_optimizer_cases(std::vector<Case>& cases) {
  Gen g(79);
  for (const Shape& s : {Shape{7, 13}, Shape{1000, 7}}) {
    Case c = make(K::kSgdUpdate, dims(s) + " lr 0.1 wd 0.01", TolClass::kElementwise);
    c.attrs.lr = 0.1f;
    c.attrs.weight_decay = 0.01f;
    c.in = {normal(g, s), normal(g, s, 0.1)};
    c.out = {output(s)};
    cases.push_back(std::move(c));
  }
  for (const bool mixed : {false, true}) {
    const Shape s = mixed ? Shape{300, 7} : Shape{7, 13};
    Case c = make(K::kSgdMomentumUpdate,
                  (mixed ? "mixed half g, f32 p/m " : "") + dims(s) + " lr 0.05 mom 0.9 wd 1e-4",
                  TolClass::kElementwise);
    c.mixed = mixed;
    c.attrs.lr = 0.05f;
    c.attrs.momentum = 0.9f;
    c.attrs.weight_decay = 1e-4f;
    const Operand p = normal(g, s);
    const Operand m = normal(g, s, 0.1);
    c.in = {mixed ? fixed_f32(p) : p, normal(g, s, 0.1), mixed ? fixed_f32(m) : m};
    c.out = {mixed ? fixed_f32_output(s) : output(s), mixed ? fixed_f32_output(s) : output(s)};
    cases.push_back(std::move(c));
  }
  struct A {
    Shape s;
    float step;
    bool mixed;
  };
  for (const A& a : {A{Shape{7, 13}, 7.0f, false}, A{Shape{1000, 7}, 1000.0f, false},
                     A{Shape{5, 77}, 3.0f, true}}) {
    Case c = make(K::kAdamUpdate,
                  (a.mixed ? "mixed half g, f32 p/m/v/step " : "") + dims(a.s) + " step " +
                      std::to_string(static_cast<int>(a.step)) + " wd 0.01",
                  TolClass::kElementwise);
    c.mixed = a.mixed;
    c.attrs.lr = 1e-3f;
    c.attrs.beta1 = 0.9f;
    c.attrs.beta2 = 0.999f;
    c.attrs.eps = 1e-8f;
    c.attrs.weight_decay = 0.01f;
    const auto keep = [&](Operand o) { return a.mixed ? fixed_f32(std::move(o)) : o; };
    c.in = {keep(normal(g, a.s)), normal(g, a.s, 0.1), keep(normal(g, a.s, 0.01)),
            keep(uniform(g, a.s, 0.0, 0.01)), keep(scalar(a.step))};
    for (int i = 0; i < 3; ++i) c.out.push_back(a.mixed ? fixed_f32_output(a.s) : output(a.s));
    cases.push_back(std::move(c));
  }
}

const char* tol_class_name(TolClass t) {
  switch (t) {
    case TolClass::kExact:
      return "exact";
    case TolClass::kElementwise:
      return "elementwise";
    case TolClass::kReduction:
      return "reduction";
    case TolClass::kGemm:
      return "gemm";
  }
  return "?";
}

std::vector<std::vector<float>> cpu_reference(const Case& c,
                                              const std::vector<std::vector<float>>& in_values) {
  static const KernelContext ctx{};
  std::vector<TensorView> in;
  std::vector<Shape> shapes;
  for (size_t i = 0; i < c.in.size(); ++i) {
    const Operand& o = c.in[i];
    void* data = o.is_int ? static_cast<void*>(const_cast<int32_t*>(o.ids.data()))
                          : static_cast<void*>(const_cast<float*>(in_values[i].data()));
    in.emplace_back(data, o.shape, o.is_int ? DType::kI32 : DType::kF32);
    shapes.push_back(o.shape);
  }
  std::vector<std::vector<float>> results;
  std::vector<TensorView> out;
  for (const Output& o : c.out) {
    results.emplace_back(static_cast<size_t>(o.shape.numel()), std::nanf(""));
  }
  for (size_t i = 0; i < c.out.size(); ++i) {
    out.emplace_back(results[i].data(), c.out[i].shape,
                     c.out[i].is_int ? DType::kI32 : DType::kF32);
  }
  const int64_t ws_bytes = kernel_workspace_bytes(Device::kCpu, c.kind, shapes, c.attrs);
  std::vector<float> ws(static_cast<size_t>((ws_bytes + 3) / 4));
  KernelArgs a;
  a.ctx = &ctx;
  a.in = in;
  a.out = out;
  if (ws_bytes > 0) a.workspace = TensorView(ws.data(), Shape{(ws_bytes + 3) / 4}, DType::kF32);
  a.attrs = &c.attrs;
  a.row_offset = c.row_offset;
  a.id_offset = c.id_offset;
  const Status s = run_kernel(Device::kCpu, c.kind, a);
  MP_CHECK(s.is_ok()) << op_kind_name(c.kind) << " " << c.label << ": " << s.to_string();
  return results;
}

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  add_elementwise_cases(cases);
  add_conversion_cases(cases);
  add_layout_cases(cases);
  add_softmax_cases(cases);
  add_norm_cases(cases);
  add_loss_cases(cases);
  add_embedding_cases(cases);
  add_gating_cases(cases);
  add_pooling_cases(cases);
  add_dot_cases(cases);
  add_conv_cases(cases);
  add_optimizer_cases(cases);
  return cases;
}

}  // namespace meshpipe::kernels::backend_ops

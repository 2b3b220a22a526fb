// A minimal protobuf encoder for the ONNX tests: keys, varints, length-delimited fields and
// fixed32 written from the wire format's specification (independent of the decoder under test).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace meshpipe::onnx::test {

struct Enc {
  std::string out;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  }
  void key(uint32_t field, uint32_t type) { varint((uint64_t{field} << 3) | type); }
  Enc& i(uint32_t field, int64_t v) {
    key(field, 0);
    varint(static_cast<uint64_t>(v));
    return *this;
  }
  Enc& s(uint32_t field, const std::string& v) {
    key(field, 2);
    varint(v.size());
    out += v;
    return *this;
  }
  Enc& m(uint32_t field, const Enc& v) { return s(field, v.out); }
  Enc& f(uint32_t field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);
    out.append(b, 4);
    return *this;
  }
};

inline std::string raw_floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// Builders for the messages of onnx.proto.
inline Enc tensor(const std::string& name, std::vector<int64_t> dims, const std::vector<float>& v) {
  Enc t;
  for (int64_t d : dims) t.i(1, d);
  t.i(2, 1).s(8, name).s(9, raw_floats(v));
  return t;
}
inline Enc int_tensor(const std::string& name, std::vector<int64_t> dims,
                      const std::vector<int64_t>& v) {
  Enc t;
  for (int64_t d : dims) t.i(1, d);
  t.i(2, 7).s(8, name);
  for (int64_t x : v) t.i(7, x);
  return t;
}
inline Enc attr_i(const std::string& name, int64_t v) {
  Enc a;
  a.s(1, name).i(20, 2).i(3, v);
  return a;
}
inline Enc attr_ints(const std::string& name, const std::vector<int64_t>& v) {
  Enc a;
  a.s(1, name).i(20, 7);
  for (int64_t x : v) a.i(8, x);
  return a;
}
inline Enc attr_t(const std::string& name, const Enc& t) {
  Enc a;
  a.s(1, name).i(20, 4).m(5, t);
  return a;
}
inline Enc node(const std::string& op, const std::string& name, std::vector<std::string> in,
                std::vector<std::string> out, std::vector<Enc> attrs = {}) {
  Enc n;
  for (const auto& i : in) n.s(1, i);
  for (const auto& o : out) n.s(2, o);
  n.s(3, name).s(4, op);
  for (const Enc& a : attrs) n.m(5, a);
  return n;
}
inline Enc value_info(const std::string& name, int32_t type, std::vector<int64_t> dims,
                      const std::string& symbolic0 = "") {
  Enc shape;
  for (size_t k = 0; k < dims.size(); ++k) {
    Enc d;
    if (k == 0 && !symbolic0.empty()) {
      d.s(2, symbolic0);
    } else {
      d.i(1, dims[k]);
    }
    shape.m(1, d);
  }
  Enc tt;
  tt.i(1, type).m(2, shape);
  Enc ty;
  ty.m(1, tt);
  Enc v;
  v.s(1, name).m(2, ty);
  return v;
}
inline Enc scalar_const(const std::string& out, float v) {
  return node("Constant", out, {}, {out}, {attr_t("value", tensor("", {}, {v}))});
}

/// A ModelProto (ir 8, "pytorch" 1.13.0, ai.onnx opset `opset`) of a graph.
inline std::string model_bytes(const std::vector<Enc>& nodes, const std::vector<Enc>& inits,
                               const std::vector<Enc>& inputs, const std::vector<Enc>& outputs,
                               int64_t opset = 13) {
  Enc g;
  for (const Enc& n : nodes) g.m(1, n);
  g.s(2, "test");
  for (const Enc& t : inits) g.m(5, t);
  for (const Enc& i : inputs) g.m(11, i);
  for (const Enc& out : outputs) g.m(12, out);
  Enc op;
  op.s(1, "").i(2, opset);
  Enc m;
  m.i(1, 8).s(2, "pytorch").s(3, "1.13.0").m(7, g).m(8, op);
  return m.out;
}

}  // namespace meshpipe::onnx::test

// Tests of onnx/model.h: decoding ModelProto bytes written by an encoder in this file (the
// protobuf wire format from its specification), tensors' typed and raw data, and malformed
// input: every truncation and random corruption of a valid file is an error or a model, never a
// crash.
#include "onnx/model.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>

#include "onnx/encoder.h"

namespace meshpipe::onnx {
namespace {

using test::Enc;
using test::raw_floats;

// A model "y = Gemm(x, w, b)" with a float initializer in raw_data, one in float_data (packed),
// an int64 shape constant, an attribute of each kind read.
std::string sample_model() {
  Enc w;
  w.i(1, 2).i(1, 3).i(2, 1).s(8, "w").s(9, raw_floats({1, 2, 3, 4, 5, 6}));
  Enc b;  // dims packed, float_data packed
  Enc dims;
  dims.varint(3);
  b.s(1, dims.out).i(2, 1).s(8, "b");
  b.s(4, raw_floats({0.5f, -1.0f, 2.0f}));
  Enc shape;  // int64_data unpacked, negative value
  shape.i(1, 2).i(2, 7).s(8, "shape").i(7, 4).i(7, -1);
  Enc alpha;
  alpha.s(1, "alpha").i(20, 1).f(2, 0.25f);
  Enc trans;
  trans.s(1, "transB").i(20, 2).i(3, 1);
  Enc perm;
  perm.s(1, "perm").i(20, 7).i(8, 1).i(8, 0);
  Enc node;
  node.s(1, "x")
      .s(1, "w")
      .s(1, "b")
      .s(2, "y")
      .s(3, "/fc/Gemm")
      .s(4, "Gemm")
      .m(5, alpha)
      .m(5, trans)
      .m(5, perm);
  Enc dim_batch;
  dim_batch.s(2, "batch");
  Enc dim2;
  dim2.i(1, 2);
  Enc tshape;
  tshape.m(1, dim_batch).m(1, dim2);
  Enc ttype;
  ttype.i(1, 1).m(2, tshape);
  Enc type;
  type.m(1, ttype);
  Enc in;
  in.s(1, "x").m(2, type);
  Enc out;
  out.s(1, "y");
  Enc graph;
  graph.m(1, node).s(2, "g").m(5, w).m(5, b).m(5, shape).m(11, in).m(12, out);
  Enc opset;
  opset.s(1, "").i(2, 13);
  Enc model;
  model.i(1, 8).s(2, "pytorch").s(3, "1.13").m(7, graph).m(8, opset);
  return model.out;
}

TEST_CASE("a model's nodes, attributes, initializers and declared inputs decode", "[onnx]") {
  auto m = decode_model(std::make_shared<std::string>(sample_model()));
  INFO(m.status().to_string());
  REQUIRE(m.has_value());
  CHECK(m->ir_version == 8);
  CHECK(m->producer_name == "pytorch");
  CHECK(m->opsets.at("") == 13);
  REQUIRE(m->graph.nodes.size() == 1);
  const Node& n = m->graph.nodes[0];
  CHECK(n.op_type == "Gemm");
  CHECK(n.name == "/fc/Gemm");
  CHECK(n.inputs == std::vector<std::string>{"x", "w", "b"});
  CHECK(n.outputs == std::vector<std::string>{"y"});
  REQUIRE(n.attribute("alpha") != nullptr);
  CHECK(n.attribute("alpha")->f == 0.25f);
  CHECK(n.attribute("transB")->i == 1);
  CHECK(n.attribute("perm")->ints == std::vector<int64_t>{1, 0});
  CHECK(n.attribute("nope") == nullptr);
  REQUIRE(m->graph.initializers.size() == 3);
  CHECK(m->graph.initializers[0].dims == std::vector<int64_t>{2, 3});
  CHECK(*m->graph.initializers[0].to_floats() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(*m->graph.initializers[1].to_floats() == std::vector<float>{0.5f, -1.0f, 2.0f});
  CHECK(*m->graph.initializers[2].to_ints() == std::vector<int64_t>{4, -1});
  // The wrong kind of data is named.
  CHECK(m->graph.initializers[2].to_floats().status().message() ==
        "tensor 'shape' is int64, not a floating type");
  REQUIRE(m->graph.inputs.size() == 1);
  const ValueInfo& x = m->graph.inputs[0];
  CHECK(x.type == 1);
  REQUIRE(x.dims.size() == 2);
  CHECK_FALSE(x.dims[0].value.has_value());
  CHECK(x.dims[0].param == "batch");
  CHECK(x.dims[1].value == 2);
}

TEST_CASE("tensor data that does not match its dims is an error naming the tensor", "[onnx]") {
  Tensor t;
  t.name = "w";
  t.type = 1;
  t.dims = {2, 2};
  const std::string three = raw_floats({1, 2, 3});
  t.raw = three;
  CHECK(t.to_floats().status().message() ==
        "tensor 'w' holds 12 bytes of data, its 4 elements of float need 16");
  t.raw = {};
  t.floats = {1, 2, 3};
  CHECK(t.to_floats().status().message() == "tensor 'w' holds 3 values, its dims need 4");
  t.dims = {-1};
  CHECK(t.to_floats().status().message() == "tensor 'w' has a negative dimension -1");
  t.dims = {int64_t{1} << 40, int64_t{1} << 40};
  CHECK(t.numel().status().message() == "tensor 'w' has too many elements");
  // Dims whose byte count wraps around size_t, and integers claimed without data, are refused
  // before anything of their size is allocated.
  t.dims = {int64_t{1} << 61, 2};  // 2^62 floats: 2^64 bytes, 0 modulo 2^64
  t.raw = {};
  t.floats.clear();
  CHECK(t.to_floats().status().message().find("tensor 'w' holds 0 bytes of data") == 0);
  Tensor ids;
  ids.name = "ids";
  ids.type = 7;
  ids.dims = {int64_t{1} << 40};
  CHECK(ids.to_ints().status().message() ==
        "tensor 'ids' holds 0 bytes of data, its 1099511627776 elements of int64 need "
        "8796093022208");
  t.dims = {1};
  t.external = true;
  CHECK(t.to_floats().status().message().find("external file") != std::string::npos);
  // f16 and bf16 bits: 1.0, -2.0, 65504 (f16 max), a subnormal; bf16 1.5.
  Tensor h;
  h.type = 10;
  h.dims = {4};
  h.ints = {0x3c00, 0xc000, 0x7bff, 0x0001};
  const auto hf = h.to_floats();
  REQUIRE(hf.has_value());
  CHECK((*hf)[0] == 1.0f);
  CHECK((*hf)[1] == -2.0f);
  CHECK((*hf)[2] == 65504.0f);
  CHECK((*hf)[3] == Approx(5.960464477539063e-08f).epsilon(1e-6));
  Tensor bf;
  bf.type = 16;
  bf.dims = {1};
  bf.ints = {0x3fc0};
  CHECK(bf.to_floats()->at(0) == 1.5f);
}

TEST_CASE("not a model: empty, no graph, no nodes, groups and bad field numbers", "[onnx]") {
  const auto error = [](const std::string& bytes) {
    return decode_model(std::make_shared<std::string>(bytes)).status().message();
  };
  CHECK(error("") == "empty file: not an ONNX model");
  Enc only_version;
  only_version.i(1, 8);
  CHECK(error(only_version.out) == "no graph in the file: not an ONNX model");
  Enc empty_graph;
  empty_graph.s(7, "");
  CHECK(error(empty_graph.out) == "the graph has no nodes");
  CHECK(error(std::string("\x0b", 1)) == "unsupported wire type 3 for field 1 at byte 0");
  CHECK(error(std::string("\x00", 1)) == "invalid field number 0 at byte 0");
  CHECK(error(std::string("\x3a\x05"
                          "ab",
                          4)) == "field 7 at byte 0 claims 5 bytes, 2 remain (truncated file?)");
  CHECK(error(std::string("\x08\xff\xff", 3)) == "truncated varint at byte 3");
  // A text file.
  CHECK_FALSE(error("hello, this is not a model\n").empty());
}

TEST_CASE("every truncation and random corruption of a model is an error or a model, no crash",
          "[onnx]") {
  const std::string good = sample_model();
  int errors = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    auto m = decode_model(std::make_shared<std::string>(good.substr(0, n)));
    errors += m.has_value() ? 0 : 1;
  }
  CHECK(errors >= static_cast<int>(good.size()) - 2);  // a cut between fields can still parse
  std::mt19937 rng(7);
  int decoded = 0;
  for (int k = 0; k < 3000; ++k) {
    std::string bad = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int j = 0; j < flips; ++j) {
      bad[rng() % bad.size()] = static_cast<char>(rng() & 0xff);
    }
    auto m = decode_model(std::make_shared<std::string>(bad));
    if (m.has_value()) {
      ++decoded;
      // Whatever decodes must still have its typed data checked on use.
      for (const Tensor& t : m->graph.initializers) {
        (void)t.to_floats();
        (void)t.to_ints();
      }
    }
  }
  CHECK(decoded < 3000);
}

TEST_CASE("read_model names a missing file and refuses what is not a regular file", "[onnx]") {
  CHECK(read_model("/nonexistent/model.onnx").status().message() ==
        "/nonexistent/model.onnx: cannot open the file");
  // A directory or a device is refused before it is read (a pipe could block for ever).
  CHECK(read_model("/tmp").status().message() == "/tmp: not a regular file");
  CHECK(read_model("/dev/zero").status().message() == "/dev/zero: not a regular file");
}

}  // namespace
}  // namespace meshpipe::onnx

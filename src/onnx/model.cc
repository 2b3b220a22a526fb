// Decoding an ONNX ModelProto (model.h) with the bounds-checked wire reader; field numbers are
// those of onnx.proto (ONNX 1.12).
#include "onnx/model.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "onnx/internal/wire.h"

namespace meshpipe::onnx {
namespace {

using wire::Field;
using wire::Reader;
using wire::WireType;

/// GraphProto attributes (If/Loop bodies) may nest; deeper than this is refused.
constexpr int kMaxDepth = 8;

Status expect(const Field& f, WireType type, std::string_view what) {
  if (f.type == type) return Status::ok();
  return make_error(Errc::kInvalidArgument, "{}: field {} at byte {} has the wrong wire type", what,
                    f.number, f.offset);
}

Expected<std::string> text(const Field& f, std::string_view what) {
  MP_RETURN_IF_ERROR(expect(f, WireType::kBytes, what));
  return std::string(f.bytes);
}

Expected<int64_t> integer(const Field& f, std::string_view what) {
  MP_RETURN_IF_ERROR(expect(f, WireType::kVarint, what));
  return static_cast<int64_t>(f.varint);
}

Expected<Tensor> decode_tensor(const Field& outer) {
  MP_RETURN_IF_ERROR(expect(outer, WireType::kBytes, "tensor"));
  Tensor t;
  Reader r = wire::nested(outer);
  while (!r.done()) {
    MP_ASSIGN_OR_RETURN(const Field f, r.next());
    switch (f.number) {
      case 1:
        MP_RETURN_IF_ERROR(wire::append_varints(f, t.dims));
        break;
      case 2: {
        MP_ASSIGN_OR_RETURN(const int64_t v, integer(f, "tensor data_type"));
        t.type = static_cast<int32_t>(v);
        break;
      }
      case 4:
        MP_RETURN_IF_ERROR(wire::append_floats(f, t.floats));
        break;
      case 5:   // int32_data (also bool, int8, uint8, f16 and bf16 bits)
      case 7:   // int64_data
      case 11:  // uint64_data
        MP_RETURN_IF_ERROR(wire::append_varints(f, t.ints));
        break;
      case 8: {
        MP_ASSIGN_OR_RETURN(t.name, text(f, "tensor name"));
        break;
      }
      case 9:
        MP_RETURN_IF_ERROR(expect(f, WireType::kBytes, "tensor raw_data"));
        t.raw = f.bytes;
        break;
      case 10:
        MP_RETURN_IF_ERROR(wire::append_doubles(f, t.doubles));
        break;
      case 14: {
        MP_ASSIGN_OR_RETURN(const int64_t v, integer(f, "tensor data_location"));
        t.external = v == 1;
        break;
      }
      default:
        break;  // segment, string_data, doc_string, external_data: not read
    }
  }
  return t;
}

Expected<ValueInfo> decode_value_info(const Field& outer) {
  MP_RETURN_IF_ERROR(expect(outer, WireType::kBytes, "value info"));
  ValueInfo v;
  Reader r = wire::nested(outer);
  while (!r.done()) {
    MP_ASSIGN_OR_RETURN(const Field f, r.next());
    if (f.number == 1) {
      MP_ASSIGN_OR_RETURN(v.name, text(f, "value info name"));
    } else if (f.number == 2) {  // TypeProto
      MP_RETURN_IF_ERROR(expect(f, WireType::kBytes, "value info type"));
      Reader tr = wire::nested(f);
      while (!tr.done()) {
        MP_ASSIGN_OR_RETURN(const Field tf, tr.next());
        if (tf.number != 1) continue;  // sequences, maps, optionals: left untyped
        MP_RETURN_IF_ERROR(expect(tf, WireType::kBytes, "tensor type"));
        Reader xr = wire::nested(tf);
        while (!xr.done()) {
          MP_ASSIGN_OR_RETURN(const Field xf, xr.next());
          if (xf.number == 1) {
            MP_ASSIGN_OR_RETURN(const int64_t t, integer(xf, "elem_type"));
            v.type = static_cast<int32_t>(t);
          } else if (xf.number == 2) {
            MP_RETURN_IF_ERROR(expect(xf, WireType::kBytes, "tensor shape"));
            v.has_shape = true;
            Reader sr = wire::nested(xf);
            while (!sr.done()) {
              MP_ASSIGN_OR_RETURN(const Field sf, sr.next());
              if (sf.number != 1) continue;
              MP_RETURN_IF_ERROR(expect(sf, WireType::kBytes, "dimension"));
              Dim d;
              Reader dr = wire::nested(sf);
              while (!dr.done()) {
                MP_ASSIGN_OR_RETURN(const Field df, dr.next());
                if (df.number == 1) {
                  MP_ASSIGN_OR_RETURN(const int64_t n, integer(df, "dim_value"));
                  d.value = n;
                } else if (df.number == 2) {
                  MP_ASSIGN_OR_RETURN(d.param, text(df, "dim_param"));
                }
              }
              v.dims.push_back(std::move(d));
            }
          }
        }
      }
    }
  }
  return v;
}

Expected<GraphProto> decode_graph(const Field& outer, int depth);

Expected<Attribute> decode_attribute(const Field& outer, int depth) {
  MP_RETURN_IF_ERROR(expect(outer, WireType::kBytes, "attribute"));
  Attribute a;
  Reader r = wire::nested(outer);
  while (!r.done()) {
    MP_ASSIGN_OR_RETURN(const Field f, r.next());
    switch (f.number) {
      case 1: {
        MP_ASSIGN_OR_RETURN(a.name, text(f, "attribute name"));
        break;
      }
      case 20: {
        MP_ASSIGN_OR_RETURN(const int64_t k, integer(f, "attribute type"));
        a.kind = static_cast<int32_t>(k);
        break;
      }
      case 2:
        MP_RETURN_IF_ERROR(expect(f, WireType::kFixed32, "attribute f"));
        a.f = wire::as_float(f);
        break;
      case 3: {
        MP_ASSIGN_OR_RETURN(a.i, integer(f, "attribute i"));
        break;
      }
      case 4: {
        MP_ASSIGN_OR_RETURN(a.s, text(f, "attribute s"));
        break;
      }
      case 5: {
        MP_ASSIGN_OR_RETURN(Tensor t, decode_tensor(f));
        a.t = std::make_shared<Tensor>(std::move(t));
        break;
      }
      case 6: {
        // A subgraph (If, Loop, Scan): decoded for its errors, not kept; the importer refuses
        // those ops.
        MP_ASSIGN_OR_RETURN(const GraphProto g, decode_graph(f, depth + 1));
        (void)g;
        break;
      }
      case 7:
        MP_RETURN_IF_ERROR(wire::append_floats(f, a.floats));
        break;
      case 8:
        MP_RETURN_IF_ERROR(wire::append_varints(f, a.ints));
        break;
      case 9: {
        MP_ASSIGN_OR_RETURN(std::string s, text(f, "attribute strings"));
        a.strings.push_back(std::move(s));
        break;
      }
      default:
        break;
    }
  }
  return a;
}

Expected<Node> decode_node(const Field& outer, int depth) {
  MP_RETURN_IF_ERROR(expect(outer, WireType::kBytes, "node"));
  Node n;
  Reader r = wire::nested(outer);
  while (!r.done()) {
    MP_ASSIGN_OR_RETURN(const Field f, r.next());
    switch (f.number) {
      case 1: {
        MP_ASSIGN_OR_RETURN(std::string s, text(f, "node input"));
        n.inputs.push_back(std::move(s));
        break;
      }
      case 2: {
        MP_ASSIGN_OR_RETURN(std::string s, text(f, "node output"));
        n.outputs.push_back(std::move(s));
        break;
      }
      case 3: {
        MP_ASSIGN_OR_RETURN(n.name, text(f, "node name"));
        break;
      }
      case 4: {
        MP_ASSIGN_OR_RETURN(n.op_type, text(f, "node op_type"));
        break;
      }
      case 7: {
        MP_ASSIGN_OR_RETURN(n.domain, text(f, "node domain"));
        break;
      }
      case 5: {
        MP_ASSIGN_OR_RETURN(Attribute a, decode_attribute(f, depth));
        n.attributes.push_back(std::move(a));
        break;
      }
      default:
        break;
    }
  }
  return n;
}

Expected<GraphProto> decode_graph(const Field& outer, int depth) {
  if (depth > kMaxDepth) {
    return make_error(Errc::kInvalidArgument, "graph at byte {} is nested more than {} deep",
                      outer.offset, kMaxDepth);
  }
  MP_RETURN_IF_ERROR(expect(outer, WireType::kBytes, "graph"));
  GraphProto g;
  Reader r = wire::nested(outer);
  while (!r.done()) {
    MP_ASSIGN_OR_RETURN(const Field f, r.next());
    switch (f.number) {
      case 1: {
        MP_ASSIGN_OR_RETURN(Node n, decode_node(f, depth));
        g.nodes.push_back(std::move(n));
        break;
      }
      case 2: {
        MP_ASSIGN_OR_RETURN(g.name, text(f, "graph name"));
        break;
      }
      case 5: {
        MP_ASSIGN_OR_RETURN(Tensor t, decode_tensor(f));
        g.initializers.push_back(std::move(t));
        break;
      }
      case 11:
      case 12:
      case 13: {
        MP_ASSIGN_OR_RETURN(ValueInfo v, decode_value_info(f));
        (f.number == 11   ? g.inputs
         : f.number == 12 ? g.outputs
                          : g.value_info)
            .push_back(std::move(v));
        break;
      }
      case 15:
        return make_error(Errc::kInvalidArgument,
                          "graph at byte {} has a sparse initializer (not supported)", f.offset);
      default:
        break;
    }
  }
  return g;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits = 0;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

size_t elem_size(int32_t type) {
  switch (static_cast<ElemType>(type)) {
    case ElemType::kFloat:
    case ElemType::kInt32:
      return 4;
    case ElemType::kInt64:
    case ElemType::kDouble:
      return 8;
    case ElemType::kFloat16:
    case ElemType::kBfloat16:
      return 2;
    case ElemType::kUint8:
    case ElemType::kInt8:
    case ElemType::kBool:
      return 1;
    default:
      return 0;
  }
}

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

Status check_inline(const Tensor& t) {
  if (!t.external) return Status::ok();
  return make_error(Errc::kInvalidArgument,
                    "tensor '{}' keeps its data in an external file, which meshpipe does not read "
                    "(export the model in one file)",
                    t.name);
}

Status check_raw_size(const Tensor& t, int64_t n, size_t size) {
  // Compared by division: dims whose product overflows size_t must not match by wrapping.
  if (t.raw.size() % size == 0 && t.raw.size() / size == static_cast<size_t>(n)) {
    return Status::ok();
  }
  return make_error(Errc::kInvalidArgument,
                    "tensor '{}' holds {} bytes of data, its {} elements of {} need {}", t.name,
                    t.raw.size(), n, elem_type_name(t.type), static_cast<double>(n) * size);
}

}  // namespace

std::string elem_type_name(int32_t type) {
  switch (static_cast<ElemType>(type)) {
    case ElemType::kUndefined:
      return "undefined";
    case ElemType::kFloat:
      return "float";
    case ElemType::kUint8:
      return "uint8";
    case ElemType::kInt8:
      return "int8";
    case ElemType::kInt32:
      return "int32";
    case ElemType::kInt64:
      return "int64";
    case ElemType::kBool:
      return "bool";
    case ElemType::kFloat16:
      return "float16";
    case ElemType::kDouble:
      return "double";
    case ElemType::kBfloat16:
      return "bfloat16";
  }
  return "type " + std::to_string(type);
}

Expected<int64_t> Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) {
      return make_error(Errc::kInvalidArgument, "tensor '{}' has a negative dimension {}", name, d);
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return make_error(Errc::kInvalidArgument, "tensor '{}' has too many elements", name);
    }
    n *= d;
  }
  return n;
}

Expected<std::vector<float>> Tensor::to_floats() const {
  MP_RETURN_IF_ERROR(check_inline(*this));
  MP_ASSIGN_OR_RETURN(const int64_t n, numel());
  const auto type = static_cast<ElemType>(this->type);
  if (type != ElemType::kFloat && type != ElemType::kDouble && type != ElemType::kFloat16 &&
      type != ElemType::kBfloat16) {
    return make_error(Errc::kInvalidArgument, "tensor '{}' is {}, not a floating type", name,
                      elem_type_name(this->type));
  }
  std::vector<float> out;
  const auto count = static_cast<size_t>(n);
  const size_t size = elem_size(this->type);
  if (!raw.empty() || (floats.empty() && doubles.empty() && ints.empty())) {
    MP_RETURN_IF_ERROR(check_raw_size(*this, n, size));
    out.resize(count);
    for (size_t k = 0; k < count; ++k) {
      const char* p = raw.data() + k * size;
      switch (type) {
        case ElemType::kFloat:
          out[k] = load<float>(p);
          break;
        case ElemType::kDouble:
          out[k] = static_cast<float>(load<double>(p));
          break;
        case ElemType::kFloat16:
          out[k] = half_to_float(load<uint16_t>(p));
          break;
        default:
          out[k] = bf16_to_float(load<uint16_t>(p));
          break;
      }
    }
    return out;
  }
  const size_t have = type == ElemType::kFloat    ? floats.size()
                      : type == ElemType::kDouble ? doubles.size()
                                                  : ints.size();
  if (have != count) {
    return make_error(Errc::kInvalidArgument, "tensor '{}' holds {} values, its dims need {}", name,
                      have, n);
  }
  out.resize(count);
  for (size_t k = 0; k < count; ++k) {
    switch (type) {
      case ElemType::kFloat:
        out[k] = floats[k];
        break;
      case ElemType::kDouble:
        out[k] = static_cast<float>(doubles[k]);
        break;
      case ElemType::kFloat16:
        out[k] = half_to_float(static_cast<uint16_t>(ints[k]));
        break;
      default:
        out[k] = bf16_to_float(static_cast<uint16_t>(ints[k]));
        break;
    }
  }
  return out;
}

Expected<std::vector<int64_t>> Tensor::to_ints() const {
  MP_RETURN_IF_ERROR(check_inline(*this));
  MP_ASSIGN_OR_RETURN(const int64_t n, numel());
  const auto type = static_cast<ElemType>(this->type);
  if (type != ElemType::kInt64 && type != ElemType::kInt32 && type != ElemType::kInt8 &&
      type != ElemType::kUint8 && type != ElemType::kBool) {
    return make_error(Errc::kInvalidArgument, "tensor '{}' is {}, not an integer type", name,
                      elem_type_name(this->type));
  }
  const auto count = static_cast<size_t>(n);
  std::vector<int64_t> out;  // sized only once the data is known to hold `count` values
  if (!raw.empty() || ints.empty()) {
    const size_t size = elem_size(this->type);
    MP_RETURN_IF_ERROR(check_raw_size(*this, n, size));
    out.resize(count);
    for (size_t k = 0; k < count; ++k) {
      const char* p = raw.data() + k * size;
      switch (type) {
        case ElemType::kInt64:
          out[k] = load<int64_t>(p);
          break;
        case ElemType::kInt32:
          out[k] = load<int32_t>(p);
          break;
        case ElemType::kInt8:
          out[k] = load<int8_t>(p);
          break;
        default:  // uint8, bool
          out[k] = load<uint8_t>(p);
          break;
      }
    }
    return out;
  }
  if (ints.size() != count) {
    return make_error(Errc::kInvalidArgument, "tensor '{}' holds {} values, its dims need {}", name,
                      ints.size(), n);
  }
  out.resize(count);
  for (size_t k = 0; k < count; ++k) {
    // int32_data carries int32 as a varint of its two's complement (sign-extended to 64 bits).
    out[k] = type == ElemType::kInt32 ? static_cast<int32_t>(ints[k]) : ints[k];
  }
  return out;
}

const Attribute* Node::attribute(std::string_view name) const {
  for (const Attribute& a : attributes) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

Expected<Model> decode_model(std::shared_ptr<const std::string> bytes) {
  if (bytes == nullptr || bytes->empty()) {
    return make_error(Errc::kInvalidArgument, "empty file: not an ONNX model");
  }
  Model m;
  m.buffer = bytes;
  Reader r(*bytes, 0);
  bool have_graph = false;
  while (!r.done()) {
    MP_ASSIGN_OR_RETURN(const Field f, r.next());
    switch (f.number) {
      case 1: {
        MP_ASSIGN_OR_RETURN(m.ir_version, integer(f, "ir_version"));
        break;
      }
      case 2: {
        MP_ASSIGN_OR_RETURN(m.producer_name, text(f, "producer_name"));
        break;
      }
      case 3: {
        MP_ASSIGN_OR_RETURN(m.producer_version, text(f, "producer_version"));
        break;
      }
      case 7: {
        MP_ASSIGN_OR_RETURN(m.graph, decode_graph(f, 0));
        have_graph = true;
        break;
      }
      case 8: {
        MP_RETURN_IF_ERROR(expect(f, WireType::kBytes, "opset_import"));
        std::string domain;
        int64_t version = 0;
        Reader o = wire::nested(f);
        while (!o.done()) {
          MP_ASSIGN_OR_RETURN(const Field of, o.next());
          if (of.number == 1) {
            MP_ASSIGN_OR_RETURN(domain, text(of, "opset domain"));
          } else if (of.number == 2) {
            MP_ASSIGN_OR_RETURN(version, integer(of, "opset version"));
          }
        }
        if (domain == "ai.onnx") domain.clear();
        m.opsets[domain] = version;
        break;
      }
      default:
        break;
    }
  }
  if (!have_graph) {
    return make_error(Errc::kInvalidArgument, "no graph in the file: not an ONNX model");
  }
  if (m.graph.nodes.empty()) return make_error(Errc::kInvalidArgument, "the graph has no nodes");
  if (m.graph.outputs.empty()) {
    return make_error(Errc::kInvalidArgument, "the graph has no outputs");
  }
  return m;
}

Expected<Model> read_model(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return make_error(Errc::kNotFound, "{}: cannot open the file", path);
  }
  if (!std::filesystem::is_regular_file(status)) {
    // A directory, a pipe or a device: reading one could hang or read without end.
    return make_error(Errc::kInvalidArgument, "{}: not a regular file", path);
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return make_error(Errc::kNotFound, "{}: cannot open the file", path);
  const std::streamoff size = in.tellg();
  if (size < 0) return make_error(Errc::kIo, "{}: cannot read the file's size", path);
  if (size > kMaxModelBytes) {
    return make_error(Errc::kOutOfRange,
                      "{}: {} bytes, above the 2 GiB a protobuf message can hold (export with the "
                      "weights in the file, a model under 2 GiB)",
                      path, size);
  }
  auto bytes = std::make_shared<std::string>(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes->data(), size)) return make_error(Errc::kIo, "{}: read failed", path);
  auto m = decode_model(std::move(bytes));
  if (!m.has_value()) return m.status().with_context(path);
  return m;
}

}  // namespace meshpipe::onnx

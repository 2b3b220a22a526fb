// An ONNX model as decoded from its file: the graph's nodes, initializers, inputs and outputs
// with the fields meshpipe reads (the rest of onnx.proto is skipped). Decoding checks every
// length and every field's wire type, so a malformed or truncated file is an error naming the
// byte and the field, never a crash; what the file means is checked by the importer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace meshpipe::onnx {

/// TensorProto.DataType values meshpipe reads.
enum class ElemType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
  kBfloat16 = 16,
};

/// "float", "int64", ... ("type 8" for a number without a name here).
std::string elem_type_name(int32_t type);

/// A constant tensor (an initializer, a Constant node's value or a tensor attribute). Its data is
/// in `raw` (little-endian, viewing the model's buffer) or in one of the typed lists.
struct Tensor {
  std::string name;
  int32_t type = 0;  ///< ElemType
  std::vector<int64_t> dims;
  std::string_view raw;
  std::vector<float> floats;
  std::vector<double> doubles;
  std::vector<int64_t> ints;  ///< int32_data or int64_data (also bool, int8, uint8, f16 bits)
  bool external = false;      ///< data_location = EXTERNAL (not supported)

  /// Elements the dims describe (1 for a scalar); an error on a negative dim or overflow.
  Expected<int64_t> numel() const;
  /// The values as f32 (float, double, f16 and bf16 converted) or as int64 (every integer and
  /// bool type). Errors: the wrong kind of type, a data size that does not match the dims,
  /// external data.
  Expected<std::vector<float>> to_floats() const;
  Expected<std::vector<int64_t>> to_ints() const;
};

/// One dimension of a declared type: a size, or a symbolic name (dim_param), or unknown.
struct Dim {
  std::optional<int64_t> value;
  std::string param;
};

/// An input's or output's declared name, element type and shape.
struct ValueInfo {
  std::string name;
  int32_t type = 0;  ///< ElemType of a tensor type, 0 when absent
  bool has_shape = false;
  std::vector<Dim> dims;
};

/// A node attribute (AttributeProto) with the field its `type` selects.
struct Attribute {
  enum class Kind : int32_t {
    kUndefined = 0,
    kFloat = 1,
    kInt = 2,
    kString = 3,
    kTensor = 4,
    kGraph = 5,
    kFloats = 6,
    kInts = 7,
    kStrings = 8,
  };
  std::string name;
  int32_t kind = 0;  ///< Kind (others are kept as their number and refused by the importer)
  float f = 0.0f;
  int64_t i = 0;
  std::string s;
  std::shared_ptr<Tensor> t;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;
  std::vector<std::string> inputs;  ///< "" for an omitted optional input
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;

  const Attribute* attribute(std::string_view name) const;
};

struct GraphProto {
  std::string name;
  std::vector<Node> nodes;
  std::vector<Tensor> initializers;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<ValueInfo> value_info;
};

struct Model {
  int64_t ir_version = 0;
  std::string producer_name;
  std::string producer_version;
  std::map<std::string, int64_t> opsets;  ///< domain ("" for ai.onnx) -> version
  GraphProto graph;
  /// The file's bytes, which the tensors' `raw` views.
  std::shared_ptr<const std::string> buffer;
};

/// Decodes a model from its serialized bytes. Errors (kInvalidArgument) name the byte offset and
/// the message and field being read: truncation, a bad wire type, a graph without nodes or
/// outputs, subgraphs nested deeper than a few levels.
Expected<Model> decode_model(std::shared_ptr<const std::string> bytes);

/// The largest file read_model accepts: protobuf's own 2 GiB limit on one message (larger
/// models keep their weights in external files, which meshpipe does not read).
inline constexpr int64_t kMaxModelBytes = int64_t{2} << 30;

/// Reads and decodes a file. Errors: kNotFound or kIo (naming the path), kOutOfRange above
/// kMaxModelBytes, decode errors prefixed with the path.
Expected<Model> read_model(const std::string& path);

}  // namespace meshpipe::onnx

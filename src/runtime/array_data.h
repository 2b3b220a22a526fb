// Training data read from a folder of NumPy arrays (`meshpipe train --data DIR`): one `.npy`
// file per data input of the model, named after the input ("tokens.npy", "labels.npy", or an
// imported model's input names), each of shape [N, the input's other dims], little-endian
// float32 for a float input and int32 or int64 for an integer one. Batch i is rows i*B ..
// i*B+B-1 of every array, wrapping around at N (B = the input's leading dim, the global batch),
// so a step reads the same rows in every process and after a resume.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "graph/graph.h"
#include "runtime/host_tensor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {

/// The header of a .npy file: element type ("<f4", "<i4", "<i8"), shape, where the data starts.
struct NpyHeader {
  std::string descr;
  std::vector<int64_t> shape;
  int64_t data_offset = 0;
};

/// Parses the header of a .npy file's bytes (versions 1-3, C order). Errors (kInvalidArgument)
/// say what is wrong: not a .npy file, a header past the end, Fortran order, an element type
/// other than those above, a shape that is not a tuple of non-negative whole numbers.
Expected<NpyHeader> parse_npy_header(std::string_view bytes);

/// The largest .npy file ArrayData reads (it holds the arrays in memory).
inline constexpr int64_t kMaxArrayFileBytes = int64_t{8} << 30;

/// Batches from the arrays of a folder. Inputs whose leading dims differ (labels [B*T] of
/// flattened logits beside tokens [B, T]) each read their own number of rows a batch; their
/// arrays must hold the same number of batches (N / b equal).
class ArrayData final : public BatchSource {
 public:
  /// Opens DIR/<name>.npy for each of `inputs` of `g` and checks them: the element type fits the
  /// input's, the trailing dims equal the input's, N >= the batch, integer values in [0, 2^31)
  /// and below the rows of an embedding and the classes of a cross-entropy that read them.
  /// Errors name the file and what is wrong.
  static Expected<std::unique_ptr<ArrayData>> open(const std::string& dir, const graph::Graph& g,
                                                   const std::vector<ValueId>& inputs);

  std::vector<std::pair<ValueId, HostTensor>> next_batch() override;
  void seek(int64_t index) override { next_index_ = index; }

  /// Rows of the first array.
  int64_t rows() const { return rows_; }

 private:
  struct Array {
    ValueId id;
    Shape input_shape;  // [b, ...]
    DType dtype;        // the input's
    std::string data;   // rows x row_bytes, already in the input's dtype
    int64_t row_bytes = 0;
    int64_t rows = 0;   // N
    int64_t batch = 0;  // b: the input's leading dim (labels of flattened logits: B x T)
  };
  ArrayData() = default;
  std::vector<Array> arrays_;
  int64_t rows_ = 0;  // of the first array
  int64_t next_index_ = 0;
};

}  // namespace meshpipe::runtime

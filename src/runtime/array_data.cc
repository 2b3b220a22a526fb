// ArrayData: .npy files read, checked and cut into batches.
#include "runtime/array_data.h"

#include <fmt/format.h>

#include <cctype>
#include <cstring>
#include <limits>
#include <set>

#include "core/check.h"
#include "core/files.h"

namespace meshpipe::runtime {

namespace {

// A cursor over the header's Python dict literal: {'descr': '<f4', 'fortran_order': False,
// 'shape': (3, 4), } (numpy writes exactly these three keys; their order may vary).
class DictParser {
 public:
  explicit DictParser(std::string_view text) : t_(text) {}

  Status parse(NpyHeader* h, bool* fortran) {
    bool have_descr = false;
    bool have_order = false;
    bool have_shape = false;
    std::set<std::string> seen;
    MP_RETURN_IF_ERROR(expect('{'));
    while (true) {
      skip_space();
      if (peek() == '}') break;
      MP_ASSIGN_OR_RETURN(const std::string key, quoted());
      MP_RETURN_IF_ERROR(expect(':'));
      if (!seen.insert(key).second) return bad(fmt::format("key '{}' twice", printable(key)));
      if (key == "descr") {
        MP_ASSIGN_OR_RETURN(h->descr, quoted());
        have_descr = true;
      } else if (key == "fortran_order") {
        skip_space();
        if (t_.substr(pos_, 4) == "True") {
          *fortran = true;
          pos_ += 4;
        } else if (t_.substr(pos_, 5) == "False") {
          *fortran = false;
          pos_ += 5;
        } else {
          return bad("fortran_order is not True or False");
        }
        have_order = true;
      } else if (key == "shape") {
        MP_RETURN_IF_ERROR(tuple(&h->shape));
        have_shape = true;
      } else {
        return bad(fmt::format("unknown key '{}'", printable(key)));
      }
      skip_space();
      if (peek() == ',') ++pos_;
    }
    ++pos_;
    skip_space();
    if (pos_ != t_.size()) return bad("text after the dict");
    if (!have_descr || !have_order || !have_shape) {
      return bad("it lacks one of 'descr', 'fortran_order', 'shape'");
    }
    return Status::ok();
  }

 private:
  char peek() const { return pos_ < t_.size() ? t_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\n')) ++pos_;
  }
  static Status bad(const std::string& what) {
    return make_error(Errc::kInvalidArgument, "malformed .npy header: {}", what);
  }
  Status expect(char c) {
    skip_space();
    if (peek() != c) return bad(fmt::format("expected '{}' at byte {}", c, pos_));
    ++pos_;
    return Status::ok();
  }
  Expected<std::string> quoted() {
    skip_space();
    const char q = peek();
    if (q != '\'' && q != '"') return bad(fmt::format("expected a string at byte {}", pos_));
    const size_t end = t_.find(q, pos_ + 1);
    if (end == std::string_view::npos) return bad("unterminated string");
    std::string s(t_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return s;
  }
  Status tuple(std::vector<int64_t>* out) {
    MP_RETURN_IF_ERROR(expect('('));
    while (true) {
      skip_space();
      if (peek() == ')') break;
      if (std::isdigit(static_cast<unsigned char>(peek())) == 0) {
        return bad("the shape is not a tuple of whole numbers");
      }
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek())) != 0) {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) return bad("a dim overflows");
        v = v * 10 + (peek() - '0');
        ++pos_;
      }
      out->push_back(v);
      if (out->size() > 8) return bad("more than 8 dims");
      skip_space();
      if (peek() == ',') ++pos_;
    }
    ++pos_;
    return Status::ok();
  }

  std::string_view t_;
  size_t pos_ = 0;
};

uint32_t little_endian(std::string_view b, size_t at, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

}  // namespace

Expected<NpyHeader> parse_npy_header(std::string_view bytes) {
  if (bytes.size() < 10 || bytes.substr(0, 6) != "\x93NUMPY") {
    return make_error(Errc::kInvalidArgument, "not a .npy file (no \\x93NUMPY magic)");
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  if (major < 1 || major > 3) {
    return make_error(Errc::kInvalidArgument, ".npy version {} is not 1, 2 or 3", major);
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + len_bytes) {
    return make_error(Errc::kInvalidArgument, "malformed .npy header: truncated");
  }
  const uint32_t header_len = little_endian(bytes, 8, len_bytes);
  const size_t start = 8 + len_bytes;
  if (header_len > bytes.size() - start) {
    return make_error(Errc::kInvalidArgument,
                      "malformed .npy header: {} header bytes claimed, the file has {}", header_len,
                      bytes.size() - start);
  }
  NpyHeader h;
  bool fortran = false;
  DictParser p(bytes.substr(start, header_len));
  MP_RETURN_IF_ERROR(p.parse(&h, &fortran));
  if (fortran) {
    return make_error(Errc::kInvalidArgument,
                      ".npy array in Fortran order (save a C-ordered array: "
                      "numpy.ascontiguousarray)");
  }
  if (h.descr != "<f4" && h.descr != "<i4" && h.descr != "<i8") {
    return make_error(Errc::kInvalidArgument,
                      ".npy element type '{}' is not little-endian float32 ('<f4'), int32 ('<i4') "
                      "or int64 ('<i8')",
                      printable(h.descr));
  }
  h.data_offset = static_cast<int64_t>(start + header_len);
  return h;
}

Expected<std::unique_ptr<ArrayData>> ArrayData::open(const std::string& dir, const graph::Graph& g,
                                                     const std::vector<ValueId>& inputs) {
  std::unique_ptr<ArrayData> d(new ArrayData());
  for (ValueId id : inputs) {
    const graph::Value& v = g.value(id);
    const std::string path = dir + "/" + v.name + ".npy";
    const auto what = [&] { return fmt::format("data file '{}'", printable(path)); };
    // Input names come from the model (an imported file's may be anything): one path component
    // of printable characters (a NUL would end the path early, opening another file).
    bool plain = !v.name.empty() && v.name != "." && v.name != ".." && v.name.size() <= 200;
    for (const char c : v.name) plain = plain && c != '/' && static_cast<unsigned char>(c) >= 0x20;
    if (!plain) {
      return make_error(Errc::kInvalidArgument,
                        "input '{}' cannot name a data file in {} (it is empty, '.', '..', "
                        "longer than 200 bytes, or holds a '/' or a control character)",
                        printable(v.name), printable(dir));
    }
    if (v.shape.rank() == 0) {
      return make_error(Errc::kInvalidArgument,
                        "input '{}' is a scalar: --data reads inputs with a batch dim",
                        printable(v.name));
    }
    Expected<std::string> bytes = read_text_file(path, "data file", kMaxArrayFileBytes);
    if (!bytes.has_value()) {
      return bytes.status().with_context(fmt::format("the data for input '{}' of shape {}",
                                                     printable(v.name), v.shape.to_string()));
    }
    auto header = parse_npy_header(*bytes);
    if (!header.has_value()) return header.status().with_context(what());
    const std::vector<int64_t>& shape = header->shape;
    // [N, the input's other dims]: the trailing dims must equal the input's.
    bool same = shape.size() == static_cast<size_t>(v.shape.rank()) && !shape.empty();
    for (size_t i = 1; same && i < shape.size(); ++i)
      same = shape[i] == v.shape[static_cast<int>(i)];
    if (!same) {
      const std::vector<int64_t>& want = v.shape.dims();
      return make_error(Errc::kInvalidArgument, "{} has shape ({}), the input needs (N{}{})",
                        what(), fmt::join(shape, ", "), want.size() > 1 ? ", " : "",
                        fmt::join(want.begin() + 1, want.end(), ", "));
    }
    const bool want_float = is_floating(v.dtype);
    if (want_float != (header->descr == "<f4")) {
      return make_error(Errc::kInvalidArgument, "{} holds '{}' but input '{}' is {}", what(),
                        header->descr, printable(v.name), dtype_name(v.dtype));
    }
    const int64_t rows = shape[0];
    const int64_t batch = v.shape[0];
    if (rows < batch) {
      return make_error(Errc::kInvalidArgument, "{} has {} rows, fewer than the batch of {}",
                        what(), rows, batch);
    }
    // Every array must hold the same number of batches: rows / batch equal to the first's.
    if (!d->arrays_.empty()) {
      const Array& first = d->arrays_.front();
      if (rows * first.batch != first.rows * batch) {
        return make_error(Errc::kInvalidArgument,
                          "{} has {} rows for a batch of {}, the other arrays {} rows for {}",
                          what(), rows, batch, first.rows, first.batch);
      }
    } else {
      d->rows_ = rows;
    }
    const int64_t per_row = v.shape.numel() / batch;
    const int64_t item = header->descr == "<i8" ? 8 : 4;
    const int64_t data_bytes = static_cast<int64_t>(bytes->size()) - header->data_offset;
    // rows * per_row * item cannot overflow: rows * item <= the file's size... checked in order.
    if (per_row <= 0 || rows > data_bytes / item / per_row || rows * per_row * item != data_bytes) {
      return make_error(Errc::kInvalidArgument,
                        "{} has {} data bytes, its header's shape needs {} x {} x {}", what(),
                        data_bytes, rows, per_row, item);
    }
    Array a;
    a.id = id;
    a.input_shape = v.shape;
    a.dtype = v.dtype;
    a.row_bytes = per_row * 4;  // f32 or i32 in memory
    a.rows = rows;
    a.batch = batch;
    // The values are moved to the front of the file's own buffer (each 4-byte write lands
    // behind the bytes still to read), so an array costs its file's size once, not twice.
    char* buf = bytes->data();
    const char* src = buf + header->data_offset;
    if (want_float) {
      std::memmove(buf, src, static_cast<size_t>(rows * a.row_bytes));
    } else {
      // Integers: in [0, bound), bound = the rows of the embeddings and classes of the losses
      // reading them (an index outside would read past a table).
      const int64_t bound = index_bound(g, id);
      const int64_t n = rows * per_row;
      for (int64_t i = 0; i < n; ++i) {
        int64_t x = 0;
        if (item == 8) {
          std::memcpy(&x, src + i * 8, 8);
        } else {
          int32_t y = 0;
          std::memcpy(&y, src + i * 4, 4);
          x = y;
        }
        if (x < 0 || x >= bound) {
          return make_error(Errc::kInvalidArgument,
                            "{}: element {} (row {}) is {}, outside [0, {}) (the rows or classes "
                            "of what reads input '{}')",
                            what(), i, i / per_row, x, bound, printable(v.name));
        }
        const auto y = static_cast<int32_t>(x);
        std::memcpy(buf + i * 4, &y, 4);
      }
    }
    bytes->resize(static_cast<size_t>(rows * a.row_bytes));
    a.data = std::move(*bytes);
    d->arrays_.push_back(std::move(a));
  }
  return d;
}

std::vector<std::pair<ValueId, HostTensor>> ArrayData::next_batch() {
  const int64_t index = next_index_++;
  std::vector<std::pair<ValueId, HostTensor>> out;
  for (const Array& a : arrays_) {
    // Rows index * b .. index * b + b - 1, wrapping at N (each product's factors are below
    // N <= 2^31).
    const int64_t first = (index % a.rows) * (a.batch % a.rows) % a.rows;
    HostTensor t(a.input_shape, a.dtype == DType::kF32 ? DType::kF32 : DType::kI32);
    MP_CHECK(a.batch * a.row_bytes == t.bytes());
    char* dst = static_cast<char*>(t.data());
    for (int64_t r = 0; r < a.batch; ++r) {
      const int64_t row = (first + r) % a.rows;
      std::memcpy(dst + r * a.row_bytes, a.data.data() + row * a.row_bytes,
                  static_cast<size_t>(a.row_bytes));
    }
    out.emplace_back(a.id, std::move(t));
  }
  return out;
}

}  // namespace meshpipe::runtime

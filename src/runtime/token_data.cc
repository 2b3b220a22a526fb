// TokenData: a memory-mapped token file cut into windows.
#include "runtime/token_data.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <numeric>

#include "core/check.h"
#include "core/files.h"

namespace meshpipe::runtime {

namespace {

constexpr int32_t kLlmcMagic = 20240520;
constexpr int64_t kLlmcHeaderBytes = 256 * 4;

int32_t read_i32(const unsigned char* p) {
  int32_t v = 0;
  std::memcpy(&v, p, 4);  // little-endian hosts only (as the file)
  return v;
}

// The tokens input [B, T] and the labels input (B x T integers): by name, else the integer
// input a cross-entropy reads as labels and the other one.
Expected<std::pair<ValueId, ValueId>> token_inputs(const graph::Graph& g,
                                                   const std::vector<ValueId>& inputs) {
  ValueId tokens;
  ValueId labels;
  for (ValueId id : inputs) {
    if (g.value(id).name == "labels") labels = id;
    if (g.value(id).name == "tokens") tokens = id;
  }
  if (inputs.size() == 2 && (!tokens.is_valid() || !labels.is_valid())) {
    tokens = ValueId();
    labels = ValueId();
    for (const graph::Op& op : g.ops()) {
      if (op.kind != graph::OpKind::kCrossEntropy) continue;
      for (ValueId id : inputs) {
        if (reshape_source(g, op.inputs[1]) == id) labels = id;
      }
    }
    for (ValueId id : inputs) {
      if (id != labels) tokens = id;
    }
  }
  const auto names = [&] {
    std::string out;
    for (ValueId id : inputs) {
      out += fmt::format("{}'{}' {}", out.empty() ? "" : ", ", printable(g.value(id).name),
                         g.value(id).shape.to_string());
    }
    return out;
  };
  if (inputs.size() != 2 || !tokens.is_valid() || !labels.is_valid() ||
      is_floating(g.value(tokens).dtype) || is_floating(g.value(labels).dtype) ||
      g.value(tokens).shape.rank() != 2 ||
      g.value(labels).shape.numel() != g.value(tokens).shape.numel()) {
    return make_error(Errc::kInvalidArgument,
                      "a token file feeds a language model: integer tokens [batch, sequence] "
                      "and next-token labels of as many elements under a cross-entropy loss; "
                      "this model's inputs are {}",
                      names());
  }
  return std::make_pair(tokens, labels);
}

}  // namespace

Expected<TokenFileInfo> token_file_layout(const unsigned char* head, int64_t head_bytes,
                                          int64_t file_bytes) {
  TokenFileInfo info;
  if (head_bytes >= 12 && read_i32(head) == kLlmcMagic) {
    const int32_t version = read_i32(head + 4);
    const int32_t count = read_i32(head + 8);
    if (version != 1 && version != 2) {
      return make_error(Errc::kInvalidArgument,
                        "llm.c token file version {} is not 1 (uint16) or 2 (uint32)", version);
    }
    info.bytes_per_token = version == 1 ? 2 : 4;
    info.header_bytes = kLlmcHeaderBytes;
    info.layout = fmt::format("llm.c v{}", version);
    const int64_t body = file_bytes - kLlmcHeaderBytes;
    if (count < 0 || body < 0 || body != int64_t{count} * info.bytes_per_token) {
      return make_error(Errc::kInvalidArgument,
                        "llm.c header counts {} tokens of {} bytes, the file holds {} bytes after "
                        "its header",
                        count, info.bytes_per_token, std::max<int64_t>(body, 0));
    }
    info.tokens = count;
    return info;
  }
  if (file_bytes % 2 != 0) {
    return make_error(Errc::kInvalidArgument,
                      "{} bytes: not raw uint16 tokens (an odd size) and no llm.c header",
                      file_bytes);
  }
  info.layout = "raw uint16";
  info.tokens = file_bytes / 2;
  return info;
}

TokenData::~TokenData() {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
}

int64_t TokenData::token(int64_t k) const {
  const unsigned char* p = map_ + info_.header_bytes + k * info_.bytes_per_token;
  if (info_.bytes_per_token == 2) return static_cast<int64_t>(p[0]) | (int64_t{p[1]} << 8);
  uint32_t v = 0;
  std::memcpy(&v, p, 4);
  return v;
}

Expected<std::unique_ptr<TokenData>> TokenData::open(const std::string& path, const graph::Graph& g,
                                                     const std::vector<ValueId>& inputs,
                                                     const TokenDataOptions& options) {
  const auto what = [&] { return fmt::format("token file '{}'", printable(path)); };
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return make_error(Errc::kInvalidArgument, "the validation share {} is not in [0, 1)",
                      options.val_fraction);
  }
  std::unique_ptr<TokenData> d(new TokenData());
  MP_ASSIGN_OR_RETURN(const auto roles, token_inputs(g, inputs));
  d->tokens_id_ = roles.first;
  d->labels_id_ = roles.second;
  d->tokens_shape_ = g.value(roles.first).shape;
  d->labels_shape_ = g.value(roles.second).shape;
  d->batch_ = d->tokens_shape_[0];
  d->seq_ = d->tokens_shape_[1];
  // Opened without blocking (a FIFO has no writer) and only a regular file is mapped.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    return make_error(errno == ENOENT ? Errc::kNotFound : Errc::kIo, "cannot read {}: {}", what(),
                      std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "{} is not a regular file", what());
  }
  if (st.st_size == 0) return make_error(Errc::kInvalidArgument, "{} is empty", what());
  void* m = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (m == MAP_FAILED) {
    return make_error(Errc::kIo, "cannot map {}: {}", what(), std::strerror(errno));
  }
  d->map_ = static_cast<const unsigned char*>(m);
  d->map_bytes_ = static_cast<size_t>(st.st_size);
  auto info =
      token_file_layout(d->map_, std::min<int64_t>(st.st_size, kLlmcHeaderBytes), st.st_size);
  if (!info.has_value()) return info.status().with_context(what());
  d->info_ = *info;
  // Windows of T + 1 tokens at stride T; the split by windows.
  const int64_t all = d->info_.tokens > d->seq_ ? (d->info_.tokens - 1) / d->seq_ : 0;
  const auto val = static_cast<int64_t>(static_cast<double>(all) * options.val_fraction);
  d->first_window_ = options.validation ? all - val : 0;
  d->windows_ = options.validation ? val : all - val;
  if (d->windows_ < 1) {
    return make_error(Errc::kInvalidArgument,
                      "{} has {} tokens: no {} window of {} tokens (sequence {} + 1){}", what(),
                      d->info_.tokens, options.validation ? "validation" : "training", d->seq_ + 1,
                      d->seq_, options.validation ? "; raise the validation share" : "");
  }
  // Every token below what reads it (the embedding's rows, the loss's classes).
  const int64_t bound = std::min(index_bound(g, d->tokens_id_), index_bound(g, d->labels_id_));
  for (int64_t k = 0; k < d->info_.tokens; ++k) {
    if (d->token(k) >= bound) {
      return make_error(Errc::kInvalidArgument,
                        "{}: token {} is {}, outside the model's vocabulary [0, {})", what(), k,
                        d->token(k), bound);
    }
  }
  // The mixing bijection j -> (j * stride + shift) mod W needs gcd(stride, W) = 1.
  int64_t stride = static_cast<int64_t>(0x9E3779B1u % static_cast<uint64_t>(d->windows_));
  while (stride == 0 || std::gcd(stride, d->windows_) != 1) {
    stride = (stride + 1) % d->windows_;
    if (d->windows_ == 1) break;
  }
  d->stride_ = std::max<int64_t>(stride, 1);
  return d;
}

int64_t TokenData::window_of(int64_t j) const {
  const int64_t epoch = j / windows_;
  const int64_t within = j % windows_;
  const __int128 mixed = static_cast<__int128>(within) * stride_ + epoch * 7919;
  return static_cast<int64_t>(mixed % windows_);
}

std::vector<std::pair<ValueId, HostTensor>> TokenData::next_batch() {
  const int64_t index = next_index_++;
  HostTensor tok(tokens_shape_, DType::kI32);
  HostTensor lab(labels_shape_, DType::kI32);
  for (int64_t r = 0; r < batch_; ++r) {
    const int64_t first = (first_window_ + window_of(index * batch_ + r)) * seq_;
    for (int64_t s = 0; s < seq_; ++s) {
      tok.i32()[r * seq_ + s] = static_cast<int32_t>(token(first + s));
      lab.i32()[r * seq_ + s] = static_cast<int32_t>(token(first + s + 1));
    }
  }
  std::vector<std::pair<ValueId, HostTensor>> out;
  out.emplace_back(tokens_id_, std::move(tok));
  out.emplace_back(labels_id_, std::move(lab));
  return out;
}

}  // namespace meshpipe::runtime

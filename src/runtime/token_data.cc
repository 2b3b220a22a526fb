// TokenData: a memory-mapped token file cut into windows.
#include "runtime/token_data.h"

#include <fcntl.h>
#include <fmt/format.h>
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

TokenData::~TokenData() = default;

Status TokenData::read_tokens(int64_t first, int64_t count, std::vector<int64_t>* out) const {
  const int b = info_.bytes_per_token;
  std::vector<unsigned char> raw(static_cast<size_t>(count * b));
  const int64_t offset = info_.header_bytes + first * b;
  size_t have = 0;
  while (have < raw.size()) {
    const ssize_t n = ::pread(fd_.get(), raw.data() + have, raw.size() - have,
                              static_cast<off_t>(offset + static_cast<int64_t>(have)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return make_error(Errc::kIo,
                        "token file '{}': cannot read tokens {}..{} ({}; was the file changed "
                        "while training?)",
                        printable(path_), first, first + count - 1,
                        n < 0 ? std::strerror(errno) : "it ends before them");
    }
    have += static_cast<size_t>(n);
  }
  out->resize(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    const unsigned char* q = raw.data() + k * b;
    if (b == 2) {
      (*out)[static_cast<size_t>(k)] = static_cast<int64_t>(q[0]) | (int64_t{q[1]} << 8);
    } else {
      uint32_t v = 0;
      std::memcpy(&v, q, 4);
      (*out)[static_cast<size_t>(k)] = v;
    }
  }
  return Status::ok();
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
  d->path_ = path;
  MP_ASSIGN_OR_RETURN(const auto roles, token_inputs(g, inputs));
  d->tokens_id_ = roles.first;
  d->labels_id_ = roles.second;
  d->tokens_shape_ = g.value(roles.first).shape;
  d->labels_shape_ = g.value(roles.second).shape;
  d->batch_ = d->tokens_shape_[0];
  d->seq_ = d->tokens_shape_[1];
  // Opened without blocking (a FIFO has no writer); only a regular file is read, with pread (a
  // file cut short while training is then an error, not a SIGBUS as a mapping would give).
  d->fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!d->fd_.valid()) {
    return make_error(errno == ENOENT ? Errc::kNotFound : Errc::kIo, "cannot read {}: {}", what(),
                      std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(d->fd_.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalidArgument, "{} is not a regular file", what());
  }
  if (st.st_size == 0) return make_error(Errc::kInvalidArgument, "{} is empty", what());
  unsigned char head[kLlmcHeaderBytes] = {};
  const ssize_t got = ::pread(d->fd_.get(), head, sizeof(head), 0);
  if (got < 0) return make_error(Errc::kIo, "cannot read {}: {}", what(), std::strerror(errno));
  auto info = token_file_layout(head, got, st.st_size);
  if (!info.has_value()) return info.status().with_context(what());
  d->info_ = *info;
  // Windows of T + 1 tokens at stride T. The training split takes the first windows from token
  // 0; the validation windows start one token after the last training label, so the two
  // splits share no token.
  const int64_t t = d->seq_;
  const int64_t all = d->info_.tokens > t ? (d->info_.tokens - 1) / t : 0;
  const auto val = static_cast<int64_t>(static_cast<double>(all) * options.val_fraction);
  const int64_t train = all - val;
  if (options.validation) {
    d->first_token_ = train * t + 1;
    const int64_t room = d->info_.tokens - 1 - d->first_token_;
    d->windows_ = room >= t ? std::min(val, room / t) : 0;
  } else {
    d->first_token_ = 0;
    d->windows_ = train;
  }
  if (d->windows_ < 1) {
    return make_error(Errc::kInvalidArgument,
                      "{} has {} tokens: no {} window of {} tokens (sequence {} + 1){}", what(),
                      d->info_.tokens, options.validation ? "validation" : "training", t + 1, t,
                      options.validation && all > 1 ? "; raise --val-fraction" : "");
  }
  // Every token below what reads it (the embedding's rows, the loss's classes), read in chunks:
  // the whole file for the training split (a file is refused whole), the split's own tokens for
  // the validation one (opened after the training split, which has checked them already).
  const int64_t bound = std::min(index_bound(g, d->tokens_id_), index_bound(g, d->labels_id_));
  std::vector<int64_t> chunk;
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t scan_end =
      options.validation ? d->first_token_ + d->windows_ * t + 1 : d->info_.tokens;
  for (int64_t k0 = options.validation ? d->first_token_ : 0; k0 < scan_end; k0 += kChunk) {
    const int64_t n = std::min(kChunk, scan_end - k0);
    MP_RETURN_IF_ERROR(d->read_tokens(k0, n, &chunk));
    for (int64_t k = 0; k < n; ++k) {
      if (chunk[static_cast<size_t>(k)] >= bound) {
        return make_error(Errc::kInvalidArgument,
                          "{}: token {} is {}, outside the model's vocabulary [0, {})", what(),
                          k0 + k, chunk[static_cast<size_t>(k)], bound);
      }
    }
  }
  // The mixing bijection j -> (j * stride + shift) mod W needs gcd(stride, W) = 1: the
  // coprime stride nearest W / golden ratio (neighbouring samples land far apart).
  const int64_t w = d->windows_;
  const auto golden = static_cast<int64_t>(static_cast<double>(w) * 0.6180339887498949);
  d->stride_ = 1;
  for (int64_t k = 0; k <= w; ++k) {
    const int64_t up = golden + k;
    const int64_t down = golden - k;
    if (up >= 1 && up < w && std::gcd(up, w) == 1) {
      d->stride_ = up;
      break;
    }
    if (down >= 1 && down < w && std::gcd(down, w) == 1) {
      d->stride_ = down;
      break;
    }
  }
  return d;
}

int64_t TokenData::window_of(int64_t j) const {
  const int64_t epoch = j / windows_;
  const int64_t within = j % windows_;
  const __int128 mixed = static_cast<__int128>(within) * stride_ + epoch * 7919;
  return static_cast<int64_t>(mixed % windows_);
}

Expected<std::vector<std::pair<ValueId, HostTensor>>> TokenData::read_next() {
  const int64_t index = next_index_++;
  HostTensor tok(tokens_shape_, DType::kI32);
  HostTensor lab(labels_shape_, DType::kI32);
  std::vector<int64_t> window;
  for (int64_t r = 0; r < batch_; ++r) {
    const int64_t first = first_token_ + window_of(index * batch_ + r) * seq_;
    MP_RETURN_IF_ERROR(read_tokens(first, seq_ + 1, &window));
    for (int64_t s = 0; s < seq_; ++s) {
      tok.i32()[r * seq_ + s] = static_cast<int32_t>(window[static_cast<size_t>(s)]);
      lab.i32()[r * seq_ + s] = static_cast<int32_t>(window[static_cast<size_t>(s + 1)]);
    }
  }
  std::vector<std::pair<ValueId, HostTensor>> out;
  out.emplace_back(tokens_id_, std::move(tok));
  out.emplace_back(labels_id_, std::move(lab));
  return out;
}

std::vector<std::pair<ValueId, HostTensor>> TokenData::next_batch() {
  auto r = read_next();
  return r.has_value() ? std::move(*r) : std::vector<std::pair<ValueId, HostTensor>>{};
}

}  // namespace meshpipe::runtime

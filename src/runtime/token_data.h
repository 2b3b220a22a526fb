// Training data from a flat file of tokens (`meshpipe train --data FILE`), in the layouts
// nanoGPT and llm.c write: raw little-endian uint16 tokens (nanoGPT's train.bin), or llm.c's
// 1 KiB header (int32 magic 20240520, version 1: uint16 tokens, 2: uint32; the token count)
// followed by the tokens. The file is read with pread (a file cut short while training is an
// error, not a crash) and scanned once at open (every token below the model's vocabulary). It
// is cut into windows of T + 1 tokens at stride T (window w: tokens wT .. wT + T); a sample's
// tokens are a window's first T, its labels the next-token shift. The first windows train, the
// last `val_fraction` of them validate (starting one token later: no token in both). Sample j
// of the training stream (batch j / B, row j % B) is window order(j mod W) of W, where
// order is a fixed bijection of [0, W) that mixes the file's order, shifted each epoch: so
// batch i is the same in every process, for every plan and after a resume.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/files.h"
#include "graph/graph.h"
#include "runtime/host_tensor.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {

/// What a token file holds.
struct TokenFileInfo {
  int64_t tokens = 0;
  int bytes_per_token = 2;
  int64_t header_bytes = 0;  ///< 1024 for llm.c's layout, 0 for raw tokens
  std::string layout;        ///< "llm.c v1", "llm.c v2" or "raw uint16"
};

/// The layout of a token file's bytes (its first 1024 bytes and its size). Errors: an llm.c
/// header whose version is not 1 or 2 or whose count disagrees with the size, a raw file of an
/// odd number of bytes.
Expected<TokenFileInfo> token_file_layout(const unsigned char* head, int64_t head_bytes,
                                          int64_t file_bytes);

struct TokenDataOptions {
  double val_fraction = 0.1;  ///< the last share of the windows, for validation
  bool validation = false;    ///< read the validation windows instead of the training ones
};

class TokenData final : public BatchSource {
 public:
  /// Opens `path` (read with pread, never mapped) and checks it against the graph's inputs: a
  /// tokens input [B, T] (integer) and a labels input of B x T integers (named tokens/labels, or
  /// found by the graph's structure as synthetic data finds them); every token below the rows of
  /// the embeddings and the classes of the loss that read them (the whole file for the training
  /// split, its own windows for the validation split); at least one window in the split. Errors
  /// name the file.
  static Expected<std::unique_ptr<TokenData>> open(const std::string& path, const graph::Graph& g,
                                                   const std::vector<ValueId>& inputs,
                                                   const TokenDataOptions& options = {});
  ~TokenData() override;
  TokenData(const TokenData&) = delete;
  TokenData& operator=(const TokenData&) = delete;

  /// The next batch, or an error naming the file when it can no longer be read.
  Expected<std::vector<std::pair<ValueId, HostTensor>>> read_next() override;
  /// read_next's batch, or no tensors when it failed (use read_next).
  std::vector<std::pair<ValueId, HostTensor>> next_batch() override;
  void seek(int64_t index) override { next_index_ = index; }

  const TokenFileInfo& info() const { return info_; }
  /// Windows of the split read.
  int64_t windows() const { return windows_; }
  /// The window sample `j` of the stream reads (0 <= result < windows()).
  int64_t window_of(int64_t j) const;

 private:
  TokenData() = default;
  // Tokens first .. first + count - 1 of the file.
  Status read_tokens(int64_t first, int64_t count, std::vector<int64_t>* out) const;

  TokenFileInfo info_;
  std::string path_;
  UniqueFd fd_;
  ValueId tokens_id_;
  ValueId labels_id_;
  Shape tokens_shape_;
  Shape labels_shape_;
  int64_t batch_ = 0;
  int64_t seq_ = 0;
  int64_t first_token_ = 0;  // of the split's window 0
  int64_t windows_ = 0;
  int64_t stride_ = 1;  // coprime with windows_
  int64_t next_index_ = 0;
};

}  // namespace meshpipe::runtime

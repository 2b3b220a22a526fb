// Tests of runtime/token_data.h: llm.c's and nanoGPT's layouts (and their errors), windows and
// next-token labels read back from a file written here, the training/validation split, the
// mixing order being a bijection per epoch, resumes, and tokens outside the vocabulary.
#include "runtime/token_data.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "graph/builder.h"

namespace meshpipe::runtime {
namespace {

namespace fs = std::filesystem;

// tokens [batch, seq] -> embedding (vocab rows) -> cross-entropy against labels [batch, seq].
graph::ForwardGraph lm(int64_t batch, int64_t seq, int64_t vocab) {
  graph::Builder b;
  const ValueId x = b.input("idx", Shape{batch, seq}, DType::kI32);
  const ValueId y = b.input("next", Shape{batch, seq}, DType::kI32);
  const ValueId table = b.parameter("table", Shape{vocab, vocab}, graph::InitSpec::normal(0.1f));
  auto g = std::move(b).finish(b.cross_entropy(b.embedding(table, x), y));
  REQUIRE(g.has_value());
  return std::move(*g);
}

std::string write_tokens(const std::string& name, const std::vector<uint32_t>& tokens,
                         int version) {  // version 0: raw uint16
  const fs::path p = fs::temp_directory_path() / ("meshpipe_token_data_" + name);
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (version > 0) {
    int32_t header[256] = {};
    header[0] = 20240520;
    header[1] = version;
    header[2] = static_cast<int32_t>(tokens.size());
    f.write(reinterpret_cast<const char*>(header), sizeof(header));
  }
  for (uint32_t t : tokens) {
    if (version == 2) {
      f.write(reinterpret_cast<const char*>(&t), 4);
    } else {
      const auto s = static_cast<uint16_t>(t);
      f.write(reinterpret_cast<const char*>(&s), 2);
    }
  }
  return p.string();
}

TEST_CASE("token files: windows of T + 1 tokens, next-token labels, the split", "[runtime]") {
  // 41 tokens k % 7 (vocab 7), T = 4: (41 - 1) / 4 = 10 windows; 20% validation: 8 + 2.
  std::vector<uint32_t> tokens(41);
  for (size_t k = 0; k < tokens.size(); ++k) tokens[k] = static_cast<uint32_t>(k % 7);
  for (int version : {0, 1, 2}) {
    INFO("layout version " << version);
    const std::string path = write_tokens("win" + std::to_string(version), tokens, version);
    const graph::ForwardGraph fg = lm(2, 4, 7);
    TokenDataOptions o;
    o.val_fraction = 0.2;
    auto d = TokenData::open(path, fg.graph, fg.inputs, o);
    INFO(d.status().to_string());
    REQUIRE(d.has_value());
    CHECK((*d)->info().tokens == 41);
    CHECK((*d)->windows() == 8);
    // One epoch of samples visits every training window once.
    std::set<int64_t> seen;
    for (int64_t j = 0; j < 8; ++j) seen.insert((*d)->window_of(j));
    CHECK(seen.size() == 8);
    CHECK(*seen.rbegin() == 7);
    // Batch 3 = samples 6, 7: tokens are the window's first 4, labels the next 4.
    (*d)->seek(3);
    auto b = (*d)->next_batch();
    REQUIRE(b.size() == 2);
    for (int64_t r = 0; r < 2; ++r) {
      const int64_t w = (*d)->window_of(6 + r);
      for (int64_t s = 0; s < 4; ++s) {
        CHECK(b[0].second.i32()[r * 4 + s] == (w * 4 + s) % 7);
        CHECK(b[1].second.i32()[r * 4 + s] == (w * 4 + s + 1) % 7);
      }
    }
    // A resume reads the same batch again.
    (*d)->seek(3);
    auto again = (*d)->next_batch();
    CHECK(std::memcmp(again[0].second.data(), b[0].second.data(), 32) == 0);
    // The validation split starts one token after the last training label (token 32): tokens
    // 33..37 are its one window (a second would need token 41).
    o.validation = true;
    auto v = TokenData::open(path, fg.graph, fg.inputs, o);
    REQUIRE(v.has_value());
    CHECK((*v)->windows() == 1);
    auto vb = (*v)->read_next();
    REQUIRE(vb.has_value());
    for (int64_t s = 0; s < 4; ++s) {
      CHECK((*vb)[0].second.i32()[s] == (33 + s) % 7);
      CHECK((*vb)[1].second.i32()[s] == (34 + s) % 7);
    }
  }
}

TEST_CASE("token files that do not fit the model or lie about themselves are named", "[runtime]") {
  const graph::ForwardGraph fg = lm(2, 4, 7);
  const auto error_of = [&](const std::string& path) {
    auto d = TokenData::open(path, fg.graph, fg.inputs);
    REQUIRE_FALSE(d.has_value());
    return d.status().message();
  };
  std::vector<uint32_t> tokens(41, 1);
  tokens[29] = 7;  // the vocabulary is 7
  CHECK(error_of(write_tokens("vocab", tokens, 1)).find("token 29 is 7, outside") !=
        std::string::npos);
  // In the validation window (tokens 37..41 of 42 at T = 4): the training split refuses the
  // file, and the validation split finds it in its own window.
  tokens.assign(42, 1);
  tokens[38] = 7;
  const std::string val_bad = write_tokens("vocab_val", tokens, 1);
  CHECK(error_of(val_bad).find("token 38 is 7, outside") != std::string::npos);
  TokenDataOptions vo;
  vo.validation = true;
  auto v = TokenData::open(val_bad, fg.graph, fg.inputs, vo);
  REQUIRE_FALSE(v.has_value());
  INFO(v.status().to_string());
  CHECK(v.status().message().find("token 38 is 7, outside") != std::string::npos);
  CHECK(
      error_of(write_tokens("short", std::vector<uint32_t>(4, 1), 1)).find("no training window") !=
      std::string::npos);
  // An llm.c header whose count disagrees with the size, and an unknown version.
  const std::string lie = write_tokens("lie", std::vector<uint32_t>(41, 1), 1);
  { std::ofstream(lie, std::ios::binary | std::ios::app) << "xx"; }
  CHECK(error_of(lie).find("counts 41 tokens of 2 bytes, the file holds 84") != std::string::npos);
  CHECK(error_of(write_tokens("v3", std::vector<uint32_t>(41, 1), 3)).find("version 3") !=
        std::string::npos);
  const std::string odd = write_tokens("odd", std::vector<uint32_t>(41, 1), 0);
  { std::ofstream(odd, std::ios::binary | std::ios::app) << "x"; }
  CHECK(error_of(odd).find("odd size") != std::string::npos);
  CHECK(error_of("/dev/null").find("not a regular file") != std::string::npos);
  // A file cut short after it was opened: the next batch is an error naming it, not a crash.
  std::vector<uint32_t> many(4001, 1);
  const std::string cut = write_tokens("cut", many, 0);
  auto open = TokenData::open(cut, fg.graph, fg.inputs);
  REQUIRE(open.has_value());
  fs::resize_file(cut, 64);
  bool failed = false;
  for (int k = 0; k < 50 && !failed; ++k) {
    auto b = (*open)->read_next();
    failed = !b.has_value() &&
             b.status().message().find("was the file changed while training") != std::string::npos;
  }
  CHECK(failed);
  // Every window count gets a mixing stride coprime with it: one epoch visits every window.
  for (uint32_t n = 9; n < 300; n += 7) {
    auto d = TokenData::open(write_tokens("w", std::vector<uint32_t>(n * 4 + 1, 1), 0), fg.graph,
                             fg.inputs, {.val_fraction = 0.0, .validation = false});
    REQUIRE(d.has_value());
    std::set<int64_t> seen;
    for (int64_t j = 0; j < (*d)->windows(); ++j) seen.insert((*d)->window_of(j));
    CHECK(static_cast<int64_t>(seen.size()) == (*d)->windows());
    CHECK((*d)->window_of(1) != 1 % (*d)->windows());  // mixed, not the file's order
  }
  // A model that is not a language model.
  graph::Builder b;
  const ValueId x = b.input("x", Shape{2, 3}, DType::kF32);
  const ValueId y = b.input("y", Shape{2}, DType::kI32);
  auto g = std::move(b).finish(b.cross_entropy(x, y));
  REQUIRE(g.has_value());
  auto d =
      TokenData::open(write_tokens("ok", std::vector<uint32_t>(41, 1), 1), g->graph, g->inputs);
  REQUIRE_FALSE(d.has_value());
  CHECK(d.status().message().find("a token file feeds a language model") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::runtime

// Tests of the data sources: .npy headers (valid ones of every version and malformed ones, every
// prefix of a file), ArrayData's checks and batches (rows in order, wrapping at the end, int64
// narrowed, values outside an embedding refused), and SyntheticData for inputs named otherwise
// than the zoo's (an imported model's), by the graph's structure.
#include "runtime/array_data.h"

#include <catch2/catch.hpp>
#include <filesystem>

#include "graph/builder.h"
#include "runtime/npy_writer.h"
#include "runtime/synthetic_data.h"

namespace meshpipe::runtime {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("meshpipe_array_data_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// idx [batch, 3] int -> embedding (8 rows, width 4) -> linear to 5 classes -> cross-entropy
// against tgt [batch, 3].
graph::ForwardGraph token_graph(int64_t batch, const std::string& ids = "idx",
                                const std::string& labels = "tgt") {
  graph::Builder b;
  const ValueId x = b.input(ids, Shape{batch, 3}, DType::kI32);
  const ValueId y = b.input(labels, Shape{batch, 3}, DType::kI32);
  const ValueId table = b.parameter("table", Shape{8, 4}, graph::InitSpec::normal(0.1f));
  const ValueId w = b.parameter("w", Shape{4, 5}, graph::InitSpec::normal(0.1f));
  const ValueId bias = b.parameter("b", Shape{5}, graph::InitSpec::zeros());
  const ValueId h = b.linear(b.embedding(table, x), w, bias);
  auto g = std::move(b).finish(b.cross_entropy(h, y));
  REQUIRE(g.has_value());
  return std::move(*g);
}

TEST_CASE("npy headers of versions 1-3 parse; malformed ones are named errors", "[runtime]") {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const std::string f = test::npy_bytes("<f4", {2, 3}, v.data(), 24);
  auto h = parse_npy_header(f);
  INFO(h.status().to_string());
  REQUIRE(h.has_value());
  CHECK(h->descr == "<f4");
  CHECK(h->shape == std::vector<int64_t>{2, 3});
  CHECK(h->data_offset % 64 == 0);
  CHECK(static_cast<int64_t>(f.size()) - h->data_offset == 24);
  // Version 2: a 4-byte header length.
  std::string v2 = f;
  v2[6] = 2;
  v2.insert(10, 2, '\0');
  auto h2 = parse_npy_header(v2);
  REQUIRE(h2.has_value());
  CHECK(h2->data_offset == h->data_offset + 2);
  // Every prefix of the header is an error, never a read past the end.
  for (size_t n = 0; n < static_cast<size_t>(h->data_offset); ++n) {
    CHECK_FALSE(parse_npy_header(f.substr(0, n)).has_value());
  }
  const auto error_of = [](const std::string& bytes) {
    auto r = parse_npy_header(bytes);
    REQUIRE_FALSE(r.has_value());
    return r.status().message();
  };
  CHECK(error_of("not numpy at all").find("no \\x93NUMPY magic") != std::string::npos);
  std::string fortran = f;
  fortran.replace(fortran.find("False"), 5, "True ");
  CHECK(error_of(fortran).find("Fortran order") != std::string::npos);
  std::string big = f;
  big.replace(big.find("<f4"), 3, ">f4");
  CHECK(error_of(big).find("'>f4' is not little-endian float32") != std::string::npos);
  std::string huge = test::npy_bytes("<f4", {2, 3}, v.data(), 24);
  huge.replace(huge.find("(2, 3)"), 6, "(99999999999999999999, 3)");
  CHECK(error_of(huge).find("overflows") != std::string::npos);
  std::string claim = f;
  claim[8] = '\xff';
  claim[9] = '\x7f';
  CHECK(error_of(claim).find("header bytes claimed") != std::string::npos);
}

TEST_CASE("ArrayData reads rows in order, wraps at the end, narrows int64", "[runtime]") {
  const fs::path dir = fresh_dir("rows");
  // 6 rows, batch 4: batch 0 = rows 0-3, batch 1 = rows 4, 5, 0, 1, batch 2 = rows 2-5.
  std::vector<int64_t> idx(18), tgt(18);
  for (int k = 0; k < 18; ++k) {
    idx[static_cast<size_t>(k)] = k % 8;
    tgt[static_cast<size_t>(k)] = (k * 3) % 5;
  }
  test::write_npy(dir / "idx.npy", "<i8", {6, 3}, idx);
  test::write_npy(dir / "tgt.npy", "<i8", {6, 3}, tgt);
  const graph::ForwardGraph fg = token_graph(4);
  auto data = ArrayData::open(dir.string(), fg.graph, fg.inputs);
  INFO(data.status().to_string());
  REQUIRE(data.has_value());
  CHECK((*data)->rows() == 6);
  const int expect_rows[3][4] = {{0, 1, 2, 3}, {4, 5, 0, 1}, {2, 3, 4, 5}};
  for (int batch = 0; batch < 3; ++batch) {
    auto b = (*data)->next_batch();
    REQUIRE(b.size() == 2);
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 3; ++c) {
        const int src = expect_rows[batch][r] * 3 + c;
        CHECK(b[0].second.i32()[r * 3 + c] == src % 8);
        CHECK(b[1].second.i32()[r * 3 + c] == (src * 3) % 5);
      }
    }
  }
  (*data)->seek(1);  // a resumed run reads batch 1 again
  CHECK((*data)->next_batch()[0].second.i32()[0] == 4 * 3 % 8);
}

TEST_CASE("ArrayData refuses what does not fit the inputs, naming the file", "[runtime]") {
  const fs::path dir = fresh_dir("bad");
  const graph::ForwardGraph fg = token_graph(4);
  const auto error_of = [&] {
    auto r = ArrayData::open(dir.string(), fg.graph, fg.inputs);
    REQUIRE_FALSE(r.has_value());
    return r.status().message();
  };
  const std::vector<int32_t> ok(18, 1);
  test::write_npy(dir / "tgt.npy", "<i4", {6, 3}, ok);
  CHECK(error_of().find("the data for input 'idx'") != std::string::npos);  // missing
  std::vector<int32_t> outside = ok;
  outside[7] = 8;  // the embedding has 8 rows
  test::write_npy(dir / "idx.npy", "<i4", {6, 3}, outside);
  CHECK(error_of().find("element 7 (row 2) is 8, outside [0, 8)") != std::string::npos);
  test::write_npy(dir / "idx.npy", "<i4", {6, 3}, ok);
  std::vector<int32_t> label = ok;
  label[0] = 5;  // 5 classes
  test::write_npy(dir / "tgt.npy", "<i4", {6, 3}, label);
  CHECK(error_of().find("is 5, outside [0, 5)") != std::string::npos);
  test::write_npy(dir / "tgt.npy", "<i4", {6, 2}, std::vector<int32_t>(12, 1));
  CHECK(error_of().find("has shape (6, 2), the input needs (N, 3)") != std::string::npos);
  test::write_npy(dir / "tgt.npy", "<f4", {6, 3}, std::vector<float>(18, 1.0f));
  CHECK(error_of().find("holds '<f4' but input 'tgt' is i32") != std::string::npos);
  test::write_npy(dir / "tgt.npy", "<i4", {3, 3}, std::vector<int32_t>(9, 1));
  CHECK(error_of().find("has 3 rows, fewer than the batch of 4") != std::string::npos);
  test::write_npy(dir / "tgt.npy", "<i4", {5, 3}, std::vector<int32_t>(15, 1));
  CHECK(error_of().find("has 5 rows for a batch of 4, the other arrays 6 rows for 4") !=
        std::string::npos);
  // A header claiming more rows than the file holds.
  const std::vector<int32_t> few(9, 1);
  std::ofstream(dir / "tgt.npy", std::ios::binary)
      << test::npy_bytes("<i4", {6, 3}, few.data(), few.size() * 4);
  CHECK(error_of().find("data bytes, its header's shape needs") != std::string::npos);
  fs::remove(dir / "tgt.npy");
  fs::create_directory(dir / "tgt.npy");
  CHECK(error_of().find("not a regular file") != std::string::npos);
}

TEST_CASE("flattened labels read their own rows; bounds follow slices; odd inputs are refused",
          "[runtime]") {
  // tokens [4, 3] and labels [12] (the labels of logits flattened to [B*T, V]): 6 and 18 rows.
  graph::Builder b;
  const ValueId x = b.input("idx", Shape{4, 3}, DType::kI32);
  const ValueId y = b.input("tgt", Shape{12}, DType::kI32);
  const ValueId table = b.parameter("table", Shape{8, 5}, graph::InitSpec::normal(0.1f));
  const ValueId h = b.reshape(b.embedding(table, x), Shape{12, 5});
  auto fg = std::move(b).finish(b.cross_entropy(h, y));
  REQUIRE(fg.has_value());
  const fs::path dir = fresh_dir("flat");
  std::vector<int32_t> idx(18), tgt(18);
  for (int k = 0; k < 18; ++k) {
    idx[static_cast<size_t>(k)] = k % 8;
    tgt[static_cast<size_t>(k)] = k % 5;
  }
  test::write_npy(dir / "idx.npy", "<i4", {6, 3}, idx);
  test::write_npy(dir / "tgt.npy", "<i4", {18}, tgt);
  auto data = ArrayData::open(dir.string(), fg->graph, fg->inputs);
  INFO(data.status().to_string());
  REQUIRE(data.has_value());
  for (int batch = 0; batch < 3; ++batch) {  // batch 1 wraps: rows 4, 5, 0, 1 and 12..17, 0..5
    auto out = (*data)->next_batch();
    REQUIRE(out.size() == 2);
    REQUIRE(out[1].second.shape() == Shape{12});
    for (int k = 0; k < 12; ++k) {
      CHECK(out[1].second.i32()[k] == ((batch * 12 + k) % 18) % 5);
      CHECK(out[0].second.i32()[k] == ((batch * 12 + k) % 18) % 8);
    }
  }
  // Labels for another number of batches than the tokens.
  test::write_npy(dir / "tgt.npy", "<i4", {12}, std::vector<int32_t>(12, 0));
  auto uneven = ArrayData::open(dir.string(), fg->graph, fg->inputs);
  REQUIRE_FALSE(uneven.has_value());
  CHECK(uneven.status().message().find(
            "12 rows for a batch of 12, the other arrays 6 rows for 4") != std::string::npos);
  // A bound through a slice: labels = ids[:, 1:], read by a loss over 5 classes.
  graph::Builder s;
  const ValueId ids = s.input("ids", Shape{2, 4}, DType::kI32);
  const ValueId emb = s.parameter("e", Shape{9, 5}, graph::InitSpec::normal(0.1f));
  const ValueId lab = s.slice(ids, 1, 1, 4);
  const ValueId logits = s.slice(s.embedding(emb, ids), 1, 0, 3);
  auto sg = std::move(s).finish(s.cross_entropy(logits, lab));
  REQUIRE(sg.has_value());
  CHECK(index_bound(sg->graph, sg->inputs[0]) == 5);  // min(9 rows, 5 classes)
  // A scalar input, and a name with a NUL: refused before any file is read.
  graph::Builder t;
  const ValueId scalar = t.input("s", Shape{}, DType::kF32);
  const ValueId nul = t.input(std::string("x\0evil", 6), Shape{2}, DType::kF32);
  auto tg = std::move(t).finish(t.add(t.reduce_sum(t.add(nul, nul), {0}), scalar));
  REQUIRE(tg.has_value());
  auto r1 = ArrayData::open(dir.string(), tg->graph, {tg->inputs[0]});
  REQUIRE_FALSE(r1.has_value());
  CHECK(r1.status().message().find("is a scalar") != std::string::npos);
  auto r2 = ArrayData::open(dir.string(), tg->graph, {tg->inputs[1]});
  REQUIRE_FALSE(r2.has_value());
  CHECK(r2.status().message().find("control character") != std::string::npos);
  // A header with a key twice.
  const std::vector<float> v = {1, 2};
  std::string twice = test::npy_bytes("<f4", {2}, v.data(), 8);
  twice.replace(twice.find("'shape'"), 7, "'descr'");
  auto h2 = parse_npy_header(twice);
  REQUIRE_FALSE(h2.has_value());
  CHECK(h2.status().message().find("key 'descr' twice") != std::string::npos);
}

TEST_CASE("synthetic data fills inputs named otherwise by the graph's structure", "[runtime]") {
  const graph::ForwardGraph fg = token_graph(4, "ids", "targets");
  auto d = SyntheticData::create(fg.graph, fg.inputs, 7);
  INFO(d.status().to_string());
  REQUIRE(d.has_value());
  auto batch = d->next_batch();
  REQUIRE(batch.size() == 2);
  for (const auto& [id, t] : batch) {
    for (int64_t k = 0; k < t.shape().numel(); ++k) {
      CHECK(t.i32()[k] >= 0);
      CHECK(t.i32()[k] < 5);  // below the classes, and the embedding's 8 rows
    }
  }
  // The labels are next tokens: label (b, s) = token (b, s + 1).
  const HostTensor& tok = batch[0].first == fg.inputs[0] ? batch[0].second : batch[1].second;
  const HostTensor& lab = batch[0].first == fg.inputs[0] ? batch[1].second : batch[0].second;
  CHECK(lab.i32()[0] == tok.i32()[1]);
  // Three inputs: not a shape synthetic data knows.
  graph::Builder b;
  const ValueId x = b.input("a", Shape{2, 3}, DType::kF32);
  const ValueId x2 = b.input("c", Shape{2, 3}, DType::kF32);
  const ValueId y = b.input("y", Shape{2}, DType::kI32);
  auto g = std::move(b).finish(b.cross_entropy(b.add(x, x2), y));
  REQUIRE(g.has_value());
  auto bad = SyntheticData::create(g->graph, g->inputs, 7);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().message().find("cannot fill input 'a'") != std::string::npos);
}

}  // namespace
}  // namespace meshpipe::runtime

// Tests of core/json.h: parse_json, the typed read_json overloads (types and ranges) and
// JsonReader (missing, mistyped, unknown and optional fields, pairs, and the paths errors name).
#include "core/json.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace meshpipe {
namespace {

Json parse(const std::string& text) {
  auto j = parse_json(text, "test JSON");
  REQUIRE(j.has_value());
  return *j;
}

// The message of reading `text` into a T at path "f" with subject "plan field".
template <class T>
std::string read_error(const std::string& text, T* out) {
  const Status s = read_json(parse(text), "plan field", "f", out);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.code() == Errc::kInvalidArgument);
  return s.message();
}

TEST_CASE("parse_json returns the document or an error naming what and where", "[core][json]") {
  auto ok = parse_json(R"({"a": [1, 2], "b": "x"})", "plan JSON");
  REQUIRE(ok.has_value());
  CHECK((*ok)["a"][1].get<int>() == 2);
  CHECK((*ok)["b"].get<std::string>() == "x");
  // Fields keep the order of the text (ordered_json).
  auto ordered = parse_json(R"({"z": 1, "a": 2})", "plan JSON");
  REQUIRE(ordered.has_value());
  CHECK(ordered->begin().key() == "z");

  auto bad = parse_json("{\"a\": [1, 2}", "plan JSON");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().code() == Errc::kInvalidArgument);
  const std::string m = bad.status().message();
  CHECK(m.rfind("plan JSON is malformed: ", 0) == 0);
  CHECK(m.find("line 1") != std::string::npos);  // where the syntax error is
  CHECK_FALSE(parse_json("", "cluster file").has_value());
  CHECK(parse_json("", "cluster file").status().message().find("cluster file") == 0);
}

TEST_CASE("parse_json refuses nesting deeper than its limit before parsing", "[core][json]") {
  const auto nested = [](int depth, bool in_string) {
    std::string t(static_cast<size_t>(depth), '[');
    if (in_string) t = "[\"" + std::string(100000, '[') + "\\\"\"";  // brackets in a string
    return t + std::string(static_cast<size_t>(in_string ? 1 : depth), ']');
  };
  CHECK(parse_json(nested(kMaxJsonDepth, false), "plan JSON").has_value());
  auto deep = parse_json(nested(kMaxJsonDepth + 1, false), "plan JSON");
  REQUIRE_FALSE(deep.has_value());
  CHECK(deep.status().message() ==
        "plan JSON is malformed: arrays and objects nest deeper than 64 levels (the limit on "
        "every JSON meshpipe reads)");
  // 200,000 levels (a stack overflow in a recursive parser) are refused the same way.
  CHECK_FALSE(parse_json(nested(200000, false), "plan JSON").has_value());
  // Brackets inside strings, escaped quotes included, do not count.
  auto in_string = parse_json(nested(0, true), "plan JSON");
  REQUIRE(in_string.has_value());
  CHECK((*in_string)[0].get<std::string>().size() == 100001);
}

TEST_CASE("parse_json refuses a key given twice in one object", "[core][json]") {
  auto twice = parse_json(R"({"hosts": 1, "device": {"kind": "a"}, "hosts": 2})", "cluster JSON");
  REQUIRE_FALSE(twice.has_value());
  CHECK(twice.status().message() ==
        "cluster JSON is malformed: the key 'hosts' appears twice in one object");
  auto nested = parse_json(R"({"d": {"k": 1, "k": 2}})", "plan JSON");
  REQUIRE_FALSE(nested.has_value());
  CHECK(nested.status().message().find("'k' appears twice") != std::string::npos);
  // The same key in sibling or nested objects is fine.
  auto fine = parse_json(R"({"k": {"k": 1}, "a": [{"k": 1}, {"k": 2}]})", "plan JSON");
  REQUIRE(fine.has_value());
  CHECK((*fine)["a"][1]["k"] == 2);
}

TEST_CASE("json_field_error formats subject, quoted path and complaint", "[core][json]") {
  const Status s = json_field_error("plan field", "stages[1].time", "is missing");
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.message() == "plan field 'stages[1].time' is missing");
}

TEST_CASE("read_json reads strings and booleans and rejects other JSON types", "[core][json]") {
  std::string s;
  REQUIRE(read_json(parse(R"("hello")"), "plan field", "f", &s).is_ok());
  CHECK(s == "hello");
  CHECK(read_error("3", &s) == "plan field 'f' must be a string");
  CHECK(s == "hello");  // untouched by a failed read

  bool b = false;
  REQUIRE(read_json(parse("true"), "plan field", "f", &b).is_ok());
  CHECK(b);
  CHECK(read_error("1", &b) == "plan field 'f' must be true or false");
  CHECK(read_error(R"("true")", &b) == "plan field 'f' must be true or false");
}

TEST_CASE("read_json int64 accepts the whole 64-bit range and nothing beyond", "[core][json]") {
  int64_t x = 0;
  REQUIRE(read_json(parse("-5"), "plan field", "f", &x).is_ok());
  CHECK(x == -5);
  REQUIRE(read_json(parse("9223372036854775807"), "plan field", "f", &x).is_ok());
  CHECK(x == std::numeric_limits<int64_t>::max());
  REQUIRE(read_json(parse("-9223372036854775808"), "plan field", "f", &x).is_ok());
  CHECK(x == std::numeric_limits<int64_t>::min());
  // 2^63 parses as an unsigned integer: it does not fit.
  x = 7;
  CHECK(read_error("9223372036854775808", &x) ==
        "plan field 'f' must be an integer that fits in 64 bits");
  CHECK(x == 7);
  CHECK(read_error("3.5", &x) == "plan field 'f' must be an integer");
  CHECK(read_error("3.0", &x) == "plan field 'f' must be an integer");  // a float, even if whole
  CHECK(read_error(R"("7")", &x) == "plan field 'f' must be an integer");
  CHECK(read_error("true", &x) == "plan field 'f' must be an integer");
}

TEST_CASE("read_json int32 rejects values outside 32 bits, in both directions", "[core][json]") {
  int32_t x = 0;
  REQUIRE(read_json(parse("2147483647"), "plan field", "f", &x).is_ok());
  CHECK(x == 2147483647);
  REQUIRE(read_json(parse("-2147483648"), "plan field", "f", &x).is_ok());
  CHECK(x == std::numeric_limits<int32_t>::min());
  x = 1;
  CHECK(read_error("2147483648", &x) == "plan field 'f' must be an integer that fits in 32 bits");
  CHECK(read_error("-2147483649", &x) == "plan field 'f' must be an integer that fits in 32 bits");
  CHECK(x == 1);
  CHECK(read_error("1.5", &x) == "plan field 'f' must be an integer");
}

TEST_CASE("read_json uint64 takes 0 .. 2^64-1 and rejects negatives", "[core][json]") {
  uint64_t x = 5;
  REQUIRE(read_json(parse("0"), "plan field", "f", &x).is_ok());
  CHECK(x == 0);
  REQUIRE(read_json(parse("18446744073709551615"), "plan field", "f", &x).is_ok());
  CHECK(x == std::numeric_limits<uint64_t>::max());
  x = 5;
  CHECK(read_error("-1", &x) == "plan field 'f' must be a non-negative integer");
  CHECK(read_error("1.0", &x) == "plan field 'f' must be a non-negative integer");
  CHECK(read_error(R"("1")", &x) == "plan field 'f' must be a non-negative integer");
  CHECK(x == 5);
}

TEST_CASE("read_json double takes any number, float also checks the float range", "[core][json]") {
  double d = 0.0;
  REQUIRE(read_json(parse("2.5"), "plan field", "f", &d).is_ok());
  CHECK(d == 2.5);
  REQUIRE(read_json(parse("-3"), "plan field", "f", &d).is_ok());  // integers are numbers
  CHECK(d == -3.0);
  REQUIRE(read_json(parse("1e300"), "plan field", "f", &d).is_ok());
  CHECK(d == 1e300);
  CHECK(read_error(R"("2.5")", &d) == "plan field 'f' must be a number");
  CHECK(read_error("false", &d) == "plan field 'f' must be a number");
  CHECK(read_error("null", &d) == "plan field 'f' must be a number");

  float f = 0.0f;
  REQUIRE(read_json(parse("0.1"), "plan field", "f", &f).is_ok());
  CHECK(f == 0.1f);
  REQUIRE(read_json(parse("3.4e38"), "plan field", "f", &f).is_ok());  // FLT_MAX ~ 3.40282e38
  CHECK(f == Approx(3.4e38));
  f = 1.0f;
  CHECK(read_error("3.5e38", &f) == "plan field 'f' must be a number that fits in a float");
  CHECK(read_error("-1e39", &f) == "plan field 'f' must be a number that fits in a float");
  CHECK(f == 1.0f);
  CHECK(read_error("[1]", &f) == "plan field 'f' must be a number");
}

TEST_CASE("read_json string maps replace the old contents and name the bad key", "[core][json]") {
  std::map<std::string, std::string> m{{"old", "gone"}};
  REQUIRE(read_json(parse(R"({"a": "x", "b": "y"})"), "plan field", "f", &m).is_ok());
  CHECK(m == std::map<std::string, std::string>{{"a", "x"}, {"b", "y"}});
  CHECK(read_error(R"({"a": "x", "b": 2})", &m) == "plan field 'f.b' must be a string");
  CHECK(read_error(R"(["a"])", &m) == "plan field 'f' must be an object");
}

TEST_CASE("read_json vectors read every element and name the bad index", "[core][json]") {
  std::vector<int64_t> v{9, 9, 9, 9};
  REQUIRE(read_json(parse("[1, 2, 3]"), "plan field", "f", &v).is_ok());
  CHECK(v == std::vector<int64_t>{1, 2, 3});
  REQUIRE(read_json(parse("[]"), "plan field", "f", &v).is_ok());
  CHECK(v.empty());
  CHECK(read_error(R"([1, "2", 3])", &v) == "plan field 'f[1]' must be an integer");
  CHECK(read_error(R"({"0": 1})", &v) == "plan field 'f' must be an array");

  std::vector<std::vector<int32_t>> nested;
  REQUIRE(read_json(parse("[[1], [2, 3]]"), "plan field", "f", &nested).is_ok());
  CHECK(nested == std::vector<std::vector<int32_t>>{{1}, {2, 3}});
  CHECK(read_error("[[1], [2, 4294967296]]", &nested) ==
        "plan field 'f[1][1]' must be an integer that fits in 32 bits");
}

TEST_CASE("JsonReader paths: the key alone at the root, 'path.key' below it", "[core][json]") {
  const Json obj = parse(R"({"a": 1})");
  JsonReader root(obj, "", "plan field");
  CHECK(root.path_of("a") == "a");
  CHECK(root.path().empty());
  CHECK(root.subject() == "plan field");
  JsonReader nested(obj, "stages[1]", "plan field");
  CHECK(nested.path_of("time") == "stages[1].time");
  CHECK(nested.error("time", "is odd").message() == "plan field 'stages[1].time' is odd");
}

TEST_CASE("JsonReader reads required fields and names missing or mistyped ones", "[core][json]") {
  const Json obj = parse(R"({"micro_batch": 4, "name": "gpt", "time": "fast"})");
  JsonReader r(obj, "stages[0]", "plan field");
  int64_t micro = 0;
  REQUIRE(r.read("micro_batch", &micro).is_ok());
  CHECK(micro == 4);
  std::string name;
  REQUIRE(r.read("name", &name).is_ok());
  CHECK(name == "gpt");
  double time = 0.0;
  Status s = r.read("time", &time);
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.message() == "plan field 'stages[0].time' must be a number");
  s = r.read("memory", &time);
  CHECK(s.message() == "plan field 'stages[0].memory' is missing");
  const Json* found = nullptr;
  CHECK(r.find("absent", &found).message() == "plan field 'stages[0].absent' is missing");
  CHECK(found == nullptr);
  REQUIRE(r.find("name", &found).is_ok());
  REQUIRE(found != nullptr);
  CHECK(found->get<std::string>() == "gpt");
}

TEST_CASE("JsonReader optional fields keep the default when absent and are still known",
          "[core][json]") {
  const Json obj = parse(R"({"eps": 0.5, "bad": "x"})");
  JsonReader r(obj, "", "config field");
  double eps = 1.0;
  double lr = 0.25;
  REQUIRE(r.read_optional("eps", &eps).is_ok());
  CHECK(eps == 0.5);
  REQUIRE(r.read_optional("lr", &lr).is_ok());
  CHECK(lr == 0.25);
  int64_t bad = 3;
  CHECK(r.read_optional("bad", &bad).message() == "config field 'bad' must be an integer");
  CHECK(bad == 3);
  CHECK(r.find_optional("missing") == nullptr);
  REQUIRE(r.find_optional("eps") != nullptr);
  // Every field was asked for (present or not): nothing is unknown.
  CHECK(r.check_no_unknown_fields().is_ok());
}

TEST_CASE("JsonReader rejects the first field it was not asked for", "[core][json]") {
  const Json obj = parse(R"({"time": 1.0, "tme": 2.0, "zzz": 3})");
  JsonReader r(obj, "stages[0]", "plan field");
  double t = 0.0;
  REQUIRE(r.read("time", &t).is_ok());
  const Status s = r.check_no_unknown_fields();
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.message() == "plan field 'stages[0].tme' is not a known field");
  // A field that was only looked up (missing or not) counts as known.
  REQUIRE(r.find_optional("tme") != nullptr);
  CHECK(r.check_no_unknown_fields().message() == "plan field 'stages[0].zzz' is not a known field");
  CHECK(r.find_optional("zzz") != nullptr);
  CHECK(r.check_no_unknown_fields().is_ok());
}

TEST_CASE("JsonReader read_pair wants exactly two values", "[core][json]") {
  const Json obj = parse(R"({"two": [3, 4], "three": [1, 2, 3], "one": [1], "str": "x",
                             "mixed": [1, "b"]})");
  JsonReader r(obj, "mesh", "cluster field");
  int64_t pair[2] = {0, 0};
  REQUIRE(r.read_pair("two", pair).is_ok());
  CHECK(pair[0] == 3);
  CHECK(pair[1] == 4);
  CHECK(r.read_pair("three", pair).message() ==
        "cluster field 'mesh.three' must be an array of 2 elements");
  CHECK(r.read_pair("one", pair).message() ==
        "cluster field 'mesh.one' must be an array of 2 elements");
  CHECK(r.read_pair("str", pair).message() == "cluster field 'mesh.str' must be an array");
  CHECK(r.read_pair("mixed", pair).message() == "cluster field 'mesh.mixed[1]' must be an integer");
  CHECK(r.read_pair("none", pair).message() == "cluster field 'mesh.none' is missing");
  CHECK(pair[0] == 3);  // failed reads leave the pair as it was
  CHECK(pair[1] == 4);
}

TEST_CASE("JsonReader object and array check the field's JSON type", "[core][json]") {
  const Json obj = parse(R"({"o": {"k": 1}, "a": [1], "n": 2})");
  JsonReader r(obj, "", "plan field");
  const Json* v = nullptr;
  REQUIRE(r.object("o", &v).is_ok());
  CHECK(v->contains("k"));
  REQUIRE(r.array("a", &v).is_ok());
  CHECK(v->size() == 1);
  CHECK(r.object("a", &v).message() == "plan field 'a' must be an object");
  CHECK(r.array("o", &v).message() == "plan field 'o' must be an array");
  CHECK(r.object("n", &v).message() == "plan field 'n' must be an object");
  CHECK(r.array("missing", &v).message() == "plan field 'missing' is missing");
}

TEST_CASE("JsonReader over a non-object finds nothing and reports no unknown fields",
          "[core][json]") {
  const Json arr = parse("[1, 2]");
  JsonReader r(arr, "x", "plan field");
  int64_t v = 0;
  CHECK(r.read("a", &v).message() == "plan field 'x.a' is missing");
  CHECK(r.find_optional("a") == nullptr);
  CHECK(r.check_no_unknown_fields().is_ok());
}

}  // namespace
}  // namespace meshpipe

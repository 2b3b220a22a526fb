// Tests of Status, Expected and the propagation macros.
#include "core/status.h"

#include <catch2/catch.hpp>

namespace meshpipe {
namespace {

Expected<int> parse_positive(int x) {
  if (x <= 0) return make_error(Errc::kInvalidArgument, "{} is not positive", x);
  return x;
}

Expected<int> doubled(int x) {
  MP_ASSIGN_OR_RETURN(int v, parse_positive(x));
  return 2 * v;
}

Status check_both(int a, int b) {
  MP_RETURN_IF_ERROR(parse_positive(a).status());
  MP_RETURN_IF_ERROR(parse_positive(b).status());
  return Status::ok();
}

TEST_CASE("an Expected holds either a value or the error that explains its absence", "[core]") {
  auto ok = doubled(4);
  REQUIRE(ok.has_value());
  CHECK(*ok == 8);
  auto bad = doubled(-1);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.status().code() == Errc::kInvalidArgument);
  CHECK(bad.status().to_string() == "invalid argument: -1 is not positive");
}

TEST_CASE("MP_RETURN_IF_ERROR stops at the first error", "[core]") {
  CHECK(check_both(1, 2).is_ok());
  Status s = check_both(1, -5);
  CHECK(s.message() == "-5 is not positive");
  CHECK(s.with_context("layer 3").message() == "layer 3: -5 is not positive");
}

TEST_CASE("an Expected built from an ok Status becomes an internal error", "[core]") {
  Expected<int> e = Status::ok();
  REQUIRE_FALSE(e.has_value());
  CHECK(e.status().code() == Errc::kInternal);
}

}  // namespace
}  // namespace meshpipe

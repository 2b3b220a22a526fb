// JsonReader and read_json: typed, range-checked reads with field-named errors.
#include "core/json.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace meshpipe {

namespace {

// The nesting depth of `text`'s arrays and objects, counted outside strings; stops counting
// past `limit` (the parser is recursive, so depth is what must be bounded before it runs).
int nesting_depth(std::string_view text, int limit) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

Expected<Json> parse_json(std::string_view text, std::string_view what) {
  if (nesting_depth(text, kMaxJsonDepth) > kMaxJsonDepth) {
    return make_error(Errc::kInvalidArgument,
                      "{} is malformed: arrays and objects nest deeper than {} levels (the limit "
                      "on every JSON meshpipe reads)",
                      what, kMaxJsonDepth);
  }
  // nlohmann reports syntax errors by exception; it is caught here and becomes a Status. A key
  // given twice in one object is an error too (nlohmann would keep the last silently).
  std::vector<std::set<std::string>> keys;  // of every object being parsed
  std::string duplicate;
  const Json::parser_callback_t watch = [&](int /*depth*/, Json::parse_event_t event,
                                            Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == Json::parse_event_t::key && !keys.empty() && parsed.is_string() &&
               !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  try {
    Json j = Json::parse(text.begin(), text.end(), watch);
    if (!duplicate.empty()) {
      return make_error(Errc::kInvalidArgument,
                        "{} is malformed: the key '{}' appears twice in "
                        "one object",
                        what, duplicate);
    }
    return j;
  } catch (const Json::exception& e) {
    return make_error(Errc::kInvalidArgument, "{} is malformed: {}", what, e.what());
  }
}

Status json_field_error(std::string_view subject, std::string_view path, std::string_view what) {
  return make_error(Errc::kInvalidArgument, "{} '{}' {}", subject, path, what);
}

Status read_json(const Json& v, std::string_view subject, const std::string& path,
                 std::string* out) {
  if (!v.is_string()) return json_field_error(subject, path, "must be a string");
  *out = v.get_ref<const std::string&>();
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path, bool* out) {
  if (!v.is_boolean()) return json_field_error(subject, path, "must be true or false");
  *out = v.get<bool>();
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path, int64_t* out) {
  if (!v.is_number_integer()) return json_field_error(subject, path, "must be an integer");
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return json_field_error(subject, path, "must be an integer that fits in 64 bits");
  }
  *out = v.get<int64_t>();
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path, int32_t* out) {
  int64_t x = 0;
  MP_RETURN_IF_ERROR(read_json(v, subject, path, &x));
  if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max()) {
    return json_field_error(subject, path, "must be an integer that fits in 32 bits");
  }
  *out = static_cast<int32_t>(x);
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path, uint64_t* out) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0)) {
    return json_field_error(subject, path, "must be a non-negative integer");
  }
  *out = v.get<uint64_t>();
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path, double* out) {
  if (!v.is_number()) return json_field_error(subject, path, "must be a number");
  *out = v.get<double>();
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path, float* out) {
  double x = 0.0;
  MP_RETURN_IF_ERROR(read_json(v, subject, path, &x));
  if (std::isfinite(x) && std::fabs(x) > static_cast<double>(std::numeric_limits<float>::max())) {
    return json_field_error(subject, path, "must be a number that fits in a float");
  }
  *out = static_cast<float>(x);
  return Status::ok();
}

Status read_json(const Json& v, std::string_view subject, const std::string& path,
                 std::map<std::string, std::string>* out) {
  if (!v.is_object()) return json_field_error(subject, path, "must be an object");
  out->clear();
  for (const auto& [key, value] : v.items()) {
    MP_RETURN_IF_ERROR(read_json(value, subject, path + "." + key, &(*out)[key]));
  }
  return Status::ok();
}

JsonReader::JsonReader(const Json& obj, std::string path, std::string subject)
    : obj_(obj), path_(std::move(path)), subject_(std::move(subject)) {}

std::string JsonReader::path_of(std::string_view key) const {
  return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

Status JsonReader::error(std::string_view key, std::string_view what) const {
  return json_field_error(subject_, path_of(key), what);
}

Status JsonReader::find(std::string_view key, const Json** out) {
  const Json* v = find_optional(key);
  if (v == nullptr) return error(key, "is missing");
  *out = v;
  return Status::ok();
}

const Json* JsonReader::find_optional(std::string_view key) {
  known_.insert(std::string(key));
  if (!obj_.is_object()) return nullptr;
  const auto it = obj_.find(key);
  return it == obj_.end() ? nullptr : &*it;
}

Status JsonReader::object(std::string_view key, const Json** out) {
  MP_RETURN_IF_ERROR(find(key, out));
  if (!(*out)->is_object()) return error(key, "must be an object");
  return Status::ok();
}

Status JsonReader::array(std::string_view key, const Json** out) {
  MP_RETURN_IF_ERROR(find(key, out));
  if (!(*out)->is_array()) return error(key, "must be an array");
  return Status::ok();
}

Status JsonReader::check_no_unknown_fields() const {
  if (!obj_.is_object()) return Status::ok();
  for (const auto& [key, value] : obj_.items()) {
    if (!known_.contains(key)) return error(key, "is not a known field");
  }
  return Status::ok();
}

}  // namespace meshpipe

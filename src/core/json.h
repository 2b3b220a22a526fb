// Reading JSON without exceptions, with errors that name the field: the one helper every reader
// of the project's files and messages uses (plans, cluster files, checkpoint manifests, profile
// databases, the cluster protocol). Writers use nlohmann::ordered_json directly, so fields come
// out in the order they are written.
//
//   JsonReader r(root, "", "plan field");
//   MP_RETURN_IF_ERROR(r.read("micro_batch", &p.micro_batch));
//   -> "plan field 'micro_batch' must be an integer"          (a string was found)
//   MP_RETURN_IF_ERROR(r.check_no_unknown_fields());
//   -> "plan field 'stages[0].tme' is not a known field"      (a misspelt field is an error)
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace meshpipe {

/// The JSON value type of every reader and writer (keeps fields in insertion order).
using Json = nlohmann::ordered_json;

/// The deepest nesting of arrays and objects parse_json accepts (the project's files nest at
/// most about 8 deep); checked before parsing, so a hostile file cannot exhaust the stack.
inline constexpr int kMaxJsonDepth = 64;

/// Parses `text`; a syntax error is kInvalidArgument naming `what` ("plan JSON") and where, and
/// so is nesting deeper than kMaxJsonDepth.
Expected<Json> parse_json(std::string_view text, std::string_view what);

/// "{subject} '{path}' {what}" as kInvalidArgument, e.g. "plan field 'stages[1].time' is
/// missing".
Status json_field_error(std::string_view subject, std::string_view path, std::string_view what);

/// Reads one value into `out`, checking its JSON type and range; errors name `path`.
Status read_json(const Json& v, std::string_view subject, const std::string& path,
                 std::string* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path, bool* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path, int64_t* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path, int32_t* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path, uint64_t* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path, double* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path, float* out);
Status read_json(const Json& v, std::string_view subject, const std::string& path,
                 std::map<std::string, std::string>* out);

/// Arrays of any readable type.
template <class T>
Status read_json(const Json& v, std::string_view subject, const std::string& path,
                 std::vector<T>* out) {
  if (!v.is_array()) return json_field_error(subject, path, "must be an array");
  out->assign(v.size(), T{});
  for (size_t i = 0; i < v.size(); ++i) {
    MP_RETURN_IF_ERROR(read_json(v[i], subject, path + "[" + std::to_string(i) + "]", &(*out)[i]));
  }
  return Status::ok();
}

/// The fields of one JSON object: finds them by name, reads them with read_json, and at the end
/// rejects the fields it was not asked for.
class JsonReader {
 public:
  /// `obj` must outlive the reader. `path` is the object's own path ("" for the root, else
  /// "stages[1]"), `subject` the error prefix ("plan field").
  JsonReader(const Json& obj, std::string path, std::string subject);

  /// "path.key" (or "key" at the root).
  std::string path_of(std::string_view key) const;
  /// The path of this object.
  const std::string& path() const { return path_; }
  const std::string& subject() const { return subject_; }

  /// The field, or an error when it is missing.
  Status find(std::string_view key, const Json** out);
  /// The field, or null when it is absent (it is still a known field).
  const Json* find_optional(std::string_view key);

  /// Reads a required field.
  template <class T>
  Status read(std::string_view key, T* out) {
    const Json* v = nullptr;
    MP_RETURN_IF_ERROR(find(key, &v));
    return read_json(*v, subject_, path_of(key), out);
  }
  /// Reads a field when present; `out` keeps its value otherwise.
  template <class T>
  Status read_optional(std::string_view key, T* out) {
    const Json* v = find_optional(key);
    return v == nullptr ? Status::ok() : read_json(*v, subject_, path_of(key), out);
  }
  /// Reads a field that must be an array of exactly two values.
  template <class T>
  Status read_pair(std::string_view key, T (&out)[2]) {
    std::vector<T> values;
    MP_RETURN_IF_ERROR(read(key, &values));
    if (values.size() != 2) return error(key, "must be an array of 2 elements");
    out[0] = values[0];
    out[1] = values[1];
    return Status::ok();
  }
  /// A required field that must be an object (or an array).
  Status object(std::string_view key, const Json** out);
  Status array(std::string_view key, const Json** out);

  /// An error about field `key` of this object.
  Status error(std::string_view key, std::string_view what) const;
  /// Fails on the first field of the object that was neither read nor found.
  Status check_no_unknown_fields() const;

 private:
  const Json& obj_;
  std::string path_;
  std::string subject_;
  std::set<std::string, std::less<>> known_;
};

}  // namespace meshpipe

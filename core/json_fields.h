// Reading the JSON config files that sit beside checkpoints (config.json, open_clip_config.json,
// tokenizer_config.json, tokenizer.json): every field is checked for its type and range before it is
// converted, and every error names the file and the field.
#pragma once

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include "core/error.h"

namespace clipguide {

// `text` as a JSON object; anything else is an Error naming `source` and `file`.
inline nlohmann::json parse_json_object(const std::string& text, const std::string& source,
                                        const std::string& file) {
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    if (!j.is_object()) fail(source, ": ", file, " is not a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": ", file, " is not valid JSON (", e.what(), ")");
  }
}

// Reads j[key] into `out` when present; a value of another type, or a number `out` cannot hold, is an Error
// naming the file and the field. (nlohmann's own conversions of 1e30 to an int, or of 1e300 to a float, are
// undefined behaviour: the type and range are checked first.)
template <typename T>
void read_field(const nlohmann::json& j, const char* key, T& out, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return;
  const nlohmann::json& v = j[key];
  bool fits = false;
  if constexpr (std::is_same_v<T, bool>) {
    fits = v.is_boolean();
  } else if constexpr (std::is_integral_v<T>) {
    fits = v.is_number_integer() &&
           (v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                                   : v.get<int64_t>() >= std::numeric_limits<T>::min() &&
                                         v.get<int64_t>() <= std::numeric_limits<T>::max());
  } else if constexpr (std::is_floating_point_v<T>) {
    fits = v.is_number() && std::abs(v.get<double>()) <= std::numeric_limits<T>::max();
  } else {
    fits = v.is_string();
  }
  if (!fits) fail(where, ".", key, " has the wrong type or is out of range (", v.dump(), ")");
  out = v.get<T>();
}

// A field the code runs at one value only: j[key], when present and not null, must be `supported`; anything
// else is an Error naming the file, the field and its value.
inline void require_supported(const nlohmann::json& j, const char* key, const nlohmann::json& supported,
                              const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null() || j[key] == supported) return;
  fail(where, ": ", key, " ", j[key].dump(), " is not supported (only ", supported.dump(), " is)");
}

// j[key] when it is an object, an empty object when it is absent or null; anything else is an Error.
inline const nlohmann::json& object_field(const nlohmann::json& j, const char* key,
                                          const std::string& where) {
  static const nlohmann::json empty = nlohmann::json::object();
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return empty;
  if (!j[key].is_object()) fail(where, ".", key, " is not a JSON object");
  return j[key];
}

}  // namespace clipguide

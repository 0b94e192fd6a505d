// Names of an enum's values, from one table per enum: parsing an option's value, naming a value back (in
// logs, replays and reports) and listing the choices (help texts, errors) all read the same table. And the
// one way to cut a list of names ("flip,affine", "cuda:0,cuda:1") into its items.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/error.h"

namespace clipguide {

template <typename Enum>
struct Named {
  Enum value;
  const char* name;
};

// "a, b, c": the names in table order.
template <typename Enum, size_t N>
std::string names_of(const Named<Enum> (&table)[N]) {
  std::string out;
  for (const auto& entry : table) out += cat(out.empty() ? "" : ", ", entry.name);
  return out;
}

// The value called `text`, or an Error "OPTION TEXT is not one of a, b, c".
template <typename Enum, size_t N>
Enum parse_name(const Named<Enum> (&table)[N], const std::string& text, const char* option) {
  for (const auto& entry : table) {
    if (text == entry.name) return entry.value;
  }
  fail(SafeText{option}, " ", text, " is not one of ", SafeText{names_of(table)});
}

template <typename Enum, size_t N>
const char* name_of(const Named<Enum> (&table)[N], Enum value) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  fail("an enum value with no name");
}

// `text` cut at every `separator`: "a,,b" gives "a", "", "b"; "" gives one empty piece.
inline std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t end = text.find(separator); end != std::string::npos; end = text.find(separator, start)) {
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  out.push_back(text.substr(start));
  return out;
}

}  // namespace clipguide

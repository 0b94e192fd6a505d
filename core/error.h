// Errors that reach the user: one line, naming the file or input and the problem.
#pragma once

#include <cstddef>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace clipguide {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The most bytes of one untrusted value that a message quotes; longer ones are cut in the middle.
constexpr size_t kMaxQuotedBytes = 240;

// Untrusted text (a file name, a tensor name, a JSON key, bytes read from a file) made safe for a one-line
// message on a terminal or in a log: each byte of invalid UTF-8, of a control character (C0, DEL, C1), of a
// line or paragraph separator or of a bidirectional override becomes `\xNN`; text longer than `max_bytes`
// keeps its start and end with "…" between. Backslashes are kept, so quoting twice changes nothing more. (In
// text_clean.cpp, with the other UTF-8 handling.)
std::string quote_untrusted(std::string_view text, size_t max_bytes = kMaxQuotedBytes);

// Text already safe to print (a message of ours, or one joined from quoted parts): message() takes it as it
// is.
struct SafeText {
  std::string text;
};

// An exception as the one line a user sees: libtorch's errors without their backtrace, every byte printable.
std::string error_line(const std::exception& e);

// Concatenates its arguments with operator<<: cat("tensor ", name, " has ", n, " elements").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

namespace detail {
// One part of an error message: a string literal (or SafeText) is ours and goes in as written; any other text
// (std::string, string_view, const char*, a path) is untrusted and goes through quote_untrusted; anything
// else through <<.
template <typename T>
void put_message_part(std::ostringstream& out, const T& part) {
  if constexpr (std::is_array_v<T>) {
    out << part;
  } else if constexpr (std::is_same_v<T, SafeText>) {
    out << part.text;
  } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
    out << quote_untrusted(part.string());
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out << quote_untrusted(std::string_view(part));
  } else {
    out << part;
  }
}
}  // namespace detail

// cat() for messages: the parts joined as put_message_part says, so no file name or file content can break
// the line.
template <typename... Args>
std::string message(const Args&... args) {
  std::ostringstream out;
  (detail::put_message_part(out, args), ...);
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(message(args...));
}

// A one-line notice on stderr, its parts joined as message() joins them.
template <typename... Args>
void warn(const Args&... args) {
  std::cerr << message(args...) << '\n';
}

}  // namespace clipguide

// Errors that reach the user: one line, naming the file or input and the problem.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace clipguide {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<<: cat("tensor ", name, " has ", n, " elements").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

}  // namespace clipguide

// Shared by the libFuzzer harnesses. A harness feeds one input to one parser the way the CLI does. The
// one-line clipguide::Error is the expected answer to bad input; anything else that escapes (c10::Error,
// std::bad_alloc, a JSON or YAML library exception) is a finding: libFuzzer reports it as a crash, with the
// input kept.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace clipguide::fuzz {

// CLIPGUIDE_FUZZ_VERBOSE=1 prints each expected error, to see what a seed or finding is refused for.
template <typename F>
int run_input(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    if (std::getenv("CLIPGUIDE_FUZZ_VERBOSE") != nullptr) std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 0;
}

// An anonymous in-memory file holding `bytes`, for the parsers whose public entry is a path.
class MemFile {
 public:
  explicit MemFile(const std::string& bytes) : fd_(::memfd_create("clipguide-fuzz", MFD_CLOEXEC)) {
    if (fd_ < 0) std::abort();
    for (size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// Splits the input at the first occurrence of `separator`: the part before it, and `rest` the part after
// (empty without one).
inline std::string split_off(const std::string& input, const std::string& separator, std::string* rest) {
  const size_t at = input.find(separator);
  if (at == std::string::npos) {
    rest->clear();
    return input;
  }
  *rest = input.substr(at + separator.size());
  return input.substr(0, at);
}

inline std::string fixtures_dir() {
  const char* dir = std::getenv("CLIPGUIDE_FIXTURES");
  return dir != nullptr ? dir : "../shared/fixtures";
}

}  // namespace clipguide::fuzz

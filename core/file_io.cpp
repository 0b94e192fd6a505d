#include "core/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace clipguide {

ByteSpan ByteSpan::sub(uint64_t offset, uint64_t length, const std::string& what) const {
  if (offset > size || length > size - offset) {
    fail(what, " runs past the end of the data (bytes ", offset, "..", offset + length, " of ", size, ")");
  }
  return {data + offset, static_cast<size_t>(length)};
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  // Non-blocking, so that a FIFO or a device given as an input is refused below instead of waiting for a
  // writer.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(path, ": cannot map: ", std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string temp_beside(const std::string& path) {
  // The host too: on a shared file system, two machines' processes (a retried or speculative task) may have
  // the same pid.
  static const std::string host = [] {
    char name[256] = {};
    return ::gethostname(name, sizeof name - 1) == 0 && name[0] != '\0' ? std::string(name)
                                                                        : std::string("host");
  }();
  return cat(path, ".tmp.", host, ".", ::getpid());
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot replace: ", std::strerror(err));
  }
}

namespace {

// Creates `dir` if missing, then creates and removes `probe` in it; `what` names the output in errors.
void check_writable(const std::string& what, const std::filesystem::path& dir, const std::string& probe) {
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) fail(what, ": cannot create the folder ", dir.string(), ": ", ec.message());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(what, ": cannot write there: ", std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

void prepare_output_file(const std::string& path) {
  check_writable(path, std::filesystem::path(path).parent_path(), temp_beside(path));
}

void prepare_output_dir(const std::string& dir) {
  check_writable(dir, dir, temp_beside((std::filesystem::path(dir) / ".clipguide-probe").string()));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = temp_beside(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot write: ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(path, ": write failed: ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(path, ": write failed: ", std::strerror(errno));
  }
  rename_into_place(tmp, path);
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  MappedFile file(from);
  write_file_atomic(to, std::string(reinterpret_cast<const char*>(file.bytes().data), file.size()));
}

std::string move_file_into(const std::string& file, const std::string& dir) {
  const std::filesystem::path name = std::filesystem::path(file).filename();
  if (name.empty() || name == "." || name == "..") fail("cannot name a moved copy of ", file);
  const std::string stem = name.stem().string(), ext = name.extension().string();
  std::string staged;  // across filesystems: a whole copy in `dir`, linked to its final name
  for (int k = 0;; ++k) {
    const std::string dest =
        (std::filesystem::path(dir) / (k == 0 ? name.string() : cat(stem, "-", k, ext))).string();
    const std::string& from = staged.empty() ? file : staged;
    if (::link(from.c_str(), dest.c_str()) == 0) {
      if (!staged.empty()) ::unlink(staged.c_str());
      if (::unlink(file.c_str()) != 0)
        fail(file, ": moved a copy to ", dest, " but cannot remove it: ", std::strerror(errno));
      return dest;
    }
    const int err = errno;
    if (err == EEXIST) continue;
    if (staged.empty() && (err == EXDEV || err == EPERM)) {
      staged = temp_beside(dest);
      MappedFile source(file);
      write_file_atomic(staged,
                        std::string(reinterpret_cast<const char*>(source.bytes().data), source.size()));
      --k;  // retry this name from the staged copy
      continue;
    }
    if (!staged.empty()) ::unlink(staged.c_str());
    fail(file, ": cannot move it to ", dest, ": ", std::strerror(err));
  }
}

void symlink_atomic(const std::string& target, const std::string& link) {
  const std::string tmp = temp_beside(link);
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0)
    fail(link, ": cannot create a symlink: ", std::strerror(errno));
  rename_into_place(tmp, link);
}

LineLog::LineLog(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path, ": cannot write the log: ", std::strerror(errno));
}

LineLog::~LineLog() { ::close(fd_); }

void LineLog::append(const std::string& line) {
  const std::string bytes = line + "\n";
  ssize_t n;
  do {
    n = ::write(fd_, bytes.data(), bytes.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(bytes.size()))
    fail(path_, ": log write failed: ", n < 0 ? std::strerror(errno) : "short write");
}

std::string read_small_file(const std::string& path, size_t max_bytes) {
  MappedFile file(path);
  if (file.size() > max_bytes)
    fail(path, ": ", file.size(), " bytes exceeds the limit of ", max_bytes, " bytes");
  return std::string(reinterpret_cast<const char*>(file.bytes().data), file.size());
}

}  // namespace clipguide

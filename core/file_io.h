// File access: read-only memory maps for inputs (multi-gigabyte checkpoints are not copied) and atomic writes
// for outputs (a reader sees the old file or the new one, never a partial one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace clipguide {

// A bounds-checked window into bytes owned elsewhere.
struct ByteSpan {
  const uint8_t* data = nullptr;
  size_t size = 0;

  // The sub-span [offset, offset + length); throws Error naming `what` if it runs past the end.
  ByteSpan sub(uint64_t offset, uint64_t length, const std::string& what) const;
};

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  ByteSpan bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Readies `path` to be written later: creates its folder (and those above) if missing and checks that a file
// can be created there, so that a long job fails at its start rather than its end. An Error naming the path
// otherwise.
void prepare_output_file(const std::string& path);
// The same for a folder that will receive files.
void prepare_output_dir(const std::string& dir);

// The temporary an atomic write of `path` goes through: in the same folder, so the rename cannot cross
// filesystems.
std::string temp_beside(const std::string& path);
// Renames the finished temporary over `path` in one step; on failure removes it and throws.
void rename_into_place(const std::string& tmp, const std::string& path);

// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Copies `from` to `to` through write_file_atomic: `to` is the old file or a whole copy, never a partial one.
void copy_file_atomic(const std::string& from, const std::string& to);

// Moves `file` into the folder `dir` under its own file name, or NAME-1.EXT, NAME-2.EXT, ... where that is
// taken: never replacing a file (the new name is claimed with link(2), which fails rather than overwrite),
// never outside `dir`. Across filesystems the bytes are copied first. Returns the new path.
std::string move_file_into(const std::string& file, const std::string& dir);

// Makes `link` a symlink to `target`, replacing whatever `link` was in one rename.
void symlink_atomic(const std::string& target, const std::string& link);

// An append-only log of lines (JSONL). Each line reaches the file in one write() to a descriptor opened with
// O_APPEND, so a crash or kill leaves whole lines only.
class LineLog {
 public:
  explicit LineLog(const std::string& path);
  ~LineLog();
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;

  void append(const std::string& line);  // adds the newline

 private:
  std::string path_;
  int fd_ = -1;
};

// The most read_small_file takes of a config file (config.json, diffusion flags, taming .yaml).
constexpr size_t kMaxConfigBytes = 1u << 20;

// The whole file as bytes; throws Error naming the file if it cannot be read or exceeds max_bytes.
std::string read_small_file(const std::string& path, size_t max_bytes);

}  // namespace clipguide

// A read-only zip reader for PyTorch archives (torch.save zips and TorchScript archives), Ref: PKWARE APPNOTE
// 6.3.9 sections 4.3.7 (local header), 4.3.12 (central directory), 4.3.14-16 (zip64, end of directory).
// Records are served as views into the mapped file; only stored (uncompressed) records can be read, which is
// how PyTorch writes tensor data. Every offset and size is checked against the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/file_io.h"

namespace clipguide {

class ZipArchive {
 public:
  static constexpr size_t kMaxEntries = 1u << 20;

  // `name` is used in error messages.
  ZipArchive(ByteSpan bytes, std::string name);

  static bool looks_like_zip(ByteSpan bytes);

  bool contains(const std::string& entry) const { return entries_.count(entry) != 0; }
  // The bytes of a stored record; throws Error if it is missing, compressed or inconsistent.
  ByteSpan read(const std::string& entry) const;
  std::vector<std::string> names() const;
  const std::string& name() const { return name_; }

 private:
  struct Entry {
    uint16_t method;
    uint32_t crc;
    uint64_t compressed_size, size, local_offset;
  };
  ByteSpan bytes_;
  std::string name_;
  std::map<std::string, Entry> entries_;
};

}  // namespace clipguide

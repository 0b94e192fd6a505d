#include "io/zip.h"

#include <algorithm>
#include <array>

#include "core/error.h"

namespace clipguide {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kMaxCrcCheckedBytes = 16u << 20;

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t crc32(const uint8_t* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

}  // namespace

bool ZipArchive::looks_like_zip(ByteSpan bytes) { return bytes.size >= 4 && le(bytes.data, 4) == kLocalSig; }

ZipArchive::ZipArchive(ByteSpan bytes, std::string name) : bytes_(bytes), name_(std::move(name)) {
  if (bytes.size < kEndSize) fail(name_, ": too short for a zip archive (", bytes.size, " bytes)");
  // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
  int64_t end = -1;
  const size_t lowest = bytes.size > kEndSize + 0xFFFF ? bytes.size - kEndSize - 0xFFFF : 0;
  for (size_t pos = bytes.size - kEndSize + 1; pos-- > lowest;) {
    if (le(bytes.data + pos, 4) == kEndSig) {
      end = static_cast<int64_t>(pos);
      break;
    }
  }
  if (end < 0) fail(name_, ": zip end-of-directory record not found; the file is truncated or not a zip");
  const uint8_t* e = bytes.data + end;
  uint64_t count = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    if (end < 20) fail(name_, ": zip64 locator missing");
    const uint8_t* loc = bytes.data + end - 20;
    if (le(loc, 4) != kZip64LocatorSig) fail(name_, ": zip64 locator missing");
    const ByteSpan z64 = bytes.sub(le(loc + 8, 8), 56, name_ + ": zip64 end-of-directory record");
    if (le(z64.data, 4) != kZip64EndSig) fail(name_, ": zip64 end-of-directory record has a bad signature");
    count = le(z64.data + 32, 8);
    cd_size = le(z64.data + 40, 8);
    cd_offset = le(z64.data + 48, 8);
  }
  if (count > kMaxEntries) fail(name_, ": zip lists ", count, " records, over the cap of ", kMaxEntries);
  const ByteSpan cd = bytes.sub(cd_offset, cd_size, name_ + ": zip central directory");
  size_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const ByteSpan head = cd.sub(pos, 46, name_ + ": zip central directory entry");
    if (le(head.data, 4) != kCentralSig)
      fail(name_, ": zip central directory entry ", i, " has a bad signature");
    Entry entry{static_cast<uint16_t>(le(head.data + 10, 2)), static_cast<uint32_t>(le(head.data + 16, 4)),
                le(head.data + 20, 4), le(head.data + 24, 4), le(head.data + 42, 4)};
    const uint64_t name_len = le(head.data + 28, 2), extra_len = le(head.data + 30, 2),
                   comment_len = le(head.data + 32, 2);
    const ByteSpan name_bytes = cd.sub(pos + 46, name_len, name_ + ": zip entry name");
    const ByteSpan extra = cd.sub(pos + 46 + name_len, extra_len, name_ + ": zip entry extra field");
    // Zip64 extended information (APPNOTE 4.5.3): only the fields whose 32-bit value is saturated, in order.
    for (size_t x = 0; x + 4 <= extra.size;) {
      const uint64_t id = le(extra.data + x, 2), len = le(extra.data + x + 2, 2);
      const ByteSpan field = extra.sub(x + 4, len, name_ + ": zip extra field");
      if (id == 0x0001) {
        size_t f = 0;
        for (uint64_t* v : {&entry.size, &entry.compressed_size, &entry.local_offset}) {
          if (*v != 0xFFFFFFFF) continue;
          *v = le(field.sub(f, 8, name_ + ": zip64 extra field").data, 8);
          f += 8;
        }
      }
      x += 4 + len;
    }
    std::string entry_name(reinterpret_cast<const char*>(name_bytes.data), name_bytes.size);
    if (!entries_.emplace(entry_name, entry).second)
      fail(name_, ": zip lists record '", entry_name, "' twice");
    pos += 46 + name_len + extra_len + comment_len;
  }
}

ByteSpan ZipArchive::read(const std::string& entry_name) const {
  auto it = entries_.find(entry_name);
  if (it == entries_.end()) fail(name_, ": zip record '", entry_name, "' is missing");
  const Entry& e = it->second;
  if (e.method != 0) {
    fail(name_, ": zip record '", entry_name, "' is compressed (method ", e.method,
         "); PyTorch archives store tensor records uncompressed");
  }
  if (e.compressed_size != e.size) {
    fail(name_, ": zip record '", entry_name, "' is stored but its sizes disagree (", e.compressed_size,
         " vs ", e.size, ")");
  }
  const ByteSpan local = bytes_.sub(e.local_offset, 30, name_ + ": zip local header of '" + entry_name + "'");
  if (le(local.data, 4) != kLocalSig)
    fail(name_, ": zip local header of '", entry_name, "' has a bad signature");
  const uint64_t data_offset = e.local_offset + 30 + le(local.data + 26, 2) + le(local.data + 28, 2);
  const ByteSpan data = bytes_.sub(data_offset, e.size, name_ + ": zip record '" + entry_name + "'");
  if (data.size <= kMaxCrcCheckedBytes && crc32(data.data, data.size) != e.crc) {
    fail(name_, ": zip record '", entry_name, "' fails its CRC check; the file is corrupt");
  }
  return data;
}

std::vector<std::string> ZipArchive::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

}  // namespace clipguide

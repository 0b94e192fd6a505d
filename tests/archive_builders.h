// Builders for hand-made pickles, zips and legacy torch.save streams, so tests can construct valid and
// deliberately broken files byte by byte.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace clipguide::test {

inline std::string le_bytes(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// Protocol-2 pickle opcodes, appended in order.
struct PickleBuilder {
  std::string s = "\x80\x02";
  PickleBuilder& op(const std::string& o) {
    s += o;
    return *this;
  }
  PickleBuilder& str(const std::string& v) {
    s += 'X';
    s += le_bytes(v.size(), 4);
    s += v;
    return *this;
  }
  PickleBuilder& integer(int64_t v) {
    s += 'J';
    s += le_bytes(static_cast<uint32_t>(v), 4);
    return *this;
  }
  PickleBuilder& global(const std::string& module, const std::string& name) {
    s += 'c';
    s += module + "\n" + name + "\n";
    return *this;
  }
  PickleBuilder& ints(const std::vector<int64_t>& v) {
    s += "(";
    for (int64_t x : v) integer(x);
    s += "t";
    return *this;
  }
  // _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, sizes, strides, False,
  // OrderedDict())
  PickleBuilder& tensor(const std::string& key, int64_t numel, int64_t offset,
                        const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                        bool legacy = false) {
    global("torch._utils", "_rebuild_tensor_v2")
        .op("((")
        .str("storage")
        .global("torch", "FloatStorage")
        .str(key)
        .str("cpu")
        .integer(numel);
    if (legacy) op("N");
    op("tQ")
        .integer(offset)
        .ints(sizes)
        .ints(strides)
        .op("\x89")
        .global("collections", "OrderedDict")
        .op(")Rt")
        .op("R");
    return *this;
  }
  std::string done() { return s + "."; }
};

// A zip of stored records, like PyTorch writes them. Per record, `method` and `declared_size` can lie.
struct ZipRecord {
  std::string name, data;
  uint16_t method = 0;
  int64_t declared_size = -1;  // -1: the real size
};

inline uint32_t crc32_of(const std::string& data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

inline std::string build_zip(const std::vector<ZipRecord>& records) {
  std::string out, central;
  for (const auto& r : records) {
    const uint64_t size = r.declared_size < 0 ? r.data.size() : static_cast<uint64_t>(r.declared_size);
    const std::string common = le_bytes(20, 2) + le_bytes(0, 2) + le_bytes(r.method, 2) + le_bytes(0, 4) +
                               le_bytes(crc32_of(r.data), 4) + le_bytes(size, 4) + le_bytes(size, 4) +
                               le_bytes(r.name.size(), 2) + le_bytes(0, 2);
    const uint64_t offset = out.size();
    out += le_bytes(0x04034b50, 4) + common + r.name + r.data;
    central += le_bytes(0x02014b50, 4) + le_bytes(20, 2) + common + le_bytes(0, 2) + le_bytes(0, 2) +
               le_bytes(0, 2) + le_bytes(0, 4) + le_bytes(offset, 4) + r.name;
  }
  const uint64_t cd_offset = out.size();
  out += central;
  out += le_bytes(0x06054b50, 4) + le_bytes(0, 2) + le_bytes(0, 2) + le_bytes(records.size(), 2) +
         le_bytes(records.size(), 2) + le_bytes(central.size(), 4) + le_bytes(cd_offset, 4) + le_bytes(0, 2);
  return out;
}

inline std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

}  // namespace clipguide::test

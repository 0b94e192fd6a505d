#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/error.h"

namespace clipguide {
namespace {

using json = nlohmann::json;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kDouble}, {"F32", torch::kFloat}, {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
    {"I64", torch::kLong},   {"I32", torch::kInt},   {"I16", torch::kShort}, {"I8", torch::kChar},
    {"U8", torch::kByte},    {"BOOL", torch::kBool},
};

torch::ScalarType dtype_from_name(const std::string& name, const std::string& file,
                                  const std::string& tensor) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  std::string valid;
  for (const auto& d : kDtypes) valid += cat(valid.empty() ? "" : ", ", d.name);
  fail(file, ": tensor '", tensor, "' has unsupported dtype '", name, "' (supported: ", valid, ")");
}

const char* dtype_name(torch::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  fail("safetensors cannot store dtype ", c10::toString(type));
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t json_u64(const json& v, const std::string& file, const std::string& what) {
  if (!v.is_number_unsigned()) fail(file, ": ", what, " must be a non-negative integer");
  return v.get<uint64_t>();
}

struct Entry {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

bool looks_like_safetensors(ByteSpan bytes) {
  if (bytes.size < 10) return false;
  const uint64_t n = read_u64_le(bytes.data);
  return n >= 2 && bytes.data[8] == '{';
}

SafetensorsContents parse_safetensors(ByteSpan bytes, const std::string& file,
                                      const SafetensorsLimits& limits) {
  if (bytes.size < 8) fail(file, ": too short for a safetensors file (", bytes.size, " bytes)");
  const uint64_t header_len = read_u64_le(bytes.data);
  if (header_len > limits.max_header_bytes) {
    fail(file, ": safetensors header of ", header_len, " bytes exceeds the cap of ", limits.max_header_bytes,
         " bytes");
  }
  if (header_len > bytes.size - 8) {
    fail(file, ": safetensors header of ", header_len, " bytes runs past the end of the file (", bytes.size,
         " bytes); the file is truncated or not safetensors");
  }
  const char* hbegin = reinterpret_cast<const char*>(bytes.data + 8);
  std::set<std::string> seen;
  std::string duplicate;
  json header;
  try {
    header =
        json::parse(hbegin, hbegin + header_len, [&](int depth, json::parse_event_t event, json& parsed) {
          if (depth == 1 && event == json::parse_event_t::key &&
              !seen.insert(parsed.get<std::string>()).second) {
            duplicate = parsed.get<std::string>();
          }
          return true;
        });
  } catch (const json::exception& e) {
    fail(file, ": safetensors header is not valid JSON (", e.what(), ")");
  }
  if (!duplicate.empty()) fail(file, ": safetensors header names tensor '", duplicate, "' twice");
  if (!header.is_object()) fail(file, ": safetensors header is not a JSON object");
  if (header.size() > limits.max_tensors + 1) {
    fail(file, ": safetensors header lists ", header.size(), " tensors, over the cap of ",
         limits.max_tensors);
  }

  SafetensorsContents out;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(file, ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(file, ": __metadata__ value '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
      fail(file, ": tensor '", name, "' needs dtype, shape and data_offsets");
    }
    if (!v["dtype"].is_string()) fail(file, ": tensor '", name, "' dtype is not a string");
    Entry e{name, dtype_from_name(v["dtype"].get<std::string>(), file, name), {}, 0, 0};
    const json& shape = v["shape"];
    if (!shape.is_array() || shape.size() > limits.max_dims) {
      fail(file, ": tensor '", name, "' shape must be an array of at most ", limits.max_dims, " sizes");
    }
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : shape) {
      const uint64_t dim = json_u64(d, file, cat("tensor '", name, "' shape entry"));
      if (dim > (uint64_t{1} << 62)) overflow = true;
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) overflow = true;
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& offsets = v["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
      fail(file, ": tensor '", name, "' data_offsets must be [begin, end]");
    e.begin = json_u64(offsets[0], file, cat("tensor '", name, "' data_offsets"));
    e.end = json_u64(offsets[1], file, cat("tensor '", name, "' data_offsets"));
    if (e.end < e.begin) fail(file, ": tensor '", name, "' data_offsets end before they begin");
    const uint64_t item = c10::elementSize(e.dtype);
    if (overflow || numel > (uint64_t{1} << 62) / item || numel * item != e.end - e.begin) {
      fail(file, ": tensor '", name, "' has ", e.end - e.begin,
           " bytes of data but its shape and dtype need ",
           overflow ? std::string("more than 2^62") : std::to_string(numel * item));
    }
    entries.push_back(std::move(e));
  }

  const uint64_t data_len = bytes.size - 8 - header_len;
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const auto& e : entries) {
    if (e.begin < cursor)
      fail(file, ": tensor '", e.name, "' overlaps the tensor before it (offset ", e.begin, ")");
    if (e.begin > cursor)
      fail(file, ": gap in the data before tensor '", e.name, "' (bytes ", cursor, "..", e.begin, ")");
    if (e.end > data_len) {
      fail(file, ": tensor '", e.name, "' runs past the end of the file (data ends at ", data_len,
           ", tensor at ", e.end, "); the file is truncated");
    }
    cursor = e.end;
  }
  if (cursor != data_len)
    fail(file, ": ", data_len - cursor, " bytes after the last tensor are not described by the header");

  const uint8_t* data = bytes.data + 8 + header_len;
  for (const auto& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

SafetensorsContents read_safetensors(const std::string& path, const SafetensorsLimits& limits) {
  MappedFile file(path);
  return parse_safetensors(file.bytes(), path, limits);
}

std::string serialize_safetensors(const TensorMap& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> ordered;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t n = t.numel() * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    ordered.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  out += text;
  out.reserve(out.size() + offset);
  for (const auto& t : ordered)
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

}  // namespace clipguide

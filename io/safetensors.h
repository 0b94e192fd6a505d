// Reader and writer for the safetensors format (Ref: huggingface/safetensors, "Format" section):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, then the data.
// Every size and offset is validated before anything is allocated.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/file_io.h"
#include "core/tensor_map.h"

namespace clipguide {

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100ull << 20;  // the reference reader's cap
  size_t max_tensors = 1u << 20;
  size_t max_dims = 16;
};

struct SafetensorsContents {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};

// Parses `bytes` (the whole file); `name` is used in error messages.
SafetensorsContents parse_safetensors(ByteSpan bytes, const std::string& name,
                                      const SafetensorsLimits& limits = {});
SafetensorsContents read_safetensors(const std::string& path, const SafetensorsLimits& limits = {});

// True when the first bytes look like a safetensors header (length prefix followed by '{').
bool looks_like_safetensors(ByteSpan bytes);

// Serialises tensors (moved to CPU, made contiguous) in name order.
std::string serialize_safetensors(const TensorMap& tensors,
                                  const std::map<std::string, std::string>& metadata);

}  // namespace clipguide

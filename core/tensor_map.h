// Named tensors as a checkpoint holds them: dotted names, original dtypes, sorted by name.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>

#include "core/error.h"

namespace clipguide {

using TensorMap = std::map<std::string, torch::Tensor>;

// Whether any key starts with `prefix` ("encoder.down.3.").
inline bool has_prefix(const TensorMap& tensors, const std::string& prefix) {
  auto it = tensors.lower_bound(prefix);
  return it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

// The tensors whose names start with `prefix`, named without it ("first_stage_model." of a whole Stable
// Diffusion checkpoint, "c0." of a saved run state).
inline TensorMap tensors_under(const TensorMap& tensors, const std::string& prefix) {
  TensorMap out;
  for (auto it = tensors.lower_bound(prefix);
       it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    out.emplace_hint(out.end(), it->first.substr(prefix.size()), it->second);
  return out;
}

// The tensor under `key`, or an Error "<what>: <key> is missing".
inline const torch::Tensor& require(const TensorMap& tensors, const std::string& key,
                                    const std::string& what) {
  auto it = tensors.find(key);
  if (it == tensors.end()) fail(what, ": ", key, " is missing");
  return it->second;
}

// Size `dim` of the tensor under `key`; a missing key or too few dimensions is an Error naming `what`.
inline int64_t size_of(const TensorMap& tensors, const std::string& key, int64_t dim,
                       const std::string& what) {
  const torch::Tensor& t = require(tensors, key, what);
  if (t.dim() <= dim) fail(what, ": ", key, " has shape ", t.sizes());
  return t.size(dim);
}

}  // namespace clipguide

// The one strict loader: copies a checkpoint's tensors into a module's parameters and buffers by name.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <set>
#include <string>

#include "clip/tensor_map.h"

namespace clipguide {

struct StrictLoad {
  std::string source;  // the file, for the error
  std::string what;    // "a ViT-B/32 CLIP", "a VQGAN (ch 128, ch_mult 1,1,2,2,4)"
  // Checkpoint keys skipped on purpose (optimizer state, loss.*, counters): one visible list per model.
  std::function<bool(const std::string&)> is_known_extra = [](const std::string&) { return false; };
  std::set<std::string> derived_buffers;  // module buffers computed, not loaded (CLIP's causal mask)
};

// BatchNorm's "*.num_batches_tracked" counters: kept by torch.save, never used by inference.
bool is_batchnorm_counter(const std::string& key);

// Missing, unexpected and mis-shaped keys are all reported by name, then it throws Error. On success every
// parameter is frozen (requires_grad false): models are inputs to guidance, never trained by it.
void load_strict(torch::nn::Module& module, const TensorMap& sd, const StrictLoad& how);

}  // namespace clipguide

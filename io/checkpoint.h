// One entry point for every weights file we read. The format is detected from the content, never from the
// file name: safetensors, PyTorch zip archives (torch.save and TorchScript), legacy torch.save streams, and
// Hugging Face model directories (config.json + model.safetensors or pytorch_model.bin).
#pragma once

#include <string>

#include "core/tensor_map.h"

namespace clipguide {

struct Checkpoint {
  std::string path;         // the file that held the weights
  std::string format;       // "safetensors", "torch zip", "TorchScript archive", "legacy torch pickle"
  std::string config_json;  // a Hugging Face directory's config.json, else empty
  TensorMap tensors;
};

Checkpoint read_checkpoint(const std::string& path);

}  // namespace clipguide

// One entry point for every weights file we read. The format is detected from the content, never from the
// file name: safetensors, PyTorch zip archives (torch.save and TorchScript), legacy torch.save streams, and
// model directories as the hubs lay them out: Hugging Face's (config.json + model.safetensors or
// pytorch_model.bin, preprocessor_config.json) and open_clip's (open_clip_config.json +
// open_clip_model.safetensors or open_clip_pytorch_model.bin).
#pragma once

#include <string>

#include "core/tensor_map.h"

namespace clipguide {

// The config files beside a model's weights, as text; each may be empty.
struct ModelConfigFiles {
  // A Hugging Face directory's config.json, or open_clip's open_clip_config.json (in the directory, or beside
  // a file named open_clip_*).
  std::string config_json;
  std::string config_name;        // the config's file name
  std::string preprocessor_json;  // a Hugging Face directory's preprocessor_config.json
};

struct Checkpoint {
  std::string path;    // the file that held the weights
  std::string format;  // "safetensors", "torch zip", "TorchScript archive", "legacy torch pickle"
  ModelConfigFiles configs;
  TensorMap tensors;
};

// A weights file, or a model directory; `path` may name a directory's weights file too.
Checkpoint read_checkpoint(const std::string& path);

// True for open_clip's own weights files (open_clip_model.safetensors, open_clip_pytorch_model.bin: named
// open_clip_*), whose config is the open_clip_config.json beside them.
bool is_open_clip_weights_file(const std::string& path);

}  // namespace clipguide

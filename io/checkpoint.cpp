#include "io/checkpoint.h"

#include <filesystem>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "io/safetensors.h"
#include "io/torch_file.h"
#include "io/zip.h"

namespace clipguide {
namespace fs = std::filesystem;

namespace {

Checkpoint read_weights_file(const std::string& path) {
  MappedFile file(path);
  const ByteSpan bytes = file.bytes();
  Checkpoint c;
  c.path = path;
  if (bytes.size == 0) fail(path, ": file is empty");
  if (ZipArchive::looks_like_zip(bytes)) {
    TorchFileContents t = read_torch_zip(bytes, path);
    c.format = t.torchscript ? "TorchScript archive" : "torch zip";
    c.tensors = std::move(t.tensors);
  } else if (looks_like_legacy_torch(bytes)) {
    c.format = "legacy torch pickle";
    c.tensors = read_torch_legacy(bytes, path).tensors;
  } else if (looks_like_safetensors(bytes)) {
    c.format = "safetensors";
    c.tensors = parse_safetensors(bytes, path).tensors;
  } else {
    fail(path,
         ": unrecognised weights format (expected safetensors, a PyTorch zip or legacy torch.save file, "
         "or a Hugging Face model directory)");
  }
  return c;
}

}  // namespace

bool is_open_clip_weights_file(const std::string& path) {
  return fs::path(path).filename().string().rfind("open_clip_", 0) == 0;
}

Checkpoint read_checkpoint(const std::string& path) {
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  if (!is_dir && !fs::exists(path, ec)) fail(path, ": no such file or directory");
  const fs::path dir = is_dir ? fs::path(path) : fs::path(path).parent_path();
  std::string weights = is_dir ? "" : path;
  if (is_dir) {
    for (const char* name : {"model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                             "open_clip_pytorch_model.bin", "diffusion_pytorch_model.safetensors",
                             "diffusion_pytorch_model.bin"}) {
      if (fs::exists(dir / name, ec)) {
        weights = (dir / name).string();
        break;
      }
    }
    if (weights.empty()) {
      fail(path,
           ": directory has no weights (model.safetensors, pytorch_model.bin, open_clip_model.safetensors, "
           "open_clip_pytorch_model.bin or diffusers' diffusion_pytorch_model.safetensors or .bin)");
    }
  }
  Checkpoint c = read_weights_file(weights);
  // The config files that describe these weights: a directory's own, or open_clip's beside its file.
  const bool open_clip_file = is_open_clip_weights_file(weights);
  std::vector<std::string> configs;
  if (is_dir && !open_clip_file) configs = {"config.json", "open_clip_config.json"};
  if (open_clip_file) configs = {"open_clip_config.json"};
  for (const std::string& name : configs) {
    if (fs::exists(dir / name, ec)) {
      c.configs.config_json = read_small_file((dir / name).string(), kMaxConfigBytes);
      c.configs.config_name = name;
      break;
    }
  }
  // transformers 5 saves the image processor inside processor_config.json; earlier versions beside it.
  for (const char* name : {"preprocessor_config.json", "processor_config.json"}) {
    if (is_dir && fs::exists(dir / name, ec)) {
      c.configs.preprocessor_json = read_small_file((dir / name).string(), kMaxConfigBytes);
      break;
    }
  }
  return c;
}

}  // namespace clipguide

#include "io/checkpoint.h"

#include <filesystem>

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

Checkpoint read_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    std::string weights;
    for (const char* name : {"model.safetensors", "pytorch_model.bin"}) {
      if (fs::exists(dir / name, ec)) {
        weights = (dir / name).string();
        break;
      }
    }
    if (weights.empty()) fail(path, ": directory has neither model.safetensors nor pytorch_model.bin");
    Checkpoint c = read_weights_file(weights);
    if (fs::exists(dir / "config.json", ec))
      c.config_json = read_small_file((dir / "config.json").string(), kMaxConfigBytes);
    return c;
  }
  if (!fs::exists(path, ec)) fail(path, ": no such file or directory");
  return read_weights_file(path);
}

}  // namespace clipguide

// PyTorch's own file formats, read through the safe unpickler (io/pickle.h) without executing anything:
// - torch.save zip archives ("<prefix>/data.pkl" + "<prefix>/data/<key>" storage records),
// - TorchScript archives (same layout; modules become opaque objects whose attributes give dotted names),
// - legacy (pre-1.6) torch.save streams: magic, protocol, sys_info, the object, storage keys, raw storages.
// Ref: torch/serialization.py (_save, _legacy_save, _load), torch/_utils.py (_rebuild_tensor_v2).
#pragma once

#include <string>

#include "core/file_io.h"
#include "core/tensor_map.h"

namespace clipguide {

struct TorchFileContents {
  TensorMap tensors;
  bool torchscript = false;  // the archive held TorchScript code (e.g. OpenAI's released CLIP .pt files)
};

TorchFileContents read_torch_zip(ByteSpan bytes, const std::string& name);
TorchFileContents read_torch_legacy(ByteSpan bytes, const std::string& name);

// Legacy torch.save streams begin with a pickle PROTO opcode.
bool looks_like_legacy_torch(ByteSpan bytes);

}  // namespace clipguide

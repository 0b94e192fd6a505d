// The one way in: a path or a model name -> a ready ClipModel plus its tokenizer.
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clip/model.h"
#include "clip/tokenizer.h"

namespace clipguide {

struct LoadOptions {
  std::string vocab;  // a vocabulary file or folder; empty: look next to the model, then ~/.cache/clip
  torch::Device device = torch::kCPU;
  // Further devices to spread image batches over (stream_image_features), one replica of the model each.
  std::vector<torch::Device> more_devices;
  torch::ScalarType dtype = torch::kFloat;  // compute dtype; checkpoints in fp16/bf16 are upcast by default
  // Attention heads, for checkpoints whose heads are not width / 64 and that carry no config saying so
  // (OpenAI-named weights cannot tell). 0: from config.json, else width / 64.
  int64_t text_heads = 0;
  int64_t vision_heads = 0;
};

// The load settings a job carries as text (a request, a command line), checked and resolved to LoadOptions.
struct ModelSettings {
  std::string vocab;
  std::string device = "cpu";      // cpu, cuda, cuda:N, auto; with several_devices, a comma-separated list
  std::string precision = "fp32";  // a name from kPrecisions
  int64_t text_heads = 0, vision_heads = 0;
  int threads = 0;  // CPU threads; 0: OMP_NUM_THREADS, else every CPU

  // An Error naming the first setting out of range (the devices must exist).
  void check(bool several_devices = false) const;
  // check(), then the LoadOptions; sets the CPU thread count, as the caller asked.
  LoadOptions resolve(bool several_devices = false) const;
};

struct LoadedClip {
  std::shared_ptr<ClipModel> model;
  std::vector<std::shared_ptr<ClipModel>> replicas;  // the same weights on LoadOptions::more_devices
  std::shared_ptr<const Tokenizer> tokenizer;  // null when no vocabulary was found; see require_tokenizer()
  std::string path;                            // the weights file
  std::string format;                          // as Checkpoint::format, plus " (Hugging Face names)" where so
  std::string vocab_path;                      // where the tokenizer came from, or empty
  std::map<std::string, int64_t> checkpoint_dtypes;  // dtype name -> tensor count, as stored in the file
  int64_t parameter_count = 0;

  // The tokenizer, or an Error saying where vocabularies are looked for and how to pass one.
  const Tokenizer& require_tokenizer() const;
};

// The names `clip.load` knows, with their file names under ~/.cache/clip and their SHA-256.
struct KnownModel {
  const char* name;  // "ViT-B/32"
  const char* file;  // "ViT-B-32.pt"
  const char* sha256;
};
const std::vector<KnownModel>& known_openai_models();
// The known model whose file has this SHA-256, if any.
std::optional<KnownModel> known_model_by_sha256(const std::string& sha256);

// A path (file or folder) as is; "ViT-B/32" or "ViT-B-32" -> ~/.cache/clip/ViT-B-32.pt; "org/name" -> the
// Hugging Face hub cache snapshot. A name that is not there is an Error saying where we looked.
std::string resolve_model_path(const std::string& path_or_name);

LoadedClip load_clip(const std::string& path_or_name, const LoadOptions& options = {});

// The same weights in a second model on `device` (with `model`'s dtype): a replica for spreading batches.
std::shared_ptr<ClipModel> replicate(ClipModel& model, const torch::Device& device);

// The model half of load_clip, from tensors already read (OpenAI or Hugging Face names): the architecture
// inferred from names and shapes, completed by a Hugging Face config.json's text (if not empty) and
// `options`, then the weights bound strictly within model_memory_budget. `source` names the weights in
// errors.
std::shared_ptr<ClipModel> clip_model_from_tensors(TensorMap sd, const std::string& config_json,
                                                   const std::string& source,
                                                   const LoadOptions& options = {});

// Fills what shapes cannot tell (heads, activation, layer-norm eps) from a Hugging Face config.json's
// text_config/vision_config; invalid JSON or an unsupported activation is an Error naming `source`.
void apply_hf_config(const std::string& config_json, const std::string& source, ClipConfig& config);

}  // namespace clipguide

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
#include "io/checkpoint.h"

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
  // The MLP activation (kActivations), for checkpoints whose config does not say it; empty: the config's,
  // else OpenAI's QuickGELU.
  std::string activation;
  std::string pretrained;  // open_clip's pretrained tag for a model name ("laion2b_s32b_b79k"); see
                           // resolve_model_path
};

// The MLP activations a tower can have: OpenAI's QuickGELU, exact GELU (open_clip's LAION models), GELU's
// tanh approximation (SigLIP's).
inline const char* const kActivations[] = {"quick_gelu", "gelu", "gelu_tanh"};

// The load settings a job carries as text (a request, a command line), checked and resolved to LoadOptions.
struct ModelSettings {
  std::string pretrained;  // as LoadOptions::pretrained
  std::string vocab;
  std::string device = "cpu";      // cpu, cuda, cuda:N, auto; with several_devices, a comma-separated list
  std::string precision = "fp32";  // a name from kPrecisions
  int64_t text_heads = 0, vision_heads = 0;
  std::string activation;  // empty, or one of kActivations
  int threads = 0;         // CPU threads; 0: OMP_NUM_THREADS, else every CPU

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

// open_clip's model name and pretrained tag -> the Hugging Face hub repository that holds those weights
// (open_clip's pretrained.py), for the common pairs.
struct OpenClipPretrained {
  const char* model;  // "ViT-H-14"
  const char* tag;    // "laion2b_s32b_b79k"
  const char* repo;   // "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
};
const std::vector<OpenClipPretrained>& open_clip_pretrained();

// A path (file or folder) as is; "ViT-B/32" or "ViT-B-32" -> ~/.cache/clip/ViT-B-32.pt; "org/name" or
// "hf-hub:org/name" -> the Hugging Face hub cache snapshot; an open_clip model name with a `pretrained` tag
// ("ViT-H-14" + "laion2b_s32b_b79k") -> its hub repository's snapshot. A name that is not there is an Error
// saying where we looked.
std::string resolve_model_path(const std::string& path_or_name, const std::string& pretrained = "");

LoadedClip load_clip(const std::string& path_or_name, const LoadOptions& options = {});

// The vocabulary for the model at `model_path`: `explicit_vocab` when given (an Error if missing), else one
// in the model's folder (Tokenizer::vocabulary_in), else for CLIP models OpenAI's in ~/.cache/clip; empty
// when none.
std::string find_vocab(const std::string& explicit_vocab, const std::string& model_path, ModelFamily family);

// The same weights in a second model on `device` (with `model`'s dtype): a replica for spreading batches.
std::shared_ptr<ClipModel> replicate(ClipModel& model, const torch::Device& device);

// The model half of load_clip, from tensors already read (OpenAI, open_clip or Hugging Face names): the
// architecture inferred from names and shapes, completed by the config files and `options`, then the weights
// bound strictly within model_memory_budget. `source` names the weights in errors.
std::shared_ptr<ClipModel> clip_model_from_tensors(TensorMap sd, const ModelConfigFiles& configs,
                                                   const std::string& source,
                                                   const LoadOptions& options = {});

// Fills what shapes cannot tell (heads, activation, layer-norm eps, preprocessing) from the config files:
// Hugging Face's config.json text_config/vision_config and preprocessor_config.json, or open_clip's
// model_cfg and preprocess_cfg. Invalid JSON, a wrong type or an unsupported value is an Error naming
// `source` and the field.
void apply_model_config(const ModelConfigFiles& configs, const std::string& source, ClipConfig& config);

}  // namespace clipguide

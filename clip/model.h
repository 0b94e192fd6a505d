// CLIP in libtorch, module for module as openai/CLIP clip/model.py (Ref: Radford et al. 2021), and SigLIP
// (Ref: Zhai et al. 2023; transformers' modeling_siglip.py) on the same blocks. Submodules carry OpenAI's
// checkpoint names (visual.transformer.resblocks.N.attn.in_proj_weight, visual.layer1.0.downsample.0, ...),
// so loading is a walk over named_parameters() and named_buffers(); other layouts are renamed to them
// (clip/hf_names.h).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/names.h"
#include "core/tensor_map.h"
#include "io/image.h"

namespace clipguide {

// The model families: how the towers are built and how a similarity becomes a score.
// - clip: OpenAI's CLIP, as OpenAI, open_clip and Hugging Face's CLIPModel save it: a class token (or the
//   ResNet's attention pool) and a causal text transformer pooled at the end-of-text token; softmax over
//   `exp(logit_scale) * cos`.
// - siglip: no class token, a patch bias and an attention-pool head over all patches; a bidirectional text
//   transformer pooled at the last position with a biased projection; a pairwise sigmoid of
//   `exp(logit_scale) * cos + logit_bias`.
enum class ModelFamily { Clip, Siglip };
inline constexpr Named<ModelFamily> kModelFamilies[] = {{ModelFamily::Clip, "clip"},
                                                        {ModelFamily::Siglip, "siglip"}};

// What openai/CLIP's build_model infers from a state dict, plus what shapes cannot tell (heads, activation,
// eps, preprocessing), which comes from a config file or the documented defaults (heads = width / 64,
// QuickGELU, eps 1e-5, OpenAI's preprocessing).
struct ClipConfig {
  ModelFamily family = ModelFamily::Clip;
  int64_t embed_dim = 0;
  bool vision_resnet = false;          // ModifiedResNet (RN50-style) instead of a ViT
  std::vector<int64_t> vision_layers;  // ViT: {layers}; ResNet: blocks per stage (4 entries)
  int64_t vision_width = 0;
  int64_t vision_patch_size = 0;  // ViT only
  int64_t image_resolution = 0;
  int64_t vision_heads = 0;
  int64_t context_length = 0;
  int64_t vocab_size = 0;
  int64_t transformer_width = 0;
  int64_t transformer_heads = 0;
  int64_t transformer_layers = 0;
  int64_t vision_mlp_width = 0, text_mlp_width = 0;  // the MLPs' hidden widths (4 x width in OpenAI's)
  std::string vision_activation = "quick_gelu";      // "quick_gelu" (OpenAI), "gelu" or "gelu_tanh"
  std::string text_activation = "quick_gelu";
  double vision_layer_norm_eps = 1e-5;
  double text_layer_norm_eps = 1e-5;
  Preprocessing preprocess;  // how images become this model's input
  bool text_tower = true;  // false: an image tower alone (Stable Diffusion's safety checker); no text fields
  // false: a text tower alone (Stable Diffusion's text encoder: HF CLIPTextModel, or open_clip's text tower
  // in a CompVis file); no vision fields, and embed_dim 0 where it has no projection (CLIPTextModel's).
  bool image_tower = true;

  // Shapes-only inference from OpenAI-named weights (the family too: SigLIP's attention-pool head); throws
  // Error naming the key that is missing.
  static ClipConfig from_state_dict(const TensorMap& sd);
  // "ViT-B/32", "ViT-L/14@336px", "RN50x4", "SigLIP ViT-B/16", or a descriptive name for other shapes.
  std::string architecture() const;
  bool siglip() const { return family == ModelFamily::Siglip; }
};

class LayerNorm;
class Transformer;

// The image tower: a VisionTransformer or a ModifiedResNet.
class VisualEncoder : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& pixels) = 0;
};

class ClipModel : public torch::nn::Module {
 public:
  explicit ClipModel(const ClipConfig& config);
  // What constructing the model allocates, in elements (parameters and buffers), computed from the config
  // alone: build_strict compares it with the weights before allocating anything.
  static double parameter_elements(const ClipConfig& config);

  const ClipConfig& config() const { return config_; }
  // Normalized pixels [B, 3, R, R] -> unnormalized image features [B, E]; differentiable in `pixels`.
  torch::Tensor encode_image(const torch::Tensor& pixels);
  // Token ids [B, context_length] (int64) -> unnormalized text features [B, E].
  torch::Tensor encode_text(const torch::Tensor& tokens);
  // Token ids [B, context_length] -> the text transformer's per-token states [B, context_length, width] after
  // the final LayerNorm, with the last `skip_last_layers` blocks left out: what Stable Diffusion conditions
  // on (SD 1.x: all blocks; SD 2.x's CompVis files: the penultimate, skip 1). CLIP's causal mask; not SigLIP.
  torch::Tensor encode_text_states(const torch::Tensor& tokens, int64_t skip_last_layers = 0);
  // exp(logit_scale), the temperature that turns cosine similarity into logits.
  torch::Tensor logit_scale_exp() const {
    TORCH_CHECK(logit_scale_.defined(), "an image tower alone has no logit scale");
    return logit_scale_.exp();
  }
  // SigLIP's learned logit bias (a scalar); 0 for CLIP.
  double logit_bias() const;
  // The same as a 0-d tensor on the model's device, for math that stays there (no read-back to the host, as
  // inside a captured CUDA graph).
  torch::Tensor logit_bias_tensor() const;

  // Copies `sd` (OpenAI names, any float dtype) into the model, strictly: missing, unexpected and mis-shaped
  // keys are all reported by name, then it throws. `source` names the file in the error.
  void load_weights(const TensorMap& sd, const std::string& source);

  // The state-dict keys that are skipped on purpose (not weights of the CLIP forward pass).
  static bool is_known_extra(const std::string& key);

 private:
  ClipConfig config_;
  std::shared_ptr<VisualEncoder> visual_;
  std::shared_ptr<Transformer> transformer_;
  torch::nn::Embedding token_embedding_{nullptr};
  torch::Tensor positional_embedding_, text_projection_, text_projection_bias_, logit_scale_, logit_bias_;
  std::shared_ptr<LayerNorm> ln_final_;
  torch::Tensor causal_mask_;
};

}  // namespace clipguide

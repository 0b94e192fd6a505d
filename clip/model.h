// CLIP in libtorch, module for module as openai/CLIP clip/model.py (Ref: Radford et al. 2021). Submodules
// carry the checkpoint's own names (visual.transformer.resblocks.N.attn.in_proj_weight,
// visual.layer1.0.downsample.0,
// ...), so loading is a walk over named_parameters() and named_buffers().
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/tensor_map.h"

namespace clipguide {

// What openai/CLIP's build_model infers from a state dict, plus what shapes cannot tell (heads, activation,
// eps), which comes from a config file or the documented defaults (heads = width / 64, QuickGELU, eps 1e-5).
struct ClipConfig {
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
  std::string vision_activation = "quick_gelu";  // "quick_gelu" (OpenAI) or "gelu"
  std::string text_activation = "quick_gelu";
  double vision_layer_norm_eps = 1e-5;
  double text_layer_norm_eps = 1e-5;

  // Shapes-only inference from OpenAI-named weights; throws Error naming the key that is missing.
  static ClipConfig from_state_dict(const TensorMap& sd);
  // "ViT-B/32", "ViT-L/14@336px", "RN50x4", or a descriptive name for other shapes.
  std::string architecture() const;
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
  // exp(logit_scale), the temperature that turns cosine similarity into logits.
  torch::Tensor logit_scale_exp() const { return logit_scale_.exp(); }

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
  torch::Tensor positional_embedding_, text_projection_, logit_scale_;
  std::shared_ptr<LayerNorm> ln_final_;
  torch::Tensor causal_mask_;
};

}  // namespace clipguide

// guided-diffusion's UNetModel with the checkpoint's own names (input_blocks.N.M, middle_block,
// output_blocks, time_embed, out): ResBlocks with optional scale-shift norm and up/down-sampling, legacy QKV
// attention, sinusoidal timestep embedding, GroupNorm32 computed in fp32. Ref: openai/guided-diffusion
// guided_diffusion/unet.py, nn.py.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/tensor_map.h"
#include "io/checkpoint.h"

namespace clipguide {

struct UNetConfig {
  int64_t in_channels = 3, model_channels = 0, out_channels = 0;
  int64_t num_res_blocks = 0;
  std::vector<int64_t> channel_mult;
  std::vector<bool> attention_levels;  // attention after the ResBlocks of level i (image_size / 2^i in
                                       // attention_resolutions)
  bool use_scale_shift_norm = false;
  bool resblock_updown = false;
  int64_t num_classes = 0;  // class-conditional checkpoints (label_emb)
  int64_t clip_dim = 0;     // CLIP-embedding-conditioned checkpoints (clip_emb, as unCLIP's decoder)
  // latent diffusion's (Stable Diffusion's) UNet: SpatialTransformer blocks, cross-attending to text
  // embeddings of this width, where guided-diffusion has self-attention; 0 for guided-diffusion's.
  int64_t context_dim = 0;
  bool linear_projection = false;  // SD 2.x: the SpatialTransformers' proj_in and proj_out are Linear
  // What the weights cannot tell: heads, from the flags (num_head_channels wins when set, as in unet.py).
  int64_t num_heads = 4, num_head_channels = 64;
  bool use_new_attention_order = false;

  bool learn_sigma() const { return out_channels == 2 * in_channels; }
  // Everything the weights determine: channels, levels, res blocks, attention, scale-shift, up/down, classes.
  // Heads and attention order keep their values (the caller sets them from flags).
  void infer_from_state_dict(const TensorMap& sd);
  std::string describe() const;
};

class UNetModel : public torch::nn::Module {
 public:
  explicit UNetModel(const UNetConfig& config);
  // What constructing the model allocates, in elements (parameters and buffers), computed from the config
  // alone: build_strict compares it with the weights before allocating anything.
  static double parameter_elements(const UNetConfig& config);
  const UNetConfig& config() const { return config_; }
  // x [B, C, H, W], raw timesteps [B] (the original schedule's indices; fractional ones too) -> [B,
  // out_channels, H, W]. `y`: class labels [B] for class-conditional checkpoints; `clip_embed`: [B, clip_dim]
  // normalized CLIP embeddings (zeros: none, the unconditional prediction classifier-free guidance needs) for
  // CLIP-conditioned ones; `context`: text embeddings [B, S, context_dim] for latent diffusion's.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timesteps, const torch::Tensor& y = {},
                        const torch::Tensor& clip_embed = {}, const torch::Tensor& context = {});
  void load_weights(const TensorMap& sd, const std::string& source);

 private:
  UNetConfig config_;
  torch::nn::Sequential time_embed_{nullptr};
  torch::nn::Embedding label_emb_{nullptr};
  torch::nn::Linear clip_emb_{nullptr};
  torch::nn::ModuleList input_blocks_{nullptr}, output_blocks_{nullptr};
  std::shared_ptr<torch::nn::Module> middle_block_;
  torch::nn::Sequential out_{nullptr};
};

// The diffusion flags of script_util.create_gaussian_diffusion that matter for sampling.
struct DiffusionFlags {
  std::string noise_schedule = "linear";
  int64_t steps = 1000;
  std::string timestep_respacing;  // "" keeps every step
};

struct LoadedUNet {
  std::shared_ptr<UNetModel> model;
  DiffusionFlags diffusion;
  int64_t image_size = 256;
  std::string path;
};

// Applies a flags JSON (the text of `flags_path`: "model_flags" and "diffusion_flags" as script_util takes
// them) to what the weights could not tell: heads, attention order, image size, diffusion flags. A flag the
// weights in `config` contradict, or a value of the wrong type, is an Error naming `flags_path`.
void apply_unet_flags(const std::string& flags_json, const std::string& flags_path, UNetConfig& config,
                      LoadedUNet& out);

// Weights from a plain torch.save state dict (.pt, through the safe reader) or .safetensors. The structure
// comes from the weights; heads, attention order, image size and the diffusion flags from `flags_path` (a
// JSON with "model_flags" and "diffusion_flags" as script_util takes them; flags the weights contradict are
// an Error), or the documented defaults of OpenAI's 256x256_diffusion_uncond (num_head_channels 64, linear
// schedule, 1000 steps).
LoadedUNet load_unet(const std::string& checkpoint_path, const std::string& flags_path, torch::Device device);

// Stable Diffusion's UNet (latent diffusion's, 1.x and 2.x): a diffusers unet/ folder (config.json and
// diffusion_pytorch_model.safetensors or .bin; diffusers' names mapped to latent diffusion's), a single-file
// checkpoint (its model.diffusion_model.*), or a UNet file alone. The structure comes from the weights; heads
// from the folder's config.json, else `original_config` (latent diffusion's yaml:
// model.params.unet_config.params num_heads, num_head_channels), else Stable Diffusion's own rule: 8 heads
// where the text is 768 wide (1.x), heads 64 wide otherwise (2.x). What SD 1.x and 2.x do not use (SDXL's
// added conditioning, deeper transformers) is an Error naming it.
LoadedUNet load_sd_unet(const std::string& path, const std::string& original_config, torch::Device device);
// The same from a checkpoint already read (a single file's tensors, shared with its other parts).
LoadedUNet load_sd_unet(Checkpoint ckpt, const std::string& original_config, torch::Device device);
// `sd` with diffusers' UNet2DConditionModel names (down_blocks.1.attentions.0, mid_block, up_blocks) renamed
// to latent diffusion's (input_blocks.N.M, middle_block, output_blocks); other maps unchanged.
TensorMap unet_weights_from_diffusers(const TensorMap& sd);

// guided-diffusion's timestep_embedding: [cos(t f), sin(t f)], f = exp(-ln(10000) i / half).
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, double max_period = 10000.0);

}  // namespace clipguide

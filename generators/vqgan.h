// taming-transformers' VQGAN (VQModel): Encoder, quant_conv, VectorQuantizer2, post_quant_conv, Decoder,
// module for module with the checkpoint's own names (encoder.down.0.block.0.conv1, decoder.mid.attn_1.q,
// quantize.embedding). Ref: CompVis/taming-transformers taming/modules/diffusionmodules/model.py,
// taming/modules/vqvae/quantize.py. And Stable Diffusion's VAE, latent diffusion's AutoencoderKL, which is
// the same Encoder and Decoder around a diagonal Gaussian instead of a codebook (Ref:
// CompVis/latent-diffusion ldm/models/autoencoder.py; huggingface/diffusers AutoencoderKL, whose names are
// mapped to these on load).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/tensor_map.h"
#include "io/checkpoint.h"

namespace clipguide {

struct VqganConfig {
  int64_t embed_dim = 0;  // codebook vector width
  int64_t n_embed = 0;    // codebook entries
  int64_t z_channels = 0;
  int64_t in_channels = 3, out_ch = 3;
  int64_t ch = 0;
  std::vector<int64_t> ch_mult;
  int64_t num_res_blocks = 0;
  std::vector<bool>
      attn_levels;  // attention after each block of level i (taming: resolution / 2^i in attn_resolutions)
  bool double_z = false;

  // From a taming .yaml (model.params.{embed_dim, n_embed, ddconfig}); Error naming the file and the missing
  // key.
  static VqganConfig from_yaml(const std::string& path);
  // From weight names and shapes alone: every field above is determined by them.
  static VqganConfig from_state_dict(const TensorMap& sd);
  // The spatial downsampling factor, 2^(levels - 1).
  int64_t factor() const { return int64_t{1} << (ch_mult.size() - 1); }
  std::string describe() const;
  bool operator==(const VqganConfig& other) const;
};

class VqganEncoder;
class VqganDecoder;

class Vqgan : public torch::nn::Module {
 public:
  explicit Vqgan(const VqganConfig& config);
  // What constructing the model allocates, in elements (parameters and buffers), computed from the config
  // alone: build_strict compares it with the weights before allocating anything.
  static double parameter_elements(const VqganConfig& config);
  const VqganConfig& config() const { return config_; }

  // x [B, 3, H, W] in [-1, 1] -> z [B, embed_dim, H/f, W/f] (quant_conv output, before quantization).
  torch::Tensor encode(const torch::Tensor& x);
  // Nearest codebook entries, with the straight-through gradient z_q = z + (q - z).detach().
  struct Quantized {
    torch::Tensor z_q;      // [B, embed_dim, h, w]
    torch::Tensor indices;  // [B, h, w] int64
  };
  Quantized quantize(const torch::Tensor& z);
  // z_q -> image [B, 3, H, W] in about [-1, 1].
  torch::Tensor decode(const torch::Tensor& z_q);
  // The codebook [n_embed, embed_dim].
  torch::Tensor codebook() const;

  // Strict: every encoder/decoder/quantizer tensor by name; loss.* (the discriminator and LPIPS) skipped.
  void load_weights(const TensorMap& sd, const std::string& source);

 private:
  VqganConfig config_;
  std::shared_ptr<VqganEncoder> encoder_;
  std::shared_ptr<VqganDecoder> decoder_;
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};
  std::shared_ptr<torch::nn::Module> quantize_;
  torch::Tensor embedding_;
};

// Stable Diffusion's VAE: config.embed_dim latent channels, double_z, no codebook (n_embed 0).
class AutoencoderKL : public torch::nn::Module {
 public:
  explicit AutoencoderKL(const VqganConfig& config);
  static double parameter_elements(const VqganConfig& config);
  // From latent diffusion's weight names and shapes.
  static VqganConfig config_from_state_dict(const TensorMap& sd);
  const VqganConfig& config() const { return config_; }

  // The encoder's diagonal Gaussian over the latents (diffusers' latent_dist): log-variance clamped to
  // [-30, 20] as diffusers clamps it.
  struct Posterior {
    torch::Tensor mean, logvar;
    torch::Tensor sample(const torch::Tensor& noise) const { return mean + (0.5 * logvar).exp() * noise; }
  };
  // x [B, 3, H, W] in [-1, 1] -> the posterior over [B, embed_dim, H/f, W/f].
  Posterior encode(const torch::Tensor& x);
  // Latents (unscaled: divide SD's scaled latents by the scaling factor first) -> image [B, 3, H, W] in about
  // [-1, 1].
  torch::Tensor decode(const torch::Tensor& z);
  // d/dz of a loss on decode(z), given its gradient on the image, with the decoder's activations
  // checkpointed: each stage (the middle, each level, the output) is run again during the backward pass, so
  // that only one stage's activations are alive at a time. The same gradient as autograd through decode(), in
  // less memory.
  torch::Tensor decode_backward(const torch::Tensor& z, const torch::Tensor& grad_image);
  void load_weights(const TensorMap& sd, const std::string& source);

 private:
  VqganConfig config_;
  std::shared_ptr<VqganEncoder> encoder_;
  std::shared_ptr<VqganDecoder> decoder_;
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};
};

struct LoadedVae {
  std::shared_ptr<AutoencoderKL> model;
  double scaling_factor = 0.18215;  // SD 1.x and 2.x; a diffusers folder's config.json says its own
  std::string path;
};

// A diffusers vae/ folder (config.json + diffusion_pytorch_model.safetensors or .bin), a single-file Stable
// Diffusion checkpoint (its first_stage_model.* weights), or a VAE file alone (latent diffusion's or
// diffusers' names).
LoadedVae load_vae(const std::string& path, torch::Device device);
// The same from a checkpoint already read (a single file's tensors, shared with its other parts).
LoadedVae load_vae(Checkpoint ckpt, torch::Device device);
// `sd` with diffusers' AutoencoderKL names (encoder.down_blocks.0.resnets.0.conv1,
// ...mid_block.attentions.0.to_q) renamed to latent diffusion's, attention projections reshaped to 1x1
// convolutions; other maps unchanged.
TensorMap vae_weights_from_diffusers(const TensorMap& sd);

struct LoadedVqgan {
  std::shared_ptr<Vqgan> model;
  std::string path, config_path;
};

// Weights from a Lightning .ckpt (state_dict inside; optimizer state and unknown callback objects stay inert)
// or a .safetensors file; config from `config_path` when given (checked against the weights), else inferred
// from them.
LoadedVqgan load_vqgan(const std::string& checkpoint_path, const std::string& config_path,
                       torch::Device device);

}  // namespace clipguide

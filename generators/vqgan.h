// taming-transformers' VQGAN (VQModel): Encoder, quant_conv, VectorQuantizer2, post_quant_conv, Decoder,
// module for module with the checkpoint's own names (encoder.down.0.block.0.conv1, decoder.mid.attn_1.q,
// quantize.embedding). Ref: CompVis/taming-transformers taming/modules/diffusionmodules/model.py,
// taming/modules/vqvae/quantize.py.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/tensor_map.h"

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

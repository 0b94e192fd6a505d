// Ref: CompVis/taming-transformers taming/modules/diffusionmodules/model.py (Encoder, Decoder, ResnetBlock,
// AttnBlock, Downsample, Upsample) and taming/modules/vqvae/quantize.py (VectorQuantizer2).
#include "generators/vqgan.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"
#include "core/json_fields.h"
#include "io/checkpoint.h"
#include "io/state_dict.h"

namespace clipguide {

namespace F = torch::nn::functional;

namespace {

torch::nn::GroupNorm normalize(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-6).affine(true));
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}

// taming's nonlinearity, x * sigmoid(x), through the fused kernel.
torch::Tensor swish(const torch::Tensor& x) { return torch::silu(x); }

}  // namespace

class ResnetBlock : public torch::nn::Module {
 public:
  ResnetBlock(int64_t in, int64_t out) {
    norm1 = register_module("norm1", normalize(in));
    conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
    norm2 = register_module("norm2", normalize(out));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
    if (in != out) nin_shortcut = register_module("nin_shortcut", conv(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = conv1(swish(norm1(x)));
    h = conv2(swish(norm2(h)));  // dropout is 0 at inference
    return (nin_shortcut ? nin_shortcut(x) : x) + h;
  }
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
};

// Single-head self-attention over all positions, with 1x1 convolutions for q, k, v and the output.
class AttnBlock : public torch::nn::Module {
 public:
  explicit AttnBlock(int64_t channels) {
    norm = register_module("norm", normalize(channels));
    q = register_module("q", conv(channels, channels, 1));
    k = register_module("k", conv(channels, channels, 1));
    v = register_module("v", conv(channels, channels, 1));
    proj_out = register_module("proj_out", conv(channels, channels, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor h = norm(x);
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const torch::Tensor qs = q(h).reshape({B, C, H * W}).permute({0, 2, 1});  // [B, C, HW] -> [B, HW, C]
    const torch::Tensor ks = k(h).reshape({B, C, H * W});                     // [B, C, HW]
    const torch::Tensor vs = v(h).reshape({B, C, H * W});                     // [B, C, HW]
    torch::Tensor w = torch::bmm(qs, ks) * std::pow(static_cast<double>(C), -0.5);  // [B, HW(q), HW(k)]
    w = torch::softmax(w, 2);
    const torch::Tensor out =
        torch::bmm(vs, w.permute({0, 2, 1})).reshape({B, C, H, W});  // [B, C, HW(q)] -> NCHW
    return x + proj_out(out);
  }
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};

// Holders that exist only to give checkpoint names: down.{i}.downsample.conv, up.{i}.upsample.conv.
class Resample : public torch::nn::Module {
 public:
  Resample(int64_t channels, bool down) : down_(down) {
    conv = register_module(
        "conv", down ? torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2))
                     : torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (down_) return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1})));  // taming pads right and bottom only
    return conv(F::interpolate(
        x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
  }
  torch::nn::Conv2d conv{nullptr};

 private:
  bool down_;
};

class Level : public torch::nn::Module {
 public:
  torch::Tensor forward(torch::Tensor h) {
    for (size_t i = 0; i < block->size(); ++i) {
      h = block[i]->as<ResnetBlock>()->forward(h);
      if (!attn->is_empty()) h = attn[i]->as<AttnBlock>()->forward(h);
    }
    return h;
  }
  torch::nn::ModuleList block = register_module("block", torch::nn::ModuleList());
  torch::nn::ModuleList attn = register_module("attn", torch::nn::ModuleList());
  std::shared_ptr<Resample> resample;
};

class Mid : public torch::nn::Module {
 public:
  explicit Mid(int64_t channels) {
    block_1 = register_module("block_1", std::make_shared<ResnetBlock>(channels, channels));
    attn_1 = register_module("attn_1", std::make_shared<AttnBlock>(channels));
    block_2 = register_module("block_2", std::make_shared<ResnetBlock>(channels, channels));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return block_2->forward(attn_1->forward(block_1->forward(x)));
  }
  std::shared_ptr<ResnetBlock> block_1, block_2;
  std::shared_ptr<AttnBlock> attn_1;
};

class VqganEncoder : public torch::nn::Module {
 public:
  explicit VqganEncoder(const VqganConfig& c) {
    conv_in = register_module("conv_in", conv(c.in_channels, c.ch, 3, 1, 1));
    down = register_module("down", torch::nn::ModuleList());
    int64_t block_in = c.ch;
    for (size_t i = 0; i < c.ch_mult.size(); ++i) {
      auto level = std::make_shared<Level>();
      const int64_t block_out = c.ch * c.ch_mult[i];
      for (int64_t j = 0; j < c.num_res_blocks; ++j) {
        level->block->push_back(std::make_shared<ResnetBlock>(block_in, block_out));
        block_in = block_out;
        if (c.attn_levels[i]) level->attn->push_back(std::make_shared<AttnBlock>(block_in));
      }
      if (i + 1 != c.ch_mult.size())
        level->resample = level->register_module("downsample", std::make_shared<Resample>(block_in, true));
      down->push_back(level);
    }
    mid = register_module("mid", std::make_shared<Mid>(block_in));
    norm_out = register_module("norm_out", normalize(block_in));
    conv_out =
        register_module("conv_out", conv(block_in, c.double_z ? 2 * c.z_channels : c.z_channels, 3, 1, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = conv_in(x);
    for (const auto& m : *down) {
      auto level = std::dynamic_pointer_cast<Level>(m);
      h = level->forward(h);
      if (level->resample) h = level->resample->forward(h);
    }
    return conv_out(swish(norm_out(mid->forward(h))));
  }
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr};
  std::shared_ptr<Mid> mid;
  torch::nn::GroupNorm norm_out{nullptr};
};

class VqganDecoder : public torch::nn::Module {
 public:
  explicit VqganDecoder(const VqganConfig& c) {
    int64_t block_in = c.ch * c.ch_mult.back();
    conv_in = register_module("conv_in", conv(c.z_channels, block_in, 3, 1, 1));
    mid = register_module("mid", std::make_shared<Mid>(block_in));
    // Levels are built from the top down but named by level index, as taming's up.insert(0, ...).
    std::vector<std::shared_ptr<Level>> levels(c.ch_mult.size());
    for (size_t i = c.ch_mult.size(); i-- > 0;) {
      auto level = std::make_shared<Level>();
      const int64_t block_out = c.ch * c.ch_mult[i];
      for (int64_t j = 0; j <= c.num_res_blocks; ++j) {
        level->block->push_back(std::make_shared<ResnetBlock>(block_in, block_out));
        block_in = block_out;
        if (c.attn_levels[i]) level->attn->push_back(std::make_shared<AttnBlock>(block_in));
      }
      if (i != 0)
        level->resample = level->register_module("upsample", std::make_shared<Resample>(block_in, false));
      levels[i] = level;
    }
    up = register_module("up", torch::nn::ModuleList());
    for (auto& level : levels) up->push_back(level);
    norm_out = register_module("norm_out", normalize(block_in));
    conv_out = register_module("conv_out", conv(block_in, c.out_ch, 3, 1, 1));
  }
  torch::Tensor forward(const torch::Tensor& z) {
    torch::Tensor h = z;
    for (int64_t k = 0; k < stages(); ++k) h = stage(k, h);
    return h;
  }
  // The decoder as a chain of stages: conv_in and the middle, each level from the top down with its
  // upsampling, then the output.
  int64_t stages() const { return static_cast<int64_t>(up->size()) + 2; }
  torch::Tensor stage(int64_t k, const torch::Tensor& h) {
    if (k == 0) return mid->forward(conv_in(h));
    if (k == stages() - 1) return conv_out(swish(norm_out(h)));
    auto level = up[up->size() - static_cast<size_t>(k)]->as<Level>();
    const torch::Tensor out = level->forward(h);
    return level->resample ? level->resample->forward(out) : out;
  }
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  std::shared_ptr<Mid> mid;
  torch::nn::ModuleList up{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};

// ---- config ----

namespace {

int64_t shape_at(const TensorMap& sd, const std::string& key, int64_t dim,
                 const char* what = "not a taming VQGAN") {
  return size_of(sd, key, dim, what);
}

// How many of prefix.0., prefix.1., ... the state dict holds.
int64_t count_indexed(const TensorMap& sd, const std::string& prefix) {
  int64_t n = 0;
  while (has_prefix(sd, cat(prefix, n, "."))) ++n;
  return n;
}

// The encoder's and decoder's layout from weight names and shapes (taming's and latent diffusion's names);
// `what` starts the error for weights that are not such an autoencoder.
VqganConfig autoencoder_layout(const TensorMap& sd, const char* what) {
  VqganConfig c;
  c.ch = shape_at(sd, "encoder.conv_in.weight", 0, what);
  c.in_channels = shape_at(sd, "encoder.conv_in.weight", 1, what);
  c.z_channels = shape_at(sd, "decoder.conv_in.weight", 1, what);
  c.out_ch = shape_at(sd, "decoder.conv_out.weight", 0, what);
  c.double_z = shape_at(sd, "encoder.conv_out.weight", 0, what) == 2 * c.z_channels;
  const int64_t levels = count_indexed(sd, "encoder.down.");
  if (levels == 0 || levels > 16) fail(what, ": ", levels, " encoder.down.N levels (1 to 16 expected)");
  c.num_res_blocks = count_indexed(sd, "encoder.down.0.block.");
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t out = shape_at(sd, cat("encoder.down.", i, ".block.0.conv2.weight"), 0, what);
    if (out % c.ch != 0)
      fail(what, ": encoder.down.", i, " has ", out, " channels, not a multiple of ", c.ch);
    c.ch_mult.push_back(out / c.ch);
    c.attn_levels.push_back(sd.count(cat("encoder.down.", i, ".attn.0.q.weight")) != 0);
  }
  return c;
}

}  // namespace

VqganConfig VqganConfig::from_state_dict(const TensorMap& sd) {
  if (sd.count("quantize.proj.weight") != 0 || sd.count("quantize.embed.weight") != 0) {
    fail(
        "this is a Gumbel-quantized VQGAN (quantize.proj/quantize.embed); only VectorQuantizer models are "
        "supported");
  }
  VqganConfig c = autoencoder_layout(sd, "not a taming VQGAN");
  c.n_embed = shape_at(sd, "quantize.embedding.weight", 0);
  c.embed_dim = shape_at(sd, "quantize.embedding.weight", 1);
  return c;
}

VqganConfig VqganConfig::from_yaml(const std::string& path) {
  const std::string text = read_small_file(path, kMaxConfigBytes);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own nesting cap (it reports it as "bad file")
    fail(path, ": YAML nesting deeper than ", e.depth(), " levels");
  } catch (const YAML::Exception& e) {
    fail(path, ": not a readable YAML file: ", e.msg);
  }
  auto need = [&](const YAML::Node& node, const char* key) {
    if (!node.IsMap() || !node[key])
      fail(path, ": missing '", key, "' (a taming VQGAN config has model.params.ddconfig)");
    return node[key];
  };
  try {
    const YAML::Node params = need(need(root, "model"), "params");
    const YAML::Node dd = need(params, "ddconfig");
    VqganConfig c;
    c.embed_dim = need(params, "embed_dim").as<int64_t>();
    c.n_embed = need(params, "n_embed").as<int64_t>();
    c.z_channels = need(dd, "z_channels").as<int64_t>();
    c.in_channels = need(dd, "in_channels").as<int64_t>();
    c.out_ch = need(dd, "out_ch").as<int64_t>();
    c.ch = need(dd, "ch").as<int64_t>();
    c.ch_mult = need(dd, "ch_mult").as<std::vector<int64_t>>();
    c.num_res_blocks = need(dd, "num_res_blocks").as<int64_t>();
    c.double_z = dd["double_z"] ? dd["double_z"].as<bool>() : false;
    const int64_t resolution = need(dd, "resolution").as<int64_t>();
    const auto attn = need(dd, "attn_resolutions").as<std::vector<int64_t>>();
    if (c.ch_mult.empty() || c.ch_mult.size() > 16) fail(path, ": ch_mult must have 1 to 16 entries");
    for (size_t i = 0; i < c.ch_mult.size(); ++i) {
      const int64_t res = resolution >> i;
      c.attn_levels.push_back(std::find(attn.begin(), attn.end(), res) != attn.end());
    }
    for (int64_t v :
         {c.embed_dim, c.n_embed, c.z_channels, c.in_channels, c.out_ch, c.ch, c.num_res_blocks}) {
      if (v <= 0 || v > (1 << 20)) fail(path, ": a size in the config is out of range (", v, ")");
    }
    return c;
  } catch (const YAML::Exception& e) {
    fail(path, ": bad value in the VQGAN config: ", e.msg);
  }
}

std::string VqganConfig::describe() const {
  std::string mult, attn;
  for (size_t i = 0; i < ch_mult.size(); ++i) {
    mult += cat(i ? "," : "", ch_mult[i]);
    if (attn_levels[i]) attn += cat(attn.empty() ? "" : ",", i);
  }
  return cat("VQGAN f", factor(), " (ch ", ch, ", ch_mult ", mult, ", ", num_res_blocks,
             " res blocks, attention at levels [", attn, "], codebook ", n_embed, "x", embed_dim, ")");
}

bool VqganConfig::operator==(const VqganConfig& o) const {
  return embed_dim == o.embed_dim && n_embed == o.n_embed && z_channels == o.z_channels &&
         in_channels == o.in_channels && out_ch == o.out_ch && ch == o.ch && ch_mult == o.ch_mult &&
         num_res_blocks == o.num_res_blocks && attn_levels == o.attn_levels && double_z == o.double_z;
}

// ---- model ----

Vqgan::Vqgan(const VqganConfig& config) : config_(config) {
  TORCH_CHECK(!config.ch_mult.empty() && config.attn_levels.size() == config.ch_mult.size(),
              "bad VQGAN config");
  encoder_ = register_module("encoder", std::make_shared<VqganEncoder>(config));
  decoder_ = register_module("decoder", std::make_shared<VqganDecoder>(config));
  quant_conv_ = register_module("quant_conv", conv(config.z_channels, config.embed_dim, 1));
  post_quant_conv_ = register_module("post_quant_conv", conv(config.embed_dim, config.z_channels, 1));
  quantize_ = register_module("quantize", std::make_shared<torch::nn::Module>());
  embedding_ =
      quantize_->register_module("embedding", torch::nn::Embedding(config.n_embed, config.embed_dim))->weight;
}

namespace {

// The encoder's and decoder's parameters, in elements.
double encoder_decoder_elements(const VqganConfig& c) {
  namespace n = elements;
  auto resnet = [](double in, double out) {
    return n::norm(in) + n::conv(in, out, 3) + n::norm(out) + n::conv(out, out, 3) +
           (in != out ? n::conv(in, out, 1) : 0);
  };
  auto attn = [](double ch) { return n::norm(ch) + 4 * n::conv(ch, ch, 1); };
  auto mid = [&](double ch) { return 2 * resnet(ch, ch) + attn(ch); };
  const double ch = static_cast<double>(c.ch), z = static_cast<double>(c.z_channels);
  const size_t levels = c.ch_mult.size();
  auto attends = [&](size_t i) { return i < c.attn_levels.size() && c.attn_levels[i]; };
  double total = n::conv(static_cast<double>(c.in_channels), ch, 3);  // the encoder
  double block_in = ch;
  for (size_t i = 0; i < levels; ++i) {
    const double block_out = ch * static_cast<double>(c.ch_mult[i]);
    for (int64_t j = 0; j < c.num_res_blocks; ++j) {
      total += resnet(block_in, block_out) + (attends(i) ? attn(block_out) : 0);
      block_in = block_out;
    }
    if (i + 1 != levels) total += n::conv(block_in, block_in, 3);
  }
  total += mid(block_in) + n::norm(block_in) + n::conv(block_in, c.double_z ? 2 * z : z, 3);
  block_in = levels > 0 ? ch * static_cast<double>(c.ch_mult.back()) : ch;  // the decoder
  total += n::conv(z, block_in, 3) + mid(block_in);
  for (size_t i = levels; i-- > 0;) {
    const double block_out = ch * static_cast<double>(c.ch_mult[i]);
    for (int64_t j = 0; j <= c.num_res_blocks; ++j) {
      total += resnet(block_in, block_out) + (attends(i) ? attn(block_out) : 0);
      block_in = block_out;
    }
    if (i != 0) total += n::conv(block_in, block_in, 3);
  }
  return total + n::norm(block_in) + n::conv(block_in, static_cast<double>(c.out_ch), 3);
}

}  // namespace

double Vqgan::parameter_elements(const VqganConfig& c) {
  namespace n = elements;
  const double e = static_cast<double>(c.embed_dim), z = static_cast<double>(c.z_channels);
  return encoder_decoder_elements(c) + n::conv(z, e, 1) + n::conv(e, z, 1) +
         static_cast<double>(c.n_embed) * e;  // + quantizer
}

torch::Tensor Vqgan::encode(const torch::Tensor& x) {
  torch::Tensor h = encoder_->forward(x);
  if (config_.double_z) h = h.narrow(1, 0, config_.z_channels);  // taming keeps the mean half
  return quant_conv_(h);
}

Vqgan::Quantized Vqgan::quantize(const torch::Tensor& z) {
  const int64_t B = z.size(0), C = z.size(1), H = z.size(2), W = z.size(3);
  const torch::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, C});  // [B, C, H, W] -> [BHW, C]
  const torch::Tensor e = embedding_.to(z.scalar_type());
  // |z|^2 + |e|^2 - 2 z.e, summed as VectorQuantizer2 does (the same argmin on ties and rounding).
  const torch::Tensor d =
      flat.pow(2).sum(1, true) + e.pow(2).sum(1) - 2 * torch::matmul(flat, e.t());  // [BHW, N]
  const torch::Tensor indices = d.argmin(1);
  const torch::Tensor q =
      e.index_select(0, indices).reshape({B, H, W, C}).permute({0, 3, 1, 2});  // -> [B, C, H, W]
  return {z + (q - z).detach(), indices.reshape({B, H, W})};
}

torch::Tensor Vqgan::decode(const torch::Tensor& z_q) { return decoder_->forward(post_quant_conv_(z_q)); }

torch::Tensor Vqgan::codebook() const { return embedding_; }

void Vqgan::load_weights(const TensorMap& sd, const std::string& source) {
  StrictLoad how;
  how.source = source;
  how.what = cat("a ", config_.describe());
  // Training-only parts of a taming checkpoint: the LPIPS + discriminator loss module and BatchNorm counters.
  how.is_known_extra = [](const std::string& key) {
    return key.rfind("loss.", 0) == 0 || is_batchnorm_counter(key);
  };
  load_strict(*this, sd, how);
}

// ---- Stable Diffusion's VAE ----

AutoencoderKL::AutoencoderKL(const VqganConfig& config) : config_(config) {
  TORCH_CHECK(
      !config.ch_mult.empty() && config.attn_levels.size() == config.ch_mult.size() && config.double_z,
      "bad AutoencoderKL config");
  encoder_ = register_module("encoder", std::make_shared<VqganEncoder>(config));
  decoder_ = register_module("decoder", std::make_shared<VqganDecoder>(config));
  quant_conv_ = register_module("quant_conv", conv(2 * config.z_channels, 2 * config.embed_dim, 1));
  post_quant_conv_ = register_module("post_quant_conv", conv(config.embed_dim, config.z_channels, 1));
}

double AutoencoderKL::parameter_elements(const VqganConfig& c) {
  namespace n = elements;
  const double e = static_cast<double>(c.embed_dim), z = static_cast<double>(c.z_channels);
  return encoder_decoder_elements(c) + n::conv(2 * z, 2 * e, 1) + n::conv(e, z, 1);
}

VqganConfig AutoencoderKL::config_from_state_dict(const TensorMap& sd) {
  const char* what = "not Stable Diffusion's VAE (latent diffusion's AutoencoderKL)";
  VqganConfig c = autoencoder_layout(sd, what);
  if (!c.double_z) fail(what, ": its encoder does not give a mean and a variance (encoder.conv_out)");
  const int64_t moments = shape_at(sd, "quant_conv.weight", 0, what);
  if (moments % 2 != 0) fail(what, ": quant_conv gives ", moments, " channels, not a mean and a variance");
  c.embed_dim = moments / 2;
  return c;
}

AutoencoderKL::Posterior AutoencoderKL::encode(const torch::Tensor& x) {
  const torch::Tensor moments = quant_conv_(encoder_->forward(x));
  return {moments.narrow(1, 0, config_.embed_dim),
          moments.narrow(1, config_.embed_dim, config_.embed_dim).clamp(-30.0, 20.0)};
}

torch::Tensor AutoencoderKL::decode(const torch::Tensor& z) { return decoder_->forward(post_quant_conv_(z)); }

torch::Tensor AutoencoderKL::decode_backward(const torch::Tensor& z, const torch::Tensor& grad_image) {
  // The stages' inputs, kept from a forward pass without graphs; then each stage again, last first, with its
  // graph alive only while its gradient is taken.
  std::vector<torch::Tensor> inputs;
  {
    const torch::NoGradGuard no_grad;
    torch::Tensor h = post_quant_conv_(z);
    for (int64_t k = 0; k < decoder_->stages(); ++k) {
      inputs.push_back(h);
      h = decoder_->stage(k, h);
    }
  }
  const torch::AutoGradMode enable(true);
  torch::Tensor grad = grad_image;
  for (int64_t k = decoder_->stages(); k-- > 0;) {
    const torch::Tensor x = inputs[static_cast<size_t>(k)].detach().requires_grad_(true);
    grad = torch::autograd::grad({decoder_->stage(k, x)}, {x}, {grad})[0];
    inputs[static_cast<size_t>(k)] = torch::Tensor();
  }
  const torch::Tensor x = z.detach().requires_grad_(true);
  return torch::autograd::grad({post_quant_conv_(x)}, {x}, {grad})[0];
}

void AutoencoderKL::load_weights(const TensorMap& sd, const std::string& source) {
  StrictLoad how;
  how.source = source;
  how.what = cat("a Stable Diffusion VAE (latent diffusion's AutoencoderKL, f", config_.factor(), ", ",
                 config_.embed_dim, " latent channels)");
  // A training checkpoint's LPIPS and discriminator.
  how.is_known_extra = [](const std::string& key) { return key.rfind("loss.", 0) == 0; };
  load_strict(*this, sd, how);
}

TensorMap vae_weights_from_diffusers(const TensorMap& sd) {
  if (!has_prefix(sd, "encoder.down_blocks.") && !has_prefix(sd, "decoder.up_blocks.")) return sd;
  int64_t up_levels = 0;
  while (has_prefix(sd, cat("decoder.up_blocks.", up_levels, "."))) ++up_levels;
  // Literal renames within a name, in order; the first of each pair found is replaced.
  static const std::pair<const char*, const char*> kParts[] = {
      {"mid_block.resnets.0", "mid.block_1"},
      {"mid_block.resnets.1", "mid.block_2"},
      {"mid_block.attentions.0.group_norm", "mid.attn_1.norm"},
      {"mid_block.attentions.0.to_q", "mid.attn_1.q"},
      {"mid_block.attentions.0.to_k", "mid.attn_1.k"},
      {"mid_block.attentions.0.to_v", "mid.attn_1.v"},
      {"mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out"},
      // diffusers before 0.14 named the attention projections so
      {"mid_block.attentions.0.query", "mid.attn_1.q"},
      {"mid_block.attentions.0.key", "mid.attn_1.k"},
      {"mid_block.attentions.0.value", "mid.attn_1.v"},
      {"mid_block.attentions.0.proj_attn", "mid.attn_1.proj_out"},
      {"resnets.", "block."},
      {"conv_shortcut", "nin_shortcut"},
      {"downsamplers.0", "downsample"},
      {"upsamplers.0", "upsample"},
      {"conv_norm_out", "norm_out"}};
  TensorMap out;
  for (const auto& [key, value] : sd) {
    std::string name = key;
    torch::Tensor tensor = value;
    // Levels: down_blocks.i -> down.i; up_blocks.i -> up.(levels - 1 - i), ldm counting from the bottom.
    for (const char* blocks : {"encoder.down_blocks.", "decoder.up_blocks."}) {
      if (name.rfind(blocks, 0) != 0) continue;
      const size_t start = std::strlen(blocks), dot = name.find('.', start);
      const std::string level = name.substr(start, dot == std::string::npos ? 0 : dot - start);
      if (level.empty() || level.size() > 4 || level.find_first_not_of("0123456789") != std::string::npos)
        continue;  // not a level: left as it is, for the strict load to name
      const int64_t i = std::stoll(level);
      const bool up = blocks[0] == 'd';
      name = cat(up ? "decoder.up." : "encoder.down.", up ? up_levels - 1 - i : i, name.substr(dot));
    }
    for (const auto& [from, to] : kParts) {
      const size_t at = name.find(from);
      if (at != std::string::npos) name.replace(at, std::strlen(from), to);
    }
    if (name.find(".mid.attn_1.") != std::string::npos && name.find(".norm.") == std::string::npos &&
        tensor.dim() == 2)
      tensor = tensor.reshape({tensor.size(0), tensor.size(1), 1, 1});
    out.emplace(std::move(name), std::move(tensor));
  }
  return out;
}

LoadedVae load_vae(const std::string& path, torch::Device device) {
  return load_vae(read_checkpoint(path), device);
}

LoadedVae load_vae(Checkpoint ckpt, torch::Device device) {
  const std::string& path = ckpt.path;
  LoadedVae out;
  // A whole single-file Stable Diffusion checkpoint: its first_stage_model.
  const std::string prefix = "first_stage_model.";
  if (has_prefix(ckpt.tensors, prefix)) ckpt.tensors = tensors_under(ckpt.tensors, prefix);
  ckpt.tensors = vae_weights_from_diffusers(ckpt.tensors);
  if (!ckpt.configs.config_json.empty()) {
    const std::string where = (std::filesystem::path(path).parent_path() / ckpt.configs.config_name).string();
    const nlohmann::json j = parse_json_object(ckpt.configs.config_json, "VAE config", where);
    read_field(j, "scaling_factor", out.scaling_factor, where);
    require_supported(j, "norm_num_groups", 32, where);  // Stable Diffusion's
    require_supported(j, "act_fn", "silu", where);
    if (j.contains("shift_factor") && !j["shift_factor"].is_null())
      fail(where, ": a shift_factor (SD3's and Flux's latents) is not supported");
    if (!(out.scaling_factor > 0 && out.scaling_factor < 100))
      fail(where, ": scaling_factor is out of range");
  }
  out.model = build_strict<AutoencoderKL>(AutoencoderKL::config_from_state_dict(ckpt.tensors), ckpt.tensors,
                                          ckpt.path);
  out.model->to(device);
  out.model->eval();
  out.path = ckpt.path;
  return out;
}

LoadedVqgan load_vqgan(const std::string& checkpoint_path, const std::string& config_path,
                       torch::Device device) {
  Checkpoint ckpt = read_checkpoint(checkpoint_path);
  VqganConfig config = VqganConfig::from_state_dict(ckpt.tensors);
  if (!config_path.empty()) {
    const VqganConfig declared = VqganConfig::from_yaml(config_path);
    if (!(declared == config)) {
      fail(config_path, " describes a ", declared.describe(), " but ", checkpoint_path, " holds a ",
           config.describe());
    }
  }
  LoadedVqgan out;
  out.model = build_strict<Vqgan>(config, ckpt.tensors, ckpt.path);
  out.model->to(device);
  out.model->eval();
  out.path = ckpt.path;
  out.config_path = config_path;
  return out;
}

}  // namespace clipguide

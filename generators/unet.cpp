// Ref: openai/guided-diffusion guided_diffusion/unet.py (UNetModel, ResBlock, AttentionBlock,
// QKVAttentionLegacy, QKVAttention, Upsample, Downsample), nn.py (timestep_embedding, GroupNorm32).
#include "generators/unet.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/dense.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/json_fields.h"
#include "core/torch_compat.h"
#include "io/checkpoint.h"
#include "io/state_dict.h"

namespace clipguide {

namespace F = torch::nn::functional;

namespace {

torch::nn::GroupNorm group_norm(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-5));
}

torch::nn::Conv2d conv3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

// A layer of a TimestepEmbedSequential: takes the timestep embedding, or the text context, or neither.
class Layer : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb,
                                const torch::Tensor& context) = 0;
};

class ConvLayer : public Layer {  // input_blocks.0.0
 public:
  ConvLayer(int64_t in, int64_t out) : conv_(conv3(in, out)) {
    register_parameter("weight", conv_->weight);
    register_parameter("bias", conv_->bias);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const torch::Tensor&) override {
    return conv_(x);
  }

 private:
  torch::nn::Conv2d conv_;
};

class Downsample : public Layer {  // op: 3x3 stride-2 conv
 public:
  explicit Downsample(int64_t ch) { op = register_module("op", conv3(ch, ch, 2)); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const torch::Tensor&) override {
    return op(x);
  }
  torch::nn::Conv2d op{nullptr};
};

class Upsample : public Layer {  // nearest x2, then conv
 public:
  explicit Upsample(int64_t ch) { conv = register_module("conv", conv3(ch, ch)); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const torch::Tensor&) override {
    return conv(F::interpolate(
        x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
  }
  torch::nn::Conv2d conv{nullptr};
};

class ResBlock : public Layer {
 public:
  // resample: 0 none, -1 down (avg pool), +1 up (nearest), both applied to h and x as in unet.py.
  ResBlock(int64_t ch, int64_t emb_ch, int64_t out, bool scale_shift, int resample)
      : scale_shift_(scale_shift), resample_(resample) {
    in_layers = register_module("in_layers",
                                torch::nn::Sequential(group_norm(ch), torch::nn::SiLU(), conv3(ch, out)));
    emb_layers = register_module(
        "emb_layers",
        torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(emb_ch, scale_shift ? 2 * out : out)));
    out_layers = register_module(
        "out_layers",
        torch::nn::Sequential(group_norm(out), torch::nn::SiLU(), torch::nn::Dropout(0.0), conv3(out, out)));
    if (out != ch)
      skip_connection =
          register_module("skip_connection", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, out, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& emb, const torch::Tensor&) override {
    torch::Tensor x = x_in, h;
    if (resample_ != 0) {
      h = in_layers[1]->as<torch::nn::SiLU>()->forward(in_layers[0]->as<torch::nn::GroupNorm>()->forward(x));
      h = resample(h);
      x = resample(x);
      h = in_layers[2]->as<torch::nn::Conv2d>()->forward(h);
    } else {
      h = in_layers->forward(x);
    }
    torch::Tensor emb_out =
        emb_layers->forward(emb).to(h.scalar_type()).unsqueeze(-1).unsqueeze(-1);  // [B, E] -> [B, E, 1, 1]
    if (scale_shift_) {
      auto parts = emb_out.chunk(2, 1);  // scale, shift
      h = out_layers[0]->as<torch::nn::GroupNorm>()->forward(h) * (1 + parts[0]) + parts[1];
      h = out_layers[3]->as<torch::nn::Conv2d>()->forward(torch::silu(h));  // SiLU, Dropout(0), conv
    } else {
      h = out_layers->forward(h + emb_out);
    }
    return (skip_connection ? skip_connection(x) : x) + h;
  }
  torch::nn::Sequential in_layers{nullptr}, emb_layers{nullptr}, out_layers{nullptr};
  torch::nn::Conv2d skip_connection{nullptr};

 private:
  torch::Tensor resample(const torch::Tensor& t) const {
    if (resample_ < 0) return F::avg_pool2d(t, F::AvgPool2dFuncOptions(2).stride(2));
    return F::interpolate(
        t, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  }
  bool scale_shift_;
  int resample_;
};

class AttentionBlock : public Layer {
 public:
  AttentionBlock(int64_t ch, int64_t heads, bool new_order) : heads_(heads), new_order_(new_order) {
    TORCH_CHECK(heads > 0 && ch % heads == 0, "attention channels ", ch, " are not divisible by ", heads,
                " heads");
    norm = register_module("norm", group_norm(ch));
    qkv = register_module("qkv", torch::nn::Conv1d(torch::nn::Conv1dOptions(ch, 3 * ch, 1)));
    proj_out = register_module("proj_out", torch::nn::Conv1d(torch::nn::Conv1dOptions(ch, ch, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor&, const torch::Tensor&) override {
    const int64_t B = x_in.size(0), C = x_in.size(1), T = x_in.size(2) * x_in.size(3), Ch = C / heads_;
    const torch::Tensor x = x_in.reshape({B, C, T});  // [B, C, H, W] -> [B, C, T]
    const torch::Tensor qkv_out = qkv(norm(x));       // [B, 3C, T]
    torch::Tensor q, k, v;
    if (new_order_) {  // QKVAttention: q, k, v each [B, H*Ch, T]
      auto parts = qkv_out.chunk(3, 1);
      q = parts[0].reshape({B * heads_, Ch, T});
      k = parts[1].reshape({B * heads_, Ch, T});
      v = parts[2].reshape({B * heads_, Ch, T});
    } else {  // QKVAttentionLegacy: heads outermost, [B, H * 3Ch, T] -> [BH, 3Ch, T]
      auto parts = qkv_out.reshape({B * heads_, 3 * Ch, T}).split(Ch, 1);
      q = parts[0], k = parts[1], v = parts[2];
    }
#if CLIPGUIDE_HAS_SDPA
    // The fused kernel: softmax(q^T k / sqrt(Ch)) over the keys, as the two scalings by Ch^-1/4 below.
    const torch::Tensor a =
        at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            .transpose(1, 2)  // [BH, T, Ch] -> [BH, Ch, T]
            .reshape({B, C, T});
#else
    const double scale = 1.0 / std::sqrt(std::sqrt(static_cast<double>(Ch)));
    torch::Tensor w = torch::bmm((q * scale).transpose(1, 2), k * scale);  // [BH, T(q), T(k)]
    w = torch::softmax(w.to(torch::kFloat), -1).to(w.scalar_type());
    const torch::Tensor a = torch::bmm(v, w.transpose(1, 2)).reshape({B, C, T});  // [BH, Ch, T] -> [B, C, T]
#endif
    return (x + proj_out(a)).reshape(x_in.sizes());
  }
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv1d qkv{nullptr}, proj_out{nullptr};

 private:
  int64_t heads_;
  bool new_order_;
};

// latent diffusion's CrossAttention (diffusers' Attention): q from x, k and v from the context (x itself for
// self-attention), heads of `head_dim`, then to_out.0.
class CrossAttention : public torch::nn::Module {
 public:
  CrossAttention(int64_t dim, int64_t context_dim, int64_t heads) : heads_(heads) {
    to_q = register_module("to_q", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(false)));
    to_k = register_module("to_k", torch::nn::Linear(torch::nn::LinearOptions(context_dim, dim).bias(false)));
    to_v = register_module("to_v", torch::nn::Linear(torch::nn::LinearOptions(context_dim, dim).bias(false)));
    to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(dim, dim)));
  }
  // x [B, T, dim], context [B, S, context_dim] -> [B, T, dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2), Dh = D / heads_;
    const auto split = [&](const torch::Tensor& t) {  // [B, L, D] -> [B, H, L, Dh]
      return t.reshape({B, t.size(1), heads_, Dh}).transpose(1, 2);
    };
    const torch::Tensor q = split(dense(x, to_q->weight, {})), k = split(dense(context, to_k->weight, {})),
                        v = split(dense(context, to_v->weight, {}));
#if CLIPGUIDE_HAS_SDPA
    const torch::Tensor a = at::scaled_dot_product_attention(q, k, v);
#else
    const torch::Tensor w =
        torch::softmax(torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(Dh)), -1);
    const torch::Tensor a = torch::matmul(w, v);
#endif
    const auto& out = to_out[0]->as<torch::nn::Linear>();
    return dense(a.transpose(1, 2).reshape({B, T, D}), out->weight, out->bias);
  }
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};

 private:
  int64_t heads_;
};

// latent diffusion's BasicTransformerBlock: self-attention, cross-attention on the context, a GEGLU
// feed-forward (ff.net.0.proj to twice the inner width, x * gelu(gate), ff.net.2), each after a LayerNorm and
// added to its input.
class TransformerBlock : public torch::nn::Module {
 public:
  TransformerBlock(int64_t dim, int64_t context_dim, int64_t heads) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    attn1 = register_module("attn1", std::make_shared<CrossAttention>(dim, dim, heads));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    attn2 = register_module("attn2", std::make_shared<CrossAttention>(dim, context_dim, heads));
    norm3 = register_module("norm3", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    auto geglu = std::make_shared<torch::nn::Module>();
    proj = geglu->register_module("proj", torch::nn::Linear(dim, 8 * dim));
    auto net = torch::nn::ModuleList();
    net->push_back(geglu);
    net->push_back(torch::nn::Dropout(0.0));
    out = torch::nn::Linear(4 * dim, dim);
    net->push_back(out);
    auto ff = std::make_shared<torch::nn::Module>();
    ff->register_module("net", net);
    register_module("ff", ff);
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& context) {
    torch::Tensor h = norm1(x);
    x = attn1->forward(h, h) + x;
    x = attn2->forward(norm2(x), context) + x;
    const auto parts = dense(norm3(x), proj->weight, proj->bias).chunk(2, -1);  // value, gate
    return dense(parts[0] * torch::gelu(parts[1]), out->weight, out->bias) + x;
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  std::shared_ptr<CrossAttention> attn1, attn2;
  torch::nn::Linear proj{nullptr}, out{nullptr};
};

// latent diffusion's SpatialTransformer (diffusers' Transformer2DModel): GroupNorm, proj_in (a 1x1
// convolution, or a Linear in SD 2.x), one transformer block over the positions, proj_out, added to the
// input.
class SpatialTransformer : public Layer {
 public:
  SpatialTransformer(int64_t ch, int64_t context_dim, int64_t heads, bool linear) : linear_(linear) {
    TORCH_CHECK(heads > 0 && ch % heads == 0, "attention channels ", ch, " are not divisible by ", heads,
                " heads");
    norm = register_module("norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, ch).eps(1e-6)));
    if (linear) {
      proj_in_linear = register_module("proj_in", torch::nn::Linear(ch, ch));
      proj_out_linear = register_module("proj_out", torch::nn::Linear(ch, ch));
    } else {
      proj_in_conv = register_module("proj_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, ch, 1)));
      proj_out_conv = register_module("proj_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, ch, 1)));
    }
    blocks = register_module("transformer_blocks", torch::nn::ModuleList());
    blocks->push_back(std::make_shared<TransformerBlock>(ch, context_dim, heads));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const torch::Tensor& context) override {
    TORCH_CHECK(context.defined(), "this UNet attends to text: it needs the text embeddings");
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const auto tokens = [&](const torch::Tensor& t) { return t.reshape({B, C, H * W}).transpose(1, 2); };
    // Back to [B, C, H, W] in the default layout: the transposed view is channels-last, and a convolution
    // given one answers in kind, so every later convolution would reorder its weights (40% slower at SD's
    // sizes).
    const auto image = [&](const torch::Tensor& t) {
      return t.transpose(1, 2).reshape({B, C, H, W}).contiguous();
    };
    torch::Tensor h = norm(x);
    h = linear_ ? dense(tokens(h), proj_in_linear->weight, proj_in_linear->bias)
                : tokens(proj_in_conv(h));  // [B, HW, C]
    h = blocks[0]->as<TransformerBlock>()->forward(h, context.to(h.scalar_type()));
    h = linear_ ? image(dense(h, proj_out_linear->weight, proj_out_linear->bias)) : proj_out_conv(image(h));
    return h + x;
  }
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::ModuleList blocks{nullptr};

 private:
  bool linear_;
};

// TimestepEmbedSequential: children named "0", "1", ...
class EmbedSequential : public torch::nn::Module {
 public:
  void add(std::shared_ptr<Layer> layer) {
    layers_.push_back(register_module(std::to_string(layers_.size()), std::move(layer)));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb, const torch::Tensor& context) {
    for (auto& l : layers_) x = l->forward(x, emb, context);
    return x;
  }

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

int64_t heads_for(const UNetConfig& c, int64_t ch) {
  if (c.num_head_channels > 0) {
    if (ch % c.num_head_channels != 0)
      fail("attention width ", ch, " is not a multiple of num_head_channels ", c.num_head_channels);
    return ch / c.num_head_channels;
  }
  return c.num_heads;
}

// guided-diffusion's self-attention, or latent diffusion's cross-attention where the UNet reads text.
std::shared_ptr<Layer> attention(const UNetConfig& c, int64_t ch) {
  if (c.context_dim > 0)
    return std::make_shared<SpatialTransformer>(ch, c.context_dim, heads_for(c, ch), c.linear_projection);
  return std::make_shared<AttentionBlock>(ch, heads_for(c, ch), c.use_new_attention_order);
}

bool has(const TensorMap& sd, const std::string& key) { return sd.count(key) != 0; }

// Whether prefix (output_blocks.k.j.) holds an attention block, guided-diffusion's or latent diffusion's.
bool is_attention(const TensorMap& sd, const std::string& prefix) {
  return has(sd, prefix + "qkv.weight") || has(sd, prefix + "proj_in.weight");
}

int64_t dim_of(const TensorMap& sd, const std::string& key, int64_t dim) {
  return size_of(sd, key, dim, "not a guided-diffusion UNet");
}

}  // namespace

torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, double max_period) {
  const int64_t half = dim / 2;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat).device(timesteps.device());
  const torch::Tensor freqs =
      torch::exp(-std::log(max_period) * torch::arange(0, half, opts) / static_cast<double>(half));
  const torch::Tensor args = timesteps.to(torch::kFloat).unsqueeze(1) * freqs.unsqueeze(0);  // [B, half]
  torch::Tensor emb = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2 != 0) emb = torch::cat({emb, torch::zeros_like(emb.narrow(1, 0, 1))}, -1);
  return emb;
}

void UNetConfig::infer_from_state_dict(const TensorMap& sd) {
  model_channels = dim_of(sd, "input_blocks.0.0.weight", 0);
  in_channels = dim_of(sd, "input_blocks.0.0.weight", 1);
  out_channels = dim_of(sd, "out.2.weight", 0);
  num_classes = has(sd, "label_emb.weight") ? dim_of(sd, "label_emb.weight", 0) : 0;
  clip_dim = has(sd, "clip_emb.weight") ? dim_of(sd, "clip_emb.weight", 1) : 0;
  int64_t n_out = 0;
  while (has_prefix(sd, cat("output_blocks.", n_out, "."))) ++n_out;
  if (n_out == 0) fail("not a guided-diffusion UNet: no output_blocks");
  // The first output block with an up-sampling module (an index >= 1 that is not attention) ends a level.
  int64_t per_level = n_out;
  for (int64_t k = 0; k < n_out; ++k) {
    for (int j = 1; j <= 2; ++j) {
      const std::string p = cat("output_blocks.", k, ".", j, ".");
      if (has_prefix(sd, p) && !is_attention(sd, p)) {
        resblock_updown = has(sd, p + "in_layers.0.weight");
        if (per_level == n_out) per_level = k + 1;
      }
    }
  }
  if (n_out % per_level != 0)
    fail("not a guided-diffusion UNet: ", n_out, " output blocks do not split into levels of ", per_level);
  num_res_blocks = per_level - 1;
  const int64_t levels = n_out / per_level;
  channel_mult.assign(levels, 0);
  attention_levels.assign(levels, false);
  for (int64_t k = 0; k < n_out; ++k) {
    const int64_t level = levels - 1 - k / per_level;
    const int64_t out = dim_of(sd, cat("output_blocks.", k, ".0.out_layers.3.weight"), 0);
    if (out % model_channels != 0)
      fail("not a guided-diffusion UNet: output_blocks.", k, " has ", out, " channels");
    channel_mult[level] = out / model_channels;
    if (is_attention(sd, cat("output_blocks.", k, ".1."))) attention_levels[level] = true;
  }
  const std::string text_attention = "middle_block.1.transformer_blocks.0.attn2.to_k.weight";
  context_dim = has(sd, text_attention) ? dim_of(sd, text_attention, 1) : 0;
  linear_projection =
      has(sd, "middle_block.1.proj_in.weight") && sd.at("middle_block.1.proj_in.weight").dim() == 2;
  use_scale_shift_norm = dim_of(sd, "input_blocks.1.0.emb_layers.1.weight", 0) ==
                         2 * dim_of(sd, "input_blocks.1.0.out_layers.3.weight", 0);
}

std::string UNetConfig::describe() const {
  std::string mult, attn;
  for (size_t i = 0; i < channel_mult.size(); ++i) {
    mult += cat(i ? "," : "", channel_mult[i]);
    if (attention_levels[i]) attn += cat(attn.empty() ? "" : ",", i);
  }
  return cat(context_dim ? "latent diffusion UNet (" : "guided-diffusion UNet (", model_channels,
             " channels, mult ", mult, ", ", num_res_blocks, " res blocks, attention at levels [", attn, "]",
             learn_sigma() ? ", learned sigma" : "", num_classes ? cat(", ", num_classes, " classes") : "",
             clip_dim ? cat(", conditioned on ", clip_dim, "-d CLIP embeddings") : "",
             context_dim ? cat(", cross-attention on ", context_dim, "-d text embeddings") : "", ")");
}

UNetModel::UNetModel(const UNetConfig& c) : config_(c) {
  TORCH_CHECK(!c.channel_mult.empty() && c.attention_levels.size() == c.channel_mult.size(),
              "bad UNet config");
  const int64_t mc = c.model_channels, emb_ch = 4 * mc;
  time_embed_ =
      register_module("time_embed", torch::nn::Sequential(torch::nn::Linear(mc, emb_ch), torch::nn::SiLU(),
                                                          torch::nn::Linear(emb_ch, emb_ch)));
  if (c.num_classes > 0)
    label_emb_ = register_module("label_emb", torch::nn::Embedding(c.num_classes, emb_ch));
  if (c.clip_dim > 0) clip_emb_ = register_module("clip_emb", torch::nn::Linear(c.clip_dim, emb_ch));
  input_blocks_ = register_module("input_blocks", torch::nn::ModuleList());
  auto first = std::make_shared<EmbedSequential>();
  first->add(std::make_shared<ConvLayer>(c.in_channels, mc));
  input_blocks_->push_back(first);
  std::vector<int64_t> chans = {mc};
  int64_t ch = mc;
  for (size_t level = 0; level < c.channel_mult.size(); ++level) {
    for (int64_t i = 0; i < c.num_res_blocks; ++i) {
      auto block = std::make_shared<EmbedSequential>();
      block->add(
          std::make_shared<ResBlock>(ch, emb_ch, c.channel_mult[level] * mc, c.use_scale_shift_norm, 0));
      ch = c.channel_mult[level] * mc;
      if (c.attention_levels[level]) block->add(attention(c, ch));
      input_blocks_->push_back(block);
      chans.push_back(ch);
    }
    if (level + 1 != c.channel_mult.size()) {
      auto block = std::make_shared<EmbedSequential>();
      if (c.resblock_updown) {
        block->add(std::make_shared<ResBlock>(ch, emb_ch, ch, c.use_scale_shift_norm, -1));
      } else {
        block->add(std::make_shared<Downsample>(ch));
      }
      input_blocks_->push_back(block);
      chans.push_back(ch);
    }
  }
  auto middle = std::make_shared<EmbedSequential>();
  middle->add(std::make_shared<ResBlock>(ch, emb_ch, ch, c.use_scale_shift_norm, 0));
  middle->add(attention(c, ch));
  middle->add(std::make_shared<ResBlock>(ch, emb_ch, ch, c.use_scale_shift_norm, 0));
  middle_block_ = register_module("middle_block", middle);
  output_blocks_ = register_module("output_blocks", torch::nn::ModuleList());
  for (size_t level = c.channel_mult.size(); level-- > 0;) {
    for (int64_t i = 0; i <= c.num_res_blocks; ++i) {
      const int64_t skip = chans.back();
      chans.pop_back();
      auto block = std::make_shared<EmbedSequential>();
      block->add(std::make_shared<ResBlock>(ch + skip, emb_ch, mc * c.channel_mult[level],
                                            c.use_scale_shift_norm, 0));
      ch = mc * c.channel_mult[level];
      if (c.attention_levels[level]) block->add(attention(c, ch));
      if (level != 0 && i == c.num_res_blocks) {
        if (c.resblock_updown) {
          block->add(std::make_shared<ResBlock>(ch, emb_ch, ch, c.use_scale_shift_norm, 1));
        } else {
          block->add(std::make_shared<Upsample>(ch));
        }
      }
      output_blocks_->push_back(block);
    }
  }
  out_ = register_module("out",
                         torch::nn::Sequential(group_norm(ch), torch::nn::SiLU(), conv3(mc, c.out_channels)));
}

double UNetModel::parameter_elements(const UNetConfig& c) {
  namespace n = elements;
  const double mc = static_cast<double>(c.model_channels), emb = 4 * mc;
  auto res = [&](double in, double out) {
    return n::norm(in) + n::conv(in, out, 3) + n::linear(emb, c.use_scale_shift_norm ? 2 * out : out) +
           n::norm(out) + n::conv(out, out, 3) + (in != out ? n::conv(in, out, 1) : 0);
  };
  const double ctx = static_cast<double>(c.context_dim);
  auto attn = [&](double ch) {
    if (c.context_dim == 0) return n::norm(ch) + n::conv(ch, 3 * ch, 1) + n::conv(ch, ch, 1);
    // SpatialTransformer: norm, proj_in and proj_out (same count as 1x1 convolutions or Linear), one block
    const double block = 3 * n::norm(ch) + 3 * n::linear(ch, ch, false) + n::linear(ch, ch) +  // attn1
                         n::linear(ch, ch, false) + 2 * n::linear(ctx, ch, false) +
                         n::linear(ch, ch) +                             // attn2
                         n::linear(ch, 8 * ch) + n::linear(4 * ch, ch);  // GEGLU feed-forward
    return n::norm(ch) + 2 * n::linear(ch, ch) + block;
  };
  auto attends = [&](size_t level) { return level < c.attention_levels.size() && c.attention_levels[level]; };
  double total = n::linear(mc, emb) + n::linear(emb, emb) + static_cast<double>(c.num_classes) * emb +
                 (c.clip_dim > 0 ? n::linear(static_cast<double>(c.clip_dim), emb) : 0) +
                 n::conv(static_cast<double>(c.in_channels), mc, 3);
  std::vector<double> chans = {mc};
  double ch = mc;
  const size_t levels = c.channel_mult.size();
  for (size_t level = 0; level < levels; ++level) {
    const double out = mc * static_cast<double>(c.channel_mult[level]);
    for (int64_t i = 0; i < c.num_res_blocks; ++i) {
      total += res(ch, out) + (attends(level) ? attn(out) : 0);
      ch = out;
      chans.push_back(ch);
    }
    if (level + 1 != levels) {
      total += c.resblock_updown ? res(ch, ch) : n::conv(ch, ch, 3);
      chans.push_back(ch);
    }
  }
  total += 2 * res(ch, ch) + attn(ch);  // the middle block
  for (size_t level = levels; level-- > 0;) {
    const double out = mc * static_cast<double>(c.channel_mult[level]);
    for (int64_t i = 0; i <= c.num_res_blocks && !chans.empty(); ++i) {
      total += res(ch + chans.back(), out) + (attends(level) ? attn(out) : 0);
      chans.pop_back();
      ch = out;
      if (level != 0 && i == c.num_res_blocks) total += c.resblock_updown ? res(ch, ch) : n::conv(ch, ch, 3);
    }
  }
  return total + n::norm(ch) + n::conv(mc, static_cast<double>(c.out_channels), 3);
}

torch::Tensor UNetModel::forward(const torch::Tensor& x, const torch::Tensor& timesteps,
                                 const torch::Tensor& y, const torch::Tensor& clip_embed,
                                 const torch::Tensor& context) {
  torch::Tensor emb = time_embed_->forward(timestep_embedding(timesteps, config_.model_channels));
  if (config_.num_classes > 0) {
    TORCH_CHECK(y.defined(), "this UNet is class-conditional: it needs class labels");
    emb = emb + label_emb_(y);
  }
  if (config_.clip_dim > 0) {
    TORCH_CHECK(clip_embed.defined() && clip_embed.dim() == 2 && clip_embed.size(1) == config_.clip_dim,
                "this UNet is conditioned on ", config_.clip_dim, "-d CLIP embeddings: it needs them");
    emb = emb + clip_emb_(clip_embed.to(emb.scalar_type()));
  }
  std::vector<torch::Tensor> hs;
  torch::Tensor h = x;
  for (const auto& m : *input_blocks_) {
    h = std::dynamic_pointer_cast<EmbedSequential>(m)->forward(h, emb, context);
    hs.push_back(h);
  }
  h = std::dynamic_pointer_cast<EmbedSequential>(middle_block_)->forward(h, emb, context);
  for (const auto& m : *output_blocks_) {
    h = torch::cat({h, hs.back()}, 1);
    hs.pop_back();
    h = std::dynamic_pointer_cast<EmbedSequential>(m)->forward(h, emb, context);
  }
  return out_->forward(h);
}

void UNetModel::load_weights(const TensorMap& sd, const std::string& source) {
  StrictLoad how;
  how.source = source;
  how.what = cat("a ", config_.describe());
  load_strict(*this, sd, how);
}

namespace {

std::vector<int64_t> int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    try {
      out.push_back(std::stoll(part));
    } catch (const std::exception&) {
      fail(what, " '", text, "' is not a comma-separated list of integers");
    }
  }
  return out;
}

}  // namespace

void apply_unet_flags(const std::string& flags_json, const std::string& flags_path, UNetConfig& config,
                      LoadedUNet& out) {
  nlohmann::json flags;
  try {
    flags = nlohmann::json::parse(flags_json);
  } catch (const nlohmann::json::exception& e) {
    fail(flags_path, ": not a JSON flags file (", e.what(), ")");
  }
  try {
    const nlohmann::json m = flags.value("model_flags", nlohmann::json::object());
    const nlohmann::json d = flags.value("diffusion_flags", nlohmann::json::object());
    // Integers must be written as integers: nlohmann converts 1e30 to int64_t with undefined behaviour.
    auto integer = [&](const nlohmann::json& group, const char* name, int64_t fallback) {
      if (!group.contains(name)) return fallback;
      if (!group[name].is_number_integer())
        fail(flags_path, ": flag ", name, " is not an integer (", group[name].dump(), ")");
      return group[name].get<int64_t>();
    };
    config.num_heads = integer(m, "num_heads", config.num_heads);
    config.num_head_channels = integer(m, "num_head_channels", config.num_head_channels);
    config.use_new_attention_order = m.value("use_new_attention_order", config.use_new_attention_order);
    out.image_size = integer(m, "image_size", out.image_size);
    out.diffusion.noise_schedule = d.value("noise_schedule", out.diffusion.noise_schedule);
    out.diffusion.steps = integer(d, "steps", integer(d, "diffusion_steps", out.diffusion.steps));
    out.diffusion.timestep_respacing = d.value("timestep_respacing", out.diffusion.timestep_respacing);
    // Flags the weights also determine must agree with them.
    auto check = [&](bool same, const std::string& flag) {
      if (!same) fail(flags_path, ": ", flag, " contradicts the weights, which hold a ", config.describe());
    };
    if (m.contains("num_channels"))
      check(integer(m, "num_channels", 0) == config.model_channels, "num_channels");
    if (m.contains("num_res_blocks"))
      check(integer(m, "num_res_blocks", 0) == config.num_res_blocks, "num_res_blocks");
    if (m.contains("learn_sigma")) check(m["learn_sigma"].get<bool>() == config.learn_sigma(), "learn_sigma");
    if (m.contains("use_scale_shift_norm"))
      check(m["use_scale_shift_norm"].get<bool>() == config.use_scale_shift_norm, "use_scale_shift_norm");
    if (m.contains("clip_dim")) check(integer(m, "clip_dim", 0) == config.clip_dim, "clip_dim");
    if (m.contains("resblock_updown"))
      check(m["resblock_updown"].get<bool>() == config.resblock_updown, "resblock_updown");
    if (m.contains("channel_mult") && !m["channel_mult"].get<std::string>().empty()) {
      check(int_list(m["channel_mult"].get<std::string>(), "channel_mult") == config.channel_mult,
            "channel_mult");
    }
    if (m.contains("attention_resolutions")) {
      std::vector<bool> levels(config.channel_mult.size(), false);
      for (int64_t res : int_list(m["attention_resolutions"].get<std::string>(), "attention_resolutions")) {
        for (size_t i = 0; i < levels.size(); ++i) {
          if (res > 0 && (out.image_size / res) == (int64_t{1} << i)) levels[i] = true;
        }
      }
      check(levels == config.attention_levels, "attention_resolutions");
    }
  } catch (const nlohmann::json::exception& e) {
    fail(flags_path, ": bad flag value (", e.what(), ")");
  }
}

TensorMap unet_weights_from_diffusers(const TensorMap& sd) {
  if (!has(sd, "conv_in.weight") || !has_prefix(sd, "down_blocks.")) return sd;
  int64_t L = 0;  // resnets per down block
  while (has_prefix(sd, cat("down_blocks.0.resnets.", L, "."))) ++L;
  static const std::pair<const char*, const char*> kResnet[] = {
      {"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},  {"time_emb_proj", "emb_layers.1"},
      {"norm2", "out_layers.0"}, {"conv2", "out_layers.3"}, {"conv_shortcut", "skip_connection"}};
  const auto resnet_part = [](const std::string& rest) {  // "norm1.weight" -> "in_layers.0.weight"
    const size_t dot = rest.find('.');
    if (dot == std::string::npos) return rest;
    for (const auto& [from, to] : kResnet)
      if (rest.compare(0, dot, from) == 0) return cat(to, rest.substr(dot));
    return rest;
  };
  // "down_blocks.1.resnets.0.norm1.weight" -> {"down_blocks", 1, "resnets", 0, "norm1.weight"}
  struct Parsed {
    std::string blocks;
    int64_t i = -1;
    std::string kind;
    int64_t j = -1;
    std::string rest;
  };
  const auto parse = [](const std::string& key) {
    Parsed p;
    std::vector<std::string> parts;
    size_t start = 0;
    for (int n = 0; n < 4; ++n) {
      const size_t dot = key.find('.', start);
      if (dot == std::string::npos) return Parsed{};
      parts.push_back(key.substr(start, dot - start));
      start = dot + 1;
    }
    p.blocks = parts[0];
    p.kind = parts[2];
    p.rest = key.substr(start);
    for (const std::string& n : {parts[1], parts[3]})  // block numbers: a few digits, or not a block
      if (n.empty() || n.size() > 4 || n.find_first_not_of("0123456789") != std::string::npos)
        return Parsed{};
    p.i = std::stoll(parts[1]);
    p.j = std::stoll(parts[3]);
    return p;
  };
  TensorMap out;
  for (const auto& entry : sd) {
    const std::string& key =
        entry.first;  // a plain reference: C++17 lambdas cannot capture structured bindings
    std::string name = key;
    const auto starts = [&key](const char* prefix) { return key.rfind(prefix, 0) == 0; };
    if (starts("conv_in.")) {
      name = "input_blocks.0.0." + key.substr(8);
    } else if (starts("time_embedding.linear_1.")) {
      name = "time_embed.0." + key.substr(24);
    } else if (starts("time_embedding.linear_2.")) {
      name = "time_embed.2." + key.substr(24);
    } else if (starts("conv_norm_out.")) {
      name = "out.0." + key.substr(14);
    } else if (starts("conv_out.")) {
      name = "out.2." + key.substr(9);
    } else if (starts("mid_block.resnets.0.") || starts("mid_block.resnets.1.")) {
      const std::string rest = key.substr(20);  // "norm1.weight"
      name = cat("middle_block.", key[18] == '0' ? 0 : 2, ".", resnet_part(rest));
    } else if (starts("mid_block.attentions.0.")) {
      name = "middle_block.1." + key.substr(23);
    } else if (starts("down_blocks.") || starts("up_blocks.")) {
      const Parsed p = parse(key);
      const bool down = p.blocks == "down_blocks";
      if (p.i >= 0) {
        const int64_t first = down ? 1 + p.i * (L + 1) : p.i * (L + 1);
        if (p.kind == "resnets") {
          name = cat(down ? "input_blocks." : "output_blocks.", first + p.j, ".0.", resnet_part(p.rest));
        } else if (p.kind == "attentions") {
          name = cat(down ? "input_blocks." : "output_blocks.", first + p.j, ".1.", p.rest);
        } else if (p.kind == "downsamplers" && p.rest.rfind("conv.", 0) == 0) {
          name = cat("input_blocks.", first + L, ".0.op.", p.rest.substr(5));
        } else if (p.kind == "upsamplers") {
          const bool attends = has_prefix(sd, cat("up_blocks.", p.i, ".attentions."));
          name = cat("output_blocks.", first + L, attends ? ".2." : ".1.", p.rest);
        }
      }
    }
    out.emplace(std::move(name), entry.second);
  }
  return out;
}

LoadedUNet load_sd_unet(const std::string& path, const std::string& original_config, torch::Device device) {
  return load_sd_unet(read_checkpoint(path), original_config, device);
}

LoadedUNet load_sd_unet(Checkpoint ckpt, const std::string& original_config, torch::Device device) {
  const std::string& path = ckpt.path;
  const std::string prefix = "model.diffusion_model.";
  if (has_prefix(ckpt.tensors, prefix)) ckpt.tensors = tensors_under(ckpt.tensors, prefix);
  ckpt.tensors = unet_weights_from_diffusers(ckpt.tensors);
  UNetConfig config;
  config.infer_from_state_dict(ckpt.tensors);
  if (config.context_dim == 0)
    fail(path,
         " is not a Stable Diffusion UNet: its attention does not read text (no attn2 in middle_block.1)");
  // Stable Diffusion's own rule, then what the files say.
  config.num_heads = 8;
  config.num_head_channels = config.context_dim == 768 ? -1 : 64;
  // Each attention level's width, to turn a per-level head count into one head width.
  const auto head_width = [&](const std::vector<int64_t>& heads, const std::string& where) {
    std::vector<int64_t> widths;
    for (size_t i = 0; i < config.channel_mult.size(); ++i)
      widths.push_back(config.model_channels * config.channel_mult[i]);
    int64_t width = 0;
    for (size_t i = 0; i < heads.size() && i < widths.size(); ++i) {
      if (!config.attention_levels[i]) continue;
      if (heads[i] <= 0 || widths[i] % heads[i] != 0 || (width != 0 && widths[i] / heads[i] != width))
        fail(where, ": heads per level that are not one head width (", widths[i], " channels, ", heads[i],
             " heads) are not supported");
      width = widths[i] / heads[i];
    }
    return width;
  };
  if (!ckpt.configs.config_json.empty()) {
    const std::string where = (std::filesystem::path(path).parent_path() / ckpt.configs.config_name).string();
    const nlohmann::json j = parse_json_object(ckpt.configs.config_json, "UNet config", where);
    for (const char* key : {"addition_embed_type", "class_embed_type", "encoder_hid_dim"})
      if (j.contains(key) && !j[key].is_null())
        fail(where, ": ", key, " (SDXL's and other models' added conditioning) is not supported");
    require_supported(j, "transformer_layers_per_block", 1, where);
    require_supported(j, "only_cross_attention", false, where);
    require_supported(j, "resnet_time_scale_shift", "default", where);
    require_supported(j, "time_embedding_type", "positional", where);
    require_supported(j, "flip_sin_to_cos", true, where);
    require_supported(j, "freq_shift", 0, where);
    require_supported(j, "norm_num_groups", 32, where);
    require_supported(j, "act_fn", "silu", where);
    require_supported(j, "norm_eps", 1e-5, where);
    require_supported(j, "downsample_padding", 1, where);
    require_supported(j, "mid_block_scale_factor", 1, where);
    // diffusers calls the head count attention_head_dim (num_attention_heads when given): one for every
    // level, or one per level.
    const nlohmann::json& heads = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null()
                                      ? j["num_attention_heads"]
                                      : j.value("attention_head_dim", nlohmann::json());
    if (heads.is_number_integer()) {
      config.num_heads = heads.get<int64_t>();
      config.num_head_channels = -1;
      if (config.num_heads <= 0 || config.num_heads > 4096)
        fail(where, ": ", heads.dump(), " heads is out of range");
    } else if (heads.is_array()) {
      std::vector<int64_t> list;
      for (const auto& h : heads) {
        if (!h.is_number_integer())
          fail(where, ": attention_head_dim ", heads.dump(), " is not a list of head counts");
        list.push_back(h.get<int64_t>());
      }
      if (list.size() != config.channel_mult.size())
        fail(where, ": ", list.size(), " head counts for ", config.channel_mult.size(), " levels");
      config.num_head_channels = head_width(list, where);
    } else if (!heads.is_null()) {
      fail(where, ": attention_head_dim ", heads.dump(), " is not a head count");
    }
  } else if (!original_config.empty()) {
    const std::string text = read_small_file(original_config, kMaxConfigBytes);
    try {
      const YAML::Node params = YAML::Load(text)["model"]["params"]["unet_config"]["params"];
      if (!params.IsMap())
        fail(original_config, ": no model.params.unet_config.params (latent diffusion's config)");
      const int64_t heads = params["num_heads"] ? params["num_heads"].as<int64_t>() : -1;
      const int64_t width = params["num_head_channels"] ? params["num_head_channels"].as<int64_t>() : -1;
      if (params["transformer_depth"] && params["transformer_depth"].as<int64_t>() != 1)
        fail(original_config, ": transformer_depth other than 1 is not supported");
      if (width > 0) {
        config.num_head_channels = width;
      } else if (heads > 0) {
        config.num_heads = heads;
        config.num_head_channels = -1;
      } else {
        fail(original_config, ": neither num_heads nor num_head_channels is set");
      }
    } catch (const YAML::Exception& e) {
      fail(original_config, ": not a readable latent diffusion config: ", e.msg);
    }
  }
  LoadedUNet out;
  out.model = build_strict<UNetModel>(config, ckpt.tensors, ckpt.path);
  out.model->to(device);
  out.model->eval();
  out.path = ckpt.path;
  return out;
}

LoadedUNet load_unet(const std::string& checkpoint_path, const std::string& flags_path,
                     torch::Device device) {
  const Checkpoint ckpt = read_checkpoint(checkpoint_path);
  UNetConfig config;
  config.infer_from_state_dict(ckpt.tensors);
  LoadedUNet out;
  if (!flags_path.empty())
    apply_unet_flags(read_small_file(flags_path, kMaxConfigBytes), flags_path, config, out);
  if (out.image_size < 8 || out.image_size > 4096) fail("image_size ", out.image_size, " is out of range");
  out.model = build_strict<UNetModel>(config, ckpt.tensors, ckpt.path);
  out.model->to(device);
  out.model->eval();
  out.path = ckpt.path;
  return out;
}

}  // namespace clipguide

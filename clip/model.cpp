// Ref: openai/CLIP clip/model.py (ResidualAttentionBlock, Transformer, VisionTransformer, ModifiedResNet,
// AttentionPool2d, build_model); transformers models/siglip/modeling_siglip.py (SiglipVisionEmbeddings,
// SiglipMultiheadAttentionPoolingHead, SiglipTextTransformer).
#include "clip/model.h"

#include <cmath>
#include <limits>
#include <set>

#include "core/dense.h"
#include "core/device.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "io/state_dict.h"

namespace clipguide {

namespace F = torch::nn::functional;

// LayerNorm computed in fp32 whatever the input dtype, as clip/model.py's LayerNorm subclass does.
class LayerNorm : public torch::nn::Module {
 public:
  LayerNorm(int64_t width, double eps) : eps_(eps) {
    weight = register_parameter("weight", torch::ones({width}));
    bias = register_parameter("bias", torch::zeros({width}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto type = x.scalar_type();
    return torch::layer_norm(x.to(torch::kFloat), {weight.size(0)}, weight.to(torch::kFloat),
                             bias.to(torch::kFloat), eps_)
        .to(type);
  }
  torch::Tensor weight, bias;

 private:
  double eps_;
};

namespace {

// GELU whose backward gets a contiguous gradient: libtorch 1.13's exact-GELU backward kernel (Debian's)
// returns wrong values for a non-contiguous incoming gradient, which dense()'s convolution path produces
// (found by the open_clip ViT-H-14 fixture's pixel gradient; libtorch 2.x is right either way).
class Gelu : public torch::autograd::Function<Gelu> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const std::string& approximate) {
    ctx->save_for_backward({x});
    ctx->saved_data["approximate"] = approximate;
    return torch::gelu(x, approximate);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const std::string approximate = ctx->saved_data["approximate"].toStringRef();
    return {torch::gelu_backward(grads[0].contiguous(), x.contiguous(), approximate), torch::Tensor()};
  }
};

torch::Tensor activation(const torch::Tensor& x, const std::string& kind) {
  if (kind == "gelu") return Gelu::apply(x, "none");
  if (kind == "gelu_tanh") return Gelu::apply(x, "tanh");
  // QuickGELU, x * sigmoid(1.702 x), written as silu(1.702 x) / 1.702: the same function through one fused
  // kernel (forward and backward) instead of three.
  constexpr double k = 1.702;
  return torch::silu(x * k) * (1.0 / k);
}

// nn.MultiheadAttention's parameters (in_proj_weight, in_proj_bias, out_proj) with batch-first math, laid out
// as PyTorch's own implementation does so that the batched matmuls need no extra copies.
class MultiheadAttention : public torch::nn::Module {
 public:
  MultiheadAttention(int64_t width, int64_t heads) : heads_(heads) {
    TORCH_CHECK(heads > 0 && width % heads == 0, "attention width ", width, " is not divisible by ", heads,
                " heads");
    in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
    in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * width}));
    out_proj = register_module("out_proj", torch::nn::Linear(width, width));
  }
  // x: [B, L, D] -> [B, queries, D], the attention output for the first `queries` tokens (which attend to all
  // L).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, int64_t queries) {
    const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
    const torch::Tensor qkv = dense(x, in_proj_weight, in_proj_bias)  // [B, L, 3D]
                                  .view({B, L, 3, heads_, D / heads_})
                                  .permute({2, 0, 3, 1, 4});  // -> [3, B, H, L, Dh]
    return attend(qkv[0].narrow(2, 0, queries), qkv[1], qkv[2],
                  mask.defined() ? mask.narrow(0, 0, queries) : mask);
  }
  // Cross-attention, as nn.MultiheadAttention(query, x, x): query [B, Lq, D] attends to x [B, L, D].
  torch::Tensor cross(const torch::Tensor& query, const torch::Tensor& x) {
    const int64_t B = x.size(0), L = x.size(1), D = x.size(2), Lq = query.size(1);
    const torch::Tensor q = dense(query, in_proj_weight.narrow(0, 0, D), in_proj_bias.narrow(0, 0, D))
                                .view({B, Lq, heads_, D / heads_})
                                .transpose(1, 2);  // [B, Lq, H, Dh] -> [B, H, Lq, Dh]
    const torch::Tensor kv = dense(x, in_proj_weight.narrow(0, D, 2 * D), in_proj_bias.narrow(0, D, 2 * D))
                                 .view({B, L, 2, heads_, D / heads_})
                                 .permute({2, 0, 3, 1, 4});  // [B, L, 2, H, Dh] -> [2, B, H, L, Dh]
    return attend(q, kv[0], kv[1], {});
  }
  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  // softmax(q k^T / sqrt(Dh) + mask) v, then out_proj: q [B, H, Lq, Dh], k and v [B, H, L, Dh], mask additive
  // [Lq, L] or undefined -> [B, Lq, D].
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& mask) {
    const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Dh = q.size(3);
#if CLIPGUIDE_HAS_SDPA
    // The fused kernel (flash attention on CPU and CUDA): the same math.
    const auto attn_mask = mask.defined() ? compat::optional<torch::Tensor>(mask.to(q.scalar_type()))
                                          : compat::optional<torch::Tensor>();
    const torch::Tensor out = at::scaled_dot_product_attention(q, k, v, attn_mask);  // [B, H, Lq, Dh]
#else
    // Batched matmuls over [B*H, ., Dh], laid out as PyTorch's own implementation does.
    const int64_t L = k.size(2);
    const torch::Tensor q3 = (q * (1.0 / std::sqrt(static_cast<double>(Dh)))).reshape({B * H, Lq, Dh});
    torch::Tensor attn = torch::bmm(q3, k.reshape({B * H, L, Dh}).transpose(1, 2));  // [BH, Lq, L]
    if (mask.defined()) attn = attn + mask;
    const torch::Tensor out =
        torch::bmm(torch::softmax(attn, -1), v.reshape({B * H, L, Dh})).view({B, H, Lq, Dh});
#endif
    return dense(out.transpose(1, 2).reshape({B, Lq, H * Dh}),  // [B, H, Lq, Dh] -> [B, Lq, D]
                 out_proj->weight, out_proj->bias);
  }

  int64_t heads_;
};

class Mlp : public torch::nn::Module {
 public:
  // hidden 0: 4 x width, OpenAI's.
  Mlp(int64_t width, int64_t hidden, std::string activation) : activation_(std::move(activation)) {
    if (hidden <= 0) hidden = 4 * width;
    c_fc = register_module("c_fc", torch::nn::Linear(width, hidden));
    c_proj = register_module("c_proj", torch::nn::Linear(hidden, width));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return dense(activation(dense(x, c_fc->weight, c_fc->bias), activation_), c_proj->weight, c_proj->bias);
  }
  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};

 private:
  std::string activation_;
};

class ResidualAttentionBlock : public torch::nn::Module {
 public:
  ResidualAttentionBlock(int64_t width, int64_t heads, const std::string& act, double eps,
                         int64_t mlp_width) {
    attn = register_module("attn", std::make_shared<MultiheadAttention>(width, heads));
    ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(width, eps));
    mlp = register_module("mlp", std::make_shared<Mlp>(width, mlp_width, act));
    ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(width, eps));
  }
  // x: [B, L, D] -> [B, queries, D]: the block's output for the first `queries` tokens.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, int64_t queries) {
    const torch::Tensor h = x.narrow(1, 0, queries) + attn->forward(ln_1->forward(x), mask, queries);
    return h + mlp->forward(ln_2->forward(h));
  }
  std::shared_ptr<MultiheadAttention> attn;
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<Mlp> mlp;
};

}  // namespace

class Transformer : public torch::nn::Module {
 public:
  Transformer(int64_t width, int64_t layers, int64_t heads, const std::string& act, double eps,
              int64_t mlp_width) {
    resblocks = register_module("resblocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i)
      resblocks->push_back(std::make_shared<ResidualAttentionBlock>(width, heads, act, eps, mlp_width));
  }
  // x: [B, L, D]; mask: additive [L, L] or undefined. Returns [B, L, D], or with first_token_only [B, 1, D]:
  // the first token's output, for which the last block computes its attention output and MLP on that token
  // alone (every token still feeds the attention's keys and values), as exact as the full pass.
  // `blocks`: run the first this many blocks only (-1: all).
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask, bool first_token_only = false,
                        int64_t blocks = -1) {
    const size_t count = blocks < 0 ? resblocks->size() : static_cast<size_t>(blocks);
    const size_t last = count - 1;
    for (size_t i = 0; i < count; ++i) {
      const int64_t queries = first_token_only && i == last ? 1 : x.size(1);
      x = resblocks[i]->as<ResidualAttentionBlock>()->forward(x, mask, queries);
    }
    return x;
  }
  torch::nn::ModuleList resblocks{nullptr};
};

namespace {

// SigLIP's pooling head (SiglipMultiheadAttentionPoolingHead, timm's AttentionPoolLatent): a learned probe
// attends to every token, then a residual MLP. [B, L, D] -> [B, D]
class AttentionPoolHead : public torch::nn::Module {
 public:
  AttentionPoolHead(int64_t width, int64_t heads, const std::string& act, double eps, int64_t mlp_width) {
    probe = register_parameter("probe", torch::zeros({1, 1, width}));
    attn = register_module("attn", std::make_shared<MultiheadAttention>(width, heads));
    ln = register_module("ln", std::make_shared<LayerNorm>(width, eps));
    mlp = register_module("mlp", std::make_shared<Mlp>(width, mlp_width, act));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor h = attn->cross(probe.to(x.scalar_type()).expand({x.size(0), 1, x.size(2)}), x);
    return (h + mlp->forward(ln->forward(h))).select(1, 0);
  }
  torch::Tensor probe;
  std::shared_ptr<MultiheadAttention> attn;
  std::shared_ptr<LayerNorm> ln;
  std::shared_ptr<Mlp> mlp;
};

// OpenAI's VisionTransformer (class token, ln_pre, the class token's features projected), or SigLIP's (patch
// bias, no class token, every token through ln_post into the attention-pool head, no projection).
class VisionTransformer : public VisualEncoder {
 public:
  explicit VisionTransformer(const ClipConfig& c) : patch_size_(c.vision_patch_size), siglip_(c.siglip()) {
    const int64_t width = c.vision_width, grid = c.image_resolution / c.vision_patch_size;
    // Registered in OpenAI's order: a fresh model (the toy world trains one) draws its initial weights in it.
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, width, c.vision_patch_size)
                                                           .stride(c.vision_patch_size)
                                                           .bias(siglip_)));
    if (!siglip_) class_embedding = register_parameter("class_embedding", torch::zeros({width}));
    positional_embedding =
        register_parameter("positional_embedding", torch::zeros({grid * grid + (siglip_ ? 0 : 1), width}));
    if (!siglip_)
      ln_pre = register_module("ln_pre", std::make_shared<LayerNorm>(width, c.vision_layer_norm_eps));
    transformer = register_module(
        "transformer",
        std::make_shared<Transformer>(width, c.vision_layers.at(0), c.vision_heads, c.vision_activation,
                                      c.vision_layer_norm_eps, c.vision_mlp_width));
    ln_post = register_module("ln_post", std::make_shared<LayerNorm>(width, c.vision_layer_norm_eps));
    if (siglip_) {
      attn_pool = register_module(
          "attn_pool", std::make_shared<AttentionPoolHead>(width, c.vision_heads, c.vision_activation,
                                                           c.vision_layer_norm_eps, c.vision_mlp_width));
    } else {
      proj = register_parameter("proj", torch::zeros({width, c.embed_dim}));
    }
  }
  torch::Tensor forward(const torch::Tensor& pixels) override {
    const torch::Tensor image = pixels.to(conv1->weight.scalar_type());
    torch::Tensor x;
    if (image.scalar_type() == torch::kFloat && !compat::autocast_enabled(image.device().type())) {
      // In fp32, conv1 (kernel = stride = patch) as one matrix product over the flattened patches, in the
      // weight's (c, y, x) order: its backward to the pixels is then a GEMM too, where the strided
      // convolution's ran at a tenth of GEMM speed (bench/guide --profile). Rows or columns past the last
      // whole patch are left out, as the convolution leaves them. Lower precisions keep the convolution: on a
      // CPU without bf16 units, libtorch 1.13's bf16 GEMM here trained the toy CLIP measurably worse
      // (tests/test_toyworld.cpp).
      const int64_t p = patch_size_;
      const int64_t B = image.size(0), C = image.size(1), gh = image.size(2) / p, gw = image.size(3) / p;
      x = image.narrow(2, 0, gh * p)
              .narrow(3, 0, gw * p)
              .reshape({B, C, gh, p, gw, p})
              .permute({0, 2, 4, 1, 3, 5})  // -> [B, gh, gw, C, p, p]
              .reshape({B, gh * gw, C * p * p});
      x = dense(x, conv1->weight.flatten(1), siglip_ ? conv1->bias : torch::Tensor());  // [B, g*g, W]
    } else {
      x = conv1(image).flatten(2).transpose(1, 2);  // [B, W, g, g] -> [B, g*g, W]
    }
    if (siglip_) {
      x = transformer->forward(x + positional_embedding.to(x.scalar_type()), {});
      return attn_pool->forward(ln_post->forward(x));
    }
    torch::Tensor cls = class_embedding.to(x.scalar_type()).expand({x.size(0), 1, x.size(2)});
    x = torch::cat({cls, x}, 1) + positional_embedding.to(x.scalar_type());  // [B, g*g + 1, W]
    x = transformer->forward(ln_pre->forward(x), {}, /*first_token_only=*/true);
    x = ln_post->forward(x.select(1, 0));  // class token: [B, W]
    return torch::matmul(x, proj);
  }
  torch::nn::Conv2d conv1{nullptr};
  torch::Tensor class_embedding, positional_embedding, proj;
  std::shared_ptr<LayerNorm> ln_pre, ln_post;
  std::shared_ptr<Transformer> transformer;
  std::shared_ptr<AttentionPoolHead> attn_pool;

 private:
  int64_t patch_size_;
  bool siglip_;
};

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}

// Holder for downsample's named entries "0" (conv) and "1" (BatchNorm); "-1" is the parameter-free AvgPool2d.
class Downsample : public torch::nn::Module {
 public:
  Downsample(int64_t in, int64_t out, int64_t stride) : stride_(stride) {
    conv_ = register_module("0", conv(in, out, 1));
    bn_ = register_module("1", torch::nn::BatchNorm2d(out));
  }
  torch::Tensor forward(torch::Tensor x) {
    if (stride_ > 1) x = torch::avg_pool2d(x, stride_);
    return bn_(conv_(x));
  }

 private:
  int64_t stride_;
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
};

class Bottleneck : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t inplanes, int64_t planes, int64_t stride) : stride_(stride) {
    conv1 = register_module("conv1", conv(inplanes, planes, 1));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", conv(planes, planes, 3));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
    conv3 = register_module("conv3", conv(planes, planes * kExpansion, 1));
    bn3 = register_module("bn3", torch::nn::BatchNorm2d(planes * kExpansion));
    if (stride > 1 || inplanes != planes * kExpansion) {
      downsample =
          register_module("downsample", std::make_shared<Downsample>(inplanes, planes * kExpansion, stride));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = torch::relu(bn1(conv1(x)));
    out = torch::relu(bn2(conv2(out)));
    if (stride_ > 1) out = torch::avg_pool2d(out, stride_);
    out = bn3(conv3(out));
    return torch::relu(out + (downsample ? downsample->forward(x) : x));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  std::shared_ptr<Downsample> downsample;

 private:
  int64_t stride_;
};

class AttentionPool2d : public torch::nn::Module {
 public:
  AttentionPool2d(int64_t spacial_dim, int64_t embed_dim, int64_t heads, int64_t output_dim) : heads_(heads) {
    TORCH_CHECK(heads > 0 && embed_dim % heads == 0, "attnpool width ", embed_dim, " is not divisible by ",
                heads, " heads");
    positional_embedding =
        register_parameter("positional_embedding", torch::zeros({spacial_dim * spacial_dim + 1, embed_dim}));
    k_proj = register_module("k_proj", torch::nn::Linear(embed_dim, embed_dim));
    q_proj = register_module("q_proj", torch::nn::Linear(embed_dim, embed_dim));
    v_proj = register_module("v_proj", torch::nn::Linear(embed_dim, embed_dim));
    c_proj = register_module("c_proj", torch::nn::Linear(embed_dim, output_dim));
  }
  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = input.flatten(2).transpose(1, 2);  // [B, C, H, W] -> [B, HW, C]
    x = torch::cat({x.mean(1, true), x}, 1);             // [B, HW + 1, C]
    x = x + positional_embedding.to(x.scalar_type());
    const int64_t B = x.size(0), L = x.size(1), C = x.size(2), Dh = C / heads_;
    torch::Tensor q = q_proj(x.narrow(1, 0, 1)).reshape({B, 1, heads_, Dh}).transpose(1, 2);  // [B, H, 1, Dh]
    torch::Tensor k = k_proj(x).reshape({B, L, heads_, Dh}).transpose(1, 2);                  // [B, H, L, Dh]
    torch::Tensor v = v_proj(x).reshape({B, L, heads_, Dh}).transpose(1, 2);
    q = q * (1.0 / std::sqrt(static_cast<double>(Dh)));
    torch::Tensor attn = torch::softmax(torch::matmul(q, k.transpose(-2, -1)), -1);  // [B, H, 1, L]
    torch::Tensor out = torch::matmul(attn, v).transpose(1, 2).reshape({B, C});  // [B, H, 1, Dh] -> [B, C]
    return c_proj(out);
  }
  torch::Tensor positional_embedding;
  torch::nn::Linear k_proj{nullptr}, q_proj{nullptr}, v_proj{nullptr}, c_proj{nullptr};

 private:
  int64_t heads_;
};

class ModifiedResNet : public VisualEncoder {
 public:
  explicit ModifiedResNet(const ClipConfig& c) {
    const int64_t width = c.vision_width;
    conv1 = register_module("conv1", conv(3, width / 2, 3, 2));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(width / 2));
    conv2 = register_module("conv2", conv(width / 2, width / 2, 3));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(width / 2));
    conv3 = register_module("conv3", conv(width / 2, width, 3));
    bn3 = register_module("bn3", torch::nn::BatchNorm2d(width));
    int64_t inplanes = width;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t planes = width << stage;
      auto layer = torch::nn::ModuleList();
      for (int64_t b = 0; b < c.vision_layers.at(stage); ++b) {
        layer->push_back(std::make_shared<Bottleneck>(inplanes, planes, b == 0 && stage > 0 ? 2 : 1));
        inplanes = planes * Bottleneck::kExpansion;
      }
      layers.push_back(register_module(cat("layer", stage + 1), layer));
    }
    attnpool = register_module(
        "attnpool",
        std::make_shared<AttentionPool2d>(c.image_resolution / 32, width * 32, c.vision_heads, c.embed_dim));
  }
  torch::Tensor forward(const torch::Tensor& pixels) override {
    // Channels-last activations let oneDNN run the convolutions (faster on CPU than NCHW); same values.
    torch::Tensor x = pixels.to(conv1->weight.scalar_type()).contiguous(torch::MemoryFormat::ChannelsLast);
    x = torch::relu(bn1(conv1(x)));
    x = torch::relu(bn2(conv2(x)));
    x = torch::relu(bn3(conv3(x)));
    x = torch::avg_pool2d(x, 2);
    for (auto& layer : layers) {
      for (const auto& block : *layer) x = block->as<Bottleneck>()->forward(x);
    }
    return attnpool->forward(x);
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  std::vector<torch::nn::ModuleList> layers;
  std::shared_ptr<AttentionPool2d> attnpool;
};

const torch::Tensor& require(const TensorMap& sd, const std::string& key) {
  auto it = sd.find(key);
  if (it == sd.end()) fail("cannot infer the CLIP architecture: weight '", key, "' is missing");
  return it->second;
}

// Number of distinct values of the dotted component at `index` among keys starting with `prefix`.
int64_t count_distinct(const TensorMap& sd, const std::string& prefix, size_t index) {
  std::set<std::string> seen;
  for (const auto& kv : sd) {
    if (kv.first.rfind(prefix, 0) != 0) continue;
    size_t start = 0;
    for (size_t i = 0; i < index && start != std::string::npos; ++i) {
      start = kv.first.find('.', start);
      if (start != std::string::npos) ++start;
    }
    if (start == std::string::npos) continue;
    seen.insert(kv.first.substr(start, kv.first.find('.', start) - start));
  }
  return static_cast<int64_t>(seen.size());
}

int64_t isqrt_exact(int64_t n, const std::string& what) {
  const auto r = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  if (r * r != n) fail("cannot infer the CLIP architecture: ", what, " (", n, ") is not a square grid");
  return r;
}

}  // namespace

ClipConfig ClipConfig::from_state_dict(const TensorMap& sd) {
  ClipConfig c;
  if (sd.count("visual.attn_pool.probe") != 0) c.family = ModelFamily::Siglip;
  c.image_tower =
      std::any_of(sd.begin(), sd.end(), [](const auto& kv) { return kv.first.rfind("visual.", 0) == 0; });
  c.vision_resnet = c.image_tower && !c.siglip() && sd.count("visual.proj") == 0;
  if (!c.image_tower) {
    // A text tower alone: its width from the final LayerNorm, its projection if it has one.
    c.vision_heads = 0;
  } else if (!c.vision_resnet) {
    const torch::Tensor& conv1 = require(sd, "visual.conv1.weight");  // [width, 3, patch, patch]
    TORCH_CHECK(conv1.dim() == 4, "visual.conv1.weight must be 4-D");
    c.vision_width = conv1.size(0);
    c.vision_patch_size = conv1.size(-1);
    c.vision_layers = {count_distinct(sd, "visual.transformer.resblocks.", 3)};
    c.vision_mlp_width = require(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight").size(0);
    const int64_t tokens = require(sd, "visual.positional_embedding").size(0);
    const int64_t grid = c.siglip() ? isqrt_exact(tokens, "visual.positional_embedding rows")
                                    : isqrt_exact(tokens - 1, "visual.positional_embedding rows - 1");
    c.image_resolution = c.vision_patch_size * grid;
  } else {
    for (int b = 1; b <= 4; ++b)
      c.vision_layers.push_back(count_distinct(sd, cat("visual.layer", b, "."), 2));
    c.vision_width = require(sd, "visual.layer1.0.conv1.weight").size(0);
    const int64_t grid = isqrt_exact(require(sd, "visual.attnpool.positional_embedding").size(0) - 1,
                                     "visual.attnpool.positional_embedding rows - 1");
    c.image_resolution = grid * 32;
  }
  if (c.image_tower) {
    c.vision_heads = c.vision_resnet ? c.vision_width * 32 / 64 : c.vision_width / 64;
    if (c.vision_heads < 1) c.vision_heads = 1;
  }
  c.text_tower = sd.count("text_projection") != 0 || sd.count("token_embedding.weight") != 0;
  if (!c.text_tower) {  // an image tower alone: its embedding width from its own projection
    if (c.siglip()) fail("a SigLIP image tower without its text tower is not supported");
    c.embed_dim = c.vision_resnet ? require(sd, "visual.attnpool.c_proj.weight").size(0)
                                  : require(sd, "visual.proj").size(1);
    return c;
  }
  if (!c.image_tower && sd.count("text_projection") == 0) {
    c.embed_dim = 0;  // CLIPTextModel: the states, no projection
  } else {
    const torch::Tensor& text_projection = require(sd, "text_projection");
    TORCH_CHECK(text_projection.dim() == 2, "text_projection must be 2-D");
    c.embed_dim = text_projection.size(1);
  }
  c.context_length = require(sd, "positional_embedding").size(0);
  c.vocab_size = require(sd, "token_embedding.weight").size(0);
  c.transformer_width = require(sd, "ln_final.weight").size(0);
  c.transformer_heads = c.transformer_width / 64;
  c.transformer_layers = count_distinct(sd, "transformer.resblocks.", 2);
  c.text_mlp_width = require(sd, "transformer.resblocks.0.mlp.c_fc.weight").size(0);
  if (c.siglip()) {  // SigLIP's published defaults; a config says otherwise where it differs
    c.vision_activation = c.text_activation = "gelu_tanh";
    c.vision_layer_norm_eps = c.text_layer_norm_eps = 1e-6;
    c.preprocess.mean = c.preprocess.std = {0.5f, 0.5f, 0.5f};
    c.preprocess.resize = ResizeMode::Squash;
  }
  if (c.transformer_heads < 1) c.transformer_heads = 1;
  return c;
}

std::string ClipConfig::architecture() const {
  if (!image_tower) {
    return cat(family == ModelFamily::Siglip ? "SigLIP" : "CLIP", " text tower (width ", transformer_width,
               ", ", transformer_layers, " layers",
               embed_dim > 0 ? cat(", ", embed_dim, "-d projection") : "", ")");
  }
  if (siglip()) {
    ClipConfig vit = *this;
    vit.family = ModelFamily::Clip;
    return "SigLIP " + vit.architecture();
  }
  if (vision_resnet) {
    struct Known {
      std::vector<int64_t> layers;
      int64_t width;
      const char* name;
    };
    static const Known known[] = {{{3, 4, 6, 3}, 64, "RN50"},
                                  {{3, 4, 23, 3}, 64, "RN101"},
                                  {{4, 6, 10, 6}, 80, "RN50x4"},
                                  {{6, 8, 18, 8}, 96, "RN50x16"},
                                  {{3, 15, 36, 10}, 128, "RN50x64"}};
    for (const auto& k : known) {
      if (k.layers == vision_layers && k.width == vision_width) return k.name;
    }
    return cat("ModifiedResNet(layers=", vision_layers[0], "-", vision_layers[1], "-", vision_layers[2], "-",
               vision_layers[3], ", width=", vision_width, ", ", image_resolution, "px)");
  }
  struct Size {
    int64_t width, layers;
    const char* letter;
  };
  static const Size sizes[] = {
      {768, 12, "B"}, {1024, 24, "L"}, {1280, 32, "H"}, {1408, 40, "g"}, {1664, 48, "bigG"}};
  for (const auto& s : sizes) {
    if (s.width == vision_width && s.layers == vision_layers[0]) {
      return cat("ViT-", s.letter, "/", vision_patch_size,
                 image_resolution == 224 ? "" : cat("@", image_resolution, "px"));
    }
  }
  return cat("ViT(width=", vision_width, ", layers=", vision_layers[0], ", patch=", vision_patch_size, ", ",
             image_resolution, "px)");
}

ClipModel::ClipModel(const ClipConfig& config) : config_(config) {
  if (!config.image_tower) {
    if (!config.text_tower) fail("a CLIP model needs at least one of its towers");
  } else if (config.vision_resnet) {
    visual_ = register_module("visual", std::make_shared<ModifiedResNet>(config));
  } else {
    visual_ = register_module("visual", std::make_shared<VisionTransformer>(config));
  }
  if (!config.text_tower) {
    eval();
    return;
  }
  transformer_ = register_module(
      "transformer", std::make_shared<Transformer>(config.transformer_width, config.transformer_layers,
                                                   config.transformer_heads, config.text_activation,
                                                   config.text_layer_norm_eps, config.text_mlp_width));
  token_embedding_ =
      register_module("token_embedding", torch::nn::Embedding(config.vocab_size, config.transformer_width));
  positional_embedding_ = register_parameter("positional_embedding",
                                             torch::zeros({config.context_length, config.transformer_width}));
  ln_final_ = register_module(
      "ln_final", std::make_shared<LayerNorm>(config.transformer_width, config.text_layer_norm_eps));
  if (config.embed_dim > 0) {
    text_projection_ =
        register_parameter("text_projection", torch::zeros({config.transformer_width, config.embed_dim}));
  }
  // A text tower alone scores nothing: no logit scale (Stable Diffusion's loader drops a CompVis file's).
  if (config.image_tower) logit_scale_ = register_parameter("logit_scale", torch::zeros({}));
  if (config.siglip()) {
    text_projection_bias_ = register_parameter("text_projection_bias", torch::zeros({config.embed_dim}));
    logit_bias_ = register_parameter("logit_bias", torch::zeros({}));
  }
  // Additive causal mask: -inf above the diagonal. [L, L]
  causal_mask_ = register_buffer("causal_mask", torch::full({config.context_length, config.context_length},
                                                            -std::numeric_limits<float>::infinity())
                                                    .triu(1));
  eval();
}

double ClipModel::parameter_elements(const ClipConfig& c) {
  namespace n = elements;
  auto block = [](double w, double mlp) {  // attention, MLP (0: 4 x width) and two LayerNorms
    if (mlp <= 0) mlp = 4 * w;
    return n::linear(w, 3 * w) + n::linear(w, w) + n::linear(w, mlp) + n::linear(mlp, w) + 2 * n::norm(w);
  };
  auto transformer = [&](double w, double layers, int64_t mlp) {
    return layers * block(w, static_cast<double>(mlp));
  };
  const double e = static_cast<double>(c.embed_dim), w = static_cast<double>(c.vision_width);
  double visual = 0;
  if (!c.image_tower) {
    // no image tower
  } else if (c.vision_resnet) {
    visual = n::conv(3, w / 2, 3, false) + n::conv(w / 2, w / 2, 3, false) + n::conv(w / 2, w, 3, false) +
             2 * n::batch_norm(w / 2) + n::batch_norm(w);
    double inplanes = w;
    for (size_t stage = 0; stage < c.vision_layers.size(); ++stage) {
      const double planes = w * static_cast<double>(int64_t{1} << stage);
      for (int64_t b = 0; b < c.vision_layers[stage]; ++b) {
        visual += n::conv(inplanes, planes, 1, false) + n::conv(planes, planes, 3, false) +
                  n::conv(planes, 4 * planes, 1, false) + 2 * n::batch_norm(planes) +
                  n::batch_norm(4 * planes);
        if ((b == 0 && stage > 0) || inplanes != 4 * planes)
          visual += n::conv(inplanes, 4 * planes, 1, false) + n::batch_norm(4 * planes);
        inplanes = 4 * planes;
      }
    }
    const double side = static_cast<double>(c.image_resolution / 32), d = 32 * w;
    visual += (side * side + 1) * d + 3 * n::linear(d, d) + n::linear(d, e);  // the attention pool
  } else {
    const double p = static_cast<double>(c.vision_patch_size);
    const double grid =
        static_cast<double>(c.vision_patch_size > 0 ? c.image_resolution / c.vision_patch_size : 0);
    const double layers = static_cast<double>(c.vision_layers.empty() ? 0 : c.vision_layers[0]);
    if (c.siglip()) {  // patch bias, no class token, ln_post, the pool head (probe, attention, LayerNorm,
                       // MLP)
      visual = n::conv(3, w, p, true) + grid * grid * w + n::norm(w) +
               transformer(w, layers, c.vision_mlp_width) + w +
               block(w, static_cast<double>(c.vision_mlp_width)) - n::norm(w);
    } else {
      visual = n::conv(3, w, p, false) + w + (grid * grid + 1) * w + 2 * n::norm(w) + w * e +
               transformer(w, layers, c.vision_mlp_width);
    }
  }
  if (!c.text_tower) return visual;
  const double tw = static_cast<double>(c.transformer_width), ctx = static_cast<double>(c.context_length);
  const double text = transformer(tw, static_cast<double>(c.transformer_layers), c.text_mlp_width) +
                      static_cast<double>(c.vocab_size) * tw + ctx * tw + n::norm(tw) + tw * e +
                      (c.image_tower ? 1 : 0) + ctx * ctx +  // ... the logit scale and the causal mask
                      (c.siglip() ? e + 1 : 0);              // SigLIP's projection bias and logit bias
  return visual + text;
}

torch::Tensor ClipModel::encode_image(const torch::Tensor& pixels) {
  if (!config_.image_tower)
    fail("this ", config_.architecture(), " is a text tower alone: it has no image tower");
  TORCH_CHECK(pixels.dim() == 4 && pixels.size(1) == 3, "encode_image expects [B, 3, H, W] pixels, got ",
              pixels.sizes());
  TORCH_CHECK(pixels.size(2) == config_.image_resolution && pixels.size(3) == config_.image_resolution,
              "encode_image expects ", config_.image_resolution, "x", config_.image_resolution,
              " pixels, got ", pixels.size(2), "x", pixels.size(3));
  return visual_->forward(pixels);
}

torch::Tensor ClipModel::encode_text(const torch::Tensor& tokens) {
  if (!config_.text_tower)
    fail("this ", config_.architecture(), " is an image tower alone: it has no text tower");
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) == config_.context_length, "encode_text expects [B, ",
              config_.context_length, "] tokens, got ", tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == torch::kLong, "encode_text expects int64 tokens");
  if (config_.embed_dim == 0)
    fail("this ", config_.architecture(), " has no projection to an embedding; it gives per-token states");
  torch::Tensor x = token_embedding_(tokens) + positional_embedding_;  // [B, L, D]
  if (config_.siglip()) {  // bidirectional; the last position's features, projected with a bias
    x = ln_final_->forward(transformer_->forward(x, {}).select(1, -1));
    return torch::addmm(text_projection_bias_, x, text_projection_);
  }
  x = transformer_->forward(x, causal_mask_.to(x.scalar_type()));
  x = ln_final_->forward(x);
  // Features at the end-of-text token, which has the highest id in the vocabulary. [B, D]
  const torch::Tensor eot = tokens.argmax(-1);
  x = x.index({torch::arange(x.size(0), eot.options()), eot});
  return torch::matmul(x, text_projection_);
}

torch::Tensor ClipModel::encode_text_states(const torch::Tensor& tokens, int64_t skip_last_layers) {
  if (!config_.text_tower)
    fail("this ", config_.architecture(), " is an image tower alone: it has no text tower");
  if (config_.siglip()) fail("per-token text states are read from CLIP's causal text tower, not SigLIP's");
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) == config_.context_length,
              "encode_text_states expects [B, ", config_.context_length, "] tokens, got ", tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == torch::kLong, "encode_text_states expects int64 tokens");
  if (skip_last_layers < 0 || skip_last_layers >= config_.transformer_layers)
    fail("cannot leave out ", skip_last_layers, " of the text tower's ", config_.transformer_layers,
         " layers");
  const torch::Tensor x = token_embedding_(tokens) + positional_embedding_;  // [B, L, D]
  return ln_final_->forward(transformer_->forward(x, causal_mask_.to(x.scalar_type()), false,
                                                  config_.transformer_layers - skip_last_layers));
}

bool ClipModel::is_known_extra(const std::string& key) {
  // TorchScript archives keep these ints beside the weights; BatchNorm counters and HF position ids are not
  // used by inference.
  static const std::set<std::string> exact = {"input_resolution", "context_length", "vocab_size",
                                              "text_model.embeddings.position_ids",
                                              "vision_model.embeddings.position_ids"};
  return exact.count(key) != 0 || is_batchnorm_counter(key);
}

double ClipModel::logit_bias() const { return logit_bias_.defined() ? logit_bias_.item<double>() : 0.0; }

torch::Tensor ClipModel::logit_bias_tensor() const {
  return logit_bias_.defined() ? logit_bias_ : torch::zeros({}, logit_scale_.options());
}

void ClipModel::load_weights(const TensorMap& sd, const std::string& source) {
  StrictLoad how;
  how.source = source;
  how.what = cat("a ", config_.architecture(), " CLIP");
  how.is_known_extra = is_known_extra;
  how.derived_buffers = {"causal_mask"};
  load_strict(*this, sd, how);
}

}  // namespace clipguide

// Ref: openai/guided-diffusion guided_diffusion/unet.py (UNetModel, ResBlock, AttentionBlock,
// QKVAttentionLegacy, QKVAttention, Upsample, Downsample), nn.py (timestep_embedding, GroupNorm32).
#include "generators/unet.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
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

// A layer of a TimestepEmbedSequential: takes the embedding or not.
class Layer : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb) = 0;
};

class ConvLayer : public Layer {  // input_blocks.0.0
 public:
  ConvLayer(int64_t in, int64_t out) : conv_(conv3(in, out)) {
    register_parameter("weight", conv_->weight);
    register_parameter("bias", conv_->bias);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override { return conv_(x); }

 private:
  torch::nn::Conv2d conv_;
};

class Downsample : public Layer {  // op: 3x3 stride-2 conv
 public:
  explicit Downsample(int64_t ch) { op = register_module("op", conv3(ch, ch, 2)); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override { return op(x); }
  torch::nn::Conv2d op{nullptr};
};

class Upsample : public Layer {  // nearest x2, then conv
 public:
  explicit Upsample(int64_t ch) { conv = register_module("conv", conv3(ch, ch)); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&) override {
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
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& emb) override {
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
  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor&) override {
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

// TimestepEmbedSequential: children named "0", "1", ...
class EmbedSequential : public torch::nn::Module {
 public:
  void add(std::shared_ptr<Layer> layer) {
    layers_.push_back(register_module(std::to_string(layers_.size()), std::move(layer)));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb) {
    for (auto& l : layers_) x = l->forward(x, emb);
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

bool has(const TensorMap& sd, const std::string& key) { return sd.count(key) != 0; }

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
      if (has_prefix(sd, p) && !has(sd, p + "qkv.weight")) {
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
    if (has(sd, cat("output_blocks.", k, ".1.qkv.weight"))) attention_levels[level] = true;
  }
  use_scale_shift_norm = dim_of(sd, "input_blocks.1.0.emb_layers.1.weight", 0) ==
                         2 * dim_of(sd, "input_blocks.1.0.out_layers.3.weight", 0);
}

std::string UNetConfig::describe() const {
  std::string mult, attn;
  for (size_t i = 0; i < channel_mult.size(); ++i) {
    mult += cat(i ? "," : "", channel_mult[i]);
    if (attention_levels[i]) attn += cat(attn.empty() ? "" : ",", i);
  }
  return cat("guided-diffusion UNet (", model_channels, " channels, mult ", mult, ", ", num_res_blocks,
             " res blocks, attention at levels [", attn, "]", learn_sigma() ? ", learned sigma" : "",
             num_classes ? cat(", ", num_classes, " classes") : "",
             clip_dim ? cat(", conditioned on ", clip_dim, "-d CLIP embeddings") : "", ")");
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
      if (c.attention_levels[level])
        block->add(std::make_shared<AttentionBlock>(ch, heads_for(c, ch), c.use_new_attention_order));
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
  middle->add(std::make_shared<AttentionBlock>(ch, heads_for(c, ch), c.use_new_attention_order));
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
      if (c.attention_levels[level])
        block->add(std::make_shared<AttentionBlock>(ch, heads_for(c, ch), c.use_new_attention_order));
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
  auto attn = [](double ch) { return n::norm(ch) + n::conv(ch, 3 * ch, 1) + n::conv(ch, ch, 1); };
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
                                 const torch::Tensor& y, const torch::Tensor& clip_embed) {
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
    h = std::dynamic_pointer_cast<EmbedSequential>(m)->forward(h, emb);
    hs.push_back(h);
  }
  h = std::dynamic_pointer_cast<EmbedSequential>(middle_block_)->forward(h, emb);
  for (const auto& m : *output_blocks_) {
    h = torch::cat({h, hs.back()}, 1);
    hs.pop_back();
    h = std::dynamic_pointer_cast<EmbedSequential>(m)->forward(h, emb);
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

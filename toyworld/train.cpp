#include "toyworld/train.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/device.h"
#include "core/error.h"
#include "core/random.h"
#include "io/image.h"
#include "toyworld/eval.h"

namespace clipguide::toyworld {

namespace F = torch::nn::functional;

std::mt19937_64 step_rng(uint64_t seed, int64_t step) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(step), static_cast<uint32_t>(static_cast<uint64_t>(step) >> 32)};
  return std::mt19937_64(seq);
}

std::vector<std::string> caption_corpus(int64_t count, uint64_t seed) {
  std::mt19937_64 rng = step_rng(seed, -1);
  std::vector<std::string> out;
  SceneOptions options;
  options.allow_held_out =
      true;  // the vocabulary covers every word; held-out pairs are about images, not words
  for (int64_t i = 0; i < count; ++i) {
    const Scene scene = sample_scene(rng, options);
    out.push_back(describe(scene, static_cast<int>(i % kTemplates), rng).text);
  }
  return out;
}

torch::Tensor picture_batch(std::mt19937_64& rng, int64_t batch, std::vector<std::string>* captions) {
  SceneOptions options;
  options.allow_held_out = true;
  std::vector<Scene> scenes;
  for (int64_t i = 0; i < batch; ++i) scenes.push_back(sample_scene(rng, options));
  if (captions != nullptr) {
    for (const Scene& scene : scenes) captions->push_back(describe(scene, -1, rng).text);
  }
  return render_batch(scenes);
}

namespace {

template <typename E>
E other_than(std::mt19937_64& rng, int n, const std::function<bool(E)>& allowed) {
  for (int tries = 0; tries < 1000; ++tries) {
    const auto e = static_cast<E>(std::uniform_int_distribution<int>(0, n - 1)(rng));
    if (allowed(e)) return e;
  }
  fail("toy world: no allowed value to vary to");
}

bool uses_colour(const Scene& s, Colour c) {
  for (const Object& o : s.objects) {
    if (o.colour == c) return true;
  }
  return false;
}

}  // namespace

ClipBatch clip_batch(std::mt19937_64& rng, const Tokenizer& tokenizer, int64_t context, int64_t batch) {
  TORCH_CHECK(batch > 0 && batch % kGroup == 0, "the CLIP batch must be a multiple of ", kGroup, ", got ",
              batch);
  std::vector<Scene> scenes;
  std::vector<Caption> captions;
  for (int64_t g = 0; g < batch / kGroup; ++g) {
    const Scene base = sample_scene(rng);
    const int form = std::uniform_int_distribution<int>(0, kTemplates - 1)(rng);
    const Object& o = base.objects[0];
    std::vector<Scene> group = {base};
    // The shape line-up: the same scene with each other shape its colour may take in training.
    for (int s = 0; s < kShapes; ++s) {
      if (static_cast<Shape>(s) == o.shape || is_held_out(o.colour, static_cast<Shape>(s))) continue;
      group.push_back(base);
      group.back().objects[0].shape = static_cast<Shape>(s);
    }
    // Then other object colours and other backgrounds, alternately, to fill the group.
    for (int k = 0; static_cast<int64_t>(group.size()) < kGroup; ++k) {
      Scene v = base;
      if (k % 2 == 0) {
        v.objects[0].colour = other_than<Colour>(rng, kColours, [&](Colour c) {
          return c != o.colour && c != base.background && !is_held_out(c, o.shape);
        });
      } else {
        v.background = other_than<Colour>(
            rng, kColours, [&](Colour c) { return c != base.background && !uses_colour(base, c); });
      }
      group.push_back(v);
    }
    for (const Scene& s : group) {
      scenes.push_back(s);
      captions.push_back(describe(s, form, rng));
    }
  }
  ClipBatch out;
  std::vector<std::string> texts;
  for (const Caption& c : captions) texts.push_back(c.text);
  out.images = render_batch(scenes);
  out.tokens = tokenizer.tokenize(texts, context, false);
  out.targets = torch::zeros({batch, batch});
  auto t = out.targets.accessor<float, 2>();
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t j = 0; j < batch; ++j)
      t[i][j] = (i == j || matches(captions[i].claim, scenes[j])) ? 1.f : 0.f;
  }
  return out;
}

ClipConfig toy_clip_config(const ToyClipShape& shape, int64_t vocab_size) {
  ClipConfig c;
  c.embed_dim = shape.embed_dim;
  c.vision_layers = {shape.vision_layers};
  c.vision_width = shape.vision_width;
  c.vision_patch_size = shape.patch;
  c.image_resolution = kImageSize;
  c.vision_heads = std::max<int64_t>(1, shape.vision_width / 64);  // what the loader infers: width / 64
  c.context_length = shape.context;
  c.vocab_size = vocab_size;
  c.transformer_width = shape.text_width;
  c.transformer_heads = std::max<int64_t>(1, shape.text_width / 64);
  c.transformer_layers = shape.text_layers;
  return c;
}

std::shared_ptr<ClipModel> init_clip(const ClipConfig& config, uint64_t seed) {
  const GlobalGeneratorScope seeded(seed);  // the initialisation below draws from the global generator
  auto model = std::make_shared<ClipModel>(config);
  torch::NoGradGuard no_grad;
  // openai/CLIP initialize_parameters, applied to both towers' residual blocks.
  for (auto& kv : model->named_parameters()) {
    const std::string& key = kv.key();
    torch::Tensor& p = kv.value();
    const bool visual = key.rfind("visual.", 0) == 0;
    const double width = static_cast<double>(visual ? config.vision_width : config.transformer_width);
    const double layers =
        static_cast<double>(visual ? config.vision_layers.at(0) : config.transformer_layers);
    const double attn_std = std::pow(width, -0.5), proj_std = attn_std * std::pow(2 * layers, -0.5);
    const double fc_std = std::pow(2 * width, -0.5);
    auto ends = [&](const char* suffix) {
      const std::string s(suffix);
      return key.size() >= s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0;
    };
    if (key == "token_embedding.weight")
      p.normal_(0, 0.02);
    else if (key == "positional_embedding")
      p.normal_(0, 0.01);
    else if (key == "text_projection")
      p.normal_(0, std::pow(static_cast<double>(config.transformer_width), -0.5));
    else if (key == "logit_scale")
      p.fill_(std::log(1 / 0.07));
    else if (key == "visual.class_embedding" || key == "visual.positional_embedding" ||
             key == "visual.proj") {
      p.normal_(0, attn_std);
    } else if (ends("attn.in_proj_weight"))
      p.normal_(0, attn_std);
    else if (ends("attn.out_proj.weight") || ends("mlp.c_proj.weight"))
      p.normal_(0, proj_std);
    else if (ends("mlp.c_fc.weight"))
      p.normal_(0, fc_std);
    else if (ends(".bias") && key.find("ln_") == std::string::npos)
      p.zero_();
  }
  return model;
}

torch::Tensor contrastive_loss(const torch::Tensor& image_features, const torch::Tensor& text_features,
                               const torch::Tensor& logit_scale_exp, const torch::Tensor& targets) {
  const torch::Tensor img = image_features / image_features.norm(2, -1, true);
  const torch::Tensor txt = text_features / text_features.norm(2, -1, true);
  const torch::Tensor logits = logit_scale_exp * torch::matmul(txt, img.t());  // [texts, images]
  const torch::Tensor t2i = targets / targets.sum(1, true);
  const torch::Tensor i2t = (targets / targets.sum(0, true)).t();  // [images, texts]
  const torch::Tensor loss_t = -(t2i * F::log_softmax(logits, F::LogSoftmaxFuncOptions(1))).sum(1).mean();
  const torch::Tensor loss_i = -(i2t * F::log_softmax(logits.t(), F::LogSoftmaxFuncOptions(1))).sum(1).mean();
  return (loss_t + loss_i) / 2;
}

namespace {

// A tower's features, run under bf16 autocast on the model's device when `bf16`, returned in fp32 for the
// loss.
template <typename Encode>
torch::Tensor tower_features(const torch::Device& device, bool bf16, Encode encode) {
  const Autocast mixed(device, torch::kBFloat16, bf16);
  return encode().to(torch::kFloat);
}

}  // namespace

torch::Tensor clip_batch_loss(ClipModel& model, const torch::Tensor& images, const torch::Tensor& tokens,
                              const torch::Tensor& targets, bool bf16) {
  const torch::Device device = images.device();
  const torch::Tensor image_features =
      tower_features(device, bf16, [&] { return model.encode_image(images); });
  const torch::Tensor text_features = tower_features(device, bf16, [&] { return model.encode_text(tokens); });
  return contrastive_loss(image_features, text_features, model.logit_scale_exp(), targets);
}

torch::Tensor adversarial_images(ClipModel& model, const torch::Tensor& images01, const torch::Tensor& tokens,
                                 const torch::Tensor& targets, double eps, int64_t steps, bool bf16,
                                 torch::Generator& gen) {
  auto per_image_norm = [](const torch::Tensor& x) {
    return x.flatten(1).norm(2, 1).clamp_min(1e-12).view({-1, 1, 1, 1});
  };
  torch::Tensor text_features;  // the same for every step of the attack
  {
    torch::NoGradGuard no_grad;
    text_features = tower_features(images01.device(), bf16, [&] { return model.encode_text(tokens); });
  }
  const torch::Tensor scale = model.logit_scale_exp().detach();
  // A random start inside the ball: a random direction at a uniform fraction of the radius.
  const torch::Tensor direction =
      at::randn(images01.sizes(), gen, images01.options().device(torch::kCPU)).to(images01.device());
  const torch::Tensor radius =
      at::rand({images01.size(0), 1, 1, 1}, gen, images01.options().device(torch::kCPU))
          .to(images01.device());
  torch::Tensor delta = direction / per_image_norm(direction) * radius * eps;
  delta = (images01 + delta).clamp(0, 1) - images01;
  const double step_size = 2.5 * eps / static_cast<double>(steps);
  for (int64_t i = 0; i < steps; ++i) {
    delta.requires_grad_(true);
    const torch::Tensor image_features = tower_features(
        images01.device(), bf16, [&] { return model.encode_image(normalize_pixels(images01 + delta)); });
    const torch::Tensor loss = contrastive_loss(image_features, text_features, scale, targets);
    const torch::Tensor grad = torch::autograd::grad({loss}, {delta})[0];
    torch::NoGradGuard no_grad;
    delta = delta.detach() + step_size * grad / per_image_norm(grad);
    delta = delta * (eps / per_image_norm(delta)).clamp_max(1);  // back into the ball
    delta = (images01 + delta).clamp(0, 1) - images01;
  }
  return (images01 + delta).detach();
}

torch::Tensor augment_images(const torch::Tensor& images, std::mt19937_64& rng, double max_blur) {
  const int64_t B = images.size(0);
  std::uniform_real_distribution<float> unit(0, 1);
  torch::Tensor theta = torch::zeros({B, 2, 3});
  auto th = theta.accessor<float, 3>();
  std::vector<float> noise(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const float scale = 0.8f + 0.2f * unit(rng);  // the crop's side as a fraction of the image's
    th[b][0][0] = scale;
    th[b][1][1] = scale;
    th[b][0][2] = (1 - scale) * (2 * unit(rng) - 1);  // anywhere inside the image
    th[b][1][2] = (1 - scale) * (2 * unit(rng) - 1);
    noise[static_cast<size_t>(b)] = 0.04f * unit(rng);
  }
  const torch::Tensor grid = F::affine_grid(theta, {B, 3, kImageSize, kImageSize}, false);
  torch::Tensor out =
      F::grid_sample(images, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).align_corners(false));
  if (max_blur > 1) {
    std::vector<torch::Tensor> blurred;
    for (int64_t b = 0; b < B; ++b) {
      const double factor = 1 + (max_blur - 1) * unit(rng);
      blurred.push_back(
          blur_images(out.slice(0, b, b + 1), std::lround(static_cast<double>(kImageSize) / factor)));
    }
    out = torch::cat(blurred);
  }
  torch::Generator gen = at::detail::createCPUGenerator(rng());
  const torch::Tensor eps = at::randn(out.sizes(), gen, torch::TensorOptions().dtype(out.scalar_type()));
  return (out + eps * torch::from_blob(noise.data(), {B, 1, 1, 1}).clone()).clamp(0, 1);
}

double TrainSchedule::lr_at(int64_t step) const {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double t = std::min(
      1.0, static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, steps - warmup)));
  return lr * (final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + std::cos(M_PI * t)));
}

VqganConfig toy_vqgan_config(const ToyVqganShape& shape) {
  VqganConfig c;
  c.embed_dim = shape.embed_dim;
  c.n_embed = shape.n_embed;
  c.z_channels = shape.z_channels;
  c.ch = shape.ch;
  c.ch_mult = shape.ch_mult;
  c.num_res_blocks = shape.num_res_blocks;
  c.attn_levels.assign(shape.ch_mult.size(), false);
  c.attn_levels.back() = shape.attention;
  return c;
}

std::shared_ptr<Vqgan> init_vqgan(const VqganConfig& config, uint64_t seed) {
  const GlobalGeneratorScope seeded(seed);  // the initialisation below draws from the global generator
  auto model = std::make_shared<Vqgan>(config);
  torch::NoGradGuard no_grad;
  const double n = static_cast<double>(config.n_embed);
  model->codebook().uniform_(-1 / n, 1 / n);  // VectorQuantizer2's initialisation
  return model;
}

torch::Tensor object_weights(const torch::Tensor& images01, double object_weight) {
  // [B, 3, H, W] -> [B, 3, 1, 1]: each image's background, the per-channel median (objects cover well under
  // half).
  const torch::Tensor background = std::get<0>(images01.flatten(2).median(2)).unsqueeze(-1).unsqueeze(-1);
  const torch::Tensor object = ((images01 - background).abs().sum(1, true) > 0.1).to(images01.scalar_type());
  const torch::Tensor near =
      F::max_pool2d(object, F::MaxPool2dFuncOptions(3).stride(1).padding(1));  // and its rim
  return 1 + object_weight * near;
}

VqganLosses vqgan_losses(Vqgan& model, const torch::Tensor& images01, double beta, double object_weight) {
  const torch::Tensor x = images01 * 2 - 1;
  const torch::Tensor z = model.encode(x);
  const Vqgan::Quantized quantized = model.quantize(z);
  // [B, h, w] -> [B, h, w, C] -> [B, C, h, w]: the chosen codes, with gradient to the codebook.
  const torch::Tensor q = model.codebook()
                              .index_select(0, quantized.indices.flatten())
                              .reshape({z.size(0), z.size(2), z.size(3), z.size(1)})
                              .permute({0, 3, 1, 2});
  const torch::Tensor codebook = (z.detach() - q).pow(2).mean();
  const torch::Tensor commitment = (z - q.detach()).pow(2).mean();
  const torch::Tensor rec = model.decode(quantized.z_q);
  const torch::Tensor l1 = (rec - x).abs().mean(), l2 = (rec - x).pow(2).mean();
  VqganLosses out;
  if (object_weight > 0) {
    const torch::Tensor w = object_weights(images01, object_weight);
    const torch::Tensor err = (rec - x).abs() + (rec - x).pow(2);
    out.total = (w * err).sum() / (w.sum() * x.size(1)) + codebook + beta * commitment;
  } else {
    out.total = l1 + l2 + codebook + beta * commitment;
  }
  out.l1 = l1.item<double>();
  out.l2 = l2.item<double>();
  out.codebook = codebook.item<double>();
  out.commitment = commitment.item<double>();
  out.indices = quantized.indices;
  return out;
}

int64_t DeadCodeRestarter::update(Vqgan& model, const torch::Tensor& indices, const torch::Tensor& images01,
                                  int64_t step, std::mt19937_64& rng) {
  counts_ += torch::bincount(indices.flatten().cpu(), {}, counts_.size(0));
  if ((step + 1) % every_ != 0) return 0;
  const torch::Tensor dead = (counts_ == 0).nonzero().flatten();
  used_ = counts_.size(0) - dead.size(0);
  counts_.zero_();
  if (dead.size(0) == 0) return 0;
  torch::NoGradGuard no_grad;
  const torch::Tensor z = model.encode(images01 * 2 - 1);
  const torch::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, z.size(1)});  // [B, C, h, w] -> [Bhw, C]
  torch::Generator gen = at::detail::createCPUGenerator(rng());
  const torch::Tensor pick =
      torch::randint(flat.size(0), {dead.size(0)}, gen, torch::TensorOptions().dtype(torch::kLong));
  const torch::Tensor chosen = flat.index_select(0, pick.to(flat.device()));
  const torch::Tensor jitter =
      at::randn(chosen.sizes(), gen, torch::TensorOptions().dtype(chosen.scalar_type())) * 0.01;
  model.codebook().index_copy_(0, dead.to(flat.device()), chosen + jitter.to(flat.device()));
  return dead.size(0);
}

UNetConfig toy_unet_config(const ToyUNetShape& shape) {
  UNetConfig c;
  c.model_channels = shape.channels;
  c.out_channels = 3;  // the noise; fixed (not learned) variances
  c.num_res_blocks = shape.res_blocks;
  c.channel_mult = shape.channel_mult;
  for (size_t i = 0; i < shape.channel_mult.size(); ++i)
    c.attention_levels.push_back((shape.image_size >> i) <= shape.attention_below);
  c.use_scale_shift_norm = true;
  c.num_head_channels = shape.head_channels;
  return c;
}

std::shared_ptr<UNetModel> init_unet(const UNetConfig& config, uint64_t seed) {
  const GlobalGeneratorScope seeded(seed);  // the initialisation below draws from the global generator
  auto model = std::make_shared<UNetModel>(config);
  torch::NoGradGuard no_grad;
  for (auto& kv : model->named_parameters()) {
    const std::string& k = kv.key();
    if (k.rfind("out.2.", 0) == 0 || k.rfind("clip_emb.", 0) == 0 ||
        k.find("out_layers.3.") != std::string::npos || k.find("proj_out.") != std::string::npos) {
      kv.value().zero_();
    }
  }
  return model;
}

torch::Tensor diffusion_images(const torch::Tensor& images01, int64_t size) {
  TORCH_CHECK(images01.size(-1) % size == 0, "diffusion images: ", images01.size(-1),
              " px does not divide into ", size);
  const torch::Tensor x = size == images01.size(-1)
                              ? images01
                              : F::avg_pool2d(images01, F::AvgPool2dFuncOptions(images01.size(-1) / size));
  return x * 2 - 1;
}

torch::Tensor diffusion_loss(UNetModel& model, const DiffusionSchedule& s, const torch::Tensor& x0,
                             torch::Generator& gen, const torch::Tensor& clip_embed) {
  const torch::Tensor t = torch::randint(0, s.size(), {x0.size(0)}, gen, torch::kLong).to(x0.device());
  const torch::Tensor eps = torch::randn(x0.sizes(), gen, torch::kFloat).to(x0.device());
  return (model.forward(q_sample(s, x0, t, eps), t, {}, clip_embed) - eps).pow(2).mean();
}

std::string unet_flags_json(const UNetConfig& c, int64_t image_size, const std::string& noise_schedule,
                            int64_t diffusion_steps, const std::string& timestep_respacing) {
  std::string mult, attention;
  for (size_t i = 0; i < c.channel_mult.size(); ++i) {
    mult += cat(i ? "," : "", c.channel_mult[i]);
    if (c.attention_levels[i]) attention += cat(attention.empty() ? "" : ",", image_size >> i);
  }
  const nlohmann::json flags{{"model_flags",
                              {{"image_size", image_size},
                               {"num_channels", c.model_channels},
                               {"num_res_blocks", c.num_res_blocks},
                               {"channel_mult", mult},
                               {"attention_resolutions", attention},
                               {"num_head_channels", c.num_head_channels},
                               {"learn_sigma", c.learn_sigma()},
                               {"use_scale_shift_norm", c.use_scale_shift_norm},
                               {"resblock_updown", c.resblock_updown},
                               {"class_cond", false},
                               {"clip_dim", c.clip_dim}}},
                             {"diffusion_flags",
                              {{"noise_schedule", noise_schedule},
                               {"diffusion_steps", diffusion_steps},
                               {"timestep_respacing", timestep_respacing}}}};
  return flags.dump(2) + "\n";
}

ConditionStandard ConditionStandard::of(const torch::Tensor& embeddings) {
  TORCH_CHECK(embeddings.dim() == 2 && embeddings.size(0) > 1,
              "ConditionStandard: need [N > 1, clip_dim] embeddings");
  ConditionStandard s;
  const torch::Tensor e = embeddings.to(torch::kFloat);
  s.mean = e.mean(0);
  s.spread = (e - s.mean).pow(2).mean().sqrt().item<double>();
  TORCH_CHECK(s.spread > 0, "ConditionStandard: the embeddings are all the same");
  return s;
}

torch::Tensor ConditionStandard::apply(const torch::Tensor& embeddings) const {
  return (embeddings.to(torch::kFloat) - mean.to(embeddings.device())) / spread;
}

namespace {

// The CLIP projection's weight and bias, (W, b) -> (W * scale, b + W shift) in place.
void rewrite_projection(UNetModel& model, double scale, const torch::Tensor& shift) {
  TORCH_CHECK(model.config().clip_dim > 0, "the UNet is not CLIP-conditioned");
  torch::NoGradGuard no_grad;
  auto params = model.named_parameters();
  torch::Tensor& w = params["clip_emb.weight"];
  torch::Tensor& b = params["clip_emb.bias"];
  b.add_(torch::mv(w, shift.to(w.device(), w.scalar_type())));
  w.mul_(scale);
}

}  // namespace

void ConditionStandard::fold(UNetModel& model) const {
  rewrite_projection(model, 1 / spread, -mean / spread);
}

void ConditionStandard::unfold(UNetModel& model) const { rewrite_projection(model, spread, mean); }

void update_average(torch::nn::Module& average, torch::nn::Module& model, double decay, int64_t updates) {
  const double d =
      std::min(decay, (1.0 + static_cast<double>(updates)) / (10.0 + static_cast<double>(updates)));
  torch::NoGradGuard no_grad;
  auto mine = average.parameters();
  auto theirs = model.parameters();
  TORCH_CHECK(mine.size() == theirs.size(), "update_average: the models differ");
  for (size_t i = 0; i < mine.size(); ++i) mine[i].mul_(d).add_(theirs[i], 1 - d);
}

TensorMap named_weights(torch::nn::Module& model, torch::ScalarType dtype) {
  TensorMap out;
  for (const auto& kv : model.named_parameters())
    out.emplace(kv.key(), kv.value().detach().to(torch::kCPU, dtype).contiguous());
  return out;
}

std::string vqgan_yaml(const VqganConfig& c, int64_t resolution) {
  auto list = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  };
  std::vector<int64_t> attn;
  for (size_t i = 0; i < c.attn_levels.size(); ++i) {
    if (c.attn_levels[i]) attn.push_back(resolution >> i);
  }
  std::ostringstream y;
  y << "model:\n"
    << "  base_learning_rate: 4.5e-06\n"
    << "  target: taming.models.vqgan.VQModel\n"
    << "  params:\n"
    << "    embed_dim: " << c.embed_dim << "\n"
    << "    n_embed: " << c.n_embed << "\n"
    << "    ddconfig:\n"
    << "      double_z: " << (c.double_z ? "true" : "false") << "\n"
    << "      z_channels: " << c.z_channels << "\n"
    << "      resolution: " << resolution << "\n"
    << "      in_channels: " << c.in_channels << "\n"
    << "      out_ch: " << c.out_ch << "\n"
    << "      ch: " << c.ch << "\n"
    << "      ch_mult: " << list(c.ch_mult) << "\n"
    << "      num_res_blocks: " << c.num_res_blocks << "\n"
    << "      attn_resolutions: " << list(attn) << "\n"
    << "      dropout: 0.0\n";
  return y.str();
}

}  // namespace clipguide::toyworld

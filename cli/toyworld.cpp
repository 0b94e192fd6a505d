// clipguide_toyworld: the toy world's programs — training the bundled CLIP and VQGAN, measuring them,
// rendering scenes and judging images by their pixels. The training commands double as examples of training
// with the library.
//
//   clipguide_toyworld train-clip  --out models/toyworld/clip [--minutes 40] [--precision bf16] [--state
//   FILE] ...
//                                  [--from DIR] [--adversarial EPS] [--blur F]   (fine-tuning an existing
//                                  CLIP)
//   clipguide_toyworld train-vqgan --out models/toyworld/vqgan [--minutes 30] [--state FILE] ...
//   clipguide_toyworld train-diffusion --out models/toyworld/diffusion [--minutes 60] [--state FILE] ...
//                                  [--from DIR] [--clip DIR] [--cond-lr F]   (a CLIP-conditioned fine-tune)
//   clipguide_toyworld eval [--model DIR] [--images 1000] [--seed S] [--blur-size 32]
//   clipguide_toyworld render --out DIR [--count N] [--seed S] [--classes]
//   clipguide_toyworld judge IMAGE.png...
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/common.h"
#include "clip/load.h"
#include "clip/score.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "generators/vqgan.h"
#include "guidance/clip_guide.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "jobs/bundled.h"
#include "toyworld/eval.h"
#include "toyworld/train.h"
#include "toyworld/world.h"

namespace tw = clipguide::toyworld;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double minutes_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count() / 60;
}

// What a training run keeps between sessions: weights (fp32), optimizer moments, the step and, for a run that
// keeps one, the weights' moving average ("ema."), in one safetensors file.
void save_state(const std::string& path, torch::nn::Module& model,
                const std::vector<const cg::Optimizer*>& optimizers, int64_t step, double elapsed_minutes,
                torch::nn::Module* average = nullptr) {
  cg::TensorMap all = tw::named_weights(model, torch::kFloat);
  if (average != nullptr) {
    for (auto& [k, v] : tw::named_weights(*average, torch::kFloat)) all.emplace("ema." + k, v);
  }
  for (size_t i = 0; i < optimizers.size(); ++i) {
    for (const auto& [k, v] : optimizers[i]->state()) all.emplace(cg::cat("optimizer", i, ".", k), v);
  }
  cg::write_file_atomic(path, cg::serialize_safetensors(all, {{"step", std::to_string(step)},
                                                              {"minutes", std::to_string(elapsed_minutes)}}));
}

// Loads a state saved by save_state into `model`, `optimizers` and `average`; returns {step, minutes}.
std::pair<int64_t, double> load_state(const std::string& path, torch::nn::Module& model,
                                      const std::vector<cg::Optimizer*>& optimizers,
                                      torch::nn::Module* average = nullptr) {
  cg::SafetensorsContents c = cg::read_safetensors(path);
  torch::NoGradGuard no_grad;
  auto load = [&](torch::nn::Module& m, const std::string& prefix) {
    for (auto& kv : m.named_parameters()) {
      auto it = c.tensors.find(prefix + kv.key());
      if (it == c.tensors.end()) cg::fail(path, ": no ", prefix, kv.key(), " (a state from another model?)");
      kv.value().copy_(it->second);
    }
  };
  load(model, "");
  if (average != nullptr) load(*average, "ema.");
  for (size_t i = 0; i < optimizers.size(); ++i) {
    cg::TensorMap state;
    const std::string prefix = cg::cat("optimizer", i, ".");
    for (const auto& [k, v] : c.tensors) {
      if (k.rfind(prefix, 0) == 0) state.emplace(k.substr(prefix.size()), v);
    }
    optimizers[i]->load_state(state);
  }
  return {std::stoll(c.metadata.at("step")), std::stod(c.metadata.at("minutes"))};
}

// Weight decay on matrices only (CLIP's recipe: not on gains, biases, embeddings or the temperature).
std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> decay_groups(torch::nn::Module& model) {
  std::vector<torch::Tensor> decay, rest;
  for (const auto& kv : model.named_parameters()) {
    const std::string& k = kv.key();
    const bool matrix = kv.value().dim() >= 2 && k.find("embedding") == std::string::npos;
    (matrix ? decay : rest).push_back(kv.value());
  }
  return {decay, rest};
}

// What both training commands take, and the bookkeeping they share.
struct TrainArgs {
  std::string out, state, device_spec;
  torch::Device device = torch::kCPU;
  int64_t steps = 4000, batch = 0, seed = 0, threads = 1, every = 100;
  double lr = 1e-3, minutes = 0;

  void add_to(cxxopts::Options& opts, const std::string& out_default, const std::string& out_help,
              const std::string& batch_help, const std::string& batch_default,
              const std::string& seed_default) {
    // clang-format off: one option a line
    opts.add_options()("out", out_help, cxxopts::value(out)->default_value(out_default))(
        "state", "resumable training state (default: OUT/train-state.safetensors; kept out of git)",
        cxxopts::value(state))("steps", "optimizer steps (the learning-rate schedule's length)",
                               cxxopts::value(steps)->default_value("4000"))(
        "minutes", "stop (and save) after this many minutes of training in all, 0: no limit",
        cxxopts::value(minutes)->default_value("0"))("batch", batch_help,
                                                     cxxopts::value(batch)->default_value(batch_default))(
        "lr", "peak learning rate (warmup, then cosine down to 5% of it)",
        cxxopts::value(lr)->default_value("1e-3"))("seed", "seed of the initialisation and of every batch",
                                                   cxxopts::value(seed)->default_value(seed_default))(
        "every", "report and save the state every this many steps",
        cxxopts::value(every)->default_value("100"))("threads", "CPU threads (model and scene rendering)",
                                                     cxxopts::value(threads)->default_value("1"))(
        "device", "cpu, cuda, cuda:N or auto", cxxopts::value(device_spec)->default_value("cpu"));
    // clang-format on
  }
  void prepare() {
    if (steps < 1 || batch < 1 || every < 1 || threads < 1 || !(lr > 0) || minutes < 0) {
      cg::fail("--steps, --batch, --every, --threads and --lr must be positive, --minutes zero or positive");
    }
    cg::set_cpu_threads(static_cast<int>(threads));
    device = cg::parse_device(device_spec);
    if (state.empty()) state = (fs::path(out) / "train-state.safetensors").string();
    fs::create_directories(out);
  }
  tw::TrainSchedule schedule(int64_t warmup) const {
    tw::TrainSchedule s;
    s.steps = steps;
    s.lr = lr;
    s.warmup = std::min(warmup, steps / 10);
    return s;
  }
  // Whether the run should stop before `step`: done, out of its minutes, or interrupted (the state is saved
  // then).
  bool stop_before(int64_t step, double elapsed_minutes) const {
    return step >= steps || InterruptScope::requested() || (minutes > 0 && elapsed_minutes >= minutes);
  }
  // The bundled weights: fp16 safetensors with the checkpoint's own names.
  void write_model(torch::nn::Module& model, int64_t step) const {
    cg::write_file_atomic(
        (fs::path(out) / "model.safetensors").string(),
        cg::serialize_safetensors(
            tw::named_weights(model, torch::kHalf),
            {{"format", "pt"}, {"steps", std::to_string(step)}, {"seed", std::to_string(seed)}}));
  }
};

int train_clip(int argc, char** argv) {
  cxxopts::Options opts("clipguide_toyworld train-clip",
                        "train the toy CLIP (OpenAI ViT names) on the toy world");
  TrainArgs t;
  tw::ToyClipShape shape;
  std::string precision, from;
  double adversarial = 0, blur = 1;
  int64_t adversarial_steps = 1;
  t.add_to(opts, "models/toyworld/clip", "folder for model.safetensors, vocab.json and merges.txt",
           "images per step, a multiple of 8 (groups of hard negatives)", "128", "1");
  // clang-format off: one option a line
  opts.add_options()("vision-width", "ViT width", cxxopts::value(shape.vision_width)->default_value("128"))(
      "vision-layers", "ViT layers", cxxopts::value(shape.vision_layers)->default_value("4"))(
      "text-width", "text transformer width", cxxopts::value(shape.text_width)->default_value("128"))(
      "text-layers", "text transformer layers", cxxopts::value(shape.text_layers)->default_value("3"))(
      "precision",
      "fp32, or bf16 (CPU autocast: the towers' matmuls in bf16; weights, optimizer and loss "
      "fp32)",
      cxxopts::value(precision)->default_value("fp32"))(
      "from",
      "fine-tune: start from this CLIP folder's weights, architecture and vocabulary (the shape "
      "flags are ignored)",
      cxxopts::value(from))(
      "blur",
      "also blur training images by a random factor up to this (area-averaged down, resampled up; "
      "1: off)",
      cxxopts::value(blur)->default_value("1"))(
      "adversarial",
      "train on adversarial images: the L2 radius of their perturbation, pixels in [0, 1] "
      "(0: off)",
      cxxopts::value(adversarial)->default_value("0"))("adversarial-steps",
                                                       "gradient steps that find each adversarial image",
                                                       cxxopts::value(adversarial_steps)->default_value("1"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (precision != "fp32" && precision != "bf16")
    cg::fail("--precision ", precision, ": choose fp32 or bf16");
  if (!(blur >= 1) || !(adversarial >= 0) || adversarial_steps < 1) {
    cg::fail("--blur must be at least 1, --adversarial zero or positive, --adversarial-steps positive");
  }
  t.prepare();
  if (precision == "bf16" && !t.device.is_cpu())
    cg::fail("--precision bf16 is CPU autocast; on ", t.device_spec, " train in fp32");
  if (precision == "bf16") cg::warn_if_bf16_is_emulated(t.device, torch::kBFloat16);
  std::shared_ptr<cg::ClipModel> model;
  if (from.empty()) {
    // The vocabulary: BPE merges learned from 20,000 captions.
    cg::write_hf_vocabulary(cg::train_bpe(tw::caption_corpus(20000, static_cast<uint64_t>(t.seed)), 4096),
                            t.out);
    model = tw::init_clip(tw::toy_clip_config(shape, cg::Tokenizer::from_path(t.out).max_id() + 1),
                          static_cast<uint64_t>(t.seed));
  } else {
    const cg::LoadedClip start = cg::load_clip(from);
    if (start.model->config().image_resolution != tw::kImageSize) {
      cg::fail("--from ", from, ": a CLIP of ", start.model->config().image_resolution,
               " px images; the toy world's are ", tw::kImageSize);
    }
    for (const char* file : {"vocab.json", "merges.txt"}) {
      const fs::path source = fs::path(from) / file, target = fs::path(t.out) / file;
      if (!fs::is_regular_file(source))
        cg::fail("--from ", from, ": no ", file, " (a toy CLIP folder holds its vocabulary)");
      if (!fs::exists(target) || !fs::equivalent(source, target))
        fs::copy_file(source, target, fs::copy_options::overwrite_existing);
    }
    model = start.model;
    for (auto& p : model->parameters()) p.requires_grad_(true);  // the loaders freeze weights for inference
  }
  const cg::Tokenizer tokenizer = cg::Tokenizer::from_path(t.out);
  const cg::ClipConfig& config = model->config();
  model->to(t.device);
  auto [decay, rest] = decay_groups(*model);
  cg::OptimizerOptions with_decay;
  with_decay.kind = "adamw";
  with_decay.lr = t.lr;
  with_decay.beta2 = 0.98;
  with_decay.eps = 1e-6;
  with_decay.weight_decay = 0.1;
  cg::OptimizerOptions without = with_decay;
  without.weight_decay = 0;
  cg::Optimizer opt_decay(decay, with_decay), opt_rest(rest, without);
  int64_t step = 0;
  double earlier = 0;
  if (fs::exists(t.state)) {
    std::tie(step, earlier) = load_state(t.state, *model, {&opt_decay, &opt_rest});
    std::cerr << "resuming " << t.state << " at step " << step << "\n";
  }
  std::cerr << "toy CLIP: " << config.architecture() << ", vocabulary " << tokenizer.vocab_size()
            << " tokens, context " << config.context_length << (from.empty() ? "" : ", from " + from) << "\n";
  const tw::TrainSchedule schedule = t.schedule(200);
  cg::LoadedClip measured;  // the model in training, as the measurements take a CLIP
  measured.model = model;
  measured.tokenizer = std::make_shared<const cg::Tokenizer>(tokenizer);
  const auto t0 = Clock::now();
  double loss_sum = 0;
  int64_t loss_n = 0;
  InterruptScope interrupt;
  model->train();
  for (; !t.stop_before(step, earlier + minutes_since(t0)); ++step) {
    std::mt19937_64 rng = tw::step_rng(static_cast<uint64_t>(t.seed), step);
    const tw::ClipBatch b = tw::clip_batch(rng, tokenizer, config.context_length, t.batch);
    const torch::Tensor tokens = b.tokens.to(t.device), targets = b.targets.to(t.device);
    torch::Tensor images01 = tw::augment_images(b.images, rng, blur).to(t.device);
    if (adversarial > 0) {
      torch::Generator gen = at::detail::createCPUGenerator(rng());
      images01 = tw::adversarial_images(*model, images01, tokens, targets, adversarial, adversarial_steps,
                                        precision == "bf16", gen);
    }
    const torch::Tensor loss =
        tw::clip_batch_loss(*model, cg::normalize_pixels(images01), tokens, targets, precision == "bf16");
    opt_decay.zero_grad();
    opt_rest.zero_grad();
    loss.backward();
    opt_decay.set_lr(schedule.lr_at(step));
    opt_rest.set_lr(schedule.lr_at(step));
    opt_decay.step();
    opt_rest.step();
    {
      torch::NoGradGuard no_grad;
      for (auto& kv : model->named_parameters()) {
        if (kv.key() == "logit_scale")
          kv.value().clamp_(0, std::log(100.0));  // CLIP clips the temperature at 100
      }
    }
    loss_sum += loss.item<double>();
    ++loss_n;
    if ((step + 1) % t.every == 0 || step + 1 == t.steps) {
      const double elapsed = earlier + minutes_since(t0);
      torch::NoGradGuard no_grad;
      model->eval();
      const tw::ZeroShot zs = tw::zero_shot(measured, 240, 999);
      model->train();
      std::cerr << cg::cat("step ", step + 1, "/", t.steps, "  loss ", loss_sum / static_cast<double>(loss_n),
                           "  lr ", schedule.lr_at(step), "  T ", model->logit_scale_exp().item<double>(),
                           "  zero-shot colour ", zs.colour, " shape ", zs.shape, " background ",
                           zs.background, " held-out ", zs.held_out_joint, "  ", elapsed, " min\n");
      loss_sum = 0;
      loss_n = 0;
      save_state(t.state, *model, {&opt_decay, &opt_rest}, step + 1, elapsed);
    }
  }
  const double elapsed = earlier + minutes_since(t0);
  save_state(t.state, *model, {&opt_decay, &opt_rest}, step, elapsed);
  t.write_model(*model, step);
  std::cerr << cg::cat("wrote ", t.out, "/model.safetensors after ", step, " steps, ", elapsed, " min\n");
  return 0;
}

int train_vqgan(int argc, char** argv) {
  cxxopts::Options opts("clipguide_toyworld train-vqgan",
                        "train the toy VQGAN (taming names, f8) on the toy world");
  TrainArgs t;
  int64_t restart_every = 0;
  double object_weight = 0;
  tw::ToyVqganShape shape;
  t.add_to(opts, "models/toyworld/vqgan", "folder for model.safetensors and model.yaml", "images per step",
           "16", "2");
  // clang-format off: one option a line
  opts.add_options()("ch", "channels at full resolution (doubled at the two lowest levels)",
                     cxxopts::value(shape.ch)->default_value("32"))(
      "res-blocks", "residual blocks per level", cxxopts::value(shape.num_res_blocks)->default_value("1"))(
      "n-embed", "codebook entries", cxxopts::value(shape.n_embed)->default_value("512"))(
      "object-weight", "extra reconstruction weight on objects and their rims (0: plain mean)",
      cxxopts::value(object_weight)->default_value("0"))("restart-every",
                                                         "restart codes unused for this many steps",
                                                         cxxopts::value(restart_every)->default_value("50"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  t.prepare();
  if (restart_every < 1 || shape.ch < 1 || shape.num_res_blocks < 1 || shape.n_embed < 2 ||
      !(object_weight >= 0)) {
    cg::fail(
        "--restart-every, --ch and --res-blocks must be positive, --n-embed at least 2, --object-weight zero "
        "or positive");
  }
  const cg::VqganConfig config = tw::toy_vqgan_config(shape);
  auto model = tw::init_vqgan(config, static_cast<uint64_t>(t.seed));
  model->to(t.device);
  cg::OptimizerOptions adam;
  adam.lr = t.lr;
  adam.beta1 = 0.5;  // taming's betas
  adam.beta2 = 0.9;
  cg::Optimizer opt(model->parameters(), adam);
  int64_t step = 0;
  double earlier = 0;
  if (fs::exists(t.state)) {
    std::tie(step, earlier) = load_state(t.state, *model, {&opt});
    std::cerr << "resuming " << t.state << " at step " << step << "\n";
  }
  std::cerr << "toy VQGAN: " << config.describe() << "\n";
  const tw::TrainSchedule schedule = t.schedule(100);
  tw::DeadCodeRestarter restarter(config.n_embed, restart_every);
  const auto t0 = Clock::now();
  double l1 = 0, l2 = 0, cb = 0;
  int64_t n = 0, restarted = 0;
  InterruptScope interrupt;
  for (; !t.stop_before(step, earlier + minutes_since(t0)); ++step) {
    std::mt19937_64 rng = tw::step_rng(static_cast<uint64_t>(t.seed), step);
    const torch::Tensor x = tw::picture_batch(rng, t.batch).to(t.device);
    tw::VqganLosses losses = tw::vqgan_losses(*model, x, 0.25, object_weight);
    opt.zero_grad();
    losses.total.backward();
    opt.set_lr(schedule.lr_at(step));
    opt.step();
    restarted += restarter.update(*model, losses.indices, x, step, rng);
    l1 += losses.l1;
    l2 += losses.l2;
    cb += losses.codebook;
    ++n;
    if ((step + 1) % t.every == 0 || step + 1 == t.steps) {
      const double elapsed = earlier + minutes_since(t0);
      const auto d = static_cast<double>(n);
      std::cerr << cg::cat("step ", step + 1, "/", t.steps, "  L1 ", l1 / d, "  L2 ", l2 / d, "  codebook ",
                           cb / d, "  codes used ", restarter.used_last_window(), "/", config.n_embed,
                           "  restarted ", restarted, "  lr ", schedule.lr_at(step), "  ", elapsed, " min\n");
      l1 = l2 = cb = 0;
      n = restarted = 0;
      save_state(t.state, *model, {&opt}, step + 1, elapsed);
    }
  }
  const double elapsed = earlier + minutes_since(t0);
  save_state(t.state, *model, {&opt}, step, elapsed);
  t.write_model(*model, step);
  cg::write_file_atomic((fs::path(t.out) / "model.yaml").string(), tw::vqgan_yaml(config, tw::kImageSize));
  std::cerr << cg::cat("wrote ", t.out, "/model.safetensors and model.yaml after ", step, " steps, ", elapsed,
                       " min\n");
  return 0;
}

int train_diffusion(int argc, char** argv) {
  cxxopts::Options opts(
      "clipguide_toyworld train-diffusion",
      "train the toy diffusion model (guided-diffusion UNet names, noise prediction) on the toy world");
  TrainArgs t;
  tw::ToyUNetShape shape;
  std::string noise_schedule, respacing, from, clip_dir;
  double ema = 0, cond_drop = 0, cond_lr = 1;
  t.add_to(opts, "models/toyworld/diffusion",
           "folder for model.safetensors (the moving average) and model.json (flags)", "images per step",
           "64", "3");
  // clang-format off: one option a line
  opts.add_options()("size", "image size: 32 (the scenes area-averaged down) or 64",
                     cxxopts::value(shape.image_size)->default_value("32"))(
      "channels", "UNet channels at full resolution", cxxopts::value(shape.channels)->default_value("32"))(
      "res-blocks", "residual blocks per level", cxxopts::value(shape.res_blocks)->default_value("1"))(
      "noise-schedule", "linear or cosine", cxxopts::value(noise_schedule)->default_value("cosine"))(
      "respacing",
      "the sampling steps written into the flags (guided-diffusion's timestep_respacing; "
      "ddim25 starts at step 960, where the cosine schedule's pred_xstart is still well "
      "conditioned)",
      cxxopts::value(respacing)->default_value("ddim25"))(
      "ema", "decay of the weights' moving average (the saved model)",
      cxxopts::value(ema)->default_value("0.998"))(
      "from",
      "fine-tune: start from this diffusion folder's weights, architecture and schedule (the shape "
      "flags are ignored)",
      cxxopts::value(from))(
      "clip",
      "condition on this CLIP folder's embeddings of each scene's caption (unCLIP's clip_emb, for "
      "classifier-free guidance); the projection trains on them standardised, and the saved weights "
      "take them raw",
      cxxopts::value(clip_dir))(
      "cond-drop", "with --clip: share of captions replaced by no condition (the unconditional prediction)",
      cxxopts::value(cond_drop)->default_value("0.1"))(
      "cond-lr", "with --clip: the CLIP projection's learning rate, as a multiple of --lr",
      cxxopts::value(cond_lr)->default_value("1"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  t.prepare();
  if ((shape.image_size != 32 && shape.image_size != 64) || shape.channels < 32 || shape.channels % 32 != 0 ||
      shape.res_blocks < 1 || !(ema >= 0 && ema < 1) || !(cond_drop >= 0 && cond_drop < 1) ||
      !(cond_lr > 0)) {
    cg::fail(
        "--size must be 32 or 64, --channels a multiple of 32 (GroupNorm's groups), --res-blocks positive, "
        "--ema and "
        "--cond-drop in [0, 1), --cond-lr positive");
  }
  shape.channel_mult =
      shape.image_size == 64 ? std::vector<int64_t>{1, 2, 2, 2} : std::vector<int64_t>{1, 2, 2};
  cg::UNetConfig config = tw::toy_unet_config(shape);
  std::optional<cg::LoadedUNet> start;
  if (!from.empty()) {
    start = cg::load_unet((fs::path(from) / "model.safetensors").string(),
                          (fs::path(from) / "model.json").string(), t.device);
    config = start->model->config();
    shape.image_size = start->image_size;
    noise_schedule = start->diffusion.noise_schedule;
  }
  std::shared_ptr<cg::LoadedClip> clip;
  tw::ConditionStandard standard;  // with --clip: the projection trains on standardised caption embeddings
  if (!clip_dir.empty()) {
    cg::LoadOptions load;
    load.device = t.device;
    clip = std::make_shared<cg::LoadedClip>(cg::load_clip(clip_dir, load));
    clip->model->eval();
    const int64_t dim = clip->model->config().embed_dim;
    if (config.clip_dim > 0 && config.clip_dim != dim) {
      cg::fail("--from ", from, " is conditioned on ", config.clip_dim, "-d CLIP embeddings; --clip ",
               clip_dir, " gives ", dim, "-d ones");
    }
    config.clip_dim = dim;
    standard = tw::ConditionStandard::of(
        cg::embed_prompts(*clip, tw::caption_corpus(2048, static_cast<uint64_t>(t.seed)), {}, false));
  } else if (config.clip_dim > 0) {
    cg::fail("--from ", from, " is conditioned on ", config.clip_dim,
             "-d CLIP embeddings: give --clip with the CLIP it was trained on");
  }
  const cg::DiffusionSchedule schedule =
      cg::DiffusionSchedule::make(noise_schedule, start ? start->diffusion.steps : 1000, "");
  auto model = tw::init_unet(config, static_cast<uint64_t>(t.seed));
  auto average = tw::init_unet(config, static_cast<uint64_t>(t.seed));
  if (start) {
    // Every weight the start has; a CLIP projection it lacks stays zero (the start's predictions, unchanged).
    torch::NoGradGuard no_grad;
    const auto theirs = start->model->named_parameters();
    for (auto* m : {model.get(), average.get()}) {
      for (auto& kv : m->named_parameters()) {
        if (const torch::Tensor* v = theirs.find(kv.key())) kv.value().copy_(*v);
      }
    }
    if (start->model->config().clip_dim > 0) {
      standard.unfold(*model);
      standard.unfold(*average);
    }
  }
  model->to(t.device);
  average->to(t.device);
  cg::OptimizerOptions adam;
  adam.lr = t.lr;
  std::vector<torch::Tensor> shared_params, cond_params;
  for (auto& kv : model->named_parameters())
    (kv.key().rfind("clip_emb.", 0) == 0 ? cond_params : shared_params).push_back(kv.value());
  cg::Optimizer opt(shared_params, adam);
  cg::OptimizerOptions cond_adam = adam;
  cond_adam.lr = t.lr * cond_lr;
  std::optional<cg::Optimizer> cond_opt;
  if (!cond_params.empty()) cond_opt.emplace(cond_params, cond_adam);
  std::vector<cg::Optimizer*> optimizers = {&opt};
  if (cond_opt) optimizers.push_back(&*cond_opt);
  int64_t step = 0;
  double earlier = 0;
  if (fs::exists(t.state)) {
    std::tie(step, earlier) = load_state(t.state, *model, optimizers, average.get());
    std::cerr << "resuming " << t.state << " at step " << step << "\n";
  }
  std::cerr << "toy diffusion: " << config.describe() << ", " << shape.image_size << " px, " << noise_schedule
            << " schedule" << (from.empty() ? "" : ", from " + from)
            << (clip ? ", conditioned on " + clip_dir + "'s caption embeddings" : "") << "\n";
  const tw::TrainSchedule lr_schedule = t.schedule(100);
  const auto t0 = Clock::now();
  double loss_sum = 0;
  int64_t loss_n = 0;
  InterruptScope interrupt;
  for (; !t.stop_before(step, earlier + minutes_since(t0)); ++step) {
    std::mt19937_64 rng = tw::step_rng(static_cast<uint64_t>(t.seed), step);
    std::vector<std::string> captions;
    const torch::Tensor x0 =
        tw::diffusion_images(tw::picture_batch(rng, t.batch, clip ? &captions : nullptr), shape.image_size)
            .to(t.device);
    torch::Tensor condition;
    if (clip) {
      torch::NoGradGuard no_grad;
      std::vector<float> keep;
      std::bernoulli_distribution drop(cond_drop);
      for (int64_t i = 0; i < t.batch; ++i) keep.push_back(drop(rng) ? 0.0f : 1.0f);
      condition = standard.apply(cg::embed_prompts(*clip, captions, {}, false).to(t.device) *
                                 torch::tensor(keep).to(t.device).unsqueeze(1));
    }
    torch::Generator gen = cg::make_generator(rng());
    const torch::Tensor loss = tw::diffusion_loss(*model, schedule, x0, gen, condition);
    for (cg::Optimizer* o : optimizers) o->zero_grad();
    loss.backward();
    opt.set_lr(lr_schedule.lr_at(step));
    if (cond_opt) cond_opt->set_lr(lr_schedule.lr_at(step) * cond_lr);
    for (cg::Optimizer* o : optimizers) o->step();
    tw::update_average(*average, *model, ema, step);
    loss_sum += loss.item<double>();
    ++loss_n;
    if ((step + 1) % t.every == 0 || step + 1 == t.steps) {
      const double elapsed = earlier + minutes_since(t0);
      std::cerr << cg::cat("step ", step + 1, "/", t.steps, "  loss ", loss_sum / static_cast<double>(loss_n),
                           "  lr ", lr_schedule.lr_at(step), "  ", elapsed, " min\n");
      loss_sum = 0;
      loss_n = 0;
      save_state(t.state, *model, {optimizers.begin(), optimizers.end()}, step + 1, elapsed, average.get());
    }
  }
  const double elapsed = earlier + minutes_since(t0);
  save_state(t.state, *model, {optimizers.begin(), optimizers.end()}, step, elapsed, average.get());
  if (clip) standard.fold(*average);
  t.write_model(*average, step);
  cg::write_file_atomic(
      (fs::path(t.out) / "model.json").string(),
      tw::unet_flags_json(config, shape.image_size, noise_schedule, schedule.original_steps, respacing));
  std::cerr << cg::cat("wrote ", t.out, "/model.safetensors and model.json after ", step, " steps, ", elapsed,
                       " min\n");
  return 0;
}

int eval(int argc, char** argv) {
  cxxopts::Options opts(
      "clipguide_toyworld eval",
      "zero-shot classification, class reranking and VQGAN reconstruction of fresh renders");
  std::string model, vqgan;
  int64_t images = 0, seed = 0, blur_size = 0;
  // clang-format off: one option a line
  opts.add_options()("model", "a CLIP (default: the bundled toy CLIP)", cxxopts::value(model))(
      "blur-size",
      "show the CLIP the renders as if made at this size (32: the bundled diffusion model's), "
      "0: as rendered",
      cxxopts::value(blur_size)->default_value("0"))(
      "vqgan", "a VQGAN whose reconstructions to judge (default: the bundled toy VQGAN)",
      cxxopts::value(vqgan))("images", "renders to classify", cxxopts::value(images)->default_value("1000"))(
      "seed", "seed of the renders (training draws from seeds 1 and 2; the trainer's own checks use 999)",
      cxxopts::value(seed)->default_value("2026"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (images < 1) cg::fail("--images must be at least 1");
  if (blur_size < 0 || blur_size > tw::kImageSize)
    cg::fail("--blur-size must be between 0 and ", tw::kImageSize);
  cg::LoadedClip clip = cg::load_clip(model.empty() ? cg::bundled_clip() : model);
  const tw::ZeroShot zs = tw::zero_shot(clip, images, static_cast<uint64_t>(seed), blur_size);
  const tw::RerankResult rr = tw::rerank_classes(clip, static_cast<uint64_t>(seed), blur_size);
  nlohmann::json out{{"model", clip.path},
                     {"blur_size", blur_size},
                     {"images", zs.images},
                     {"colour", zs.colour},
                     {"shape", zs.shape},
                     {"background", zs.background},
                     {"held_out_images", zs.held_out_images},
                     {"held_out_joint", zs.held_out_joint},
                     {"rerank_classes", rr.classes},
                     {"rerank_top1", rr.top1}};
  const cg::LoadedVqgan v = cg::load_vqgan(vqgan.empty() ? cg::bundled_vqgan() : vqgan,
                                           vqgan.empty() ? cg::bundled_vqgan_config() : "", torch::kCPU);
  const tw::Reconstruction rec = tw::reconstruction(*v.model, 256, static_cast<uint64_t>(seed));
  out["vqgan"] = v.path;
  out["reconstruction_l1"] = rec.l1;
  out["reconstruction_judged_same"] = rec.judged_same;
  std::cout << out.dump() << "\n";
  return 0;
}

// Writes one render per colour+shape class (CLASS.png: red-circle.png ...), or one plain image per colour, or
// `count` random scenes with their captions in captions.txt.
int render(int argc, char** argv) {
  cxxopts::Options opts("clipguide_toyworld render", "render toy-world scenes to PNG files");
  std::string out;
  int64_t count = 0, seed = 0;
  bool classes = false, backgrounds = false;
  // clang-format off: one option a line
  opts.add_options()("out", "folder to write into", cxxopts::value(out))(
      "backgrounds", "one plain image of each colour instead (COLOUR.png: generate's starting points)",
      cxxopts::value(backgrounds))("count", "random scenes to render",
                                   cxxopts::value(count)->default_value("8"))(
      "classes", "one single-object render per colour+shape class instead", cxxopts::value(classes))(
      "seed", "seed", cxxopts::value(seed)->default_value("7"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (out.empty()) cg::fail("--out DIR is required");
  if (count < 0 || count > 100000) cg::fail("--count must be between 0 and 100000");
  fs::create_directories(out);
  std::mt19937_64 rng = tw::step_rng(static_cast<uint64_t>(seed), 0);
  auto write = [&](const tw::Scene& scene, const std::string& name) {
    const torch::Tensor img = (tw::render(scene).permute({1, 2, 0}) * 255)
                                  .round()
                                  .to(torch::kUInt8)
                                  .contiguous();  // [3, H, W] -> [H, W, 3]
    cg::write_file_atomic((fs::path(out) / name).string(), cg::encode_png(img, {}));
  };
  std::string captions;
  if (backgrounds) {
    for (int c = 0; c < tw::kColours; ++c) {
      tw::Scene plain;
      plain.background = static_cast<tw::Colour>(c);
      write(plain, tw::name(plain.background) + ".png");
    }
    return 0;
  }
  if (classes) {
    for (int c = 0; c < tw::kColours; ++c) {
      for (int s = 0; s < tw::kShapes; ++s) {
        const auto scene =
            tw::random_single_object(static_cast<tw::Colour>(c), static_cast<tw::Shape>(s), rng);
        const std::string name =
            cg::cat(tw::name(static_cast<tw::Colour>(c)), "-", tw::name(static_cast<tw::Shape>(s)), ".png");
        write(scene, name);
        captions += name + "\t" + tw::describe(scene, 0, rng).text + "\n";
      }
    }
  } else {
    tw::SceneOptions options;
    options.allow_held_out = true;
    for (int64_t i = 0; i < count; ++i) {
      const tw::Scene scene = tw::sample_scene(rng, options);
      const std::string name = cg::cat("scene-", i, ".png");
      write(scene, name);
      captions += name + "\t" + tw::describe(scene, -1, rng).text + "\n";
    }
  }
  cg::write_file_atomic((fs::path(out) / "captions.txt").string(), captions);
  return 0;
}

// One JSON line per image: what the pixel judge sees (no CLIP involved).
int judge(int argc, char** argv) {
  if (argc < 2) cg::fail("give one or more PNG files to judge");
  for (int i = 1; i < argc; ++i) {
    const cg::Image img = cg::read_image(argv[i]);
    const torch::Tensor t =
        cg::to_rgb_tensor(img).permute({2, 0, 1}).to(torch::kFloat).div(255);  // [H, W, 3] -> [3, H, W]
    const tw::Judgement j = tw::judge(t);
    nlohmann::json line{
        {"image", argv[i]}, {"background", tw::name(j.background)}, {"object", j.found_object}};
    if (j.found_object) {
      line["colour"] = tw::name(j.colour);
      line["shape"] = tw::name(j.shape);
      line["pixels"] = j.object_pixels;
      line["fill"] = j.fill;
      line["solidity"] = j.solidity;
      line["turn"] = j.turn;
      line["hole"] = j.hole;
    }
    std::cout << line.dump() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: clipguide_toyworld train-clip|train-vqgan|train-diffusion|eval|render|judge [OPTIONS] (--help "
      "after a command for its options)";
  if (argc < 2) {
    std::cerr << usage << "\n";
    return 2;
  }
  const std::string command = argv[1];
  try {
    if (command == "train-clip") return train_clip(argc - 1, argv + 1);
    if (command == "train-vqgan") return train_vqgan(argc - 1, argv + 1);
    if (command == "train-diffusion") return train_diffusion(argc - 1, argv + 1);
    if (command == "eval") return eval(argc - 1, argv + 1);
    if (command == "render") return render(argc - 1, argv + 1);
    if (command == "judge") return judge(argc - 1, argv + 1);
    cg::warn("clipguide_toyworld: unknown command '", command, "'; ", usage);
    return 2;
  } catch (const std::exception& e) {
    cg::warn("clipguide_toyworld ", command, ": ", cg::error_line(e));
    return 1;
  }
}

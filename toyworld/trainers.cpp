#include "toyworld/trainers.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "clip/load.h"
#include "clip/score.h"
#include "clip/tokenizer.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/random.h"
#include "generators/optimizer.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "toyworld/eval.h"
#include "toyworld/world.h"

namespace clipguide::toyworld {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double minutes_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count() / 60;
}

// What a training run keeps between sessions: weights (fp32), optimizer moments, the step and, for a run that
// keeps one, the weights' moving average ("ema."), in one safetensors file.
void save_state(const std::string& path, torch::nn::Module& model,
                const std::vector<const Optimizer*>& optimizers, int64_t step, double elapsed_minutes,
                torch::nn::Module* average = nullptr) {
  TensorMap all = named_weights(model, torch::kFloat);
  if (average != nullptr) {
    for (auto& [k, v] : named_weights(*average, torch::kFloat)) all.emplace("ema." + k, v);
  }
  for (size_t i = 0; i < optimizers.size(); ++i) {
    for (const auto& [k, v] : optimizers[i]->state()) all.emplace(cat("optimizer", i, ".", k), v);
  }
  write_file_atomic(path, serialize_safetensors(all, {{"step", std::to_string(step)},
                                                      {"minutes", std::to_string(elapsed_minutes)}}));
}

// Loads a state saved by save_state into `model`, `optimizers` and `average`; returns {step, minutes}.
std::pair<int64_t, double> load_state(const std::string& path, torch::nn::Module& model,
                                      const std::vector<Optimizer*>& optimizers,
                                      torch::nn::Module* average = nullptr) {
  SafetensorsContents c = read_safetensors(path);
  torch::NoGradGuard no_grad;
  auto load = [&](torch::nn::Module& m, const std::string& prefix) {
    for (auto& kv : m.named_parameters()) {
      auto it = c.tensors.find(prefix + kv.key());
      if (it == c.tensors.end()) fail(path, ": no ", prefix, kv.key(), " (a state from another model?)");
      kv.value().copy_(it->second);
    }
  };
  load(model, "");
  if (average != nullptr) load(*average, "ema.");
  for (size_t i = 0; i < optimizers.size(); ++i)
    optimizers[i]->load_state(tensors_under(c.tensors, cat("optimizer", i, ".")));
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

}  // namespace

void TrainRun::prepare() {
  if (steps < 1 || batch < 1 || every < 1 || threads < 1 || !(lr > 0) || minutes < 0) {
    fail("steps, batch, every, threads and lr must be positive, minutes zero or positive");
  }
  set_cpu_threads(static_cast<int>(threads));
  device = parse_device(device_spec);
  if (state.empty()) state = (fs::path(out) / "train-state.safetensors").string();
  fs::create_directories(out);
}
TrainSchedule TrainRun::schedule(int64_t warmup) const {
  TrainSchedule s;
  s.steps = steps;
  s.lr = lr;
  s.warmup = std::min(warmup, steps / 10);
  return s;
}
bool TrainRun::stop_before(int64_t step, double elapsed_minutes) const {
  return step >= steps || (should_stop && should_stop()) || (minutes > 0 && elapsed_minutes >= minutes);
}
void TrainRun::write_model(torch::nn::Module& model, int64_t step) const {
  write_file_atomic((fs::path(out) / "model.safetensors").string(),
                    serialize_safetensors(
                        named_weights(model, torch::kHalf),
                        {{"format", "pt"}, {"steps", std::to_string(step)}, {"seed", std::to_string(seed)}}));
}

void train_clip(const TrainRun& run, const ClipTraining& o) {
  TrainRun t = run;
  ToyClipShape shape = o.shape;
  const std::string precision = o.precision, from = o.from;
  const double adversarial = o.adversarial, blur = o.blur;
  const int64_t adversarial_steps = o.adversarial_steps;
  if (precision != "fp32" && precision != "bf16") fail("precision ", precision, ": choose fp32 or bf16");
  if (!(blur >= 1) || !(adversarial >= 0) || adversarial_steps < 1) {
    fail("blur must be at least 1, adversarial zero or positive, adversarial_steps positive");
  }
  t.prepare();
  if (precision == "bf16" && !t.device.is_cpu())
    fail("precision bf16 is CPU autocast; on ", t.device_spec, " train in fp32");
  if (precision == "bf16") warn_if_bf16_is_emulated(t.device, torch::kBFloat16);
  std::shared_ptr<ClipModel> model;
  if (from.empty()) {
    // The vocabulary: BPE merges learned from 20,000 captions.
    write_hf_vocabulary(train_bpe(caption_corpus(20000, static_cast<uint64_t>(t.seed)), 4096), t.out);
    model = init_clip(toy_clip_config(shape, Tokenizer::from_path(t.out).max_id() + 1),
                      static_cast<uint64_t>(t.seed));
  } else {
    const LoadedClip start = load_clip(from);
    if (start.model->config().image_resolution != kImageSize) {
      fail("the start ", from, ": a CLIP of ", start.model->config().image_resolution,
           " px images; the toy world's are ", kImageSize);
    }
    for (const char* file : {"vocab.json", "merges.txt"}) {
      const fs::path source = fs::path(from) / file, target = fs::path(t.out) / file;
      if (!fs::is_regular_file(source))
        fail("the start ", from, ": no ", file, " (a toy CLIP folder holds its vocabulary)");
      if (!fs::exists(target) || !fs::equivalent(source, target))
        fs::copy_file(source, target, fs::copy_options::overwrite_existing);
    }
    model = start.model;
    for (auto& p : model->parameters()) p.requires_grad_(true);  // the loaders freeze weights for inference
  }
  const Tokenizer tokenizer = Tokenizer::from_path(t.out);
  const ClipConfig& config = model->config();
  model->to(t.device);
  auto [decay, rest] = decay_groups(*model);
  OptimizerOptions with_decay;
  with_decay.kind = "adamw";
  with_decay.lr = t.lr;
  with_decay.beta2 = 0.98;
  with_decay.eps = 1e-6;
  with_decay.weight_decay = 0.1;
  OptimizerOptions without = with_decay;
  without.weight_decay = 0;
  Optimizer opt_decay(decay, with_decay), opt_rest(rest, without);
  int64_t step = 0;
  double earlier = 0;
  if (fs::exists(t.state)) {
    std::tie(step, earlier) = load_state(t.state, *model, {&opt_decay, &opt_rest});
    t.say(cat("resuming ", t.state, " at step ", step));
  }
  t.say(cat("toy CLIP: ", config.architecture(), ", vocabulary ", tokenizer.vocab_size(), " tokens, context ",
            config.context_length, (from.empty() ? "" : ", from " + from)));
  const TrainSchedule schedule = t.schedule(200);
  LoadedClip measured;  // the model in training, as the measurements take a CLIP
  measured.model = model;
  measured.tokenizer = std::make_shared<const Tokenizer>(tokenizer);
  const auto t0 = Clock::now();
  double loss_sum = 0;
  int64_t loss_n = 0;
  model->train();
  for (; !t.stop_before(step, earlier + minutes_since(t0)); ++step) {
    std::mt19937_64 rng = step_rng(static_cast<uint64_t>(t.seed), step);
    const ClipBatch b = clip_batch(rng, tokenizer, config.context_length, t.batch);
    const torch::Tensor tokens = b.tokens.to(t.device), targets = b.targets.to(t.device);
    torch::Tensor images01 = augment_images(b.images, rng, blur).to(t.device);
    if (adversarial > 0) {
      torch::Generator gen = at::detail::createCPUGenerator(rng());
      images01 = adversarial_images(*model, images01, tokens, targets, adversarial, adversarial_steps,
                                    precision == "bf16", gen);
    }
    const torch::Tensor loss =
        clip_batch_loss(*model, normalize_pixels(images01), tokens, targets, precision == "bf16");
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
      const ZeroShot zs = zero_shot(measured, 240, 999);
      model->train();
      t.say(cat("step ", step + 1, "/", t.steps, "  loss ", loss_sum / static_cast<double>(loss_n), "  lr ",
                schedule.lr_at(step), "  T ", model->logit_scale_exp().item<double>(), "  zero-shot colour ",
                zs.colour, " shape ", zs.shape, " background ", zs.background, " held-out ",
                zs.held_out_joint, "  ", elapsed, " min"));
      loss_sum = 0;
      loss_n = 0;
      save_state(t.state, *model, {&opt_decay, &opt_rest}, step + 1, elapsed);
    }
  }
  const double elapsed = earlier + minutes_since(t0);
  save_state(t.state, *model, {&opt_decay, &opt_rest}, step, elapsed);
  t.write_model(*model, step);
  t.say(cat("wrote ", t.out, "/model.safetensors after ", step, " steps, ", elapsed, " min"));
}

void train_vqgan(const TrainRun& run, const VqganTraining& o) {
  TrainRun t = run;
  ToyVqganShape shape = o.shape;
  const int64_t restart_every = o.restart_every;
  const double object_weight = o.object_weight;
  t.prepare();
  if (restart_every < 1 || shape.ch < 1 || shape.num_res_blocks < 1 || shape.n_embed < 2 ||
      !(object_weight >= 0)) {
    fail(
        "restart_every, ch and res_blocks must be positive, n_embed at least 2, object_weight zero "
        "or positive");
  }
  const VqganConfig config = toy_vqgan_config(shape);
  auto model = init_vqgan(config, static_cast<uint64_t>(t.seed));
  model->to(t.device);
  OptimizerOptions adam;
  adam.lr = t.lr;
  adam.beta1 = 0.5;  // taming's betas
  adam.beta2 = 0.9;
  Optimizer opt(model->parameters(), adam);
  int64_t step = 0;
  double earlier = 0;
  if (fs::exists(t.state)) {
    std::tie(step, earlier) = load_state(t.state, *model, {&opt});
    t.say(cat("resuming ", t.state, " at step ", step));
  }
  t.say(cat("toy VQGAN: ", config.describe()));
  const TrainSchedule schedule = t.schedule(100);
  DeadCodeRestarter restarter(config.n_embed, restart_every);
  const auto t0 = Clock::now();
  double l1 = 0, l2 = 0, cb = 0;
  int64_t n = 0, restarted = 0;
  for (; !t.stop_before(step, earlier + minutes_since(t0)); ++step) {
    std::mt19937_64 rng = step_rng(static_cast<uint64_t>(t.seed), step);
    const torch::Tensor x = picture_batch(rng, t.batch).to(t.device);
    VqganLosses losses = vqgan_losses(*model, x, 0.25, object_weight);
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
      t.say(cat("step ", step + 1, "/", t.steps, "  L1 ", l1 / d, "  L2 ", l2 / d, "  codebook ", cb / d,
                "  codes used ", restarter.used_last_window(), "/", config.n_embed, "  restarted ", restarted,
                "  lr ", schedule.lr_at(step), "  ", elapsed, " min"));
      l1 = l2 = cb = 0;
      n = restarted = 0;
      save_state(t.state, *model, {&opt}, step + 1, elapsed);
    }
  }
  const double elapsed = earlier + minutes_since(t0);
  save_state(t.state, *model, {&opt}, step, elapsed);
  t.write_model(*model, step);
  write_file_atomic((fs::path(t.out) / "model.yaml").string(), vqgan_yaml(config, kImageSize));
  t.say(cat("wrote ", t.out, "/model.safetensors and model.yaml after ", step, " steps, ", elapsed, " min"));
}

void train_diffusion(const TrainRun& run, const DiffusionTraining& o) {
  TrainRun t = run;
  ToyUNetShape shape = o.shape;
  std::string noise_schedule = o.noise_schedule;
  const std::string respacing = o.respacing, from = o.from, clip_dir = o.clip;
  const double ema = o.ema, cond_drop = o.cond_drop, cond_lr = o.cond_lr;
  t.prepare();
  if ((shape.image_size != 32 && shape.image_size != 64) || shape.channels < 32 || shape.channels % 32 != 0 ||
      shape.res_blocks < 1 || !(ema >= 0 && ema < 1) || !(cond_drop >= 0 && cond_drop < 1) ||
      !(cond_lr > 0)) {
    fail(
        "size must be 32 or 64, channels a multiple of 32 (GroupNorm's groups), res_blocks positive, "
        "ema and "
        "cond_drop in [0, 1), cond_lr positive");
  }
  shape.channel_mult =
      shape.image_size == 64 ? std::vector<int64_t>{1, 2, 2, 2} : std::vector<int64_t>{1, 2, 2};
  UNetConfig config = toy_unet_config(shape);
  std::optional<LoadedUNet> start;
  if (!from.empty()) {
    start = load_unet((fs::path(from) / "model.safetensors").string(),
                      (fs::path(from) / "model.json").string(), t.device);
    config = start->model->config();
    shape.image_size = start->image_size;
    noise_schedule = start->diffusion.noise_schedule;
  }
  std::shared_ptr<LoadedClip> clip;
  ConditionStandard standard;  // with clip: the projection trains on standardised caption embeddings
  if (!clip_dir.empty()) {
    LoadOptions load;
    load.device = t.device;
    clip = std::make_shared<LoadedClip>(load_clip(clip_dir, load));
    clip->model->eval();
    const int64_t dim = clip->model->config().embed_dim;
    if (config.clip_dim > 0 && config.clip_dim != dim) {
      fail("the start ", from, " is conditioned on ", config.clip_dim, "-d CLIP embeddings; the CLIP ",
           clip_dir, " gives ", dim, "-d ones");
    }
    config.clip_dim = dim;
    standard = ConditionStandard::of(
        embed_prompts(*clip, caption_corpus(2048, static_cast<uint64_t>(t.seed)), {}, false));
  } else if (config.clip_dim > 0) {
    fail("the start ", from, " is conditioned on ", config.clip_dim,
         "-d CLIP embeddings: give the CLIP it was trained on");
  }
  const DiffusionSchedule schedule =
      DiffusionSchedule::make(noise_schedule, start ? start->diffusion.steps : 1000, "");
  auto model = init_unet(config, static_cast<uint64_t>(t.seed));
  auto average = init_unet(config, static_cast<uint64_t>(t.seed));
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
  OptimizerOptions adam;
  adam.lr = t.lr;
  std::vector<torch::Tensor> shared_params, cond_params;
  for (auto& kv : model->named_parameters())
    (kv.key().rfind("clip_emb.", 0) == 0 ? cond_params : shared_params).push_back(kv.value());
  Optimizer opt(shared_params, adam);
  OptimizerOptions cond_adam = adam;
  cond_adam.lr = t.lr * cond_lr;
  std::optional<Optimizer> cond_opt;
  if (!cond_params.empty()) cond_opt.emplace(cond_params, cond_adam);
  std::vector<Optimizer*> optimizers = {&opt};
  if (cond_opt) optimizers.push_back(&*cond_opt);
  int64_t step = 0;
  double earlier = 0;
  if (fs::exists(t.state)) {
    std::tie(step, earlier) = load_state(t.state, *model, optimizers, average.get());
    t.say(cat("resuming ", t.state, " at step ", step));
  }
  t.say(cat("toy diffusion: ", config.describe(), ", ", shape.image_size, " px, ", noise_schedule,
            " schedule", (from.empty() ? "" : ", from " + from),
            (clip ? ", conditioned on " + clip_dir + "'s caption embeddings" : "")));
  const TrainSchedule lr_schedule = t.schedule(100);
  const auto t0 = Clock::now();
  double loss_sum = 0;
  int64_t loss_n = 0;
  for (; !t.stop_before(step, earlier + minutes_since(t0)); ++step) {
    std::mt19937_64 rng = step_rng(static_cast<uint64_t>(t.seed), step);
    std::vector<std::string> captions;
    const torch::Tensor x0 =
        diffusion_images(picture_batch(rng, t.batch, clip ? &captions : nullptr), shape.image_size)
            .to(t.device);
    torch::Tensor condition;
    if (clip) {
      torch::NoGradGuard no_grad;
      std::vector<float> keep;
      std::bernoulli_distribution drop(cond_drop);
      for (int64_t i = 0; i < t.batch; ++i) keep.push_back(drop(rng) ? 0.0f : 1.0f);
      condition = standard.apply(embed_prompts(*clip, captions, {}, false).to(t.device) *
                                 torch::tensor(keep).to(t.device).unsqueeze(1));
    }
    torch::Generator gen = make_generator(rng());
    const torch::Tensor loss = diffusion_loss(*model, schedule, x0, gen, condition);
    for (Optimizer* o : optimizers) o->zero_grad();
    loss.backward();
    opt.set_lr(lr_schedule.lr_at(step));
    if (cond_opt) cond_opt->set_lr(lr_schedule.lr_at(step) * cond_lr);
    for (Optimizer* o : optimizers) o->step();
    update_average(*average, *model, ema, step);
    loss_sum += loss.item<double>();
    ++loss_n;
    if ((step + 1) % t.every == 0 || step + 1 == t.steps) {
      const double elapsed = earlier + minutes_since(t0);
      t.say(cat("step ", step + 1, "/", t.steps, "  loss ", loss_sum / static_cast<double>(loss_n), "  lr ",
                lr_schedule.lr_at(step), "  ", elapsed, " min"));
      loss_sum = 0;
      loss_n = 0;
      save_state(t.state, *model, {optimizers.begin(), optimizers.end()}, step + 1, elapsed, average.get());
    }
  }
  const double elapsed = earlier + minutes_since(t0);
  save_state(t.state, *model, {optimizers.begin(), optimizers.end()}, step, elapsed, average.get());
  if (clip) standard.fold(*average);
  t.write_model(*average, step);
  write_file_atomic(
      (fs::path(t.out) / "model.json").string(),
      unet_flags_json(config, shape.image_size, noise_schedule, schedule.original_steps, respacing));
  t.say(cat("wrote ", t.out, "/model.safetensors and model.json after ", step, " steps, ", elapsed, " min"));
}

}  // namespace clipguide::toyworld

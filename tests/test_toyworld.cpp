// The toy world: renderer, captions and their claims, the pixel judge, the BPE trainer, a few training steps
// of each model, and the bundled models measured at safe margins below what bench/toyworld reports.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "clip/load.h"
#include "clip/tokenizer.h"
#include "core/device.h"
#include "core/file_io.h"
#include "generators/diffusion_run.h"
#include "generators/vqgan.h"
#include "guidance/clip_guide.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "jobs/bundled.h"
#include "toyworld/eval.h"
#include "toyworld/train.h"
#include "toyworld/trainers.h"
#include "toyworld/world.h"

namespace clipguide::toyworld {
namespace {

namespace fs = std::filesystem;

TEST(ToyWorld, ScenesAreSeededAndObjectsNeverTakeTheBackgroundColour) {
  std::mt19937_64 a(5), b(5);
  EXPECT_TRUE(torch::equal(render(sample_scene(a)), render(sample_scene(b))));
  std::mt19937_64 rng(11);
  int two = 0;
  for (int i = 0; i < 3000; ++i) {
    const Scene s = sample_scene(rng);
    two += s.objects.size() == 2;
    for (const Object& o : s.objects) {
      EXPECT_NE(o.colour, s.background);
      EXPECT_FALSE(is_held_out(o.colour, o.shape)) << name(o.colour) << " " << name(o.shape);
    }
  }
  EXPECT_GT(two, 500);
  const torch::Tensor img = render(sample_scene(rng));
  EXPECT_EQ(img.sizes(), (torch::IntArrayRef{3, kImageSize, kImageSize}));
  EXPECT_GE(img.min().item<float>(), 0.f);
  EXPECT_LE(img.max().item<float>(), 1.f);
}

TEST(ToyWorld, EdgesAreAntiAliased) {
  std::mt19937_64 rng(3);
  const torch::Tensor img = render(
      single_object_scene(Colour::Black, Colour::White, Shape::Circle, Size::Large, Position::Centre, rng));
  // Between the black background and the white disc some pixels take values in between.
  const torch::Tensor g = img[0];
  EXPECT_GT(((g > 0.3) & (g < 0.7)).sum().item<int64_t>(), 20);
}

TEST(ToyWorld, BatchesRenderAsSingleScenesDo) {
  std::mt19937_64 rng(11);
  std::vector<Scene> scenes;
  for (int i = 0; i < 5; ++i) scenes.push_back(sample_scene(rng));
  const torch::Tensor batch = render_batch(scenes);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{5, 3, kImageSize, kImageSize}));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(torch::equal(batch[i], render(scenes[static_cast<size_t>(i)])));
}

TEST(ToyWorld, ObjectWeightsMarkTheObjectAndItsRimOnly) {
  std::mt19937_64 rng(4);
  const Scene scene =
      single_object_scene(Colour::Blue, Colour::Yellow, Shape::Square, Size::Large, Position::Centre, rng);
  const torch::Tensor img = render(scene);
  const torch::Tensor w = object_weights(img.unsqueeze(0), 4)[0][0];
  // Far from the object: the background's weight; on the object: 1 + 4; the object's area, plus a rim, at 5.
  EXPECT_FLOAT_EQ(w[0][0].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(w[kImageSize / 2][kImageSize / 2].item<float>(), 5.f);
  const torch::Tensor on_object =
      (img - img.narrow(1, 0, 1).narrow(2, 0, 1)).abs().sum(0) > 0.1;  // unlike the corner pixel
  const double heavy = (w > 1).sum().item<double>(), object = on_object.sum().item<double>();
  EXPECT_GE(heavy, object * 0.9);
  EXPECT_LE(heavy, object * 1.5);
  EXPECT_TRUE(torch::equal(object_weights(img.unsqueeze(0), 0), torch::ones({1, 1, kImageSize, kImageSize})));
}

TEST(ToyWorld, CaptionsClaimWhatTheirSceneShows) {
  std::mt19937_64 rng(21);
  std::set<std::string> texts;
  for (int i = 0; i < 2000; ++i) {
    const Scene s = sample_scene(rng);
    const Caption c = describe(s, -1, rng);
    EXPECT_TRUE(matches(c.claim, s)) << c.text;
    texts.insert(c.text);
  }
  EXPECT_GT(texts.size(), 800u);
  const Scene s =
      single_object_scene(Colour::Blue, Colour::Red, Shape::Circle, Size::Small, Position::TopLeft, rng);
  const Caption full = describe(s, 1, rng);
  EXPECT_EQ(full.text, "small red circle in the top left corner, blue background");
  Scene other = s;
  other.objects[0].shape = Shape::Star;
  EXPECT_FALSE(matches(full.claim, other));
  other = s;
  other.background = Colour::Green;
  EXPECT_FALSE(matches(full.claim, other));
  EXPECT_TRUE(matches(describe(s, 4, rng).claim, other)) << "\"a red circle\" says nothing of the background";
}

TEST(ToyWorld, HardNegativeBatchesMarkEveryMatchingCaption) {
  const BpeMerges merges = train_bpe(caption_corpus(2000, 1), 500);
  const fs::path dir = fs::temp_directory_path() / "clipguide_toyworld_vocab";
  write_hf_vocabulary(merges, dir.string());
  const Tokenizer tok = Tokenizer::from_path(dir.string());
  std::mt19937_64 rng(8);
  const ClipBatch b = clip_batch(rng, tok, 32, 16);
  EXPECT_EQ(b.images.sizes(), (torch::IntArrayRef{16, 3, 64, 64}));
  EXPECT_EQ(b.tokens.sizes(), (torch::IntArrayRef{16, 32}));
  EXPECT_TRUE(torch::equal(b.targets.diagonal(), torch::ones({16})));
  // Within a group the images differ in one attribute each: a caption naming all of them matches only its
  // own.
  EXPECT_LT(b.targets.sum().item<float>(), 16 * kGroup);
  EXPECT_THROW(clip_batch(rng, tok, 32, kGroup + 1), c10::Error);
}

TEST(ToyWorld, BpeLearnsTheCaptionWordsAndReadsBackAsAVocabulary) {
  const std::vector<std::string> corpus = caption_corpus(3000, 4);
  const BpeMerges merges = train_bpe(corpus, 4096);
  const fs::path dir = fs::temp_directory_path() / "clipguide_toyworld_bpe";
  write_hf_vocabulary(merges, dir.string());
  const Tokenizer tok = Tokenizer::from_path(dir.string());
  EXPECT_EQ(tok.vocab_size(), 512 + merges.size() + 2);
  // Every word of the grammar is frequent, so each becomes one token.
  EXPECT_EQ(tok.encode("a purple triangle on a yellow background").size(), 7u);
  EXPECT_EQ(tok.encode("small red circle in the top left corner, blue background").size(),
            11u);  // "," is a word too
  // Words it never saw still encode, byte by byte.
  EXPECT_EQ(tok.encode("zq").size(), 2u);
  EXPECT_THROW(train_bpe({"a"}, 10), Error);
}

// Renders as made (64 px) and as a 32 px generator makes them (area-averaged, quantized to 8 bits). The
// judge's prototypes are pixelated as the image is, so small shapes read right at 32 px too: all 240 on this
// seed, where the earlier judge (one prototype per shape and size, cut at 64 px; colour from the whole
// region) read 199 shapes, 238 colours.
TEST(ToyWorld, TheJudgeReadsCleanRenders) {
  for (int64_t side : {kImageSize, kImageSize / 2}) {
    std::mt19937_64 rng(99);
    int bg = 0, colour = 0, shape = 0;
    const int n = 240;
    for (int i = 0; i < n; ++i) {
      const auto c = static_cast<Colour>(i % kColours);
      const auto s = static_cast<Shape>(i / kColours % kShapes);
      Colour b = static_cast<Colour>((i / 3 + 1) % kColours);
      if (b == c) b = static_cast<Colour>((static_cast<int>(b) + 1) % kColours);
      const auto size = static_cast<Size>(i % kSizes);
      const auto pos = static_cast<Position>(i % kPositions);
      torch::Tensor img = render(single_object_scene(b, c, s, size, pos, rng));
      if (side < kImageSize)
        img = torch::adaptive_avg_pool2d(img.unsqueeze(0), {side, side})[0].mul(255).round().div(255);
      const Judgement j = judge(img);
      bg += j.background == b;
      colour += j.found_object && j.colour == c;
      shape += j.found_object && j.shape == s;
    }
    std::printf("[judge] renders at %ld px: background %d, colour %d, shape %d of %d\n",
                static_cast<long>(side), bg, colour, shape, n);
    EXPECT_EQ(bg, n) << side << " px";
    EXPECT_EQ(colour, n) << side << " px";
    EXPECT_GE(shape, n * 95 / 100) << side << " px";
  }
  // A plain image has no object.
  EXPECT_FALSE(judge(torch::full({3, 64, 64}, 0.5f)).found_object);
}

// A small randomly initialised CLIP with its vocabulary, and one hard-negative batch of 32 for it.
struct SmallClip {
  std::shared_ptr<ClipModel> model;
  ClipBatch batch;
};
SmallClip small_clip() {
  const BpeMerges merges = train_bpe(caption_corpus(1000, 1), 300);
  const fs::path dir = fs::temp_directory_path() / "clipguide_toyworld_train";
  write_hf_vocabulary(merges, dir.string());
  const Tokenizer tok = Tokenizer::from_path(dir.string());
  ToyClipShape shape;
  shape.vision_width = shape.text_width = shape.embed_dim = 64;
  shape.vision_layers = shape.text_layers = 1;
  shape.context = 24;
  const ClipConfig config = toy_clip_config(shape, tok.max_id() + 1);
  std::mt19937_64 rng(1);
  return {init_clip(config, 3), clip_batch(rng, tok, config.context_length, 32)};
}

// Losses of a few steps of the small CLIP on its batch; `bf16`: the towers under CPU autocast, as train-clip
// --precision bf16 runs them (the loss itself in fp32).
std::vector<double> clip_training_losses(bool bf16) {
  const auto [model, b] = small_clip();
  OptimizerOptions o;
  o.kind = "adamw";
  o.lr = 2e-3;
  Optimizer opt(model->parameters(), o);
  const torch::Tensor images = normalize_pixels(b.images);
  std::vector<double> losses;
  for (int step = 0; step < 12; ++step) {
    const torch::Tensor loss = clip_batch_loss(*model, images, b.tokens, b.targets, bf16);
    opt.zero_grad();
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  for (const auto& p : model->parameters())
    EXPECT_EQ(p.scalar_type(), torch::kFloat);  // autocast leaves weights fp32
  return losses;
}

TEST(ToyWorld, AFewClipTrainingStepsLowerTheLoss) {
  const std::vector<double> fp32 = clip_training_losses(false), bf16 = clip_training_losses(true);
  EXPECT_LT(fp32.back(), 0.7 * fp32.front()) << fp32.front() << " -> " << fp32.back();
  // bf16 matmuls learn about as fast (on this batch: 0.70 of the first loss against fp32's 0.68).
  EXPECT_LT(bf16.back(), 0.75 * bf16.front()) << bf16.front() << " -> " << bf16.back();
  EXPECT_NEAR(bf16.back(), fp32.back(), 0.05 * fp32.back());
  EXPECT_NEAR(bf16.front(), fp32.front(), 0.02 * fp32.front());  // the same model and batch, bf16 matmuls
  EXPECT_NE(bf16.front(), fp32.front());                         // ... which did run in bf16
}

TEST(ToyWorld, TrainingAugmentationBlursOnlyWhenAsked) {
  std::mt19937_64 scenes_rng(6);
  std::vector<Scene> scenes;
  for (int i = 0; i < 8; ++i) scenes.push_back(sample_scene(scenes_rng));
  const torch::Tensor x = render_batch(scenes);
  std::mt19937_64 a(5), b(5), c(5);
  const torch::Tensor plain = augment_images(x, a), unblurred = augment_images(x, b, 1),
                      blurred = augment_images(x, c, 4);
  EXPECT_TRUE(
      torch::equal(plain, unblurred));  // the default draws nothing more: earlier runs stay reproducible
  EXPECT_EQ(blurred.sizes(), plain.sizes());
  EXPECT_LT(tv_loss(blurred).item<double>(), 0.8 * tv_loss(plain).item<double>());  // softer edges
}

TEST(ToyWorld, AdversarialImagesStayInTheirBallAndRaiseTheLoss) {
  const auto [model, b] = small_clip();
  const double eps = 1.5;
  torch::Generator gen = make_generator(4);
  const torch::Tensor adv = adversarial_images(*model, b.images, b.tokens, b.targets, eps, 2, false, gen);
  const torch::Tensor moved = (adv - b.images).flatten(1).norm(2, 1);
  EXPECT_LE(moved.max().item<double>(), eps * (1 + 1e-5));
  EXPECT_GT(moved.min().item<double>(), 0.5 * eps);  // every image moved, mostly to the ball's edge
  EXPECT_GE(adv.min().item<float>(), 0.f);
  EXPECT_LE(adv.max().item<float>(), 1.f);
  EXPECT_FALSE(adv.requires_grad());
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());  // the attack trains nothing
  torch::NoGradGuard no_grad;
  const double clean =
      clip_batch_loss(*model, normalize_pixels(b.images), b.tokens, b.targets, false).item<double>();
  const double attacked =
      clip_batch_loss(*model, normalize_pixels(adv), b.tokens, b.targets, false).item<double>();
  // A random move of the same size barely changes the loss; the attack's raises it.
  const torch::Tensor noise = torch::randn(b.images.sizes(), gen);
  const torch::Tensor randomly =
      (b.images + noise / noise.flatten(1).norm(2, 1).view({-1, 1, 1, 1}) * eps).clamp(0, 1);
  const double random =
      clip_batch_loss(*model, normalize_pixels(randomly), b.tokens, b.targets, false).item<double>();
  EXPECT_GT(attacked - clean, 5 * std::abs(random - clean)) << clean << " " << attacked << " " << random;
}

TEST(ToyWorld, AFewVqganTrainingStepsLowerTheLossAndDeadCodesRestart) {
  ToyVqganShape shape;
  shape.ch_mult = {1, 2};
  shape.n_embed = 64;
  shape.z_channels = 32;
  shape.embed_dim = 8;
  auto model = init_vqgan(toy_vqgan_config(shape), 5);
  OptimizerOptions o;
  o.lr = 2e-3;
  Optimizer opt(model->parameters(), o);
  std::mt19937_64 rng(2);
  std::vector<Scene> scenes;
  for (int i = 0; i < 4; ++i) scenes.push_back(sample_scene(rng));
  const torch::Tensor x = torch::nn::functional::avg_pool2d(
      render_batch(scenes), torch::nn::functional::AvgPool2dFuncOptions(2));  // 32 px: quicker
  DeadCodeRestarter restarter(shape.n_embed, 1);
  std::vector<double> losses;
  int64_t restarted = 0;
  for (int step = 0; step < 15; ++step) {
    VqganLosses l = vqgan_losses(*model, x, 0.25, step % 2 == 0 ? 0 : 4);  // plain and object-weighted alike
    opt.zero_grad();
    l.total.backward();
    opt.step();
    restarted += restarter.update(*model, l.indices, x, step, rng);
    losses.push_back(l.l1 + l.l2);
  }
  EXPECT_LT(losses.back(), 0.8 * losses.front()) << losses.front() << " -> " << losses.back();
  EXPECT_GT(restarted, 0);
}

// A small UNet at 16 px (the scenes area-averaged down): quick enough for a unit test.
ToyUNetShape tiny_unet_shape() {
  ToyUNetShape shape;
  shape.image_size = 16;
  shape.channel_mult = {1, 2};
  shape.attention_below = 8;
  return shape;
}

// Eight scenes as a 16 px diffusion model sees them.
torch::Tensor tiny_diffusion_batch() {
  std::mt19937_64 rng(3);
  std::vector<Scene> scenes;
  for (int i = 0; i < 8; ++i) scenes.push_back(sample_scene(rng));
  return diffusion_images(render_batch(scenes), 16);
}

// The noise loss over `steps` Adam steps on `x0`, the same timesteps and noise every step (comparable
// losses).
std::vector<double> noise_losses(UNetModel& model, const torch::Tensor& x0, int steps,
                                 const torch::Tensor& clip_embed = {}) {
  const DiffusionSchedule s = DiffusionSchedule::make("cosine", 1000, "");
  OptimizerOptions o;
  o.lr = 2e-3;
  Optimizer opt(model.parameters(), o);
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    torch::Generator gen = make_generator(11);
    const torch::Tensor loss = diffusion_loss(model, s, x0, gen, clip_embed);
    opt.zero_grad();
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  return losses;
}

TEST(ToyWorld, AFewDiffusionTrainingStepsLowerTheNoiseLoss) {
  const UNetConfig config = toy_unet_config(tiny_unet_shape());
  EXPECT_EQ(config.attention_levels, (std::vector<bool>{false, true}));
  auto model = init_unet(config, 4);
  const torch::Tensor x0 = tiny_diffusion_batch();
  ASSERT_EQ(x0.sizes(), (std::vector<int64_t>{8, 3, 16, 16}));
  EXPECT_GE(x0.min().item<float>(), -1.f);
  EXPECT_LE(x0.max().item<float>(), 1.f);
  // guided-diffusion's zero_module: the untrained model predicts no noise at all.
  EXPECT_EQ(model->forward(x0, torch::full({8}, 500, torch::kLong)).abs().max().item<float>(), 0.f);
  const std::vector<double> losses = noise_losses(*model, x0, 15);
  EXPECT_NEAR(losses.front(), 1.0, 0.3);  // predicting zero: the noise's own variance
  EXPECT_LT(losses.back(), 0.7 * losses.front()) << losses.front() << " -> " << losses.back();
}

TEST(ToyWorld, TheMovingAverageWarmsUpThenDecays) {
  torch::nn::Linear model(2, 1), average(2, 1);
  torch::NoGradGuard no_grad;
  model->weight.fill_(1);
  model->bias.fill_(1);
  average->weight.fill_(0);
  average->bias.fill_(0);
  update_average(*average, *model, 0.999, 0);  // decay min(0.999, 1 / 10)
  EXPECT_NEAR(average->weight[0][0].item<double>(), 0.9, 1e-6);
  update_average(*average, *model, 0.5, 1000);  // decay 0.5
  EXPECT_NEAR(average->bias[0].item<double>(), 0.95, 1e-6);
}

TEST(ToyWorld, SavedDiffusionFilesLoadThroughTheOrdinaryLoader) {
  const UNetConfig config = toy_unet_config(tiny_unet_shape());
  auto model = init_unet(config, 6);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.05);  // a trained model's outputs are not all zero
  }
  const fs::path dir = fs::temp_directory_path() / "clipguide_toyworld_unet";
  fs::create_directories(dir);
  write_file_atomic((dir / "model.safetensors").string(),
                    serialize_safetensors(named_weights(*model, torch::kFloat), {{"format", "pt"}}));
  write_file_atomic((dir / "model.json").string(), unet_flags_json(config, 16, "cosine", 1000, "25"));
  const LoadedUNet loaded =
      load_unet((dir / "model.safetensors").string(), (dir / "model.json").string(), torch::kCPU);
  EXPECT_EQ(loaded.image_size, 16);
  EXPECT_EQ(loaded.diffusion.noise_schedule, "cosine");
  EXPECT_EQ(loaded.diffusion.timestep_respacing, "25");
  EXPECT_EQ(loaded.model->config().attention_levels, config.attention_levels);
  EXPECT_EQ(loaded.model->config().num_head_channels, config.num_head_channels);
  const torch::Tensor x = torch::randn({2, 3, 16, 16});
  const torch::Tensor t = torch::tensor({3, 700}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(loaded.model->forward(x, t), model->forward(x, t), 1e-5, 1e-5));
}

// A CLIP-conditioned UNet (unCLIP's clip_emb): it starts as the unconditional model, learns from caption
// embeddings, saves and loads through the ordinary loader with its flags, and classifier-free guidance is
// uncond + scale * (cond - uncond) from one batch.
TEST(ToyWorld, AClipConditionedUNetTrainsLoadsAndGuidesFreeOfAClassifier) {
  UNetConfig config = toy_unet_config(tiny_unet_shape());
  config.clip_dim = 8;
  auto model = init_unet(config, 5);
  const torch::Tensor x0 = tiny_diffusion_batch();
  const torch::Tensor cond = torch::nn::functional::normalize(
      torch::randn({8, 8}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const torch::Tensor t = torch::full({8}, 500, torch::kLong);
  const torch::Tensor xt = torch::randn({8, 3, 16, 16});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.05);
    auto fresh = init_unet(config, 5);
    for (auto& p : fresh->parameters()) p.normal_(0, 0.05);
    for (auto& p : fresh->named_parameters()) {
      if (p.key().rfind("clip_emb.", 0) == 0)
        p.value().zero_();  // as init_unet leaves it: the condition changes nothing
    }
    EXPECT_TRUE(
        torch::equal(fresh->forward(xt, t, {}, cond), fresh->forward(xt, t, {}, torch::zeros_like(cond))));
    EXPECT_EQ(init_unet(config, 5)->named_parameters()["clip_emb.weight"].abs().max().item<float>(), 0.f);
  }
  const std::vector<double> losses = noise_losses(*model, x0, 10, cond);
  EXPECT_LT(losses.back(), losses.front());
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(torch::allclose(model->forward(xt, t, {}, cond),
                               model->forward(xt, t, {}, torch::zeros_like(cond)), 1e-4, 1e-4));
  EXPECT_THROW(model->forward(xt, t), c10::Error);  // a conditioned model needs its condition

  const fs::path dir = fs::temp_directory_path() / "clipguide_toyworld_cond_unet";
  fs::create_directories(dir);
  write_file_atomic((dir / "model.safetensors").string(),
                    serialize_safetensors(named_weights(*model, torch::kFloat), {{"format", "pt"}}));
  write_file_atomic((dir / "model.json").string(), unet_flags_json(config, 16, "cosine", 1000, "25"));
  const LoadedUNet loaded =
      load_unet((dir / "model.safetensors").string(), (dir / "model.json").string(), torch::kCPU);
  EXPECT_EQ(loaded.model->config().clip_dim, 8);
  EXPECT_TRUE(
      torch::allclose(loaded.model->forward(xt, t, {}, cond), model->forward(xt, t, {}, cond), 1e-5, 1e-5));
  write_file_atomic((dir / "wrong.json").string(),
                    unet_flags_json(toy_unet_config(tiny_unet_shape()), 16, "cosine", 1000, "25"));
  EXPECT_THROW(load_unet((dir / "model.safetensors").string(), (dir / "wrong.json").string(), torch::kCPU),
               Error);  // clip_dim 0

  const DiffusionSchedule respaced = DiffusionSchedule::make("cosine", 1000, "25");
  const torch::Tensor one = cond.narrow(0, 0, 1);
  const torch::Tensor x = xt.narrow(0, 0, 2), ti = torch::full({2}, 10, torch::kLong);
  const torch::Tensor raw = respaced.timestep_map.index_select(0, ti);
  const torch::Tensor c = model->forward(x, raw, {}, one.expand({2, -1})),
                      u = model->forward(x, raw, {}, torch::zeros({2, 8}));
  EXPECT_TRUE(torch::allclose(unet_model_fn(
                                  model, respaced, {}, [&] { return one; }, 1)(x, ti),
                              c, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(unet_model_fn(
                                  model, respaced, {}, [&] { return one; }, 3)(x, ti),
                              u + 3 * (c - u), 1e-4, 1e-4));
}

TEST(ToyWorld, AStandardisedConditionFoldsIntoTheSavedProjection) {
  UNetConfig config = toy_unet_config(tiny_unet_shape());
  config.clip_dim = 8;
  auto model = init_unet(config, 6);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, 0.05);
  // Embeddings that share most of their direction, as a CLIP's caption embeddings do.
  const torch::Tensor shared = torch::randn({1, 8});
  const torch::Tensor e = torch::nn::functional::normalize(
      shared + 0.1 * torch::randn({8, 8}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const ConditionStandard standard = ConditionStandard::of(e);
  const torch::Tensor z = standard.apply(e);
  EXPECT_TRUE(torch::allclose(z.mean(0), torch::zeros({8}), 1e-5, 1e-5));
  EXPECT_NEAR(z.pow(2).mean().item<double>(), 1.0, 1e-4);
  const torch::Tensor xt = torch::randn({8, 3, 16, 16}), t = torch::full({8}, 300, torch::kLong);
  const torch::Tensor trained = model->forward(xt, t, {}, z),
                      none = model->forward(xt, t, {}, standard.apply(torch::zeros({8, 8})));
  standard.fold(*model);  // the saved model takes raw embeddings, and zeros still mean no condition
  EXPECT_TRUE(torch::allclose(model->forward(xt, t, {}, e), trained, 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(model->forward(xt, t, {}, torch::zeros({8, 8})), none, 1e-4, 1e-4));
  standard.unfold(*model);
  EXPECT_TRUE(torch::allclose(model->forward(xt, t, {}, z), trained, 1e-4, 1e-4));
}

TEST(ToyWorld, SavedFilesLoadThroughTheOrdinaryLoaders) {
  ToyVqganShape shape;
  const VqganConfig config = toy_vqgan_config(shape);
  const fs::path yaml = fs::temp_directory_path() / "clipguide_toyworld.yaml";
  std::ofstream(yaml) << vqgan_yaml(config, kImageSize);
  EXPECT_TRUE(VqganConfig::from_yaml(yaml.string()) == config);
}

// ---- the bundled models ----

TEST(BundledModels, LoadLikeAnyCheckpoint) {
  const LoadedClip clip = load_clip(bundled_clip());
  ASSERT_TRUE(clip.tokenizer);
  EXPECT_EQ(clip.model->config().image_resolution, kImageSize);
  EXPECT_LT(clip.model->config().context_length, 77);
  EXPECT_FALSE(clip.model->config().vision_resnet);
  const LoadedVqgan v = load_vqgan(bundled_vqgan(), bundled_vqgan_config(), torch::kCPU);
  EXPECT_EQ(v.model->config().factor(), 8);
  const LoadedUNet u = load_unet(bundled_diffusion(), bundled_diffusion_flags(), torch::kCPU);
  EXPECT_EQ(kImageSize % u.image_size, 0);
  EXPECT_FALSE(u.model->config().learn_sigma());
  EXPECT_EQ(u.model->config().clip_dim,
            clip.model->config().embed_dim);  // conditioned on the bundled CLIP's embeddings
  // Bundled files stay small: the whole folder under 20 MB.
  uint64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(bundled_models_dir()) / "toyworld")) {
    if (e.is_regular_file() && e.path().filename() != "train-state.safetensors") bytes += e.file_size();
  }
  EXPECT_LT(bytes, 20u << 20);
}

TEST(BundledModels, ClassifyFreshRendersZeroShot) {
  LoadedClip clip = load_clip(bundled_clip());
  // 480 renders: ten of every colour+shape class; seed far from training's.
  const ZeroShot zs = zero_shot(clip, 480, 4242);
  // bench/toyworld on 1,000 renders: colour 0.999, shape 0.967, background 1.0, held-out pairs 0.79;
  // reranking 48/48.
  EXPECT_GE(zs.colour, 0.95);
  EXPECT_GE(zs.background, 0.95);
  EXPECT_GE(zs.shape, 0.90);
  EXPECT_GE(zs.held_out_joint, 0.60);
  const RerankResult rr = rerank_classes(clip, 4242);
  EXPECT_GE(rr.top1, rr.classes - 4);
  // The renders as the 32 px diffusion model's images reach it (area-averaged down, resampled up): eval
  // --blur-size 32 on 480 renders, shape 0.973.
  EXPECT_GE(zero_shot(clip, 480, 4242, 32).shape, 0.90);
}

TEST(BundledModels, TheVqganReconstructsTheWorld) {
  const LoadedVqgan v = load_vqgan(bundled_vqgan(), bundled_vqgan_config(), torch::kCPU);
  // bench/toyworld on 256 scenes: L1 0.026; the judge reads 49% of reconstructions exactly as their originals
  // (small shapes come back as blobs: see MODEL_CARD.md).
  const Reconstruction r = reconstruction(*v.model, 64, 4243);
  EXPECT_LT(r.l1, 0.04);
  EXPECT_GE(r.judged_same, 0.2);
}

// The trainers as a library call: a run stopped by its caller saves its state, and a run resumed from that
// state ends with the weights of a run never stopped.
TEST(ToyWorld, AStoppedTrainingResumesToTheWeightsOfOneNeverStopped) {
  const fs::path dir = fs::temp_directory_path() / cat("clipguide-train-", ::getpid());
  fs::remove_all(dir);
  const int threads = torch::get_num_threads();  // a trainer sets its own; the other tests keep theirs
  VqganTraining tiny;
  tiny.shape.ch = 32;
  tiny.shape.n_embed = 16;
  auto run = [&](const std::string& out, std::function<bool()> should_stop) {
    TrainRun t;
    t.out = (dir / out).string();
    t.device_spec = "cpu";
    t.steps = 3;
    t.batch = 2;
    t.every = 10;
    t.seed = 2;
    t.should_stop = std::move(should_stop);
    train_vqgan(t, tiny);
    return read_safetensors((dir / out / "model.safetensors").string());
  };
  const SafetensorsContents whole = run("whole", {});
  int polls = 0;
  const SafetensorsContents stopped = run("parts", [&] { return ++polls == 3; });  // stops before step 3
  EXPECT_EQ(stopped.metadata.at("steps"), "2");
  const SafetensorsContents resumed = run("parts", {});
  EXPECT_EQ(resumed.metadata.at("steps"), "3");
  ASSERT_EQ(resumed.tensors.size(), whole.tensors.size());
  for (const auto& [name, value] : whole.tensors)
    EXPECT_TRUE(torch::equal(resumed.tensors.at(name), value)) << name;
  fs::remove_all(dir);
  set_cpu_threads(threads);
}

}  // namespace
}  // namespace clipguide::toyworld

// The CLIP guide and the optimisation loop: gradients against finite differences, prompt weights and stops,
// cutouts, the optimizer against torch.optim, generators, and a guided run that lowers its loss and resumes
// exactly.
#include "clip/score.h"
#include "core/error.h"
#include "fixtures.h"
#include "generators/guided_run.h"
#include "generators/pixels.h"
#include "generators/vqgan_generator.h"
#include "guidance/clip_guide.h"

namespace clipguide::test {
namespace {

std::vector<std::string> fixture_prompts() {
  return read_json(fixtures() / "clip" / "clip-manifest.json")["prompts"].get<std::vector<std::string>>();
}

ClipGuide make_guide(const std::string& prompt, ClipGuideOptions options = {}) {
  options.cutouts.cutn = 8;
  return ClipGuide({{fixture_vit_clip(), "fixture", 1.0, 0}}, PromptSchedule::parse(prompt, 0, false), {},
                   options);
}

torch::Tensor test_image(int64_t h, int64_t w, uint64_t seed) {
  auto rng = make_generator(seed);
  return torch::rand({1, 3, h, w}, rng) * 0.6 + 0.2;
}

double loss_at(const ClipGuide& guide, const torch::Tensor& image, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto rng = make_generator(seed);
  return guide.loss(image, rng).total.item<double>();
}

TEST(ClipGuide, GradientMatchesFiniteDifferences) {
  for (const std::string loss : {"spherical", "cosine"}) {
    ClipGuideOptions options;
    options.loss = parse_guide_loss(loss);
    options.tv_weight = 0.5;
    const auto prompts = fixture_prompts();
    const ClipGuide guide = make_guide(prompts.at(0) + ":1 | " + prompts.at(1) + ":-0.5", options);
    const torch::Tensor x = test_image(40, 48, 1);
    auto rng = make_generator(7);
    const torch::Tensor grad = guide.gradient(x, rng).first;
    ASSERT_EQ(grad.sizes(), x.sizes());
    for (uint64_t d = 0; d < 3; ++d) {
      auto drng = make_generator(100 + d);
      torch::Tensor v = torch::randn(x.sizes(), drng);
      v = v / v.norm();
      const double eps = 1e-2;
      const double fd = (loss_at(guide, x + eps * v, 7) - loss_at(guide, x - eps * v, 7)) / (2 * eps);
      const double an = (grad * v).sum().item<double>();
      std::printf("[gradient] %s direction %d: analytic %.6g, finite difference %.6g\n", loss.c_str(),
                  static_cast<int>(d), an, fd);
      EXPECT_NEAR(an, fd, 0.02 * std::abs(fd) + 1e-5) << loss;
    }
  }
}

TEST(ClipGuide, ZeroAndNegativeTotalWeightsAreFine) {
  const auto prompts = fixture_prompts();
  const torch::Tensor x = test_image(32, 32, 2);
  for (const std::string spec :
       {prompts.at(0) + ":0", prompts.at(0) + ":1 | " + prompts.at(1) + ":-1", prompts.at(0) + ":-2"}) {
    const ClipGuide guide = make_guide(spec);
    auto rng = make_generator(3);
    const auto [grad, result] = guide.gradient(x, rng);
    EXPECT_TRUE(std::isfinite(result.total.item<double>())) << spec;
    EXPECT_TRUE(torch::isfinite(grad).all().item<bool>()) << spec;
    EXPECT_EQ(result.parts.size(), PromptSchedule::parse(spec, 0, false).segments[0].size());
  }
  // A zero weight contributes nothing at all.
  auto rng = make_generator(3);
  const auto zero = make_guide(prompts.at(0) + ":0").gradient(x, rng);
  EXPECT_EQ(zero.first.abs().max().item<double>(), 0.0);
}

// What a CLIP-conditioned generator is given: the prompts' embeddings weighted and renormalized; zero weights
// give the unconditional zeros.
TEST(ClipGuide, ConditionIsTheWeightedPromptEmbedding) {
  const auto prompts = fixture_prompts();
  std::shared_ptr<LoadedClip> clip = fixture_vit_clip();
  const torch::Tensor e =
      embed_prompts(*clip, {prompts.at(0), prompts.at(1)}, {}, false);  // [2, E], normalized
  const torch::Tensor one = make_guide(prompts.at(0)).condition(0);
  ASSERT_EQ(one.sizes(), (std::vector<int64_t>{1, e.size(1)}));
  EXPECT_TRUE(torch::allclose(one[0], e[0], 1e-5, 1e-5));
  const torch::Tensor mixed = make_guide(prompts.at(0) + ":1 | " + prompts.at(1) + ":-0.5").condition(0)[0];
  const torch::Tensor expected = e[0] - 0.5 * e[1];
  EXPECT_TRUE(torch::allclose(mixed, expected / expected.norm(), 1e-5, 1e-5));
  EXPECT_EQ(make_guide(prompts.at(0) + ":0").condition(0).abs().max().item<double>(), 0.0);
}

TEST(ClipGuide, StopEndsThePull) {
  const auto prompts = fixture_prompts();
  const torch::Tensor x = test_image(32, 32, 4);
  auto rng = make_generator(5);
  // Spherical distances are at most pi^2 / 2 ~ 4.93: a stop above that is always reached.
  const auto stopped = make_guide(prompts.at(0) + ":1:5").gradient(x, rng);
  EXPECT_EQ(stopped.first.abs().max().item<double>(), 0.0);
  EXPECT_GT(stopped.second.total.item<double>(), 0.0);  // the value is still reported
  rng = make_generator(5);
  const auto pulling = make_guide(prompts.at(0) + ":1:0").gradient(x, rng);
  EXPECT_GT(pulling.first.abs().max().item<double>(), 0.0);
}

TEST(ClipGuide, BlendedScheduleMovesBetweenSegments) {
  const auto prompts = fixture_prompts();
  ClipGuideOptions options;
  options.cutouts.cutn = 4;
  const ClipGuide guide({{fixture_vit_clip(), "fixture", 1.0, 0}},
                        PromptSchedule::parse(prompts.at(0) + " ^ " + prompts.at(1), 10, true), {}, options);
  const torch::Tensor x = test_image(32, 32, 6);
  const ClipGuide first = make_guide(prompts.at(0)), second = make_guide(prompts.at(1));
  EXPECT_NEAR(guide.score(x, 0), first.score(x), 1e-6);
  EXPECT_NEAR(guide.score(x, 10), second.score(x), 1e-6);
  const double mid = guide.score(x, 5);
  EXPECT_GT(mid, std::min(first.score(x), second.score(x)) - 1e-6);
  EXPECT_LT(mid, std::max(first.score(x), second.score(x)) + 1e-6);
}

TEST(Cutouts, SeededShapedAndInRange) {
  CutoutOptions options;
  options.cutn = 6;
  options.overview = true;
  options.augments = parse_augments("flip,affine,perspective,jitter,erase");
  const torch::Tensor x = test_image(50, 70, 8);
  auto a = make_generator(1), b = make_generator(1), c = make_generator(2);
  const torch::Tensor ca = make_cutouts(x, 24, options, a);
  EXPECT_EQ(ca.sizes(), (std::vector<int64_t>{6, 3, 24, 24}));
  EXPECT_TRUE(torch::equal(ca, make_cutouts(x, 24, options, b)));
  EXPECT_FALSE(torch::equal(ca, make_cutouts(x, 24, options, c)));
  EXPECT_EQ(augments_name(options.augments), "flip,affine,perspective,jitter,erase");
  EXPECT_THROW(parse_augments("flip,blur"), Error);
  CutoutOptions plain;
  plain.cutn = 1;
  plain.overview = true;
  plain.augments.clear();
  const torch::Tensor square = test_image(24, 24, 9);
  auto d = make_generator(1);
  EXPECT_TRUE(
      torch::allclose(make_cutouts(square, 24, plain, d), square));  // the overview of a square at its size
}

TEST(Optimizer, MatchesTorchOptim) {
  for (const std::string kind : {"adam", "adamw", "sgd"}) {
    auto rng = make_generator(11);
    const torch::Tensor start = torch::randn({5, 4}, rng), target = torch::randn({5, 4}, rng);
    torch::Tensor ours = start.clone().requires_grad_(true), theirs = start.clone().requires_grad_(true);
    OptimizerOptions options;
    options.kind = kind;
    options.lr = 0.05;
    options.weight_decay = kind == "sgd" ? 0.0 : 0.01;
    Optimizer opt({ours}, options);
    std::unique_ptr<torch::optim::Optimizer> ref;
    if (kind == "adam")
      ref = std::make_unique<torch::optim::Adam>(std::vector<torch::Tensor>{theirs},
                                                 torch::optim::AdamOptions(0.05));
    if (kind == "adamw")
      ref = std::make_unique<torch::optim::AdamW>(std::vector<torch::Tensor>{theirs},
                                                  torch::optim::AdamWOptions(0.05).weight_decay(0.01));
    if (kind == "sgd")
      ref = std::make_unique<torch::optim::SGD>(std::vector<torch::Tensor>{theirs},
                                                torch::optim::SGDOptions(0.05).momentum(0.9));
    for (int i = 0; i < 10; ++i) {
      opt.zero_grad();
      ref->zero_grad();
      (ours - target).pow(3).abs().sum().backward();
      (theirs - target).pow(3).abs().sum().backward();
      opt.step();
      ref->step();
    }
    EXPECT_LT(rel_error(ours, theirs), 1e-6) << kind;
  }
  EXPECT_THROW(OptimizerOptions{"lbfgs"}.validate(), Error);
}

TEST(PixelGenerator, EveryParameterisationStartsAtTheInitImage) {
  const torch::Tensor init = test_image(20, 28, 12);
  for (const std::string name : {"raw", "fourier", "laplacian"}) {
    PixelGenerator gen(28, 20, parse_pixel_param(name), init, 0, torch::kCPU);
    torch::NoGradGuard no_grad;
    EXPECT_LT(rel_error(gen.image(), init), 1e-5) << name;
  }
}

std::shared_ptr<Vqgan> fixture_vqgan() {
  const auto manifest = read_json(fixtures() / "vqgan" / "vqgan-manifest.json");
  const auto& entry = manifest["models"].begin().value();
  return load_vqgan((fixtures() / "vqgan" / entry["safetensors"].get<std::string>()).string(), "",
                    torch::kCPU)
      .model;
}

TEST(VqganGenerator, StartsAtTheReconstructionOfItsInitImage) {
  const auto manifest = read_json(fixtures() / "vqgan" / "vqgan-manifest.json");
  const TensorMap ref =
      reference(fixtures() / "vqgan" / manifest["models"].begin().value()["reference"].get<std::string>());
  const torch::Tensor x = ref.at("x").narrow(0, 0, 1);  // [1, 3, H, W] in [-1, 1]
  VqganGenerator gen(fixture_vqgan(), x.size(3), x.size(2), (x + 1) / 2, 0.0, 0);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = ((ref.at("decoded").narrow(0, 0, 1) + 1) / 2).clamp(0, 1);
  EXPECT_LT(rel_error(gen.image(), expected), 1e-4);
}

TEST(GuidedRun, VqganRunLowersItsLossAndResumesExactly) {
  const auto vqgan = fixture_vqgan();
  const int64_t f = vqgan->config().factor();
  const auto guide = std::make_shared<ClipGuide>(make_guide(fixture_prompts().at(0)));
  OptimizerOptions opt;
  opt.lr = 0.2;
  auto make_run = [&] {
    return GuidedRun(std::make_shared<VqganGenerator>(vqgan, 4 * f, 4 * f, std::nullopt, 0.0, 3), guide, opt,
                     0.0, 3);
  };
  GuidedRun run = make_run();
  const double before = loss_at(*guide, run.image(), 99);
  for (int i = 0; i < 4; ++i) run.step();
  const TensorMap saved = run.state();
  for (int i = 0; i < 16; ++i) run.step();
  const double after = loss_at(*guide, run.image(), 99);
  std::printf("[guided] fixture VQGAN + CLIP, 20 steps: loss %.4f -> %.4f\n", before, after);
  EXPECT_LT(after, before);

  GuidedRun resumed = make_run();
  resumed.load_state(saved);
  EXPECT_EQ(resumed.steps_done(), 4);
  for (int i = 0; i < 16; ++i) resumed.step();
  EXPECT_TRUE(torch::equal(resumed.image(), run.image()));
}

TEST(GuidedRun, PixelRunLowersItsLoss) {
  const auto guide = std::make_shared<ClipGuide>(make_guide(fixture_prompts().at(1)));
  OptimizerOptions opt;
  opt.lr = 0.05;
  GuidedRun run(std::make_shared<PixelGenerator>(32, 32, PixelParam::Fourier, std::nullopt, 1, torch::kCPU),
                guide, opt, 0.0, 1);
  const double before = loss_at(*guide, run.image(), 99);
  for (int i = 0; i < 20; ++i) run.step();
  const double after = loss_at(*guide, run.image(), 99);
  std::printf("[guided] fixture CLIP on fourier pixels, 20 steps: loss %.4f -> %.4f\n", before, after);
  EXPECT_LT(after, before);
}

TEST(GuidedRun, VqganZStaysInTheCodebookRange) {
  const auto vqgan = fixture_vqgan();
  const int64_t f = vqgan->config().factor();
  auto gen = std::make_shared<VqganGenerator>(vqgan, 2 * f, 3 * f, std::nullopt, 0.0, 1);
  OptimizerOptions opt;
  opt.lr = 10.0;  // large steps push z far out
  GuidedRun run(gen, std::make_shared<ClipGuide>(make_guide(fixture_prompts().at(0))), opt, 0.0, 1);
  run.step();
  const torch::Tensor z = gen->state().at("vqgan.z");
  const torch::Tensor lo = std::get<0>(vqgan->codebook().min(0)).view({1, -1, 1, 1});
  const torch::Tensor hi = std::get<0>(vqgan->codebook().max(0)).view({1, -1, 1, 1});
  EXPECT_TRUE((z >= lo).all().item<bool>() && (z <= hi).all().item<bool>());
  EXPECT_EQ(run.image().sizes(), (std::vector<int64_t>{1, 3, 3 * f, 2 * f}));
}

}  // namespace
}  // namespace clipguide::test

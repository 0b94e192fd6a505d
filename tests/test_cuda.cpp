// The CUDA paths: the same numbers as the CPU's (CLIP, the guide, cutouts, the UNet, the VQGAN, a sampler
// step), CUDA-graph replay equal to eager execution, batches spread over several devices. Tests named *_CUDA
// need a GPU and skip, saying so, without one. The spreading of batches over replicas also runs on CPU
// "devices" here.
#include <torch/cuda.h>

#include "clip/score.h"
#include "core/device.h"
#include "core/error.h"
#include "fixtures.h"
#include "generators/diffusion_run.h"
#include "generators/stable_diffusion.h"
#include "generators/unet.h"
#include "generators/vqgan.h"
#include "guidance/clip_guide.h"
#include "guidance/cuda_graph.h"

namespace clipguide::test {
namespace {

// Why a test that needs `n` GPUs cannot run here, or empty.
std::string missing_gpus(int n) {
  if (!built_with_cuda()) return "no CUDA device: this build has no CUDA (scripts/setup --torch pip)";
  if (!torch::cuda::is_available()) return "no CUDA device";
  if (static_cast<int>(torch::cuda::device_count()) < n)
    return cat("needs ", n, " CUDA devices, ", torch::cuda::device_count(), " here");
  return "";
}
#define SKIP_WITHOUT_GPUS(n) \
  if (const std::string why = missing_gpus(n); !why.empty()) GTEST_SKIP() << why

std::vector<std::string> fixture_prompts() {
  return read_json(fixtures() / "clip" / "clip-manifest.json")["prompts"].get<std::vector<std::string>>();
}

// The fixture ViT CLIP again, on `device` (text heads from the manifest, as fixture_vit_clip loads it).
std::shared_ptr<LoadedClip> vit_clip_on(const torch::Device& device,
                                        torch::ScalarType dtype = torch::kFloat) {
  const std::shared_ptr<LoadedClip> cpu = fixture_vit_clip();
  auto out = std::make_shared<LoadedClip>(*cpu);
  out->model = replicate(*cpu->model, device);
  out->model->to(dtype);
  return out;
}

std::vector<std::string> fixture_images() {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(fixtures() / "clip")) {
    if (entry.path().extension() != ".images") continue;
    for (const auto& f : std::filesystem::directory_iterator(entry.path())) out.push_back(f.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

ClipGuide guide_on(const torch::Device& device, bool graph, int64_t cutn = 8) {
  ClipGuideOptions options;
  options.cutouts.cutn = cutn;
  options.cuda_graph = graph;
  options.tv_weight = 0.1;
  const auto prompts = fixture_prompts();
  return ClipGuide({{vit_clip_on(device), "fixture", 1.0, 0}},
                   PromptSchedule::parse(prompts.at(0) + ":1 | " + prompts.at(1) + ":-0.5:0.1", 0, false), {},
                   options);
}

torch::Tensor test_image(int64_t h, int64_t w, uint64_t seed) {
  auto rng = make_generator(seed);
  return torch::rand({1, 3, h, w}, rng) * 0.6 + 0.2;
}

// ---- on any machine ----

TEST(Replicas, BatchesSpreadOverDevicesComeBackInInputOrder) {
  // Two CPU "devices": the same pipeline that spreads batches over GPUs, checked against one model.
  const std::vector<std::string> images = fixture_images();
  std::vector<std::string> paths;
  for (int i = 0; i < 5; ++i) paths.insert(paths.end(), images.begin(), images.end());
  LoadedClip one = *fixture_vit_clip();
  LoadedClip two = one;
  two.replicas = {replicate(*one.model, torch::kCPU), replicate(*one.model, torch::kCPU)};
  auto run = [&](LoadedClip& clip) {
    std::vector<std::string> order;
    std::vector<torch::Tensor> features;
    stream_image_features(clip, paths, 3, 2, true, [&](const ImageBatch& b) {
      order.insert(order.end(), b.paths.begin(), b.paths.end());
      features.push_back(b.features);
    });
    return std::make_pair(order, torch::cat(features));
  };
  const auto [order1, f1] = run(one);
  const auto [order3, f3] = run(two);
  EXPECT_EQ(order1, paths);
  EXPECT_EQ(order3, paths);
  EXPECT_LT(rel_error(f3, f1), 1e-6);
}

TEST(Replicas, DeviceListsParse) {
  EXPECT_EQ(parse_devices("cpu").size(), 1u);
  EXPECT_EQ(parse_devices("cpu,cpu").size(), 2u);
  EXPECT_THROW(parse_devices("cpu,"), Error);
  EXPECT_THROW(parse_devices("cpu,tpu"), Error);
}

TEST(CudaGraph, NeedsCudaModelsAndABuildWithCuda) {
  try {
    guide_on(torch::kCPU, true);
    FAIL() << "a CUDA graph over CPU models was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(built_with_cuda() ? "--device cuda" : "build with CUDA"), std::string::npos) << msg;
  }
}

// ---- with a GPU ----

TEST(Cuda, ClipFeaturesMatchTheCpu_CUDA) {
  SKIP_WITHOUT_GPUS(1);
  const auto cpu = fixture_vit_clip();
  const auto gpu = vit_clip_on(torch::Device(torch::kCUDA, 0));
  const torch::NoGradGuard no_grad;
  const torch::Tensor pixels =
      torch::rand({3, 3, cpu->model->config().image_resolution, cpu->model->config().image_resolution});
  EXPECT_LT(rel_error(gpu->model->encode_image(pixels.cuda()), cpu->model->encode_image(pixels)), 1e-4);
  const torch::Tensor tokens =
      cpu->tokenizer->tokenize(fixture_prompts(), cpu->model->config().context_length, true);
  EXPECT_LT(rel_error(gpu->model->encode_text(tokens.cuda()), cpu->model->encode_text(tokens)), 1e-4);
}

TEST(Cuda, GuideGradientMatchesTheCpu_CUDA) {
  SKIP_WITHOUT_GPUS(1);
  const ClipGuide cpu = guide_on(torch::kCPU, false), gpu = guide_on(torch::Device(torch::kCUDA, 0), false);
  const torch::Tensor x = test_image(48, 56, 3);
  auto rng_cpu = make_generator(11),
       rng_gpu = make_generator(11);  // cutouts draw on the CPU: the same on both
  const auto [g_cpu, r_cpu] = cpu.gradient(x, rng_cpu);
  const auto [g_gpu, r_gpu] = gpu.gradient(x.cuda(), rng_gpu);
  EXPECT_LT(rel_error(g_gpu, g_cpu), 1e-3);
  EXPECT_NEAR(r_gpu.total.item<double>(), r_cpu.total.item<double>(), 1e-4);
}

TEST(Cuda, GraphReplayEqualsEager_CUDA) {
  SKIP_WITHOUT_GPUS(1);
  const torch::Device cuda(torch::kCUDA, 0);
  const auto clip = vit_clip_on(cuda);
  const int64_t res = clip->model->config().image_resolution, dim = clip->model->config().embed_dim;
  CutoutLossFn fn = [&](const torch::Tensor& c, const torch::Tensor& e, const torch::Tensor& w,
                        const torch::Tensor& s) {
    const torch::Tensor f = clip->model->encode_image(c);
    const torch::Tensor cos = torch::matmul(e, (f / f.norm(2, -1, true)).t());  // [T, N]
    return w * torch::max(1 - cos, s.unsqueeze(1)).mean(1);
  };
  auto rng = make_generator(5);
  const torch::Tensor cutouts = torch::rand({6, 3, res, res}, rng).cuda();
  torch::Tensor e = torch::randn({2, dim}, rng).cuda();
  e = e / e.norm(2, -1, true);
  const torch::Tensor w = torch::tensor({1.0f, -0.5f}).cuda(), s = torch::tensor({-1.0f, 0.0f}).cuda();
  CutoutLossGraph graph(fn, cutouts, 2, dim);
  for (int step = 0; step < 3; ++step) {  // replays with new inputs, as a run's steps do
    const torch::Tensor c = (cutouts + 0.05 * step).clamp(0, 1);
    const GraphedLoss replayed = graph.run(c, e, w, s);
    const GraphedLoss eager = graph.run_eager(c, e, w, s);
    EXPECT_LT(rel_error(replayed.terms, eager.terms), 1e-6) << "step " << step;
    EXPECT_LT(rel_error(replayed.grad, eager.grad), 1e-6) << "step " << step;
  }
  // And the whole guide: graph on, graph off, same cutouts.
  const ClipGuide eager = guide_on(cuda, false), graphed = guide_on(cuda, true);
  const torch::Tensor x = test_image(48, 56, 4).cuda();
  for (int step = 0; step < 3; ++step) {
    auto r1 = make_generator(20 + step), r2 = make_generator(20 + step);
    const auto [g1, l1] = eager.gradient(x, r1);
    const auto [g2, l2] = graphed.gradient(x, r2);
    EXPECT_LT(rel_error(g2, g1), 1e-5) << "step " << step;
    EXPECT_NEAR(l2.total.item<double>(), l1.total.item<double>(), 1e-5);
  }
}

TEST(Cuda, UNetAndSamplerStepMatchTheCpu_CUDA) {
  SKIP_WITHOUT_GPUS(1);
  const auto flags = fixtures() / "diffusion" / "unet-tiny.json";
  const auto cpu =
      load_unet((fixtures() / "diffusion" / "unet-tiny.safetensors").string(), flags.string(), torch::kCPU);
  const auto gpu = load_unet((fixtures() / "diffusion" / "unet-tiny.safetensors").string(), flags.string(),
                             torch::Device(torch::kCUDA, 0));
  const TensorMap ref = reference(fixtures() / "diffusion" / "unet-tiny.reference.safetensors");
  const torch::NoGradGuard no_grad;
  const torch::Tensor x = ref.at("x"), t = ref.at("t_raw");
  EXPECT_LT(rel_error(gpu.model->forward(x.cuda(), t.cuda()), cpu.model->forward(x, t)), 1e-4);
  // bf16 autocast: close to fp32, not equal.
  const Autocast mixed(torch::Device(torch::kCUDA, 0), torch::kBFloat16);
  EXPECT_LT(rel_error(gpu.model->forward(x.cuda(), t.cuda()).to(torch::kFloat), cpu.model->forward(x, t)),
            3e-2);
}

TEST(Cuda, VqganDecodeMatchesTheCpu_CUDA) {
  SKIP_WITHOUT_GPUS(1);
  const auto manifest = read_json(fixtures() / "vqgan" / "vqgan-manifest.json");
  const auto& m = manifest["models"].begin().value();
  const std::string weights = (fixtures() / "vqgan" / m["safetensors"].get<std::string>()).string();
  const std::string yaml = (fixtures() / "vqgan" / m["yaml"].get<std::string>()).string();
  const LoadedVqgan cpu = load_vqgan(weights, yaml, torch::kCPU),
                    gpu = load_vqgan(weights, yaml, torch::Device(torch::kCUDA, 0));
  const TensorMap ref = reference(fixtures() / "vqgan" / "vqgan-tiny.reference.safetensors");
  const torch::NoGradGuard no_grad;
  const torch::Tensor z = ref.at("z");
  EXPECT_LT(rel_error(gpu.model->decode(gpu.model->quantize(z.cuda()).z_q),
                      cpu.model->decode(cpu.model->quantize(z).z_q)),
            1e-4);
}

// Two CLIP-guided Stable Diffusion steps (the sd1 fixture pipeline of tests/data/sd, its text encoder, UNet
// and VAE on the GPU) give the CPU's latents.
TEST(Cuda, StableDiffusionStepsMatchTheCpu_CUDA) {
  SKIP_WITHOUT_GPUS(1);
  const std::filesystem::path sd_fixtures =
      std::getenv("CLIPGUIDE_SD_FIXTURES")
          ? std::filesystem::path(std::getenv("CLIPGUIDE_SD_FIXTURES"))
          : std::filesystem::path(CLIPGUIDE_SOURCE_DIR) / "tests" / "data" / "sd";
  const nlohmann::json pipe = read_json(sd_fixtures / "sd-manifest.json")["pipelines"]["sd1"];
  auto latents_on = [&](const torch::Device& device) {
    const auto sd = std::make_shared<const StableDiffusion>(load_stable_diffusion(
        (sd_fixtures / pipe["folder"].get<std::string>()).string(), "", "", "ddim", device));
    ClipGuideOptions options;
    options.cutouts.cutn = 4;
    const auto guide = std::make_shared<ClipGuide>(
        std::vector<GuideModel>{{vit_clip_on(device), "fixture", 1.0, 0}},
        PromptSchedule::parse(pipe["prompt"], 0, false), std::vector<Prompt>{}, options);
    const torch::Tensor states = sd->encode_prompts({pipe["prompt"], pipe["negative"]}, false);
    SdRunOptions run_options;
    run_options.steps = 4;
    run_options.clip_guidance_scale = 100;
    run_options.width = run_options.height = pipe["image_size"].get<int64_t>();
    SdRun run(sd, states.narrow(0, 0, 1), states.narrow(0, 1, 1), guide, run_options, std::nullopt, 0);
    run.step();
    run.step();
    return run.latents().cpu();
  };
  EXPECT_LT(rel_error(latents_on(torch::Device(torch::kCUDA, 0)), latents_on(torch::kCPU)), 1e-3);
}

TEST(Cuda, ScoresSpreadOverTwoGpus_CUDA) {
  SKIP_WITHOUT_GPUS(2);
  LoadedClip two = *vit_clip_on(torch::Device(torch::kCUDA, 0));
  two.replicas = {replicate(*two.model, torch::Device(torch::kCUDA, 1))};
  LoadedClip one = *fixture_vit_clip();
  std::vector<std::string> paths;
  for (int i = 0; i < 4; ++i) {
    const auto images = fixture_images();
    paths.insert(paths.end(), images.begin(), images.end());
  }
  std::vector<torch::Tensor> f_gpu, f_cpu;
  stream_image_features(two, paths, 2, 2, true, [&](const ImageBatch& b) { f_gpu.push_back(b.features); });
  stream_image_features(one, paths, 2, 2, true, [&](const ImageBatch& b) { f_cpu.push_back(b.features); });
  EXPECT_LT(rel_error(torch::cat(f_gpu), torch::cat(f_cpu)), 1e-4);
}

}  // namespace
}  // namespace clipguide::test

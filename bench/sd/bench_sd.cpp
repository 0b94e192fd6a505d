// bench/sd, our side: the files bench/sd/make_models.py wrote (Stable Diffusion 1.5's shapes, random
// weights), through the library's own Stable Diffusion run (generators/stable_diffusion.h), DDIM over 50
// steps. Times one classifier-free guidance step, and one CLIP-guided step (ViT-B/32 shape, random cutouts,
// no augmentations, as the community pipeline cuts) with the gradient taken through the UNet and the decoder
// (full), through the decoder alone (decoder-only), and with the decoder checkpointed. Median seconds per
// step after a warm-up step. Prints one JSON object.
//
//   bench_sd MODELS_DIR VOCAB_DIR SIZE STEPS [--cutn N] [--device D] [--bf16]
//
// --bf16 also times the CFG step with the UNet under bf16 autocast (`generate --precision bf16`).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "clip/load.h"
#include "core/device.h"
#include "generators/stable_diffusion.h"
#include "guidance/clip_guide.h"

namespace cg = clipguide;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: bench_sd MODELS_DIR VOCAB_DIR SIZE STEPS [--cutn N] [--device D]\n");
    return 2;
  }
  cg::set_cpu_threads(0);   // OMP_NUM_THREADS, as the Python side
  cg::keep_freed_memory();  // as the CLI does
  const std::string models = argv[1];
  const int64_t size = std::stoll(argv[3]), steps = std::stoll(argv[4]);
  int64_t cutn = 4;
  std::string device_spec = "cpu";
  bool bf16 = false;
  for (int i = 5; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--bf16") bf16 = true;
    if (a == "--cutn" && i + 1 < argc) cutn = std::stoll(argv[++i]);
    if (a == "--device" && i + 1 < argc) device_spec = argv[++i];
  }
  const torch::Device device = cg::parse_device(device_spec);
  const auto sd = std::make_shared<const cg::StableDiffusion>(
      cg::load_stable_diffusion(models + "/pipeline", "", "", "ddim", device));
  cg::LoadOptions load;
  load.vocab = argv[2];
  load.device = device;
  cg::ClipGuideOptions guide_options;
  guide_options.cutouts.cutn = cutn;
  guide_options.cutouts.augments = {};
  const std::string prompt = "an oil painting of a lighthouse in a storm";
  auto guide = std::make_shared<cg::ClipGuide>(
      std::vector<cg::GuideModel>{
          {std::make_shared<cg::LoadedClip>(cg::load_clip(models + "/clip", load)), "clip", 1.0, 0}},
      cg::PromptSchedule::parse(prompt, 0, false), std::vector<cg::Prompt>{}, guide_options);
  const torch::Tensor states = sd->encode_prompts({prompt, "blurry"}, false);
  // The median seconds of a step of a run with these options.
  auto median_step = [&](cg::SdRunOptions options, bool guided) {
    options.steps = 50;
    options.width = options.height = size;
    options.clip_guidance_scale = guided ? 100 : 0;
    cg::SdRun run(sd, states.narrow(0, 0, 1), states.narrow(0, 1, 1), guided ? guide : nullptr, options,
                  std::nullopt, 0);
    std::vector<double> times;
    for (int64_t i = 0; i <= steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run.step();
      if (device.is_cuda()) run.latents().sum().item<double>();  // the step's work done, not just queued
      if (i > 0)
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  nlohmann::json out;
  cg::SdRunOptions options;
  out["cfg_step_s"] = median_step(options, false);
  if (bf16) {
    options.unet_dtype = torch::kBFloat16;
    out["cfg_bf16_step_s"] = median_step(options, false);
    options.unet_dtype = torch::kFloat;
  }
  out["guided_step_s"] = median_step(options, true);
  options.guide_grad = cg::SdGuideGrad::DecoderOnly;
  out["decoder_only_step_s"] = median_step(options, true);
  options.guide_grad = cg::SdGuideGrad::Full;
  options.vae_checkpointing = true;
  out["checkpointed_step_s"] = median_step(options, true);
  int64_t unet_parameters = 0;
  for (const auto& p : sd->unet->parameters()) unet_parameters += p.numel();
  out["unet_parameters"] = unet_parameters;
  out["size"] = size;
  out["cutn"] = cutn;
  out["threads"] = torch::get_num_threads();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

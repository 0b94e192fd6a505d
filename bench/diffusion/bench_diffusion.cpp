// bench/diffusion, our side: one CLIP-guided DDIM step (UNet forward with gradients, pred_xstart blend, 16 cutouts
// through CLIP, spherical + TV + range losses, gradient back through the UNet, condition_score, DDIM update) on a
// 64x64 UNet of guided-diffusion's 64x64 shape (random weights, written here as safetensors so the Python side
// loads the same ones). Median seconds per step, CLIP in fp32 and in bf16. Prints one JSON object.
//
//   bench_diffusion CLIP.safetensors VOCAB UNET_OUT.safetensors STEPS
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "clip/device.h"
#include "clip/file_io.h"
#include "clip/load.h"
#include "clip/safetensors.h"
#include "generators/diffusion_run.h"

namespace cg = clipguide;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: bench_diffusion CLIP.safetensors VOCAB UNET_OUT.safetensors STEPS\n");
    return 2;
  }
  cg::set_cpu_threads(0);  // OMP_NUM_THREADS, as the Python side
  const int64_t steps = std::stoll(argv[4]);
  // guided-diffusion's 64x64 model flags, unconditional: 192 channels, mult 1,2,3,4, 3 res blocks, attention at
  // 32,16,8 (levels 1-3), 64 channels per head, new attention order, scale-shift norm, up/down ResBlocks.
  cg::UNetConfig c;
  c.model_channels = 192;
  c.out_channels = 6;
  c.num_res_blocks = 3;
  c.channel_mult = {1, 2, 3, 4};
  c.attention_levels = {false, true, true, true};
  c.use_scale_shift_norm = true;
  c.resblock_updown = true;
  c.num_head_channels = 64;
  c.use_new_attention_order = true;
  torch::manual_seed(0);
  auto unet = std::make_shared<cg::UNetModel>(c);
  cg::TensorMap sd;
  for (auto& p : unet->named_parameters()) {
    p.value().requires_grad_(false);
    sd[p.key()] = p.value().detach();
  }
  cg::write_file_atomic(argv[3], cg::serialize_safetensors(sd, {{"format", "pt"}, {"note", "random weights for bench/diffusion"}}));
  const cg::DiffusionSchedule s = cg::DiffusionSchedule::make("cosine", 1000, "ddim50");
  nlohmann::json out;
  for (int precision = 0; precision < 2; ++precision) {
    cg::LoadOptions load;
    load.vocab = argv[2];
    load.dtype = precision == 0 ? torch::kFloat : torch::kBFloat16;
    cg::ClipGuideOptions guide_options;
    guide_options.cutouts.cutn = 16;
    guide_options.cutouts.augments = cg::parse_augments("flip,noise");
    auto guide = std::make_shared<cg::ClipGuide>(
        std::vector<cg::GuideModel>{{std::make_shared<cg::LoadedClip>(cg::load_clip(argv[1], load)), argv[1], 1.0, 0}},
        cg::PromptSchedule::parse("an oil painting of a lighthouse", 0, false), std::vector<cg::Prompt>{}, guide_options);
    cg::DiffusionRunOptions options;
    options.sampler = cg::Sampler::Ddim;
    options.width = options.height = 64;
    cg::DiffusionRun run(unet, s, guide, options, std::nullopt, 0);
    run.step();  // warm-up
    std::vector<double> times;
    for (int64_t i = 0; i < steps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      run.step();
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(times.begin(), times.end());
    out[precision == 0 ? "fp32_step_s" : "bf16_step_s"] = times[times.size() / 2];
  }
  out["unet_parameters"] = [&] {
    int64_t n = 0;
    for (const auto& p : unet->parameters()) n += p.numel();
    return n;
  }();
  out["threads"] = torch::get_num_threads();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

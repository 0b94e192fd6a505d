// bench/diffusion, our side: one CLIP-guided DDIM step (UNet forward with gradients, pred_xstart blend, 16
// cutouts through CLIP, spherical + TV + range losses, gradient back through the UNet, condition_score, DDIM
// update) on a 64x64 UNet of guided-diffusion's 64x64 shape (random weights, written here as safetensors so
// the Python side loads the same ones). Median seconds per step, CLIP in fp32 and in bf16. Prints one JSON
// object.
//
//   bench_diffusion CLIP.safetensors VOCAB UNET_OUT.safetensors STEPS [--unet 64|256] [--cutn N] [--device D]
//                   [--precisions fp32,bf16] [--cuda-graph] [--batch N]
//
// --batch N also times N samples drawn as one batch (one UNet and one CLIP pass a step, the batch-first
// guide) against the single sample's step: best-of-N as one batch or one candidate at a time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "clip/load.h"
#include "core/device.h"
#include "core/file_io.h"
#include "generators/diffusion_run.h"
#include "io/safetensors.h"

namespace cg = clipguide;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: bench_diffusion CLIP.safetensors VOCAB UNET_OUT.safetensors STEPS [--unet 64|256] "
                 "[--cutn N] [--device D] [--precisions fp32,bf16] [--cuda-graph] [--batch N]\n");
    return 2;
  }
  cg::set_cpu_threads(0);   // OMP_NUM_THREADS, as the Python side
  cg::keep_freed_memory();  // as the CLI does
  const int64_t steps = std::stoll(argv[4]);
  int64_t image_size = 64, cutn = 16, batch = 1;
  bool cuda_graph = false;
  std::string device_spec = "cpu", precisions = "fp32,bf16";
  for (int i = 5; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cuda-graph")
      cuda_graph = true;
    else if (a == "--unet" && i + 1 < argc)
      image_size = std::stoll(argv[++i]);
    else if (a == "--cutn" && i + 1 < argc)
      cutn = std::stoll(argv[++i]);
    else if (a == "--device" && i + 1 < argc)
      device_spec = argv[++i];
    else if (a == "--precisions" && i + 1 < argc)
      precisions = argv[++i];
    else if (a == "--batch" && i + 1 < argc)
      batch = std::stoll(argv[++i]);
  }
  const torch::Device device = cg::parse_device(device_spec);
  // guided-diffusion's model flags, unconditional, learned sigmas, scale-shift norm, up/down ResBlocks, 64
  // channels per head. 64x64: 192 channels, mult 1,2,3,4, 3 res blocks, attention at 32,16,8 (levels 1-3),
  // new attention order. 256x256 (256x256_diffusion_uncond): 256 channels, mult 1,1,2,2,4,4, 2 res blocks,
  // attention at 32,16,8 (levels 3-5), legacy attention order.
  cg::UNetConfig c;
  c.out_channels = 6;
  c.use_scale_shift_norm = true;
  c.resblock_updown = true;
  c.num_head_channels = 64;
  if (image_size == 256) {
    c.model_channels = 256;
    c.num_res_blocks = 2;
    c.channel_mult = {1, 1, 2, 2, 4, 4};
    c.attention_levels = {false, false, false, true, true, true};
    c.use_new_attention_order = false;
  } else {
    c.model_channels = 192;
    c.num_res_blocks = 3;
    c.channel_mult = {1, 2, 3, 4};
    c.attention_levels = {false, true, true, true};
    c.use_new_attention_order = true;
  }
  torch::manual_seed(0);
  auto unet = std::make_shared<cg::UNetModel>(c);
  cg::TensorMap sd;
  for (auto& p : unet->named_parameters()) {
    p.value().requires_grad_(false);
    sd[p.key()] = p.value().detach();
  }
  cg::write_file_atomic(argv[3], cg::serialize_safetensors(
                                     sd, {{"format", "pt"}, {"note", "random weights for bench/diffusion"}}));
  unet->to(device);
  const cg::DiffusionSchedule s = cg::DiffusionSchedule::make("cosine", 1000, "ddim50");
  nlohmann::json out;
  for (const std::string& precision : cg::split(precisions, ',')) {
    cg::LoadOptions load;
    load.vocab = argv[2];
    load.device = device;
    load.dtype = cg::parse_precision(precision);
    cg::ClipGuideOptions guide_options;
    guide_options.cutouts.cutn = cutn;
    guide_options.cutouts.augments = cg::parse_augments("flip,noise");
    guide_options.cuda_graph = cuda_graph;
    auto guide = std::make_shared<cg::ClipGuide>(
        std::vector<cg::GuideModel>{
            {std::make_shared<cg::LoadedClip>(cg::load_clip(argv[1], load)), argv[1], 1.0, 0}},
        cg::PromptSchedule::parse("an oil painting of a lighthouse", 0, false), std::vector<cg::Prompt>{},
        guide_options);
    cg::DiffusionRunOptions options;
    options.sampler = cg::Sampler::Ddim;
    options.width = options.height = image_size;
    // On CUDA the UNet follows the precision under autocast, as `generate --device cuda --precision` runs it.
    if (device.is_cuda()) options.unet_dtype = load.dtype;
    // The median seconds of a step of a run of `samples` samples.
    auto median_step = [&](int64_t samples) {
      options.batch = samples;
      cg::DiffusionRun run(unet, s, guide, options, std::nullopt, 0);
      run.step();  // warm-up (and, with --cuda-graph, the capture)
      std::vector<double> times;
      for (int64_t i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        run.step();
        if (device.is_cuda()) run.image().sum().item<double>();  // the step's work done, not just queued
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      return times[times.size() / 2];
    };
    out[precision + "_step_s"] = median_step(1);
    if (batch > 1) {
      out["batch"] = batch;
      out[precision + "_batch_step_s"] = median_step(batch);
    }
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
